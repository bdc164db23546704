"""export: put the step-2 backbone, the step-3 RPN and the step-4 head into one shared-conv
detector, with the config inference needs."""

from pipeline.artifacts.exported_model import save_detector
from pipeline.artifacts.features import Features
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.layout import (
    EXPORT,
    PREPARE,
    STEP2_FAST_RCNN,
    STEP3_FEATURES,
    STEP3_RPN,
    STEP4_FAST_RCNN,
)
from pipeline.model.faster_rcnn import DetectorConfig
from pipeline.runner import stage_command


def run(params: Params) -> None:
    """Put the step-2 backbone, step-3 RPN and step-4 head into one detector."""
    # Every part must have been made with the params the detector's config records, and the
    # RPN and head trained on the features of this backbone, not another's.
    inputs = StageInputs(EXPORT, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    detector = inputs.model(STEP2_FAST_RCNN)
    inputs.open(STEP3_FEATURES, Features.of)
    rpn = inputs.model(STEP3_RPN)
    head = inputs.model(STEP4_FAST_RCNN)
    config = DetectorConfig(
        backbone=params.backbone,
        anchors=params.anchors,
        rpn=params.rpn,
        proposals=params.proposals,
        roi=params.roi,
        detect=params.detect,
        classes=tuple(prepared.classes),
        min_size=params.data.min_size,
        max_size=params.data.max_size,
    )
    parts = {
        "backbone": detector["parts"]["backbone"],
        "rpn": rpn["parts"]["rpn"],
        "head": head["parts"]["head"],
    }
    save_detector(EXPORT.out, inputs.provenance(), config, parts)


main = stage_command(EXPORT, run)

if __name__ == "__main__":
    main()
