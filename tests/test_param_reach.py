"""Every params key a stage declares in dvc.yaml reaches what the stage computes.

For each declared key, each stage that declares it is rerun on the tiny profile's finished
pipeline with only that key changed. Either what the stage computes moves (its arrays, weights
or detections: never just the provenance it records), or the stage refuses its inputs because
they were made with the old value; then the stages from the first that declares the key on are
rerun with it, and the refusing stage's result must move. A key that is declared but ignored,
or read from the wrong place, fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import zarr
from PIL import Image

from bench.project import inside
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.config import parse_params
from pipeline.data.synthetic import SYNTHETIC_CLASSES
from pipeline.errors import ArtifactError
from pipeline.layout import STAGES
from tests.conftest import (
    TINY,
    raw_params,
    tiny_images,
    vgg16_weights_file,
    with_changes,
    write_coco,
    write_voc,
)
from tests.stage_runs import (
    PIPELINE,
    computed,
    copy_project,
    declared_params,
    run_stages,
    set_key,
    stages_between,
)

pytestmark = pytest.mark.slow

STEPS = ("pretrain", "step1", "step2", "step3", "step4")
SCHEDULE = {"iterations": 9, "images_per_batch": 1, "lr": 0.02, "lr_steps": [5],
            "lr_gamma": 0.5, "warmup": 0}  # fmt: skip

# Written by the `reference` fixture outside the project folders, which are copied per stage.
WEIGHTS_FILE = "(the reference fixture's VGG16 file)"

# A valid other value of every declared key, chosen so that the tiny run must compute
# something else with it (e.g. NMS thresholds and sampling fractions far enough apart that
# boxes and samples exist between them).
ALTERNATIVES: dict[str, Any] = {
    "synthetic.seed": 1, "synthetic.num_trainval": 5, "synthetic.num_test": 2,
    "synthetic.min_side": 70, "synthetic.max_side": 90, "synthetic.max_objects": 2,
    "synthetic.min_object": 10, "synthetic.clutter": 0, "synthetic.classes": ["circle", "star"],
    "data.source": "coco", "data.root": "data/raw/variant",
    "data.classes": list(reversed(SYNTHETIC_CLASSES)), "data.train_split": "trainval_head",
    "data.test_split": "test_head", "data.coco_annotations": "annotations/{split}_few.json",
    "data.coco_images": "images_alt", "data.min_size": 72, "data.max_size": 88,
    "store.shard_size": 2, "store.feature_dtype": "float16",
    "anchors.stride": 16, "anchors.ratios": [1.0], "anchors.scales": [1, 2],
    "anchor_targets.fg_iou": 0.6, "anchor_targets.bg_iou": 0.2,
    "anchor_targets.allowed_border": 8,
    "augment.flip": False,
    "backbone.name": "vgg16", "backbone.weights": WEIGHTS_FILE, "backbone.freeze_below": "conv2_1",
    "backbone.width": 16,
    "pretrain.stride": 8, "pretrain.crop_size": 48, "pretrain.background_crops": 2,
    "pretrain.background_iou": 0.2, "pretrain.jitter": 0.0, "pretrain.zoom_out": 2.0,
    "train.seed": 1, "train.device": "auto", "train.amp": "bf16", "train.channels_last": True,
    "train.deterministic": True, "train.momentum": 0.8, "train.weight_decay": 0.001,
    **{f"train.{step}.{k}": v for step in STEPS for k, v in SCHEDULE.items()},
    "rpn.channels": 16, "rpn.batch_size": 32, "rpn.fg_fraction": 0.05, "rpn.box_sigma": 1.0,
    "proposals.nms_iou": 0.5, "proposals.min_size": 16, "proposals.train_pre_nms": 20,
    "proposals.train_post_nms": 50, "proposals.test_pre_nms": 10,
    "proposals.test_post_nms": 20,
    "roi.box_stds": [0.2, 0.2, 0.4, 0.4], "roi.pool": "roi_pool", "roi.size": 5, "roi.fc_dim": 32,
    "roi.dropout": 0.5, "roi.batch_size": 16, "roi.fg_fraction": 0.05, "roi.fg_iou": 0.6,
    "roi.bg_iou_low": 0.1, "roi.bg_iou_high": 0.4, "roi.box_sigma": 3.0,
    "detect.score_thresh": 0.3, "detect.nms_iou": 0.5, "detect.max_detections": 5,
    "detect.box_vote_iou": None, "detect.refine_boxes": False, "detect.scales": [1.0],
    "detect.flip": False, "detect.enlarged_max_box": 8,
}  # fmt: skip

# Keys that matter only beside others: the run they are changed in sets these too (the
# datasets named are written by the `reference` fixture).
CONTEXT: dict[str, dict[str, Any]] = {
    "data.source": {"data.root": "data/raw/both", "data.source": "voc",
                    "data.classes": ["cat", "dog"]},
    "data.coco_annotations": {"data.root": "data/raw/both", "data.source": "coco"},
    "data.coco_images": {"data.root": "data/raw/both", "data.source": "coco"},
    "data.train_split": {"data.root": "data/raw/variant"},
    "data.test_split": {"data.root": "data/raw/variant"},
    "backbone.weights": {"backbone.name": "vgg16"},
    "detect.enlarged_max_box": {"detect.scales": [1.0, 1.5]},
}  # fmt: skip

# Keys checked at fewer stages than declare them, and why.
CHECKED_AT = {
    # Only pretrain reads the file; the stages after it read the backbone pretrain wrote, and
    # reusing the file's fc6/fc7 needs the paper's 4096-wide head (test_backbones covers it).
    "backbone.weights": ["pretrain"],
}

# Keys a stage declares that cannot change what it computes, and why it declares them.
DECLARED_UNCHANGED = {
    **{(f"proposals.train_{n}", "export"): "the detector proposes with the test top-N; the "
       "config it stores holds the whole proposals section" for n in ("pre_nms", "post_nms")},
}  # fmt: skip

# Declared keys that change no result on this machine, and why.
UNCHANGED_HERE = {
    "train.device": "`auto` is the CPU on a machine without CUDA",
    "train.deterministic": "CPU kernels are deterministic either way",
}
if torch.cuda.is_available():
    UNCHANGED_HERE.pop("train.device")


def leaf_keys(raw: dict, key: str) -> list[str]:
    value = raw
    for part in key.split("."):
        value = value[part]
    if isinstance(value, dict):
        return [leaf for k in value for leaf in leaf_keys(raw, f"{key}.{k}")]
    return [key]


def declared_by() -> dict[str, list[str]]:
    """Each leaf params key and the stages that declare it, in pipeline order."""
    raw = raw_params()
    stages: dict[str, list[str]] = {}
    for stage, keys in declared_params().items():
        for key in keys:
            for leaf in leaf_keys(raw, key):
                stages.setdefault(leaf, []).append(stage)
    return stages


DECLARED_BY = declared_by()


def test_every_declared_key_has_an_alternative():
    assert set(DECLARED_BY) == set(ALTERNATIVES)
    assert set(CONTEXT) | set(UNCHANGED_HERE) | set(CHECKED_AT) <= set(DECLARED_BY)
    assert all(stage in DECLARED_BY[key] for key, stage in DECLARED_UNCHANGED)
    assert all(set(CHECKED_AT[key]) <= set(DECLARED_BY[key]) for key in CHECKED_AT)


def write_datasets(root: Path) -> None:
    """The folders the data keys are changed to: a copy of the synthetic set with other split
    files, and one folder holding one small dataset in both VOC and COCO layout."""
    synthetic = root / "data/raw/synthetic"
    variant = shutil.copytree(synthetic, root / "data/raw/variant")
    splits = variant / "ImageSets/Main"
    for name in ("trainval", "test"):
        ids = (splits / f"{name}.txt").read_text().split()
        (splits / f"{name}_head.txt").write_text("".join(f"{i}\n" for i in ids[:2]))
    ids = (splits / "trainval.txt").read_text().split()
    (splits / "trainval.txt").write_text("".join(f"{i}\n" for i in ids[:-1]))

    both = root / "data/raw/both"
    images = tiny_images(seed=3, count=9)
    while not any(image.objects for image in images[:6]):
        images = tiny_images(seed=4, count=9)
    write_voc(both, {"trainval": images[:6], "test": images[6:]})
    write_coco(both, {"trainval": images[1:6], "test": images[6:]}, ("cat", "dog"))
    for split in ("trainval", "test"):
        document = json.loads((both / f"annotations/{split}.json").read_text())
        document["annotations"] = document["annotations"][1:]
        (both / f"annotations/{split}_few.json").write_text(json.dumps(document))
    altered = sorted(shutil.copytree(both / "images", both / "images_alt").iterdir())[0]
    Image.eval(Image.open(altered).convert("RGB"), lambda v: 255 - v).save(altered)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The whole tiny pipeline, run once, with the datasets the data keys switch to."""
    root = tmp_path_factory.mktemp("reach") / "reference"
    root.mkdir()
    weights = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    vgg16_weights_file(weights)
    ALTERNATIVES["backbone.weights"] = str(weights)
    raw = with_changes(raw_params(), TINY)
    params = parse_params(raw)
    run_stages(root, params, STAGES[:1])
    write_datasets(root)
    run_stages(root, params, STAGES[1:])
    return root, raw


