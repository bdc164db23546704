"""How much faster do steps 3 and 4 train from cached features than steps 1 and 2 from images?

Times training iterations (forward, backward, SGD step) of the four steps' losses on the
artifacts of a finished `dvc repro`, interleaved round by round in one process so that machine
noise hits all four alike, and prints the median seconds per iteration and the ratios.

    python bench/caching_speedup.py [--rounds 5] [--iterations 10]
"""

from __future__ import annotations

import statistics
import time

import click
import numpy as np
import torch
from torch import nn

from pipeline import layout
from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposal_targets import ProposalTargets
from pipeline.config import load_params
from pipeline.data.records import TRAIN
from pipeline.data.views import ViewSet, view_rows
from pipeline.devices import resolve_device
from pipeline.model.backbones import Backbone
from pipeline.model.roi_head import build_head
from pipeline.model.rpn import build_rpn
from pipeline.training.backbone_features import BackboneFeatures, initial_backbone
from pipeline.training.fast_rcnn_objective import FastRCNNLoss
from pipeline.training.loop import batch_at
from pipeline.training.rpn_objective import RPNLoss


@click.command()
@click.option("--rounds", default=5, show_default=True)
@click.option("--iterations", default=10, show_default=True, help="Iterations per round.")
def main(rounds: int, iterations: int) -> None:
    params = load_params()
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(layout.PREPARE.out)
    anchor_targets = AnchorTargets(layout.ANCHOR_TARGETS.out)
    cache = Features(layout.STEP3_FEATURES.out)
    views = ViewSet(prepared, cache.views)
    train_views = views.of_split(TRAIN)  # RPN steps: views of the anchor targets and the cache
    classes = len(prepared.classes)

    def image_backbone() -> Backbone:
        return initial_backbone(params)[0].to(device)

    backbone1, backbone2 = image_backbone(), image_backbone()
    rpn1 = build_rpn(params.anchors, params.rpn, backbone1.out_channels).to(device)
    rpn3 = build_rpn(params.anchors, params.rpn, backbone1.out_channels).to(device)
    head2 = build_head(params.backbone, params.roi, backbone2.out_channels, classes, 16)
    head4 = build_head(params.backbone, params.roi, backbone2.out_channels, classes, 16)
    step1_targets = ProposalTargets(
        layout.STEP1_PROPOSAL_TARGETS.out, layout.STEP1_PROPOSAL_TARGETS.name
    )
    step4_targets = ProposalTargets(
        layout.STEP4_PROPOSAL_TARGETS.out, layout.STEP4_PROPOSAL_TARGETS.name
    )
    step4_rows = view_rows(step4_targets.views, cache.views, str(cache.path))
    runs = {
        "step1 (RPN + backbone, images)": (
            nn.ModuleList([backbone1, rpn1]),
            RPNLoss(rpn1, BackboneFeatures(backbone1, views, device), anchor_targets, params.rpn),
            params.train.step1.images_per_batch,
            train_views,
        ),
        "step2 (Fast R-CNN + backbone, images)": (
            nn.ModuleList([backbone2, head2.to(device)]),
            FastRCNNLoss(
                head2,
                BackboneFeatures(backbone2, ViewSet(prepared, step1_targets.views), device),
                step1_targets,
                params.roi,
            ),
            params.train.step2.images_per_batch,
            np.arange(len(step1_targets.views)),  # proposal targets hold the train views only
        ),
        "step3 (RPN, cached features)": (
            rpn3,
            RPNLoss(rpn3, CachedFeatures(cache, device), anchor_targets, params.rpn),
            params.train.step3.images_per_batch,
            train_views,
        ),
        "step4 (Fast R-CNN, cached features)": (
            head4.to(device),
            FastRCNNLoss(
                head4, CachedFeatures(cache, device, step4_rows), step4_targets, params.roi
            ),
            params.train.step4.images_per_batch,
            np.arange(len(step4_targets.views)),
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    per_image: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds):
        for name, (module, loss_fn, batch_size, rows) in runs.items():
            optimizer = torch.optim.SGD(
                [p for p in module.parameters() if p.requires_grad], lr=1e-4, momentum=0.9
            )
            generator = torch.Generator().manual_seed(round_)
            start = time.perf_counter()
            for i in range(iterations):
                batch = batch_at(round_ * iterations + i, batch_size, rows, seed=0)
                total = sum(loss_fn(batch, generator).values())
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = (time.perf_counter() - start) / iterations
            seconds[name].append(elapsed)
            per_image[name].append(elapsed / batch_size)

    medians = {name: statistics.median(v) for name, v in per_image.items()}
    click.echo(f"device {device}, {rounds} rounds x {iterations} iterations, medians:")
    for name in runs:
        click.echo(
            f"  {name:40s} {statistics.median(seconds[name]) * 1000:8.1f} ms/iteration "
            f"{medians[name] * 1000:8.1f} ms/image"
        )
    names = list(runs)
    click.echo(f"RPN per image:       step1 / step3 = {medians[names[0]] / medians[names[2]]:.1f}x")
    click.echo(
        f"Fast R-CNN per image: step2 / step4 = {medians[names[1]] / medians[names[3]]:.1f}x"
    )


if __name__ == "__main__":
    main()
