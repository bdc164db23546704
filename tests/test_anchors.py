"""Anchors: the tutorial's worked example, and the order the RPN head flattens its outputs in."""

import numpy as np
import torch
from torchvision.ops import box_iou

from pipeline.model.anchors import base_anchors, grid_anchors
from pipeline.model.boxes import inside_image
from pipeline.model.targets import FOREGROUND, anchor_targets

TUTORIAL_BEST = [2262, 2508, 5620, 5628, 5636, 5644, 5866, 5874, 5882, 5890,
                 6112, 6120, 6128, 6136, 6358, 6366, 6374, 6382]  # fmt: skip
TUTORIAL_GT_YXYX = [[20, 30, 400, 500], [300, 400, 500, 600]]


def tutorial_anchors_yxyx() -> np.ndarray:
    """The tutorial's own construction: x-major centres, [y1, x1, y2, x2], float32."""
    ratios, scales, stride, size = [0.5, 1, 2], [8, 16, 32], 16, 50
    anchors = []
    for x in range(size):
        for y in range(size):
            cy, cx = stride * (y + 1) - 8, stride * (x + 1) - 8
            for r in ratios:
                for s in scales:
                    h, w = stride * s * np.sqrt(r), stride * s * np.sqrt(1.0 / r)
                    anchors.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
    return np.array(anchors, dtype=np.float32)


def tutorial_grid() -> torch.Tensor:
    return grid_anchors(base_anchors(16, (0.5, 1.0, 2.0), (8, 16, 32)), 50, 50, 16)


def test_tutorial_example_counts_and_best_ious():
    anchors = tutorial_grid().reshape(-1, 4)
    inside = inside_image(anchors, 800, 800)
    gt = torch.tensor(TUTORIAL_GT_YXYX, dtype=torch.float32)[:, [1, 0, 3, 2]]
    iou = box_iou(anchors[inside], gt)
    assert len(anchors) == 22500
    assert int(inside.sum()) == 8940
    torch.testing.assert_close(iou.max(dim=0).values, torch.tensor([0.68130493, 0.61035156]))


def test_tutorial_example_has_the_same_18_best_anchors():
    tutorial = tutorial_anchors_yxyx()
    valid = np.where(
        (tutorial[:, 0] >= 0) & (tutorial[:, 1] >= 0) & (tutorial[:, 2] <= 800)
        & (tutorial[:, 3] <= 800)
    )[0]  # fmt: skip
    expected = {tuple(tutorial[i][[1, 0, 3, 2]].tolist()) for i in valid[TUTORIAL_BEST]}

    anchors = tutorial_grid().reshape(-1, 4)
    inside = inside_image(anchors, 800, 800)
    gt = torch.tensor(TUTORIAL_GT_YXYX, dtype=torch.float32)[:, [1, 0, 3, 2]]
    iou = box_iou(anchors, gt)
    iou[~inside] = -1
    best = (iou == iou.max(dim=0).values).any(dim=1)
    assert {tuple(a.tolist()) for a in anchors[best]} == expected
    assert len(expected) == 18

    labels, _ = anchor_targets(anchors, gt, (800, 800), fg_iou=0.7, bg_iou=0.3)
    assert (labels[best] == FOREGROUND).all()


def test_grid_is_y_major_like_the_flattened_head_output():
    base = base_anchors(16, (0.5, 1.0, 2.0), (1, 2))
    grid = grid_anchors(base, 3, 5, 16)
    head = torch.zeros(1, len(base), 3, 5)  # an RPN output map, [N, A, H, W]
    y, x, a = 2, 3, 4
    head[0, a, y, x] = 1.0
    flat_index = int(head.permute(0, 2, 3, 1).reshape(-1).argmax())
    centre = grid.reshape(-1, 4)[flat_index].view(2, 2).mean(dim=0)
    torch.testing.assert_close(centre, torch.tensor([16 * x + 8.0, 16 * y + 8.0]))
    torch.testing.assert_close(grid.reshape(-1, 4)[flat_index], grid[y, x, a])


def test_base_anchors_have_the_requested_area_and_ratio():
    base = base_anchors(16, (0.5, 1.0, 2.0), (2, 4))
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    torch.testing.assert_close(h / w, torch.tensor([0.5, 0.5, 1, 1, 2, 2], dtype=torch.float64))
    torch.testing.assert_close((w * h).sqrt(), torch.tensor([32, 64] * 3, dtype=torch.float64))
