import dataclasses
import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import nms

from pipeline.config import DetectParams
from pipeline.data.records import BACKGROUND_CLASS
from pipeline.model import boxes as box_ops
from pipeline.model.boxes import MAX_LOG_SCALE, decode, encode, inside_image, vote
from pipeline.model.faster_rcnn import AugmentedView, FasterRCNN, class_boxes, post_processed
from tests.conftest import detector_config

coordinate = st.floats(0, 500, allow_nan=False, allow_subnormal=False)
extent = st.floats(1, 300, allow_nan=False, allow_subnormal=False)


@settings(max_examples=100, deadline=None)
@given(coordinate, coordinate, extent, extent, coordinate, coordinate, extent, extent)
def test_decode_inverts_encode(ax, ay, aw, ah, gx, gy, gw, gh):
    # Beyond exp(MAX_LOG_SCALE) the clamp deliberately breaks the inverse.
    assume(gw / aw < 60 and gh / ah < 60)
    anchor = torch.tensor([[ax, ay, ax + aw, ay + ah]], dtype=torch.float64)
    gt = torch.tensor([[gx, gy, gx + gw, gy + gh]], dtype=torch.float64)
    stds = (0.1, 0.1, 0.2, 0.2)
    torch.testing.assert_close(decode(anchor, encode(anchor, gt, stds), stds), gt)


def test_encode_matches_the_paper_parametrisation():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 0.0, 25.0, 10.0]])
    want = torch.tensor([[(15 - 5) / 10, (5 - 10) / 20, math.log(2.0), math.log(0.5)]])
    torch.testing.assert_close(encode(anchor, gt), want)


def test_decode_clamps_huge_scale_deltas():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = decode(anchor, torch.tensor([[0.0, 0.0, 50.0, 50.0]]))
    assert torch.isfinite(box).all()
    width = box[0, 2] - box[0, 0]
    torch.testing.assert_close(width, torch.tensor(16 * math.exp(MAX_LOG_SCALE)))


def test_inside_image_allows_a_border():
    boxes = torch.tensor([[-2.0, 0, 10, 10], [0, 0, 64, 64], [0, 0, 65, 10]])
    assert inside_image(boxes, 64, 64).tolist() == [False, True, False]
    assert inside_image(boxes, 64, 64, border=2).tolist() == [True, True, True]


def test_box_coding_agrees_with_torchvision_box_coder():
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(500, 2, generator=generator) * 400
    reference = torch.cat((corner, corner + 4 + torch.rand(500, 2, generator=generator) * 200), 1)
    corner = torch.rand(500, 2, generator=generator) * 400
    target = torch.cat((corner, corner + 4 + torch.rand(500, 2, generator=generator) * 200), 1)
    stds = (0.1, 0.1, 0.2, 0.2)
    coder = BoxCoder(weights=tuple(1 / s for s in stds))  # (10, 10, 5, 5)
    theirs = coder.encode_single(target, reference)
    torch.testing.assert_close(encode(reference, target, stds), theirs, rtol=1e-5, atol=1e-5)
    deltas = torch.randn(500, 4, generator=generator)
    torch.testing.assert_close(
        decode(reference, deltas, stds),
        coder.decode_single(deltas, reference),
        rtol=1e-5,
        atol=1e-3,
    )


def test_vote_weighs_the_overlapping_boxes_of_the_same_class_by_score():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 100.0, 100.0],  # kept
            [4.0, 0.0, 104.0, 100.0],  # IoU 0.92 with it, same class: votes
            [2.0, 2.0, 102.0, 102.0],  # overlaps as much but another class: does not
            [50.0, 0.0, 150.0, 100.0],  # same class, IoU 0.33: does not
        ]
    )
    scores = torch.tensor([0.75, 0.25, 0.9, 0.9])
    labels = torch.tensor([1, 1, 2, 1])
    voted = vote(boxes, scores, labels, torch.tensor([0]), iou=0.8)
    torch.testing.assert_close(voted, torch.tensor([[1.0, 0.0, 101.0, 100.0]]))


