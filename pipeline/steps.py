"""The paper's four-step alternating training (section 3.2), one function per DVC stage.

  1. step1_rpn: RPN + backbone from the initial weights.        -> step1_proposals, targets
  2. step2_fast_rcnn: Fast R-CNN + backbone, again from the initial weights, on step-1 proposals.
  3. step3_features: the step-2 backbone, frozen from here on, caches every view's features;
     step3_rpn trains only the RPN head on them.                 -> step3_proposals
  4. step4_fast_rcnn: only the Fast R-CNN head, on the cached features and step-3 proposals.
  export: step-2 backbone + step-3 RPN + step-4 head, one shared-conv network.

Each function reads its inputs through the artifact readers (which refuse stale inputs), and
records in its output the params it used and the fingerprints of its inputs.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import Tensor, nn

from pipeline.backbones import Backbone, build_backbone
from pipeline.config import Params, StepParams, to_dict
from pipeline.errors import ArtifactError
from pipeline.evaluate import evaluate as evaluate_detector
from pipeline.feature_artifact import write_features
from pipeline.model import (
    EXPORT_STAGE,
    DetectorConfig,
    build_head,
    build_rpn,
    view_proposals,
)
from pipeline.model_io import load_model, save_model
from pipeline.paths import (
    ANCHOR_TARGETS,
    MODEL,
    PREPARED,
    STEP1_PROPOSAL_TARGETS,
    STEP1_PROPOSALS,
    STEP1_RPN,
    STEP2_DETECTOR,
    STEP3_FEATURES,
    STEP3_PROPOSALS,
    STEP3_RPN,
    STEP4_HEAD,
    STEP4_PROPOSAL_TARGETS,
)
from pipeline.prepared import TRAIN, PreparedDataset
from pipeline.proposal_artifacts import (
    Proposals,
    ProposalTargets,
    write_proposal_targets,
    write_proposals,
)
from pipeline.store import Provenance, open_artifact
from pipeline.tasks import BackboneFeatures, CachedFeatures, FastRCNNLoss, RPNLoss
from pipeline.train import LossFn, TrainingRun, derived_seed, publish_log, resolve_device, train
from pipeline.views import ViewSet, make_views


def _common(params: Params) -> dict:
    train = to_dict(params.train)
    return {k: v for k, v in train.items() if not k.startswith("step")}


def _anchor_targets(params: Params, prepared: PreparedDataset) -> zarr.Group:
    return open_artifact(
        ANCHOR_TARGETS,
        "anchor_targets",
        expect={
            "inputs.prepared": prepared.fingerprint,
            "params.anchors": to_dict(params.anchors),
            "params.augment": to_dict(params.augment),
        },
    )


def initial_backbone(params: Params) -> Backbone:
    """Steps 1 and 2 both start from this one (the paper: from ImageNet, not from each other)."""
    torch.manual_seed(derived_seed(params.train.seed, "initial_backbone"))
    backbone = build_backbone(params.backbone)
    backbone.freeze_below(params.backbone.freeze_below)
    return backbone


def _seeded_init(params: Params, stage: str) -> None:
    torch.manual_seed(derived_seed(params.train.seed, stage, "init"))


def _train_and_save(
    stage: str,
    out: Path,
    parts: dict[str, nn.Module],
    loss_fn: LossFn,
    views: np.ndarray,
    step: StepParams,
    params: Params,
    sections: dict[str, object],
    inputs: dict[str, str],
    device: torch.device,
) -> dict[str, float]:
    """Train, save the parts as the stage's model file, publish the loss log; return the last
    logged losses. The model records `sections` of the params, the training params and the
    fingerprints of its `inputs`."""
    provenance = Provenance(
        stage,
        params={**sections, "train": _common(params), "step": to_dict(step)},
        inputs=inputs,
    )
    work = out.with_name(out.name + ".partial")
    module = nn.ModuleDict(parts).to(device)
    run = TrainingRun(
        stage, module, loss_fn, views, step, params.train, work, provenance.fingerprint
    )
    history = train(run, device)
    module.cpu()
    save_model(out, provenance, {name: part.state_dict() for name, part in parts.items()})
    publish_log(work, out.parent / f"{out.stem}_live")
    shutil.rmtree(work)
    return history[-1]


def step1_rpn(params: Params) -> dict:
    """Step 1: train the RPN and the backbone from the initial weights."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    targets = _anchor_targets(params, prepared)
    views = ViewSet(prepared, targets["views"][...])
    backbone = initial_backbone(params)
    _seeded_init(params, "step1_rpn")
    rpn = build_rpn(params.anchors, params.rpn, backbone.out_channels)
    features = BackboneFeatures(backbone, views, device, params.train.channels_last)
    return _train_and_save(
        "step1_rpn",
        STEP1_RPN,
        {"backbone": backbone, "rpn": rpn},
        RPNLoss(rpn, features, targets, params.rpn),
        views.of_split(TRAIN),
        params.train.step1,
        params,
        sections={
            "backbone": to_dict(params.backbone),
            "rpn": to_dict(params.rpn),
        },
        inputs={"anchor_targets": targets.attrs["fingerprint"]},
        device=device,
    )


