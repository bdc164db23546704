"""A small project of a params profile for the benchmarks: the repository's params.yaml with
the profile's changes, a few synthetic images, and every stage run once with one training
iteration per step, so that each step's real inputs and modules exist at the profile's sizes.
What a benchmark times does not depend on how well the models are trained."""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pipeline import layout
from pipeline.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]
STEPS = ("pretrain", "step1", "step2", "step3", "step4")

# The paper's VGG16 settings (README, "what to expect"), on random weights: no download here.
VGG16 = {
    "backbone": {"name": "vgg16", "weights": None, "freeze_below": "conv3_1"},
    "data": {"min_size": 600, "max_size": 1000},
    "anchors": {"scales": [8, 16, 32]},
    "rpn": {"channels": 512},
    "roi": {"fc_dim": 4096},
    "proposals": {"train_pre_nms": 12000, "train_post_nms": 2000, "test_pre_nms": 6000},
}
PROFILES: dict[str, dict[str, Any]] = {"default": {}, "vgg16": VGG16}


def profile_params(
    profile: str, images: int, device: str = "cpu", amp: str = "fp32", channels_last: bool = False
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
