"""Anchor targets against a straightforward reference, and the rules one case at a time."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model.anchors import base_anchors, grid_anchors
from pipeline.model.boxes import decode
from pipeline.model.targets import (
    BACKGROUND,
    FOREGROUND,
    IGNORE,
    anchor_targets,
    best_anchor_iou,
)


def reference_targets(anchors, gts, height, width, fg_iou, bg_iou):
    """The paper's rules written out anchor by anchor and gt by gt (float32, like the tutorial)."""
    anchors = anchors.astype(np.float32)
    gts = gts.astype(np.float32)
    labels = np.full(len(anchors), IGNORE)
    deltas = np.zeros((len(anchors), 4), np.float32)
    inside = [a[0] >= 0 and a[1] >= 0 and a[2] <= width and a[3] <= height for a in anchors]
    iou = np.full((len(anchors), len(gts)), -1.0, np.float32)
    for i, a in enumerate(anchors):
        if not inside[i]:
            continue
        for j, g in enumerate(gts):
            iw = max(np.float32(0), min(a[2], g[2]) - max(a[0], g[0]))
            ih = max(np.float32(0), min(a[3], g[3]) - max(a[1], g[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            iou[i, j] = inter / union
    for i in range(len(anchors)):
        if not inside[i]:
            continue
        if len(gts) == 0 or iou[i].max() < bg_iou:
            labels[i] = BACKGROUND
    for j in range(len(gts)):
        best = iou[:, j].max()
        if best > 0:
            labels[iou[:, j] == best] = FOREGROUND
    for i in range(len(anchors)):
        if len(gts) and iou[i].max() >= fg_iou:
            labels[i] = FOREGROUND
    for i in np.where(labels == FOREGROUND)[0]:
        a, g = anchors[i], gts[int(iou[i].argmax())]
        wa, ha = a[2] - a[0], a[3] - a[1]
        w, h = g[2] - g[0], g[3] - g[1]
        deltas[i] = [
            (g[0] + w / 2 - a[0] - wa / 2) / wa,
            (g[1] + h / 2 - a[1] - ha / 2) / ha,
            np.log(w / wa),
            np.log(h / ha),
        ]
    return labels, deltas


@st.composite
def scenes(draw):
    height = draw(st.integers(16, 160))
    width = draw(st.integers(16, 160))
    n = draw(st.integers(0, 4))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, width - 1, allow_subnormal=False))
        y1 = draw(st.floats(0, height - 1, allow_subnormal=False))
        # Widths down to half a pixel: smaller than any anchor.
        x2 = draw(st.floats(min(x1 + 0.5, width), width))
        y2 = draw(st.floats(min(y1 + 0.5, height), height))
        boxes.append([x1, y1, x2, y2])
    scales = draw(st.sampled_from([(0.5, 1.0), (1.0, 2.0, 4.0), (2.0,)]))
    return height, width, np.array(boxes, np.float32).reshape(-1, 4), scales


@settings(max_examples=60, deadline=None)
@given(scenes())
def test_anchor_targets_match_the_reference(scene):
    height, width, boxes, scales = scene
    stride = 16
    grid = grid_anchors(
        base_anchors(stride, (0.5, 1.0, 2.0), scales), -(-height // stride), -(-width // stride),
        stride,
    ).reshape(-1, 4)  # fmt: skip
    labels, deltas = anchor_targets(grid, torch.from_numpy(boxes), (height, width), 0.7, 0.3)
    want_labels, want_deltas = reference_targets(grid.numpy(), boxes, height, width, 0.7, 0.3)
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    np.testing.assert_allclose(deltas.numpy(), want_deltas, rtol=1e-5, atol=1e-5)


def test_image_without_boxes_has_only_background_and_ignored_anchors():
    grid = grid_anchors(base_anchors(16, (1.0,), (1.0, 4.0)), 4, 4, 16).reshape(-1, 4)
    labels, deltas = anchor_targets(grid, torch.zeros(0, 4), (64, 64), 0.7, 0.3)
    assert set(labels.tolist()) == {BACKGROUND, IGNORE}
    assert not deltas.any()


def test_border_anchors_are_ignored_even_when_they_overlap_a_gt():
    grid = grid_anchors(base_anchors(16, (1.0,), (2.0,)), 4, 4, 16).reshape(-1, 4)
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    labels, _ = anchor_targets(grid, gt, (64, 64), 0.7, 0.3)
    crossing = (grid[:, 0] < 0) | (grid[:, 1] < 0) | (grid[:, 2] > 64) | (grid[:, 3] > 64)
    assert (labels[crossing] == IGNORE).all()
    assert (labels[~crossing] != IGNORE).any()


def test_a_box_smaller_than_every_anchor_still_gets_its_best_anchor():
    grid = grid_anchors(base_anchors(16, (1.0,), (2.0,)), 4, 4, 16).reshape(-1, 4)
    gt = torch.tensor([[30.0, 30.0, 33.0, 33.0]])  # 3 px; the anchors are 32 px
    labels, deltas = anchor_targets(grid, gt, (64, 64), 0.7, 0.3)
    fg = labels == FOREGROUND
    assert int(fg.sum()) >= 1
    torch.testing.assert_close(decode(grid[fg], deltas[fg]), gt.expand(int(fg.sum()), 4))


def test_a_gt_overlapping_no_inside_anchor_makes_no_foreground():
    # Every anchor inside a 64 px image is 32 px wide, and none reaches this corner box.
    grid = grid_anchors(base_anchors(16, (1.0,), (2.0,)), 4, 4, 16).reshape(-1, 4)
    inside = (grid >= 0).all(dim=1) & (grid[:, 2:] <= 40).all(dim=1)
    gt = torch.tensor([[50.0, 50.0, 56.0, 56.0]])
    labels, _ = anchor_targets(grid, gt, (40, 40), 0.7, 0.3)
    assert not (labels == FOREGROUND).any()
    assert (labels[inside] == BACKGROUND).all()


def test_best_anchor_iou_is_each_boxs_best_inside_anchor():
    grid = grid_anchors(base_anchors(16, (1.0,), (2.0,)), 4, 4, 16).reshape(-1, 4)
    gt = torch.tensor([[8.0, 8.0, 40.0, 40.0], [8.0, 8.0, 24.0, 24.0], [50.0, 50.0, 56.0, 56.0]])
    best = best_anchor_iou(grid, gt, (40, 40))
    # In a 40 px image one anchor is inside, [8, 8, 40, 40]: the first box is it, the second a
    # quarter of it, and the third lies beyond it.
    torch.testing.assert_close(best, torch.tensor([1.0, 0.25, 0.0]))
    assert len(best_anchor_iou(grid, torch.zeros(0, 4), (40, 40))) == 0
