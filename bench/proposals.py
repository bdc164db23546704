"""What the RPN's NMS over a growing prefix (`boxes.nms_best_first`) saves against torchvision's
NMS over every candidate, on the same candidates, and whether they keep the same proposals.

Candidates are real: the train top-N (`proposals.train_pre_nms`, best first) of the exported
RPN on the test images of a finished run (`--model`); without one, of a small untrained
project of the profile (bench/project.py), whose scores are far less clustered than a trained
RPN's. Medians over images and rounds, the two interleaved image by image.

    python -m bench.proposals [--profile default|vgg16] [--images 20] [--rounds 3]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click
import torch
from torchvision import ops

from bench.inference import MODEL_OPTION, detector_and_images
from bench.project import PROFILES
from pipeline.model.anchors import image_anchors
from pipeline.model.boxes import nms_best_first
from pipeline.model.faster_rcnn import FasterRCNN
from pipeline.model.rpn import ranked_candidates


@torch.no_grad()
def candidates(
    detector: FasterRCNN, image: torch.Tensor, size: tuple, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The train top-N boxes of one image, best first, and their scores."""
    config = detector.config
    features = detector.backbone(image[None])
    logits, deltas = detector.rpn(features)
    grid = image_anchors(config.anchors, tuple(features.shape[-2:]))
    min_size = config.proposals.min_size * scale
    pre_nms = config.proposals.train_pre_nms
    return ranked_candidates(grid, logits[0], deltas[0], size, min_size, pre_nms)


def timed(run) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    kept = run()
    return time.perf_counter() - start, kept


@click.command()
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="default")
@MODEL_OPTION
@click.option("--images", default=20, show_default=True)
@click.option("--rounds", default=3, show_default=True)
def main(profile: str, model_path: Path, images: int, rounds: int) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        _, source, detector, picked = detector_and_images(profile, model_path, images, Path(tmp))
    detector.eval()
    post, iou = detector.config.proposals.train_post_nms, detector.config.proposals.nms_iou
    inputs = [candidates(detector, *image) for image in picked]
    every, prefix, same = [], [], True
    for _ in range(rounds):
        for boxes, scores in inputs:
            every_s, want = timed(lambda b=boxes, s=scores: ops.nms(b, s, iou)[:post])
            prefix_s, kept = timed(lambda b=boxes: nms_best_first(b, iou, post))
            every.append(every_s)
            prefix.append(prefix_s)
            same = same and torch.equal(want, kept)
    a, b = statistics.median(every) * 1000, statistics.median(prefix) * 1000
    count = int(statistics.median(len(boxes) for boxes, _ in inputs))
    click.echo(f"{source}; {len(inputs)} images, {rounds} rounds; medians, {count} -> {post}:")
    click.echo("| NMS | ms/image |\n|---|---:|")
    click.echo(f"| torchvision's, every candidate | {a:.2f} |")
    click.echo(f"| growing prefix (`nms_best_first`) | {b:.2f} |")
    click.echo(f"speed-up {a / b:.2f}x; the same proposals on every image: {same}")


if __name__ == "__main__":
    main()
