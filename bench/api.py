"""How fast is the Python API (`pipeline.api.Detector`) from decoded pixels to detections, in
batches of 1, 4 and 16, with one view and as exported, against torchvision's FasterRCNN with
the same backbone module, one image at a time (given the same images normalised at their own
size; its transform resizes them as the API does).

Two image sets: the run's test images at their own sizes (the batches of one view share a
forward pass only between images of one padded size), and the same images resized to one
size, as a camera's frames are (a whole batch shares it). Everything is timed in one process,
interleaved round by round; the ratios are what to compare.

    python -m bench.api [--model data/model/faster_rcnn.pt] [--images 32] [--rounds 3]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from bench.peer_model import torchvision_detector
from pipeline import layout
from pipeline.api import Detector, Views
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.config import load_params
from pipeline.data.images import decode_image, normalise, read_image_bytes
from pipeline.data.records import TEST

BATCHES = (1, 4, 16)
PEER = "torchvision FasterRCNN, own sizes, one at a time"


def test_pictures(prepared: PreparedDataset, count: int) -> list[np.ndarray]:
    """The first `count` test images, decoded from their files as a user would have them."""
    files = prepared.group.attrs["image_files"]
    test = np.nonzero(prepared.split == TEST)[0][:count]
    return [
        np.asarray(decode_image(read_image_bytes(Path(files[i])), Path(files[i]))) for i in test
    ]


def images_per_second(run: Callable[[], None], count: int) -> float:
    run()  # warm up: first-call allocations and kernel choices
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


@click.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=layout.EXPORT.out,
              show_default=True, help="The exported model of a finished run.")  # fmt: skip
@click.option("--images", default=32, show_default=True, help="Test images per timing.")
@click.option("--rounds", default=3, show_default=True)
def main(model_path: Path, images: int, rounds: int) -> None:
    torch.set_grad_enabled(False)
    detector = Detector.load(model_path)
    prepared = PreparedDataset(layout.PREPARE.out)
    mixed = test_pictures(prepared, images)
    h, w = mixed[0].shape[:2]
    one_size = [
        np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BILINEAR)) for p in mixed
    ]
    peer = torchvision_detector(
        load_params(), detector.model.backbone, len(detector.classes)
    ).eval()
    normalised = [normalise(p, *p.shape[:2], False) for p in mixed]

    def api(pictures: list[np.ndarray], batch: int, views: Views) -> Callable[[], None]:
        return lambda: detector.detect(pictures, batch, views)

    runs: dict[str, Callable[[], None]] = {}
    for name, pictures in (("own sizes", mixed), (f"all {h}x{w}", one_size)):
        for batch in BATCHES:
            runs[f"API, one view, {name}, batch {batch}"] = api(pictures, batch, "one")
        runs[f"API, as exported, {name}"] = api(pictures, 1, "exported")
    runs[PEER] = lambda: [peer([x]) for x in normalised]

    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(images_per_second(run, len(mixed)))
    median = {name: statistics.median(r) for name, r in rates.items()}
    peer_rate = median[PEER]
    click.echo(f"{model_path}, {len(mixed)} test images, {torch.get_num_threads()} threads, "
               f"{rounds} rounds; medians:")  # fmt: skip
    click.echo("| run | images/s | × torchvision |")
    click.echo("|---|---:|---:|")
    for name, rate in median.items():
        click.echo(f"| {name} | {rate:.1f} | {rate / peer_rate:.2f} |")


if __name__ == "__main__":
    main()
