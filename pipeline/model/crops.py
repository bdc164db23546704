"""Crops of objects and of background, the data of the `pretrain` stage: the backbone learns
what the objects look like as a classifier of crops before it learns to detect them."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou, roi_align


def jitter_boxes(boxes: Tensor, jitter: float, generator: torch.Generator) -> Tensor:
    """Each box shifted and resized by up to `jitter` of its size, independently per side
    length and axis: the same object framed a little differently at every draw."""
    size = boxes[:, 2:] - boxes[:, :2]
    shift = (torch.rand(len(boxes), 2, generator=generator) * 2 - 1) * jitter * size
    scale = 1 + (torch.rand(len(boxes), 2, generator=generator) * 2 - 1) * jitter
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + shift
    half = size * scale / 2
    return torch.cat((centre - half, centre + half), dim=1)


def zoom_out_boxes(boxes: Tensor, max_factor: float, generator: torch.Generator) -> Tensor:
    """Each box widened about its centre by a factor log-uniform in [1, `max_factor`]: resampled
    to a fixed crop, its object then appears smaller and amid its surroundings, as small objects
    do in the detector's views (a crop of the object alone shows every object crop-sized)."""
    factor = torch.exp(torch.rand(len(boxes), 1, generator=generator) * math.log(max_factor))
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return torch.cat((centre - half, centre + half), dim=1)


def background_boxes(
    image_size: tuple[int, int],
    gt_boxes: Tensor,
    count: int,
    max_iou: float,
    min_side: float,
    generator: torch.Generator,
) -> Tensor:
    """Up to `count` boxes inside the image whose IoU with every gt box is below `max_iou`.

    Sides are log-uniform from `min_side` to the image's shorter side, aspect ratios log-uniform
    in [1/2, 2], as objects are; candidates that overlap an object too much are dropped, so a
    crowded image may give fewer.
    """
    height, width = image_size
    n = 8 * count
    low, high = math.log(min(min_side, height, width)), math.log(min(height, width))
    side = torch.exp(low + (high - low) * torch.rand(n, generator=generator))
    aspect = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * math.log(2.0))
    box_w = (side * aspect.sqrt()).clamp(max=width)
    box_h = (side / aspect.sqrt()).clamp(max=height)
    x1 = torch.rand(n, generator=generator) * (width - box_w)
    y1 = torch.rand(n, generator=generator) * (height - box_h)
    boxes = torch.stack((x1, y1, x1 + box_w, y1 + box_h), dim=1)
    if len(gt_boxes):
        boxes = boxes[box_iou(boxes, gt_boxes).max(dim=1).values < max_iou]
    return boxes[:count]


def crop_images(images: Tensor, boxes: list[Tensor], size: int) -> Tensor:
    """[N, C, size, size]: the boxes of each image of `images` [B, C, H, W], resampled
    (bilinear, torchvision's RoIAlign at full resolution)."""
    return roi_align(images, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)  # fmt: skip
