"""step2_fast_rcnn: train Fast R-CNN and the backbone, from the initial weights (not step
1's), on the step-1 proposals (paper section 3.2, step 2)."""

import numpy as np

from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposal_targets import ProposalTargets
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewImages, ViewSet
from pipeline.config import Params
from pipeline.devices import resolve_device
from pipeline.layout import PREPARE, STEP1_PROPOSAL_TARGETS, STEP2_FAST_RCNN
from pipeline.model.roi_head import build_head
from pipeline.runner import stage_command
from pipeline.training.backbone_features import BackboneFeatures, initial_backbone
from pipeline.training.fast_rcnn_objective import FastRCNNLoss, ProposalTargetBatch
from pipeline.training.train_and_save import StageTraining, seeded_init, train_and_save


def training(params: Params) -> StageTraining:
    """Step 2: train Fast R-CNN and the backbone, from the initial weights, on step-1 proposals."""
    device = resolve_device(params.train.device)
    inputs = StageInputs(STEP2_FAST_RCNN, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    targets = inputs.open(STEP1_PROPOSAL_TARGETS, ProposalTargets.of)
    views = ViewSet(prepared, targets.views)
    backbone = initial_backbone(inputs)
    seeded_init(params, STEP2_FAST_RCNN)
    head = build_head(
        params.backbone, params.roi, backbone.out_channels, len(prepared.classes), backbone.stride
    )
    features = BackboneFeatures(backbone, device, params.train.channels_last)
    # Its targets still stream from disk, so `train.workers` readers keep their use; forked,
    # they share the images in memory.
    prepared.keep_images_in_memory(params.train.images_in_memory)
    return StageTraining(
        inputs,
        "step2",
        {"backbone": backbone, "head": head},
        ProposalTargetBatch(ViewImages(views), targets),
        FastRCNNLoss(head, features, params.roi),
        np.arange(len(views)),  # proposal targets hold the train views only
        device=device,
    )


def run(params: Params) -> dict:
    """Step 2: train Fast R-CNN and the backbone, from the initial weights, on step-1 proposals."""
    return train_and_save(training(params), params)


main = stage_command(STEP2_FAST_RCNN, run, ranks=True)

if __name__ == "__main__":
    main()