def with_keys(raw: dict, values: dict[str, Any]) -> dict:
    for key, value in values.items():
        raw = set_key(raw, key, value)
    return raw


def moved(key: str, stage: str, before: dict, after: dict) -> str | None:
    """Why `stage`'s result is wrong after changing `key`, or None."""
    if key in UNCHANGED_HERE or (key, stage) in DECLARED_UNCHANGED:
        return None if before == after else f"{stage}: {key} changed its result"
    return f"{stage}: {key} -> {ALTERNATIVES[key]!r} changed nothing" if before == after else None


@pytest.fixture
def scratch(tmp_path):
    """The test's copies of the pipeline, removed after it: each holds the whole tiny run."""
    yield tmp_path
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("key", sorted(DECLARED_BY))
def test_each_declared_key_reaches_what_its_stages_compute(key, reference, scratch):
    source, raw = reference
    base = with_keys(raw, CONTEXT.get(key, {}))
    changed = parse_params(set_key(base, key, ALTERNATIVES[key]))
    stages = [PIPELINE[name] for name in CHECKED_AT.get(key, DECLARED_BY[key])]
    if key in CONTEXT:  # the reference in the key's context: its stages rerun with it
        source = copy_project(source, scratch / "context")
        run_stages(source, parse_params(base), stages_between(stages[0], stages[-1]))
    failures, refused = [], []
    for stage in stages:
        root = copy_project(source, scratch / stage.name)
        try:
            run_stages(root, changed, [stage])
        except ArtifactError:  # its inputs were made with the old value: rerun them below
            refused.append(stage)
            continue
        failures.append(moved(key, stage.name, computed(source, stage), computed(root, stage)))
    if refused:
        root = copy_project(source, scratch / "rerun")
        run_stages(root, changed, stages_between(stages[0], refused[-1]))
        for stage in refused:
            failures.append(moved(key, stage.name, computed(source, stage), computed(root, stage)))
    problems = [f for f in failures if f]
    assert not problems, "; ".join(problems)


