"""step3_rpn: train only the RPN-specific layers, from the cached step-2 features (paper
section 3.2, step 3: the shared convs are fixed from here on)."""

import numpy as np

from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.memory import holds_in_memory
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewSet
from pipeline.config import Params
from pipeline.data.feeding import on_device
from pipeline.data.records import TRAIN
from pipeline.devices import resolve_device
from pipeline.errors import ArtifactError
from pipeline.layout import ANCHOR_TARGETS, PREPARE, STEP3_FEATURES, STEP3_RPN
from pipeline.model.rpn import build_rpn
from pipeline.runner import stage_command
from pipeline.training.rpn_objective import AnchorTargetBatch, RPNLoss
from pipeline.training.train_and_save import StageTraining, seeded_init, train_and_save


def training(params: Params) -> StageTraining:
    """Step 3: train only the RPN-specific layers, from the cached features."""
    device = resolve_device(params.train.device)
    inputs = StageInputs(STEP3_RPN, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    targets = inputs.open(ANCHOR_TARGETS, AnchorTargets.of)
    cache = inputs.open(STEP3_FEATURES, Features.of)
    if not np.array_equal(targets.views, cache.views):
        raise ArtifactError(
            f"{ANCHOR_TARGETS.out}: its views differ from {STEP3_FEATURES.out}'s; run `dvc repro`"
        )
    views = ViewSet(prepared, cache.views)
    in_memory = holds_in_memory(
        params.train.features_in_memory,
        "train.features_in_memory",
        [cache.features, targets.labels, targets.deltas],
    )
    if in_memory:
        cache.hold_in_memory("features")
        targets.hold_in_memory("labels", "deltas")
    seeded_init(params, STEP3_RPN)
    rpn = build_rpn(params.anchors, params.rpn, cache.channels)
    return StageTraining(
        inputs,
        "step3",
        {"rpn": rpn},
        AnchorTargetBatch(CachedFeatures(cache), targets),
        RPNLoss(rpn, on_device(device), params.rpn),
        views.of_split(TRAIN),
        device=device,
        in_memory=in_memory,
    )


def run(params: Params) -> dict:
    """Step 3: train only the RPN-specific layers, from the cached features."""
    return train_and_save(training(params), params)


main = stage_command(STEP3_RPN, run, ranks=True)

if __name__ == "__main__":
    main()
