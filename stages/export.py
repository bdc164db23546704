"""export: put the step-2 backbone, the step-3 RPN and the step-4 head into one shared-conv
detector, with the config inference needs."""

from pipeline.artifacts.exported_model import save_detector
from pipeline.artifacts.features import Features
from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.store import Provenance, expect_params
from pipeline.config import BACKBONE_KEYS, Params, to_dict
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
    # Every part must have been made with the params the detector's config will record.
    prepared = PreparedDataset(PREPARE.out, expect_params(params, "data.min_size", "data.max_size"))
    detector = load_model(
        STEP2_FAST_RCNN.out, STEP2_FAST_RCNN.name, expect_params(params, *BACKBONE_KEYS, "roi")
    )
    rpn = load_model(STEP3_RPN.out, STEP3_RPN.name, expect_params(params, "rpn", "anchors"))
    head = load_model(STEP4_FAST_RCNN.out, STEP4_FAST_RCNN.name, expect_params(params, "roi"))
    Features(  # the RPN and head were trained on this backbone's features, not another's
        STEP3_FEATURES.out,
        expect={
            **expect_params(params, "augment"),
            f"inputs.{STEP2_FAST_RCNN.name}": detector["fingerprint"],
        },
    )
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
    provenance = Provenance.of_stage(
        EXPORT,
        params={"detect": to_dict(params.detect)},
        inputs={
            STEP2_FAST_RCNN.name: detector["fingerprint"],
            STEP3_RPN.name: rpn["fingerprint"],
            STEP4_FAST_RCNN.name: head["fingerprint"],
        },
    )
    parts = {
        "backbone": detector["parts"]["backbone"],
        "rpn": rpn["parts"]["rpn"],
        "head": head["parts"]["head"],
    }
    save_detector(EXPORT.out, provenance, config, parts)


main = stage_command(EXPORT, run)

if __name__ == "__main__":
    main()
