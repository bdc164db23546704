"""step1_rpn: train the RPN and the backbone from the initial weights (paper section 3.2,
step 1 of the four-step alternating training)."""

from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewImages, ViewSet
from pipeline.config import Params
from pipeline.data.records import TRAIN
from pipeline.devices import resolve_device
from pipeline.layout import ANCHOR_TARGETS, PREPARE, STEP1_RPN
from pipeline.model.rpn import build_rpn
from pipeline.runner import stage_command
from pipeline.training.backbone_features import BackboneFeatures, initial_backbone
from pipeline.training.rpn_objective import AnchorTargetBatch, RPNLoss
from pipeline.training.train_and_save import StageTraining, seeded_init, train_and_save


def training(params: Params) -> StageTraining:
    """Step 1: train the RPN and the backbone from the initial weights."""
    device = resolve_device(params.train.device)
    inputs = StageInputs(STEP1_RPN, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    targets = inputs.open(ANCHOR_TARGETS, AnchorTargets.of)
    views = ViewSet(prepared, targets.views)
    backbone = initial_backbone(inputs)
    seeded_init(params, STEP1_RPN)
    rpn = build_rpn(params.anchors, params.rpn, backbone.out_channels)
    features = BackboneFeatures(backbone, device, params.train.channels_last)
    # Its targets still stream from disk, so `train.workers` readers keep their use; forked,
    # they share the images in memory.
    prepared.keep_images_in_memory(params.train.images_in_memory)
    return StageTraining(
        inputs,
        "step1",
        {"backbone": backbone, "rpn": rpn},
        AnchorTargetBatch(ViewImages(views), targets),
        RPNLoss(rpn, features, params.rpn),
        views.of_split(TRAIN),
        device=device,
    )


def run(params: Params) -> dict:
    """Step 1: train the RPN and the backbone from the initial weights."""
    return train_and_save(training(params), params)


main = stage_command(STEP1_RPN, run, ranks=True)

if __name__ == "__main__":
    main()
