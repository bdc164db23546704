"""How fast does the exported detector run, against torchvision's FasterRCNN with the same
backbone module (the same weights), anchors, proposal counts and sizes, on the same images?
The exported detector is timed as exported and with one view of each image (`detect.scales`
[1.0], no flip), which is what torchvision's does.

Both get the same normalised test images at the prepared size, one at a time, in eval mode
without grad, interleaved round by round. The default profile uses a finished run's model and
test images (`--model`); `--profile vgg16` builds a small VGG16 project at 600 px
(bench/project.py), whose untrained model times the same as a trained one up to the number of
boxes that pass the score threshold.

    python -m bench.inference [--profile default|vgg16] [--rounds 3]
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch

from bench.peer_model import torchvision_detector
from bench.project import PROFILES, build_project, inside, profile_params
from pipeline import layout
from pipeline.artifacts.exported_model import load_detector
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.config import Params, load_params
from pipeline.data.images import normalise
from pipeline.data.records import TEST
from pipeline.devices import resolve_device
from pipeline.model.faster_rcnn import DetectorConfig, FasterRCNN


def test_images(prepared: PreparedDataset, count: int) -> list[tuple[torch.Tensor, tuple, float]]:
    """(normalised image, size, scale) of the first `count` test images."""
    images = np.nonzero(prepared.split == TEST)[0][:count]
    out = []
    for i in images:
        size = tuple(int(v) for v in prepared.image_sizes[i])
        out.append(
            (normalise(prepared.images[int(i)], *size, False), size, float(prepared.scales[i]))
        )
    return out


MODEL_OPTION = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=layout.EXPORT.out,
    show_default=True,
    help="default profile: the exported model of a finished run.",
)


def detector_and_images(
    profile: str, model_path: Path, images: int, tmp: Path
) -> tuple[Params, str, FasterRCNN, list[tuple[torch.Tensor, tuple, float]]]:
    """The params, a line naming the source, the exported detector and its first `images` test
    images: of the finished run at `model_path` (default profile), or else of a small untrained
    project of the profile built in `tmp`."""
    if profile == "default" and model_path.exists():
        detector, prepared = load_detector(model_path), PreparedDataset(layout.PREPARE.out)
        source = f"{model_path} and its test images"
        return load_params(), source, detector, test_images(prepared, images)
    params = profile_params(profile, images * 2)
    source = f"a {profile} project, untrained"
    with inside(tmp):
        click.echo(f"building {source} ...", err=True)
        build_project(tmp, params, until=layout.EXPORT.name)
        detector = load_detector(layout.EXPORT.out)
        return params, source, detector, test_images(PreparedDataset(layout.PREPARE.out), images)


def timed(run, images: list, device: torch.device) -> float:
    """Seconds per image of `run` over `images`, after one untimed image."""
    run(*images[0])
    start = time.perf_counter()
    for image in images:
        run(*image)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(images)


@click.command()
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="default")
@MODEL_OPTION
@click.option("--images", default=20, show_default=True, help="Test images timed per round.")
@click.option("--rounds", default=3, show_default=True)
def main(profile: str, model_path: Path, images: int, rounds: int) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        params, source, detector, picked = detector_and_images(
            profile, model_path, images, Path(tmp)
        )
        device = resolve_device(params.train.device)
        detector.eval().to(device)
        peer = torchvision_detector(params, detector.backbone, len(detector.config.classes))
        peer.eval().to(device)
        picked = [(image.to(device), size, scale) for image, size, scale in picked]

        exported = detector.config
        one_view = dataclasses.replace(
            exported, detect=dataclasses.replace(exported.detect, scales=(1.0,), flip=False)
        )

        def ours(config: DetectorConfig) -> Callable[..., None]:
            @torch.no_grad()
            def run(image: torch.Tensor, size: tuple, scale: float) -> None:
                detector.config = config
                detector.detect_view(image, size, scale)

            return run

        @torch.no_grad()
        def theirs(image: torch.Tensor, size: tuple, scale: float) -> None:
            peer([image[:, : size[0], : size[1]]])

        runs = {"exported detector": ours(exported), "exported detector, one view": ours(one_view),
                "torchvision FasterRCNN": theirs}  # fmt: skip
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                seconds[name].append(timed(run, picked, device))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    h, w = picked[0][1]
    click.echo(
        f"{source}; device {device}, {len(picked)} images (first {h}x{w}), {rounds} rounds; "
        "medians:"
    )
    click.echo("| detector | images/s | ms/image |")
    click.echo("|---|---:|---:|")
    for name, s in med.items():
        click.echo(f"| {name} | {1 / s:.1f} | {s * 1000:.1f} |")
    for name in ("exported detector", "exported detector, one view"):
        ratio = med["torchvision FasterRCNN"] / med[name]
        click.echo(f"{name} / torchvision images/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