def _write_proposals(
    stage: str,
    out: Path,
    params: Params,
    rpn: nn.Module,
    views: ViewSet,
    features_of: Callable[[int], Tensor],
    inputs: dict[str, str],
) -> dict:
    """Proposals of every view (train views with the train top-N, test views with the test
    top-N), whatever computes the features: the backbone (step 1) or the cache (step 3)."""
    prepared = views.prepared

    def propose(v: int) -> tuple[Tensor, Tensor]:
        image = int(views.views[v, 0])
        return view_proposals(
            rpn,
            features_of(v),
            params.anchors,
            params.proposals,
            views.size(v),
            float(prepared.scales[image]),
            train=prepared.split[image] == TRAIN,
        )

    provenance = Provenance(
        stage,
        params={
            "anchors": to_dict(params.anchors),
            "proposals": to_dict(params.proposals),
            "augment": to_dict(params.augment),
        },
        inputs=inputs,
    )
    cap = max(params.proposals.train_post_nms, params.proposals.test_post_nms)
    return write_proposals(out, provenance, views.views, cap, params.store.shard_size, propose)


@torch.no_grad()
def step1_proposals(params: Params) -> dict:
    """Step 1: proposals of every view from the step-1 RPN."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    saved = load_model(STEP1_RPN, "step1_rpn")
    backbone = build_backbone(dataclasses.replace(params.backbone, weights=None))
    backbone.load_state_dict(saved["parts"]["backbone"])
    rpn = build_rpn(params.anchors, params.rpn, backbone.out_channels)
    rpn.load_state_dict(saved["parts"]["rpn"])
    backbone.eval().to(device)
    rpn.eval().to(device)
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    return _write_proposals(
        "step1_proposals",
        STEP1_PROPOSALS,
        params,
        rpn,
        views,
        lambda v: backbone(views.image(v)[None].to(device)),
        {"step1_rpn": saved["fingerprint"], "prepared": prepared.fingerprint},
    )


def proposal_targets_stage(
    params: Params, stage: str, source: Path, source_stage: str, out: Path
) -> dict:
    prepared = PreparedDataset(PREPARED)
    proposals = Proposals(source, source_stage)
    views = ViewSet(prepared, proposals.views)
    provenance = Provenance(
        stage,
        params={"roi": {"box_stds": list(params.roi.box_stds)}},
        inputs={source_stage: proposals.fingerprint, "prepared": prepared.fingerprint},
    )
    return write_proposal_targets(
        out, provenance, proposals, views, params.roi.box_stds, params.store.shard_size
    )


def step1_proposal_targets(params: Params) -> dict:
    """Step 1: IoU, class and box target of every step-1 proposal."""
    return proposal_targets_stage(
        params, "step1_proposal_targets", STEP1_PROPOSALS, "step1_proposals", STEP1_PROPOSAL_TARGETS
    )


def step4_proposal_targets(params: Params) -> dict:
    """Step 4: IoU, class and box target of every step-3 proposal."""
    return proposal_targets_stage(
        params, "step4_proposal_targets", STEP3_PROPOSALS, "step3_proposals", STEP4_PROPOSAL_TARGETS
    )


def _num_classes(prepared: PreparedDataset) -> int:
    return len(prepared.classes)


def step2_fast_rcnn(params: Params) -> dict:
    """Step 2: train Fast R-CNN and the backbone, from the initial weights, on step-1 proposals."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    targets = ProposalTargets(STEP1_PROPOSAL_TARGETS, "step1_proposal_targets")
    views = ViewSet(prepared, targets.group["views"][...])
    backbone = initial_backbone(params)
    _seeded_init(params, "step2_fast_rcnn")
    head = build_head(
        params.backbone, params.roi, backbone.out_channels, _num_classes(prepared), backbone.stride
    )
    features = BackboneFeatures(backbone, views, device, params.train.channels_last)
    return _train_and_save(
        "step2_fast_rcnn",
        STEP2_DETECTOR,
        {"backbone": backbone, "head": head},
        FastRCNNLoss(head, features, targets, params.roi),
        views.of_split(TRAIN),
        params.train.step2,
        params,
        sections={
            "backbone": to_dict(params.backbone),
            "roi": to_dict(params.roi),
        },
        inputs={"step1_proposal_targets": targets.fingerprint},
        device=device,
    )