def test_vote_leaves_a_lone_box_and_handles_no_detections():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 30.0], [200.0, 0.0, 220.0, 5.0]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([3, 3])
    voted = vote(boxes, scores, labels, torch.tensor([1, 0]), 0.5)
    torch.testing.assert_close(voted, boxes[[1, 0]])
    assert vote(boxes, scores, labels, torch.tensor([], dtype=torch.long), 0.5).shape == (0, 4)


box = st.tuples(coordinate, coordinate, extent, extent)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(box, st.floats(0.01, 1), st.integers(1, 2)), min_size=1, max_size=8),
       st.floats(0.05, 1.0))  # fmt: skip
def test_voted_boxes_lie_within_their_voters(detections, iou):
    boxes = torch.tensor([[x, y, x + w, y + h] for (x, y, w, h), _, _ in detections])
    scores = torch.tensor([s for _, s, _ in detections])
    labels = torch.tensor([c for _, _, c in detections])
    keep = torch.arange(len(boxes))
    voted = vote(boxes, scores, labels, keep, iou)
    assert torch.isfinite(voted).all()
    for k in keep:
        same = labels == labels[k]
        assert (voted[k] >= boxes[same].min(dim=0).values - 1e-3).all()
        assert (voted[k] <= boxes[same].max(dim=0).values + 1e-3).all()
    # at IoU 1 only a box itself (or an exact copy of it) votes
    alone = vote(boxes, scores, labels, keep, 1.0)
    torch.testing.assert_close(alone, boxes)


def test_detections_vote_only_when_asked():
    proposals = torch.tensor([[0.0, 0.0, 100.0, 100.0], [4.0, 0.0, 104.0, 100.0]])
    logits = torch.tensor([[0.0, 3.0], [0.0, 1.0]])  # background, one class
    candidates = class_boxes(proposals, logits, torch.zeros(2, 2, 4), (200, 200), (1, 1, 1, 1))
    paper = DetectParams(0.05, 0.3, 100, None, False, scales=(1.0,), flip=False,
                         enlarged_max_box=None)  # fmt: skip
    boxes, scores, labels = post_processed(*candidates, paper)
    torch.testing.assert_close(boxes, proposals[:1])
    assert labels.tolist() == [1]
    voting = dataclasses.replace(paper, box_vote_iou=0.8)
    voted, voted_scores, _ = post_processed(*candidates, voting)
    p = torch.softmax(logits, dim=1)[:, 1]
    torch.testing.assert_close(voted[0, 0], 4 * p[1] / p.sum())
    torch.testing.assert_close(voted_scores, scores)


def constant_head_detector(params):
    """A detector whose head's outputs do not depend on the pooled features: class logits
    (0, 1, 2) and, for class 1, a shift right by one box width's std (class 2: grow)."""
    model = FasterRCNN.from_config(detector_config(params, (BACKGROUND_CLASS, "a", "b"))).eval()
    head = model.head
    with torch.no_grad():
        head.class_logits.weight.zero_()
        head.class_logits.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        head.box_deltas.weight.zero_()
        head.box_deltas.bias.copy_(torch.tensor([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0.5, 0.5]))
    return model, torch.randn(1, model.backbone.out_channels, 20, 20)


REFINED_BOXES = torch.tensor([[10.0, 10.0, 50.0, 30.0], [20.0, 20.0, 60.0, 100.0]])


