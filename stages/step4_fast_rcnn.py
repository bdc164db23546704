"""step4_fast_rcnn: fine-tune only the Fast R-CNN-specific layers of the step-2 detector, from
the cached features and the step-3 proposals (paper section 3.2, step 4)."""

import dataclasses

import numpy as np

from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.memory import holds_in_memory
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposal_targets import ProposalTargets
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import view_rows
from pipeline.config import Params
from pipeline.data.feeding import on_device
from pipeline.devices import resolve_device
from pipeline.layout import (
    PREPARE,
    STEP2_FAST_RCNN,
    STEP3_FEATURES,
    STEP4_FAST_RCNN,
    STEP4_PROPOSAL_TARGETS,
)
from pipeline.model.roi_head import build_head
from pipeline.runner import stage_command
from pipeline.training.fast_rcnn_objective import FastRCNNLoss, ProposalTargetBatch
from pipeline.training.train_and_save import StageTraining, train_and_save

TARGET_ARRAYS = ("boxes", "iou", "labels", "deltas")


def training(params: Params) -> StageTraining:
    """Step 4: train only the Fast R-CNN-specific layers, from the cached features."""
    device = resolve_device(params.train.device)
    inputs = StageInputs(STEP4_FAST_RCNN, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    detector = inputs.model(STEP2_FAST_RCNN)
    cache = inputs.open(STEP3_FEATURES, Features.of)  # must hold this detector's features
    targets = inputs.open(STEP4_PROPOSAL_TARGETS, ProposalTargets.of)
    rows = view_rows(targets.views, cache.views, str(cache.path))
    in_memory = holds_in_memory(
        params.train.features_in_memory,
        "train.features_in_memory",
        [cache.features, *(getattr(targets, name) for name in TARGET_ARRAYS)],
    )
    if in_memory:
        cache.hold_in_memory("features")
        targets.hold_in_memory(*TARGET_ARRAYS)
    head = build_head(
        dataclasses.replace(params.backbone, weights=None),
        params.roi,
        cache.channels,
        len(prepared.classes),
        params.anchors.stride,
    )
    # The paper fine-tunes the head the detector already has (step 2), not a fresh one.
    head.load_state_dict(detector["parts"]["head"])
    return StageTraining(
        inputs,
        "step4",
        {"head": head},
        ProposalTargetBatch(CachedFeatures(cache, rows), targets),
        FastRCNNLoss(head, on_device(device), params.roi),
        np.arange(len(targets.views)),  # proposal targets hold the train views only
        device=device,
        in_memory=in_memory,
    )


def run(params: Params) -> dict:
    """Step 4: train only the Fast R-CNN-specific layers, from the cached features."""
    return train_and_save(training(params), params)


main = stage_command(STEP4_FAST_RCNN, run, ranks=True)

if __name__ == "__main__":
    main()
