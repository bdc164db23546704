"""The whole pipeline against the obvious alternative: torchvision's FasterRCNN with the same
backbone, anchors, image sizes and data, trained end to end for a given wall-clock time, then
measured on the same test split by the same evaluator as the `evaluate` stage.

Two comparisons, by where the peer's backbone starts (`--start`):
- `pretrained`: from the `pretrain` stage's weights (data/pretrain/backbone.pt), as steps 1 and
  2 do. Give it the time the four training steps took (`--seconds`): pretraining is a gift.
- `random`: from the same seeded random init as `pretrain`, what a user without this pipeline
  has. Give it the time pretraining and the four steps took together.

It trains like steps 1 and 2 (one view per iteration, the train views with their flips in the
same seeded order, SGD with momentum 0.9 and weight decay, lr warm-up), with the lr divided by
10 after `--decay-at` of the time: a time budget has no iteration count to place a step at.
Run after `dvc repro`, on an otherwise idle machine.

    python -m bench.peer --seconds 660
    python -m bench.peer --start random --seconds 960
"""

from __future__ import annotations

import json
import time

import click
import numpy as np
import torch
from tqdm import tqdm

from bench.peer_model import torchvision_detector
from pipeline import layout
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewSet, make_views
from pipeline.config import Params, load_params
from pipeline.data.images import normalise
from pipeline.data.records import TEST, TRAIN
from pipeline.devices import resolve_device
from pipeline.evaluation.metrics import (
    ImageDetections,
    coco_ground_truth,
    coco_metrics,
    coco_results,
    voc_metrics,
)
from pipeline.model.backbones import Backbone, build_backbone
from pipeline.training.backbone_features import initial_backbone
from pipeline.training.loop import batch_at
from pipeline.training.train_and_save import seeded_init
from stages.evaluate import ground_truth_of

REPORTED = ("map_voc07", "map_coco", "map_coco_small", "map_coco_medium", "map_coco_large")


@click.command()
@click.option("--seconds", type=float, required=True, help="Training wall-clock budget.")
@click.option("--lr", default=0.01, show_default=True)
@click.option("--warmup", default=100, show_default=True, help="Iterations of lr ramp.")
@click.option("--decay-at", default=0.75, show_default=True, help="Fraction of the time.")
@click.option(
    "--start",
    type=click.Choice(["pretrained", "random"]),
    default="pretrained",
    show_default=True,
    help="The peer's backbone: the pretrain stage's weights, or the initial ones.",
)
def main(seconds: float, lr: float, warmup: int, decay_at: float, start: str) -> None:
    params = load_params()
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(layout.PREPARE.out)
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    train_views = views.of_split(TRAIN)
    backbone = peer_backbone(params, start)
    torch.manual_seed(params.train.seed)
    model = torchvision_detector(params, backbone, len(prepared.classes)).to(device)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        momentum=params.train.momentum,
        weight_decay=params.train.weight_decay,
    )
    model.train()
    began, iteration = time.perf_counter(), 0
    with tqdm(total=int(seconds), unit="s", desc="torchvision FasterRCNN", disable=None) as bar:
        while (elapsed := time.perf_counter() - began) < seconds:
            ramp = min(1.0, 0.1 + 0.9 * iteration / warmup) if warmup else 1.0
            for group in optimizer.param_groups:
                group["lr"] = lr * ramp * (0.1 if elapsed >= decay_at * seconds else 1.0)
            (v,) = batch_at(iteration, 1, train_views, params.train.seed)
            h, w = views.size(v)
            target = {"boxes": views.boxes(v).to(device), "labels": views.labels(v).to(device)}
            losses = model([views.image(v)[:, :h, :w].to(device)], [target])
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            iteration += 1
            bar.update(int(time.perf_counter() - began) - bar.n)
    click.echo(f"torchvision FasterRCNN: {iteration} iterations in {seconds:.0f} s", err=True)

    model.eval()
    images = np.nonzero(prepared.split == TEST)[0]
    found = []
    with torch.no_grad():
        for i in images:
            h, w = (int(x) for x in prepared.image_sizes[i])
            image = normalise(prepared.images[int(i)], h, w, False)[:, :h, :w]
            (out,) = model([image.to(device)])
            found.append(
                ImageDetections(
                    out["boxes"].cpu().numpy() / prepared.scales[i],
                    out["scores"].cpu().numpy(),
                    out["labels"].cpu().numpy(),
                )
            )
    truths = ground_truth_of(prepared, images)
    metrics, _ = voc_metrics(truths, found, prepared.classes)
    sizes = [tuple(int(v) for v in prepared.original_sizes[i]) for i in images]
    ground_truth = coco_ground_truth(truths, sizes, prepared.classes)
    metrics.update(coco_metrics(ground_truth, coco_results(found, prepared.classes)))
    ours = json.loads((layout.EVALUATE.out / "metrics.json").read_text())
    click.echo(
        f"same test split ({len(images)} images); torchvision trained {seconds:.0f} s "
        f"from a {start} backbone:"
    )
    click.echo("| metric | this pipeline | torchvision FasterRCNN | ratio |")
    click.echo("|---|---:|---:|---:|")
    for key in REPORTED:
        ratio = ours[key] / metrics[key] if metrics[key] > 0 else float("inf")
        click.echo(f"| {key} | {ours[key]:.3f} | {metrics[key]:.3f} | {ratio:.2f}x |")


def peer_backbone(params: Params, start: str) -> Backbone:
    """`pretrained`: the backbone steps 1 and 2 start from; `random`: the initial weights
    `pretrain` starts from (the same seeded init; ImageNet's where `backbone.weights` names
    them, as a user without this pipeline would start)."""
    if start == "pretrained":
        return initial_backbone(StageInputs(layout.STEP1_RPN, params))
    seeded_init(params, layout.PRETRAIN)
    backbone = build_backbone(params.backbone, params.anchors.stride)
    backbone.freeze_below(params.backbone.freeze_below)
    return backbone


if __name__ == "__main__":
    main()
