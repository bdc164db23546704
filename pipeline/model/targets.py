"""Anchor targets (paper section 3.1.2): which anchors are objects, and where their box is.

Labels are assigned before mini-batch sampling (that happens at training time, seeded, so it is
not frozen into the artifact): -1 ignore, 0 background, 1 foreground.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from pipeline.model.boxes import encode, inside_image

IGNORE, BACKGROUND, FOREGROUND = -1, 0, 1


def anchor_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    image_size: tuple[int, int],
    fg_iou: float,
    bg_iou: float,
    allowed_border: float = 0,
) -> tuple[Tensor, Tensor]:
    """Label [K] int8 and regression target [K, 4] (dx, dy, dw, dh) for each of K anchors.

    Anchors crossing the image border (by more than `allowed_border`) are ignored, as in the
    paper. An anchor is foreground if its IoU with some gt is >= `fg_iou`, or if it is one of the
    anchors with the highest IoU for some gt (ties included), so every gt gets an anchor even
    when none reaches `fg_iou`; background if its IoU with every gt is < `bg_iou`. Targets are
    filled for foreground anchors only (no loss reads the others) and left zero elsewhere.
    """
    height, width = image_size
    inside = inside_image(anchors, height, width, allowed_border)
    labels = torch.full((len(anchors),), IGNORE, dtype=torch.int8)
    deltas = torch.zeros((len(anchors), 4), dtype=torch.float32)
    if len(gt_boxes) == 0:
        labels[inside] = BACKGROUND
        return labels, deltas

    iou = box_iou(anchors, gt_boxes)
    iou[~inside] = -1.0  # outside anchors can neither match nor be best for a gt
    max_iou, matched = iou.max(dim=1)
    labels[inside & (max_iou < bg_iou)] = BACKGROUND
    best_per_gt = iou.max(dim=0).values
    # A gt that overlaps no inside anchor at all has best IoU 0: it must not make every
    # zero-overlap anchor foreground (py-faster-rcnn and torchvision's Matcher both do).
    is_best = ((iou == best_per_gt[None, :]) & (best_per_gt[None, :] > 0)).any(dim=1)
    foreground = is_best | (max_iou >= fg_iou)
    labels[foreground] = FOREGROUND
    deltas[foreground] = encode(anchors[foreground], gt_boxes[matched[foreground]])
    return labels, deltas


def best_anchor_iou(
    anchors: Tensor, gt_boxes: Tensor, image_size: tuple[int, int], allowed_border: float = 0
) -> Tensor:
    """[G] the highest IoU each gt box reaches with an anchor inside the image.

    Below `fg_iou` a box is foreground only through its best anchors (a weak, single-scale
    target); at 0 no anchor can learn it at all, which anchor scales that do not fit the objects
    cause.
    """
    inside = inside_image(anchors, *image_size, allowed_border)
    if len(gt_boxes) == 0 or not bool(inside.any()):
        return torch.zeros(len(gt_boxes))
    return box_iou(gt_boxes, anchors[inside]).max(dim=1).values


def proposal_targets(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    stds: tuple[float, float, float, float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidates for the Fast R-CNN mini-batch: the proposals plus the gt boxes themselves.

    Returns the candidate boxes [R, 4], their best IoU with any gt [R], the class of that gt [R]
    (whatever the IoU; the training sampler decides foreground and background by IoU), and the
    normalised deltas to it [R, 4]. With no gt, every candidate has IoU 0 and class 0.
    Adding the gt boxes (as py-faster-rcnn does) guarantees foreground RoIs early in training.
    """
    boxes = torch.cat((proposals, gt_boxes)).float()
    if len(gt_boxes) == 0:
        zeros = torch.zeros(len(boxes))
        return boxes, zeros, zeros.long(), torch.zeros(len(boxes), 4)
    max_iou, matched = box_iou(boxes, gt_boxes).max(dim=1)
    deltas = encode(boxes, gt_boxes[matched], stds)
    return boxes, max_iou, gt_labels[matched], deltas
