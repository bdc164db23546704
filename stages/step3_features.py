"""step3_features: cache the features of the step-2 backbone, frozen from here on, for every
view (paper section 3.2, step 3): steps 3 and 4 train from this cache, never from images."""

from pipeline.artifacts.features import write_features
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewSet, make_views
from pipeline.config import Params
from pipeline.devices import resolve_device
from pipeline.layout import PREPARE, STEP2_FAST_RCNN, STEP3_FEATURES
from pipeline.model.backbones import saved_backbone
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 3: cache the features of the step-2 backbone, frozen from here on."""
    device = resolve_device(params.train.device)
    inputs = StageInputs(STEP3_FEATURES, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    saved = inputs.model(STEP2_FAST_RCNN)
    backbone = saved_backbone(params.backbone, params.anchors.stride, saved["parts"]["backbone"])
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    return write_features(
        STEP3_FEATURES.out,
        inputs.provenance(),
        backbone,
        views,
        device,
        params.store.shard_size,
        params.store.feature_dtype,
        params.train.workers,
    )


main = stage_command(STEP3_FEATURES, run, ranks=True)

if __name__ == "__main__":
    main()
