"""A small project of a params profile for the benchmarks: the repository's params.yaml with
the profile's changes, a few synthetic images, and every stage run once with one training
iteration per step, so that each step's real inputs and modules exist at the profile's sizes.
What a benchmark times does not depend on how well the models are trained."""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from pipeline import layout
from pipeline.config import Params, parse_params
from pipeline.training.loop import autocast
from pipeline.training.train_and_save import StageTraining

REPO = Path(__file__).resolve().parents[1]
STEPS = ("pretrain", "step1", "step2", "step3", "step4")

# The paper's VGG16 settings (README, "what to expect"), on random weights: no download here.
VGG16 = {
    "backbone": {"name": "vgg16", "weights": None, "freeze_below": "conv3_1"},
    "data": {"min_size": 600, "max_size": 1000},
    "anchors": {"stride": 16, "scales": [8, 16, 32]},
    "rpn": {"channels": 512},
    "roi": {"fc_dim": 4096},
    "proposals": {"train_pre_nms": 12000, "train_post_nms": 2000, "test_pre_nms": 6000},
    "detect": {"scales": [1.0], "flip": False},  # one view, as the paper times it
}
PROFILES: dict[str, dict[str, Any]] = {"default": {}, "vgg16": VGG16}


def profile_params(
    profile: str,
    images: int,
    device: str = "cpu",
    amp: str = "fp32",
    channels_last: bool = False,
    in_memory: str = "auto",
) -> Params:
    """params.yaml with `profile`'s changes, `images` train images (and half as many test
    images), one iteration per training step, on `device`."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    changes = copy.deepcopy(PROFILES[profile])
    changes["synthetic"] = {"num_trainval": images, "num_test": max(images // 2, 1)}
    changes["train"] = {
        "device": device,
        "amp": amp,
        "channels_last": channels_last,
        "images_in_memory": in_memory,
        "features_in_memory": in_memory,
        **{s: {**raw["train"][s], "iterations": 1, "lr_steps": [], "warmup": 0} for s in STEPS},
    }
    for section, values in changes.items():
        raw[section].update(values)
    return parse_params(raw)


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[Path]:
    """Run with `folder` as the working directory (stages use paths relative to it)."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)


def build_project(folder: Path, params: Params, until: str = layout.EXPORT.name) -> None:
    """Run every stage up to `until` (included) in `folder`, as `dvc repro` would."""
    with inside(folder):
        for stage in layout.STAGES:
            importlib.import_module(f"stages.{stage.name}").run(params)
            if stage.name == until:
                return


def sgd_stepper(training: StageTraining, amp: str = "fp32") -> Callable[[Any], None]:
    """One SGD iteration of a stage's training on a batch's inputs, read view by view
    (`EachView`; a tiny lr: the benchmarks time iterations, they do not train)."""
    module = nn.ModuleDict(training.parts).to(training.device).train()
    optimizer = torch.optim.SGD(
        [p for p in module.parameters() if p.requires_grad], lr=1e-5, momentum=0.9
    )

    def step(views: list[Any]) -> None:
        with autocast(amp, training.device):
            total = sum(training.loss_fn(views, list(range(len(views)))).values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step
