"""The RPN head's output order and the proposal layer."""

import torch

from pipeline.config import AnchorParams
from pipeline.model.anchors import base_anchors, grid_anchors, image_anchors
from pipeline.model.rpn import RPNHead, flatten_outputs, propose

ANCHORS = AnchorParams(stride=16, ratios=(0.5, 1.0, 2.0), scales=(1.0, 2.0))


def peaked_maps(a: int, y: int, x: int, height: int = 6, width: int = 7):
    objectness = torch.full((1, ANCHORS.num_anchors, height, width), -5.0)
    objectness[0, a, y, x] = 5.0
    deltas = torch.zeros(1, 4 * ANCHORS.num_anchors, height, width)
    return objectness, deltas


def propose_all(logits, deltas, size=(96, 112), min_size=0.0, nms_iou=0.7):
    anchors = image_anchors(ANCHORS, (6, 7))
    return propose(anchors, logits[0], deltas[0], size, min_size, 10000, 10000, nms_iou)


def test_the_peaked_anchor_is_the_top_proposal():
    a, y, x = 4, 3, 2  # an anchor that lies inside the image, so clipping leaves it alone
    logits, deltas = flatten_outputs(*peaked_maps(a, y, x))
    boxes, scores = propose_all(logits, deltas)
    grid = grid_anchors(base_anchors(16, ANCHORS.ratios, ANCHORS.scales), 6, 7, 16)
    torch.testing.assert_close(boxes[0], grid[y, x, a])
    assert scores[0] > 0.99


def test_a_delta_moves_only_its_own_anchor():
    a, y, x = 1, 2, 3
    objectness, deltas = peaked_maps(a, y, x)
    deltas[0, 4 * a + 0, y, x] = 0.25  # dx of that anchor: a quarter of its width
    logits, flat = flatten_outputs(objectness, deltas)
    boxes, _ = propose_all(logits, flat)
    grid = grid_anchors(base_anchors(16, ANCHORS.ratios, ANCHORS.scales), 6, 7, 16)
    anchor = grid[y, x, a]
    shift = 0.25 * (anchor[2] - anchor[0])
    torch.testing.assert_close(boxes[0], anchor + torch.stack((shift, 0 * shift, shift, 0 * shift)))


def test_head_output_shapes_follow_the_anchor_count():
    head = RPNHead(8, 16, ANCHORS.num_anchors)
    logits, deltas = head(torch.randn(2, 8, 5, 4))
    assert logits.shape == (2, 5 * 4 * 6) and deltas.shape == (2, 5 * 4 * 6, 4)
    assert head.conv.weight.std() < 0.02  # N(0, 0.01) init


def test_proposals_are_clipped_sorted_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(1, 6 * 7 * 6)
    deltas = torch.randn(1, 6 * 7 * 6, 4) * 0.2
    boxes, scores = propose_all(logits, deltas)
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 2] <= 112).all()
    assert (boxes[:, 3] <= 96).all()
    assert (scores[:-1] >= scores[1:]).all() and scores.min() > 0 and scores.max() < 1


def test_all_proposals_below_min_size_give_none():
    logits, deltas = flatten_outputs(*peaked_maps(0, 0, 0))
    boxes, scores = propose_all(logits, deltas, min_size=1000.0)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_nms_keeps_one_of_two_identical_boxes_and_top_n_caps():
    anchors = torch.tensor([[0.0, 0, 20, 20], [0, 0, 20, 20], [40, 40, 60, 60]])
    logits = torch.tensor([2.0, 1.0, 0.0])
    deltas = torch.zeros(3, 4)
    boxes, _scores = propose(anchors, logits, deltas, (64, 64), 0.0, 10, 10, 0.7)
    assert boxes.tolist() == [[0, 0, 20, 20], [40, 40, 60, 60]]
    boxes, _ = propose(anchors, logits, deltas, (64, 64), 0.0, 10, 1, 0.7)
    assert len(boxes) == 1
    boxes, _ = propose(anchors, logits, deltas, (64, 64), 0.0, 1, 10, 0.7)
    assert len(boxes) == 1  # pre-NMS top-N applies before NMS
