"""Thresholds read from params decide at values a wrong threshold gets wrong: box pairs at IoU
0.4 and 0.6 around NMS thresholds, RoIs at IoU 0.45 and 0.55 around the sampler's."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.ops import box_iou

from pipeline.model.faster_rcnn import post_processed
from pipeline.model.roi_head import build_head
from pipeline.model.rpn import propose
from pipeline.training.fast_rcnn_objective import FastRCNNLoss
from tests.conftest import tiny_params

# A, then B at IoU 0.6 with A, then C at IoU 0.4 with A (and 0.7 with B), best first.
A = [10.0, 10.0, 20.0, 20.0]
B = [12.5, 10.0, 22.5, 20.0]
C = [14.3, 10.0, 24.3, 20.0]
BOXES = torch.tensor([A, B, C])
KEPT_AT = {0.3: [0], 0.5: [0, 2], 0.75: [0, 1, 2]}  # NMS IoU threshold -> boxes kept


def test_the_box_pairs_sit_where_the_thresholds_need_them():
    iou = box_iou(BOXES, BOXES)
    assert float(iou[0, 1]) == pytest.approx(0.6)
    assert float(iou[0, 2]) == pytest.approx(0.4, abs=0.002)
    assert 0.5 < float(iou[1, 2]) < 0.75


@pytest.mark.parametrize("nms_iou", sorted(KEPT_AT))
def test_detection_nms_suppresses_exactly_above_detect_nms_iou(nms_iou):
    detect = dataclasses.replace(
        tiny_params().detect, nms_iou=nms_iou, score_thresh=0.05, box_vote_iou=None
    )
    scores = torch.tensor([0.9, 0.8, 0.7])
    boxes, kept_scores, _ = post_processed(BOXES, scores, torch.ones(3, dtype=torch.long),
                                                detect)  # fmt: skip
    assert torch.equal(boxes, BOXES[KEPT_AT[nms_iou]])
    assert torch.equal(kept_scores, scores[KEPT_AT[nms_iou]])


@pytest.mark.parametrize("nms_iou", sorted(KEPT_AT))
def test_proposal_nms_suppresses_exactly_above_proposals_nms_iou(nms_iou):
    logits = torch.tensor([3.0, 2.0, 1.0])
    boxes, scores = propose(BOXES, logits, torch.zeros(3, 4), (40, 40), 0.0, 10, 10, nms_iou)
    torch.testing.assert_close(boxes, BOXES[KEPT_AT[nms_iou]])
    torch.testing.assert_close(scores, torch.sigmoid(logits)[KEPT_AT[nms_iou]])


# At fg_iou 0.6 the RoIs at IoU 0.55 are neither foreground nor background (under fg_iou, over
# bg_iou_high): none is sampled.
@pytest.mark.parametrize(("fg_fraction", "fg_iou", "foreground"), [(0.25, 0.5, 4), (0.5, 0.5, 8),
                                                                   (0.25, 0.6, 0)])  # fmt: skip
def test_roi_sampling_splits_foreground_and_background_at_the_roi_thresholds(
    fg_fraction, fg_iou, foreground
):
    p = tiny_params()
    roi = dataclasses.replace(p.roi, batch_size=16, fg_fraction=fg_fraction, fg_iou=fg_iou,
                              bg_iou_low=0.1, bg_iou_high=0.5)  # fmt: skip
    head = build_head(p.backbone, roi, 8, 3, p.anchors.stride)
    iou = torch.tensor([0.55] * 20 + [0.45] * 20 + [0.05] * 20)
    n = len(iou)
    targets = (torch.arange(n, dtype=torch.float32)[:, None].expand(n, 4), iou,
               torch.full((n,), 2), torch.zeros(n, 4))  # fmt: skip
    rois, classes, _ = FastRCNNLoss(head, lambda x: x, roi).sample(
        targets, torch.Generator().manual_seed(0)
    )
    picked = iou[rois[:, 0].long()]
    assert len(rois) == 16
    assert int((classes == 2).sum()) == foreground
    assert (picked[classes == 2] == 0.55).all()
    assert (picked[classes == 0] == 0.45).all()  # 0.05 is under bg_iou_low
