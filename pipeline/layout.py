"""The stage graph, declared once: each stage's name, outputs, the artifacts it reads and the
params keys it reads. dvc.yaml is written from it (`frcnn dvc-yaml --write`), each artifact
records exactly its stage's params (`Provenance.of_stage`), and each input is checked against
the declaration of the stage that wrote it (`pipeline/artifacts/reads.py`). Nothing else in the
project spells a stage name, a data path or a stage's params."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path("data")


@dataclass(frozen=True)
class Stage:
    """One stage: `python -m stages.<name>`, writing `out` from the outputs of `reads` and the
    params keys `params` (dotted: a section or one key of it)."""

    name: str
    out: Path  # its main output (a Zarr group, a model file or a folder)
    reads: tuple[Stage, ...] = ()  # in the order the stage opens them: upstream first
    params: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # deps outside the graph, as dvc.yaml spells them
    live: bool = False  # a training stage: publishes its loss log as DVC plots
    # Where dvc.yaml's entries are not simply `out`: the evaluation's several outputs.
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"stages.{self.name}"


# What every training stage's result depends on besides its own sections and schedule.
TRAINING = (
    "train.seed",
    "train.device",
    "train.amp",
    "train.channels_last",
    "train.deterministic",
    "train.momentum",
    "train.weight_decay",
)
# Keys no stage declares because they change no output: how often training checkpoints and
# logs, how its inputs are read and how many processes run a stage (a stage re-executes
# itself under torchrun).
NO_OUTPUT_CHANGE = (
    "train.checkpoint_every",
    "train.log_every",
    "train.workers",
    "train.features_in_memory",
    "train.images_in_memory",
    "dist",
)
# Keys that change how an artifact is stored and none of its values: a reader does not refuse
# an input stored another way.
LAYOUT_ONLY = frozenset({"store.shard_size"})

GENERATE = Stage("generate", DATA / "raw" / "synthetic", params=("synthetic",))
PREPARE = Stage(
    "prepare",
    DATA / "prepared.zarr",
    params=("data", "store.shard_size"),
    sources=("${data.root}",),
)
ANCHOR_TARGETS = Stage(
    "anchor_targets",
    DATA / "anchor_targets.zarr",
    reads=(PREPARE,),
    params=("anchors", "anchor_targets", "augment", "store.shard_size"),
)
PRETRAIN = Stage(
    "pretrain",
    DATA / "pretrain" / "backbone.pt",
    reads=(PREPARE,),
    params=(
        "backbone.name",
        "backbone.weights",
        "backbone.width",
        "pretrain",
        "augment",
        *TRAINING,
        "train.pretrain",
    ),
    live=True,
)
STEP1_RPN = Stage(
    "step1_rpn",
    DATA / "step1" / "rpn.pt",
    reads=(PREPARE, ANCHOR_TARGETS, PRETRAIN),
    params=("backbone", "rpn", "anchors", "augment", *TRAINING, "train.step1"),
    live=True,
)
# What proposing reads, and the top-N of the train and the test views.
_PROPOSING = ("rpn", "anchors", "proposals.nms_iou", "proposals.min_size")
_TRAIN_TOP_N = ("proposals.train_pre_nms", "proposals.train_post_nms", "augment")
_TEST_TOP_N = ("proposals.test_pre_nms", "proposals.test_post_nms")
_PROPOSED = ("train.device", "store.shard_size")
STEP1_PROPOSALS = Stage(
    "step1_proposals",
    DATA / "step1" / "proposals.zarr",
    reads=(PREPARE, STEP1_RPN),
    params=("backbone", *_PROPOSING, *_TRAIN_TOP_N, *_PROPOSED),
)
STEP1_TEST_PROPOSALS = Stage(
    "step1_test_proposals",
    DATA / "step1" / "test_proposals.zarr",
    reads=(PREPARE, STEP1_RPN),
    params=("backbone", *_PROPOSING, *_TEST_TOP_N, *_PROPOSED),
)
STEP1_PROPOSAL_TARGETS = Stage(
    "step1_proposal_targets",
    DATA / "step1" / "proposal_targets.zarr",
    reads=(PREPARE, STEP1_PROPOSALS),
    params=("roi.box_stds", "store.shard_size"),
)
STEP2_FAST_RCNN = Stage(
    "step2_fast_rcnn",
    DATA / "step2" / "detector.pt",
    reads=(PREPARE, STEP1_PROPOSAL_TARGETS, PRETRAIN),
    params=("backbone", "anchors.stride", "roi", *TRAINING, "train.step2"),
    live=True,
)
STEP3_FEATURES = Stage(
    "step3_features",
    DATA / "step3" / "features.zarr",
    reads=(PREPARE, STEP2_FAST_RCNN),
    params=(
        "backbone",
        "anchors.stride",
        "augment",
        "train.device",
        "store.shard_size",
        "store.feature_dtype",
    ),
)
STEP3_RPN = Stage(
    "step3_rpn",
    DATA / "step3" / "rpn.pt",
    reads=(PREPARE, ANCHOR_TARGETS, STEP3_FEATURES),
    # No convolution of the backbone runs here (it trains on the feature cache), so
    # `train.channels_last` is none of its business.
    params=(
        "rpn",
        "anchors",
        "augment",
        *(key for key in TRAINING if key != "train.channels_last"),
        "train.step3",
    ),
    live=True,
)
STEP3_PROPOSALS = Stage(
    "step3_proposals",
    DATA / "step3" / "proposals.zarr",
    reads=(PREPARE, STEP3_FEATURES, STEP3_RPN),
    params=(*_PROPOSING, *_TRAIN_TOP_N, *_PROPOSED),
)
STEP3_TEST_PROPOSALS = Stage(
    "step3_test_proposals",
    DATA / "step3" / "test_proposals.zarr",
    reads=(PREPARE, STEP3_FEATURES, STEP3_RPN),
    params=(*_PROPOSING, *_TEST_TOP_N, "augment", *_PROPOSED),
)
STEP4_PROPOSAL_TARGETS = Stage(
    "step4_proposal_targets",
    DATA / "step4" / "proposal_targets.zarr",
    reads=(PREPARE, STEP3_PROPOSALS),
    params=("roi.box_stds", "store.shard_size"),
)
STEP4_FAST_RCNN = Stage(
    "step4_fast_rcnn",
    DATA / "step4" / "head.pt",
    reads=(PREPARE, STEP2_FAST_RCNN, STEP3_FEATURES, STEP4_PROPOSAL_TARGETS),
    params=("backbone", "anchors.stride", "roi", "augment", *TRAINING, "train.step4"),
    live=True,
)
EXPORT = Stage(
    "export",
    DATA / "model" / "faster_rcnn.pt",
    reads=(PREPARE, STEP2_FAST_RCNN, STEP3_FEATURES, STEP3_RPN, STEP4_FAST_RCNN),
    params=(
        "backbone",
        "anchors",
        "rpn",
        "proposals",
        "roi",
        "detect",
        "augment",
        "data.min_size",
        "data.max_size",
    ),
)
EVALUATE = Stage(
    "evaluate",
    DATA / "eval",
    reads=(PREPARE, EXPORT, STEP1_TEST_PROPOSALS, STEP3_TEST_PROPOSALS),
    outs=("detections.json", "samples"),
    metrics=("metrics.json",),
    plots={"pr": {"x": "recall", "y": "precision", "template": "linear"}, "plots": None},
)

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
BY_NAME = {stage.name: stage for stage in STAGES}


def live_log(stage: Stage, data: Path = DATA) -> Path:
    """The DVCLive folder a training stage publishes its loss log to (a DVC plots output),
    in `data` or another data folder."""
    out = under(data, stage)
    return out.with_name(f"{out.stem}_live")


CURVES = "plots/images/curves.png"  # a training stage's loss and lr figure, in its live folder


def under(data: Path, stage: Stage) -> Path:
    """`stage`'s output inside another data folder (e.g. a copy of `data/`)."""
    return data / stage.out.relative_to(DATA)
