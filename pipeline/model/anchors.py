"""Anchors laid out in exactly the order the RPN head's outputs are flattened.

The head emits [N, A, H, W] maps; `permute(0, 2, 3, 1).reshape(N, -1)` makes them y-major:
index = (y * W + x) * A + a. `grid_anchors` returns [H, W, A, 4] so that `.reshape(-1, 4)` has
the same order (the tutorial builds them x-major, which pairs predictions with the wrong boxes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.config import AnchorParams


def base_anchors(stride: int, ratios: tuple[float, ...], scales: tuple[float, ...]) -> Tensor:
    """[A, 4] float64 anchors centred on the first feature cell; ratio-major (a = r * S + s).

    A ratio is height / width; an anchor of scale s covers (stride * s)^2 pixels at any ratio.
    """
    r = torch.tensor(ratios, dtype=torch.float64)[:, None]
    s = torch.tensor(scales, dtype=torch.float64)[None, :]
    h = (stride * s * r.sqrt()).reshape(-1)
    w = (stride * s / r.sqrt()).reshape(-1)
    c = stride / 2
    return torch.stack((c - w / 2, c - h / 2, c + w / 2, c + h / 2), dim=1)


def grid_anchors(base: Tensor, grid_height: int, grid_width: int, stride: int) -> Tensor:
    """[H, W, A, 4] float32 anchors for a feature grid: the base shifted to every cell.

    Summed in float64 and rounded once, so an anchor's coordinates do not depend on its cell.
    """
    ys = torch.arange(grid_height, dtype=torch.float64) * stride
    xs = torch.arange(grid_width, dtype=torch.float64) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((x, y, x, y), dim=-1)
    return (shifts[:, :, None, :] + base.double()[None, None, :, :]).float()


def image_anchors(anchors: AnchorParams, feature_size: tuple[int, int]) -> Tensor:
    """[H*W*A, 4] anchors of a feature map, in the RPN head's output order."""
    base = base_anchors(anchors.stride, anchors.ratios, anchors.scales)
    return grid_anchors(base, *feature_size, anchors.stride).reshape(-1, 4)