def step3_features(params: Params) -> dict:
    """Step 3: cache the features of the step-2 backbone, frozen from here on."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    saved = load_model(STEP2_DETECTOR, "step2_fast_rcnn")
    backbone = build_backbone(dataclasses.replace(params.backbone, weights=None))
    backbone.load_state_dict(saved["parts"]["backbone"])
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    provenance = Provenance(
        "step3_features",
        params={"augment": to_dict(params.augment)},
        inputs={"step2_fast_rcnn": saved["fingerprint"], "prepared": prepared.fingerprint},
    )
    return write_features(
        STEP3_FEATURES, provenance, backbone, views, device, params.store.shard_size
    )


def _features(params: Params) -> zarr.Group:
    return open_artifact(
        STEP3_FEATURES, "step3_features", expect={"params.augment": to_dict(params.augment)}
    )


def _same_views(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if not np.array_equal(a, b):
        raise ArtifactError(f"{what}: its views differ from {STEP3_FEATURES}'s; run `dvc repro`")


def step3_rpn(params: Params) -> dict:
    """Step 3: train only the RPN-specific layers, from the cached features."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    features = _features(params)
    targets = _anchor_targets(params, prepared)
    _same_views(targets["views"][...], features["views"][...], str(ANCHOR_TARGETS))
    views = ViewSet(prepared, features["views"][...])
    _seeded_init(params, "step3_rpn")
    rpn = build_rpn(params.anchors, params.rpn, features["features"].shape[1])
    return _train_and_save(
        "step3_rpn",
        STEP3_RPN,
        {"rpn": rpn},
        RPNLoss(rpn, CachedFeatures(features, device), targets, params.rpn),
        views.of_split(TRAIN),
        params.train.step3,
        params,
        sections={
            "rpn": to_dict(params.rpn),
        },
        inputs={
            "step3_features": features.attrs["fingerprint"],
            "anchor_targets": targets.attrs["fingerprint"],
        },
        device=device,
    )


@torch.no_grad()
def step3_proposals(params: Params) -> dict:
    """Step 3: proposals of every view from the step-3 RPN on the cached features."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    features = _features(params)
    saved = load_model(STEP3_RPN, "step3_rpn")
    rpn = build_rpn(params.anchors, params.rpn, features["features"].shape[1])
    rpn.load_state_dict(saved["parts"]["rpn"])
    rpn.eval().to(device)
    views = ViewSet(prepared, features["views"][...])
    cached = CachedFeatures(features, device)
    return _write_proposals(
        "step3_proposals",
        STEP3_PROPOSALS,
        params,
        rpn,
        views,
        lambda v: cached([v]),
        {"step3_rpn": saved["fingerprint"], "step3_features": features.attrs["fingerprint"]},
    )


def step4_fast_rcnn(params: Params) -> dict:
    """Step 4: train only the Fast R-CNN-specific layers, from the cached features."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARED)
    features = _features(params)
    targets = ProposalTargets(STEP4_PROPOSAL_TARGETS, "step4_proposal_targets")
    _same_views(targets.group["views"][...], features["views"][...], str(STEP4_PROPOSAL_TARGETS))
    views = ViewSet(prepared, features["views"][...])
    detector = load_model(STEP2_DETECTOR, "step2_fast_rcnn")
    head = build_head(
        dataclasses.replace(params.backbone, weights=None),
        params.roi,
        features["features"].shape[1],
        _num_classes(prepared),
        params.anchors.stride,
    )
    # The paper fine-tunes the head the detector already has (step 2), not a fresh one.
    head.load_state_dict(detector["parts"]["head"])
    return _train_and_save(
        "step4_fast_rcnn",
        STEP4_HEAD,
        {"head": head},
        FastRCNNLoss(head, CachedFeatures(features, device), targets, params.roi),
        views.of_split(TRAIN),
        params.train.step4,
        params,
        sections={
            "roi": to_dict(params.roi),
        },
        inputs={
            "step3_features": features.attrs["fingerprint"],
            "step4_proposal_targets": targets.fingerprint,
            "step2_fast_rcnn": detector["fingerprint"],
        },
        device=device,
    )


def export(params: Params) -> None:
    """Put the step-2 backbone, step-3 RPN and step-4 head into one detector."""
    prepared = PreparedDataset(PREPARED)
    detector = load_model(STEP2_DETECTOR, "step2_fast_rcnn")
    rpn = load_model(STEP3_RPN, "step3_rpn")
    head = load_model(STEP4_HEAD, "step4_fast_rcnn")
    features = _features(params)
    if features.attrs["inputs"]["step2_fast_rcnn"] != detector["fingerprint"]:
        raise ArtifactError(f"{STEP3_FEATURES}: made from another step-2 backbone; run `dvc repro`")
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
    provenance = Provenance(
        EXPORT_STAGE,
        params={"detect": to_dict(params.detect)},
        inputs={
            "step2_fast_rcnn": detector["fingerprint"],
            "step3_rpn": rpn["fingerprint"],
            "step4_fast_rcnn": head["fingerprint"],
        },
    )
    parts = {
        "backbone": detector["parts"]["backbone"],
        "rpn": rpn["parts"]["rpn"],
        "head": head["parts"]["head"],
    }
    save_model(MODEL, provenance, parts, config=to_dict(config))


def evaluate(params: Params) -> dict:
    """Measure the exported detector on the test split: VOC and COCO AP, proposal recall."""
    proposals = {"step1_proposals": STEP1_PROPOSALS, "step3_proposals": STEP3_PROPOSALS}
    return evaluate_detector(PREPARED, MODEL, proposals)