def test_refined_moves_each_box_by_its_class_regression_and_averages_the_scores(params):
    model, features = constant_head_detector(params)
    boxes, scores, labels = REFINED_BOXES, torch.tensor([0.9, 0.5]), torch.tensor([1, 2])
    view = AugmentedView(features, (160, 160), (160, 160), flipped=False)
    moved, rescored = model.refined([view], boxes, scores, labels, (160, 160))
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), dim=0)
    torch.testing.assert_close(rescored, (scores + p[[1, 2]]) / 2)
    stds = params.roi.box_stds
    shifted = boxes[0] + torch.tensor([40 * stds[0], 0, 40 * stds[0], 0])  # tx 1 on a 40-wide box
    torch.testing.assert_close(moved[0], shifted)
    grown = decode(boxes[1:], torch.tensor([[0, 0, 0.5, 0.5]]), stds)[0]
    torch.testing.assert_close(moved[1], grown)


def test_refined_averages_over_the_views_that_trust_each_box(params):
    model, features = constant_head_detector(params)
    boxes, scores, labels = REFINED_BOXES, torch.tensor([0.9, 0.5]), torch.tensor([1, 2])
    image = AugmentedView(features, (160, 160), (160, 160), flipped=False)
    # mirrored, and trusted with boxes up to 30 px: the first (40 x 20), not the second (40 x 80)
    mirrored = AugmentedView(features, (160, 160), (160, 160), flipped=True, max_box=30)
    moved, _ = model.refined([image, mirrored], boxes, scores, labels, (160, 160))
    # "right" in the mirrored view is left in the image: the two moves cancel
    torch.testing.assert_close(moved[0], boxes[0])
    alone, _ = model.refined([image], boxes, scores, labels, (160, 160))
    torch.testing.assert_close(moved[1], alone[1])


@settings(max_examples=100, deadline=None)
@given(box, st.integers(40, 400), st.integers(40, 400), st.floats(0.25, 4), st.booleans())
def test_an_augmented_views_boxes_map_back_onto_the_images(b, height, width, factor, flipped):
    x, y, w, h = b
    boxes = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float64)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    view = AugmentedView(torch.zeros(0), size, (height, width), flipped)
    torch.testing.assert_close(view.to_image(view.from_image(boxes)), boxes)
    moved = view.from_image(boxes)[0]
    assert (moved[2:] > moved[:2]).all()  # mirrored boxes keep x1 < x2
    ratio = size[1] / width
    torch.testing.assert_close(moved[2] - moved[0], (boxes[0, 2] - boxes[0, 0]) * ratio)


def test_flip_and_resize_boxes():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    mirrored = box_ops.flip_boxes(boxes, 100)
    torch.testing.assert_close(mirrored, torch.tensor([[70.0, 20.0, 90.0, 60.0]]))
    resized = box_ops.resize_boxes(boxes, (100, 200), (150, 100))
    torch.testing.assert_close(resized, torch.tensor([[5.0, 30.0, 15.0, 90.0]]))
    assert box_ops.resize_boxes(boxes, (100, 200), (100, 200)) is boxes


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 40), st.integers(1, 30), st.integers(1, 40),
       st.floats(0.1, 0.9))  # fmt: skip
def test_nms_over_a_growing_prefix_keeps_what_nms_over_every_box_keeps(
    seed, objects, copies, limit, iou
):
    # Like an RPN's best-first list: each object's near-copies together, so that a short
    # prefix keeps too few boxes and has to grow.
    generator = torch.Generator().manual_seed(seed)
    corners = (torch.rand(objects, 1, 2, generator=generator) * 300).expand(-1, copies, -1)
    corners = (corners + torch.rand(objects, copies, 2, generator=generator) * 6).reshape(-1, 2)
    boxes = torch.cat(
        [corners, corners + 10 + torch.rand(len(corners), 2, generator=generator) * 30], 1
    )
    scores = torch.linspace(1, 0, len(boxes))
    want = nms(boxes, scores, iou)[:limit]
    assert torch.equal(box_ops.nms_best_first(boxes, iou, limit), want)


def test_nms_best_first_breaks_ties_by_the_callers_order():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[50.0, 50.0, 60.0, 60.0]])
    assert box_ops.nms_best_first(boxes, 0.5, 5).tolist() == [0, 3]
    assert box_ops.nms_best_first(boxes, 0.5, 1).tolist() == [0]
