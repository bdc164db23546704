"""The four-step pipeline run in-process on the tiny profile: caching is exact, steps 3 and 4
never touch the backbone, and every stage is deterministic."""

from pathlib import Path

import pytest
import torch

from pipeline import backbones, steps
from pipeline.anchor_target_artifact import write_anchor_targets
from pipeline.datasets.synthetic import generate_synthetic
from pipeline.model import build_head, build_rpn, load_detector, view_proposals
from pipeline.model_io import load_model
from pipeline.prepared import TEST, PreparedDataset, prepare_dataset
from pipeline.proposal_artifacts import Proposals
from pipeline.roi_head import rois_with_batch_index
from pipeline.store import open_artifact
from pipeline.tasks import CachedFeatures
from pipeline.views import ViewSet
from tests.conftest import inside, tiny_params

pytestmark = pytest.mark.slow

TRAINING = [steps.step1_rpn, steps.step1_proposals, steps.step1_proposal_targets,
            steps.step2_fast_rcnn, steps.step3_features, steps.step3_rpn, steps.step3_proposals,
            steps.step4_proposal_targets, steps.step4_fast_rcnn, steps.export]  # fmt: skip
BACKBONE_FREE = [steps.step3_rpn, steps.step3_proposals, steps.step4_proposal_targets,
                 steps.step4_fast_rcnn]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    p = tiny_params()
    with inside(root):
        generate_synthetic(Path("data/raw/synthetic"), p.synthetic)
        prepare_dataset(p.data, p.store, steps.PREPARED)
        write_anchor_targets(
            PreparedDataset(steps.PREPARED), p.augment.flip, p.anchors, p.anchor_targets,
            p.store, steps.ANCHOR_TARGETS,
        )  # fmt: skip
        for stage in TRAINING:
            stage(p)
    return root, p


def test_cached_features_give_exactly_what_the_exported_detector_computes(tiny_pipeline):
    root, p = tiny_pipeline
    with inside(root):
        detector = load_detector(steps.MODEL)
        prepared = PreparedDataset(steps.PREPARED)
        features = open_artifact(steps.STEP3_FEATURES, "step3_features")
        views = ViewSet(prepared, features["views"][...])
        step3_rpn = build_rpn(p.anchors, p.rpn, features["features"].shape[1])
        step3_rpn.load_state_dict(load_model(steps.STEP3_RPN, "step3_rpn")["parts"]["rpn"])
        step4_head = build_head(p.backbone, p.roi, features["features"].shape[1],
                                len(prepared.classes), 16)  # fmt: skip
        step4_head.load_state_dict(load_model(steps.STEP4_HEAD, "step4_fast_rcnn")["parts"]["head"])
        stored = Proposals(steps.STEP3_PROPOSALS, "step3_proposals")
        step3_rpn.eval(), step4_head.eval()
        for v in views.of_split(TEST):
            image = int(views.views[v, 0])
            scale = float(prepared.scales[image])
            direct = detector.forward_view(views.image(v), views.size(v), scale)
            cached = CachedFeatures(features, torch.device("cpu"))([int(v)])
            torch.testing.assert_close(cached, direct["features"], rtol=1e-5, atol=1e-6)
            with torch.no_grad():
                boxes, scores = view_proposals(step3_rpn, cached, p.anchors, p.proposals,
                                               views.size(v), scale, train=False)  # fmt: skip
                logits, deltas = step4_head(cached, rois_with_batch_index([boxes]))
            torch.testing.assert_close(boxes, direct["proposals"], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(scores, direct["objectness"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(logits, direct["class_logits"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(deltas, direct["box_deltas"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(stored.of_view(int(v))[0], direct["proposals"])


def test_steps_3_and_4_never_build_or_run_a_backbone(tiny_pipeline, monkeypatch):
    root, p = tiny_pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was used")

    monkeypatch.setattr(backbones, "build_backbone", refuse)
    monkeypatch.setattr(steps, "build_backbone", refuse)
    monkeypatch.setattr(backbones.Backbone, "__init__", refuse)
    monkeypatch.setattr(backbones.Backbone, "forward", refuse)
    outputs = [steps.STEP3_RPN, steps.STEP4_HEAD]
    with inside(root):
        before = [path.read_bytes() for path in outputs]
        for stage in BACKBONE_FREE:
            stage(p)
        # Rerun from the same inputs, they write the same bytes: the stages are deterministic.
        assert [path.read_bytes() for path in outputs] == before


def test_exported_detector_finds_boxes_on_a_test_image(tiny_pipeline):
    root, _ = tiny_pipeline
    with inside(root):
        detector = load_detector(steps.MODEL)
        prepared = PreparedDataset(steps.PREPARED)
        image = int(next(i for i in range(len(prepared)) if prepared.split[i] == TEST))
        h, w = prepared.image_sizes[image]
        out = detector.detect(prepared.images[image][:h, :w])
    assert out["boxes"].shape[1] == 4
    assert len(out["boxes"]) == len(out["scores"]) == len(out["labels"])
    assert (out["labels"] >= 1).all() and (out["labels"] < len(prepared.classes)).all()
