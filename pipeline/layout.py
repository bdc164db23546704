"""Every stage's name and output, relative to the repository root, exactly as dvc.yaml names
them. Nothing else in the project spells a stage name or a data path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str  # the DVC stage, and `stages/<name>.py`
    out: Path  # its main output

    @property
    def module(self) -> str:
        return f"stages.{self.name}"


DATA = Path("data")
GENERATE = Stage("generate", DATA / "raw" / "synthetic")
PREPARE = Stage("prepare", DATA / "prepared.zarr")
ANCHOR_TARGETS = Stage("anchor_targets", DATA / "anchor_targets.zarr")
PRETRAIN = Stage("pretrain", DATA / "pretrain" / "backbone.pt")
STEP1_RPN = Stage("step1_rpn", DATA / "step1" / "rpn.pt")
STEP1_PROPOSALS = Stage("step1_proposals", DATA / "step1" / "proposals.zarr")
STEP1_TEST_PROPOSALS = Stage("step1_test_proposals", DATA / "step1" / "test_proposals.zarr")
STEP1_PROPOSAL_TARGETS = Stage("step1_proposal_targets", DATA / "step1" / "proposal_targets.zarr")
STEP2_FAST_RCNN = Stage("step2_fast_rcnn", DATA / "step2" / "detector.pt")
STEP3_FEATURES = Stage("step3_features", DATA / "step3" / "features.zarr")
STEP3_RPN = Stage("step3_rpn", DATA / "step3" / "rpn.pt")
STEP3_PROPOSALS = Stage("step3_proposals", DATA / "step3" / "proposals.zarr")
STEP3_TEST_PROPOSALS = Stage("step3_test_proposals", DATA / "step3" / "test_proposals.zarr")
STEP4_PROPOSAL_TARGETS = Stage("step4_proposal_targets", DATA / "step4" / "proposal_targets.zarr")
STEP4_FAST_RCNN = Stage("step4_fast_rcnn", DATA / "step4" / "head.pt")
EXPORT = Stage("export", DATA / "model" / "faster_rcnn.pt")
EVALUATE = Stage("evaluate", DATA / "eval")

# In the order `dvc repro` runs them.
STAGES = (
    GENERATE,
    PREPARE,
    ANCHOR_TARGETS,
    PRETRAIN,
    STEP1_RPN,
    STEP1_PROPOSALS,
    STEP1_TEST_PROPOSALS,
    STEP1_PROPOSAL_TARGETS,
    STEP2_FAST_RCNN,
    STEP3_FEATURES,
    STEP3_RPN,
    STEP3_PROPOSALS,
    STEP3_TEST_PROPOSALS,
    STEP4_PROPOSAL_TARGETS,
    STEP4_FAST_RCNN,
    EXPORT,
    EVALUATE,
)


def live_log(stage: Stage, data: Path = DATA) -> Path:
    """The DVCLive folder a training stage publishes its loss log to (a DVC plots output),
    in `data` or another data folder."""
    out = under(data, stage)
    return out.with_name(f"{out.stem}_live")


CURVES = "plots/images/curves.png"  # a training stage's loss and lr figure, in its live folder


def under(data: Path, stage: Stage) -> Path:
    """`stage`'s output inside another data folder (e.g. a copy of `data/`)."""
    return data / stage.out.relative_to(DATA)