class Killed(Exception):
    """Stands in for a kill right after a write marked its first shard done."""


SHARDED = [PIPELINE[name] for name, keys in declared_params().items() if "store.shard_size" in keys]


@pytest.mark.parametrize("stage", SHARDED, ids=[stage.name for stage in SHARDED])
def test_a_killed_write_resumed_with_another_shard_size_ends_in_the_new_layout(
    stage, reference, scratch, monkeypatch
):
    """A write killed after its first shard and rerun with `store.shard_size` changed must not
    resume the old layout (the reference's shard size is 4; the rerun's 2)."""
    source, raw = reference
    root = copy_project(source, scratch / "project")
    shutil.rmtree(root / stage.out)
    mark = ArtifactWriter._mark_shard_done

    def mark_then_die(self, array, shard):
        mark(self, array, shard)
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(ArtifactWriter, "_mark_shard_done", mark_then_die)
        with pytest.raises(Killed):
            run_stages(root, parse_params(raw), [stage])
    run_stages(root, parse_params(set_key(raw, "store.shard_size", 2)), [stage])
    with inside(root):
        group = zarr.open_group(stage.out, mode="r")
        sharded = [group[name] for name in group.array_keys() if group[name].shards]
        assert sharded and all(array.shards[0] == 2 for array in sharded)
