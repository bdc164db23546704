"""Randomness that must vary does: every iteration and every view of a batch draws from its own
seed, anchor and RoI samples and dropout masks differ between iterations, and the data order
differs between epochs. (Determinism alone would pass with one seed for every iteration.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from pipeline.model.roi_head import build_head
from pipeline.model.rpn import build_rpn
from pipeline.training.fast_rcnn_objective import FastRCNNLoss
from pipeline.training.loop import TrainingRun, batch_at, train
from pipeline.training.rpn_objective import RPNLoss
from tests.conftest import tiny_params

CPU = torch.device("cpu")


def recording_run(work, views: int, batch: int, iterations: int) -> tuple[TrainingRun, list]:
    """A run whose loss records, per call, the views it got, their seeds and a draw from
    torch's global generator (what dropout and the samplers use)."""
    calls: list[tuple[list[int], list[int], float]] = []
    module = nn.ModuleDict({"layer": nn.Linear(2, 1)})

    def loss_fn(inputs, seeds):
        calls.append(([int(i) for i in inputs], list(seeds), float(torch.rand(()))))
        return {"loss": module["layer"].weight.square().sum()}

    p = tiny_params()
    step = dataclasses.replace(
        p.train.step1, iterations=iterations, images_per_batch=batch, lr_steps=(), warmup=0
    )
    common = dataclasses.replace(p.train, checkpoint_every=1000, log_every=1000)
    run = TrainingRun(
        "a_stage", module, lambda b: b[0], loss_fn, np.arange(views), step, common, work,
        "fingerprint", "train.step1",
    )  # fmt: skip
    return run, calls


def test_every_iteration_and_every_view_of_a_batch_draws_its_own_randomness(tmp_path):
    run, calls = recording_run(tmp_path / "work", views=6, batch=3, iterations=8)
    train(run, CPU)
    seeds = [s for _, view_seeds, _ in calls for s in view_seeds]
    assert len(seeds) == 8 * 3 and len(set(seeds)) == len(seeds)
    draws = [draw for _, _, draw in calls]
    assert len(set(draws)) == len(draws)


def test_the_data_order_differs_between_epochs_and_covers_every_view_in_each(tmp_path):
    run, calls = recording_run(tmp_path / "work", views=6, batch=3, iterations=6)
    train(run, CPU)
    seen = [v for views, _, _ in calls for v in views]
    epochs = [seen[e * 6 : (e + 1) * 6] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(6))
    assert len({tuple(e) for e in epochs}) == 3
    assert seen == [v for i in range(6) for v in batch_at(i, 3, np.arange(6), seed=0)]
    other_seed = [v for i in range(2) for v in batch_at(i, 3, np.arange(6), seed=1)]
    assert other_seed != seen[:6]


def rpn_view_inputs(p, channels: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One view's cached features and anchor targets: many foreground and background anchors
    (more than a mini-batch takes), random regression targets."""
    generator = torch.Generator().manual_seed(0)
    h, w, a = 6, 7, p.anchors.num_anchors
    labels = torch.randint(-1, 2, (1, h, w, a), generator=generator).to(torch.int8)
    deltas = torch.randn(1, h, w, a, 4, generator=generator)
    return torch.randn(1, channels, h, w, generator=generator), labels, deltas


def test_the_rpn_loss_of_a_view_depends_on_its_seed_alone():
    """Which anchors a view's loss samples is drawn from the view's seed: the same seed, the
    same loss; another seed, other anchors and another loss."""
    p = tiny_params()
    torch.manual_seed(0)
    loss = RPNLoss(build_rpn(p.anchors, p.rpn, 8), lambda x: x, p.rpn)
    inputs = rpn_view_inputs(p)
    first, again, other = (loss.view_loss(inputs, seed) for seed in (1, 1, 2))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert all(not torch.equal(first[k], other[k]) for k in first)


def test_roi_samples_and_dropout_masks_depend_on_the_seed():
    p = tiny_params()
    roi = dataclasses.replace(p.roi, dropout=0.5, batch_size=16, fg_fraction=0.25)
    torch.manual_seed(0)
    head = build_head(p.backbone, roi, 8, 3, p.anchors.stride).train()
    loss = FastRCNNLoss(head, lambda x: x, roi)
    n = 100
    targets = (torch.rand(n, 4) * 10, torch.rand(n), torch.randint(1, 3, (n,)), torch.randn(n, 4))
    samples = [loss.sample(targets, torch.Generator().manual_seed(s))[0] for s in (1, 1, 2)]
    assert torch.equal(samples[0], samples[1]) and not torch.equal(samples[0], samples[2])
    pooled = torch.randn(5, 8, roi.size, roi.size)

    def logits(seed: int) -> torch.Tensor:
        with head.dropout_by_view([5], [seed]):
            return head.classify(pooled)[0]

    assert torch.equal(logits(1), logits(1)) and not torch.equal(logits(1), logits(2))
