"""Where each stage writes its output, relative to the repository root (as in dvc.yaml)."""

from pathlib import Path

DATA = Path("data")
SYNTHETIC = DATA / "raw" / "synthetic"
PREPARED = DATA / "prepared.zarr"
ANCHOR_TARGETS = DATA / "anchor_targets.zarr"
STEP1_RPN = DATA / "step1" / "rpn.pt"
STEP1_PROPOSALS = DATA / "step1" / "proposals.zarr"
STEP1_PROPOSAL_TARGETS = DATA / "step1" / "proposal_targets.zarr"
STEP2_DETECTOR = DATA / "step2" / "detector.pt"
STEP3_FEATURES = DATA / "step3" / "features.zarr"
STEP3_RPN = DATA / "step3" / "rpn.pt"
STEP3_PROPOSALS = DATA / "step3" / "proposals.zarr"
STEP4_PROPOSAL_TARGETS = DATA / "step4" / "proposal_targets.zarr"
STEP4_HEAD = DATA / "step4" / "head.pt"
MODEL = DATA / "model" / "faster_rcnn.pt"
