"""The data stages: generate, prepare and anchor_targets, one function per DVC stage."""

from __future__ import annotations

from pipeline.anchor_target_artifact import write_anchor_targets
from pipeline.config import Params
from pipeline.datasets.synthetic import generate_synthetic
from pipeline.paths import ANCHOR_TARGETS, PREPARED, SYNTHETIC
from pipeline.prepared import PreparedDataset, prepare_dataset


def generate(params: Params) -> dict:
    """Write the seeded synthetic dataset in PASCAL VOC layout."""
    return generate_synthetic(SYNTHETIC, params.synthetic)


def prepare(params: Params) -> dict:
    """Resize the dataset named by `data` and write it as the prepared Zarr artifact."""
    return prepare_dataset(params.data, params.store, PREPARED)


def anchor_targets(params: Params) -> dict:
    """Label every anchor of every view and write the anchor-target Zarr artifact."""
    return write_anchor_targets(
        PreparedDataset(PREPARED),
        params.augment.flip,
        params.anchors,
        params.anchor_targets,
        params.store,
        ANCHOR_TARGETS,
    )
