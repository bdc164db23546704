"""Stages run in-process in a folder of their own, and what each one computed, for tests that
change one thing and ask whether a stage's result moved (or whether it refused its inputs)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import yaml
import zarr

from bench.project import inside
from pipeline import layout
from pipeline.artifacts.model_files import safe_load
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.config import Params
from pipeline.data.records import TEST
from pipeline.layout import Stage
from tests.conftest import REPO, stage_function

PIPELINE = {stage.name: stage for stage in layout.STAGES}


def declared_params() -> dict[str, list[str]]:
    """Each stage's `params:` list in dvc.yaml."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: list(spec.get("params") or []) for name, spec in stages.items()}


def declared_inputs() -> dict[str, list[Stage]]:
    """Each stage's input stages: the stages whose outputs dvc.yaml lists among its deps."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    by_out = {stage.out.as_posix(): stage for stage in layout.STAGES}
    return {
        name: [by_out[dep] for dep in spec["deps"] if dep in by_out]
        for name, spec in stages.items()
    }


def set_key(raw: dict, dotted: str, value: object) -> dict:
    """A deep copy of raw params with one dotted key set."""
    changed = yaml.safe_load(yaml.safe_dump(raw))
    *path, last = dotted.split(".")
    section = changed
    for part in path:
        section = section[part]
    section[last] = value
    return changed


def run_stages(root: Path, params: Params, stages: Iterable[Stage]) -> None:
    with inside(root):
        for stage in stages:
            stage_function(stage.name)(params)


def stages_between(first: Stage, last: Stage) -> list[Stage]:
    names = [s.name for s in layout.STAGES]
    return list(layout.STAGES[names.index(first.name) : names.index(last.name) + 1])


def copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*_live"))
    return target


def computed(root: Path, stage: Stage) -> dict[str, bytes]:
    """What `stage` computed in `root`: its arrays (values, dtype and shard layout) or its
    weights, never the provenance it records; for `export`, what the detector finds on the test
    images; for `evaluate`, its metrics."""
    with inside(root):
        out = stage.out
        if stage == layout.GENERATE:
            return {p.as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        if stage == layout.EVALUATE:
            return {"metrics": (out / "metrics.json").read_bytes()}
        if out.suffix == ".zarr":
            group = zarr.open_group(out, mode="r")
            return {
                name: repr((group[name].dtype, group[name].shards)).encode()
                + np.ascontiguousarray(group[name][...]).tobytes()
                for name in sorted(group.array_keys())
            }
        parts = {
            f"{part}.{name}": tensor.numpy().tobytes()
            for part, state in safe_load(out)["parts"].items()
            for name, tensor in state.items()
        }
        if stage == layout.EXPORT:
            parts.update(test_detections(root))
        return parts


def test_detections(root: Path) -> dict[str, bytes]:
    """The exported detector's detections on every test image of `root`."""
    from pipeline.artifacts.exported_model import load_detector
    from stages.evaluate import detect_prepared

    prepared = PreparedDataset(layout.PREPARE.out)
    images = np.nonzero(prepared.split == TEST)[0]
    found = detect_prepared(load_detector(layout.EXPORT.out), prepared, images)
    return {
        f"detections.{i}": d.boxes.tobytes() + d.scores.tobytes() + d.labels.tobytes()
        for i, d in zip(images, found, strict=True)
    }


test_detections.__test__ = False  # a helper, not a test
