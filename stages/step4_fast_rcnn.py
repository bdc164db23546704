"""step4_fast_rcnn: fine-tune only the Fast R-CNN-specific layers of the step-2 detector, from
the cached features and the step-3 proposals (paper section 3.2, step 4)."""

import dataclasses

import numpy as np

from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposal_targets import ProposalTargets
from pipeline.artifacts.store import expect_params, keep_in_memory
from pipeline.config import BACKBONE_KEYS, Params, to_dict
from pipeline.data.feeding import on_device
from pipeline.data.views import view_rows
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


def training(params: Params) -> StageTraining:
    """Step 4: train only the Fast R-CNN-specific layers, from the cached features."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARE.out)
    # The cache holds this detector's backbone features: it must be the backbone of params.
    detector = load_model(
        STEP2_FAST_RCNN.out, STEP2_FAST_RCNN.name, expect_params(params, *BACKBONE_KEYS, "roi")
    )
    cache = Features(
        STEP3_FEATURES.out,
        expect={
            **expect_params(params, "augment"),
            "inputs.prepared": prepared.fingerprint,
            f"inputs.{STEP2_FAST_RCNN.name}": detector["fingerprint"],
        },
    )
    targets = ProposalTargets(
        STEP4_PROPOSAL_TARGETS.out,
        STEP4_PROPOSAL_TARGETS.name,
        expect={**expect_params(params, "roi.box_stds"), "inputs.prepared": prepared.fingerprint},
    )
    rows = view_rows(targets.views, cache.views, str(cache.path))
    in_memory = keep_in_memory(
        params.train.features_in_memory,
        "train.features_in_memory",
        [(cache, "features"), *((targets, a) for a in ("boxes", "iou", "labels", "deltas"))],
    )
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
        STEP4_FAST_RCNN,
        "step4",
        {"head": head},
        ProposalTargetBatch(CachedFeatures(cache, rows), targets),
        FastRCNNLoss(head, on_device(device), params.roi),
        np.arange(len(targets.views)),  # proposal targets hold the train views only
        sections={"roi": to_dict(params.roi)},
        inputs={
            STEP3_FEATURES.name: cache.fingerprint,
            STEP4_PROPOSAL_TARGETS.name: targets.fingerprint,
            STEP2_FAST_RCNN.name: detector["fingerprint"],
        },
        device=device,
        in_memory=in_memory,
    )


def run(params: Params) -> dict:
    """Step 4: train only the Fast R-CNN-specific layers, from the cached features."""
    return train_and_save(training(params), params)


main = stage_command(STEP4_FAST_RCNN, run, ranks=True)

if __name__ == "__main__":
    main()
