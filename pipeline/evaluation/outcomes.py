"""What became of each detection and each ground-truth box of one image, the way a detection
engineer reads a picture: which detections are right, why the others are wrong, and which
objects were missed. Matching follows VOC (by score, IoU >= 0.5, one detection per object,
difficult objects neither count nor are missed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

TRUE_POSITIVE = "true positive"
DUPLICATE = "duplicate"  # a second detection of an object already found
WRONG_CLASS = "wrong class"  # on another class's object
POOR_LOCALISATION = "poor localisation"  # on an object of its class, IoU in [0.1, 0.5)
BACKGROUND = "background"  # on nothing
IGNORED = "ignored"  # on a difficult object: VOC neither rewards nor punishes it
FALSE_POSITIVES = (DUPLICATE, WRONG_CLASS, POOR_LOCALISATION, BACKGROUND)
LOCALISED_IOU = 0.1


@dataclass(frozen=True)
class ImageOutcomes:
    detections: list[str]  # outcome of each detection, in the order given
    missed: np.ndarray  # [G] bool: an object that no detection found (never a difficult one)


def image_outcomes(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray,
    iou_thresh: float = 0.5,
) -> ImageOutcomes:
    """Outcomes of detections ([N, 4] boxes, scores, labels) against the ground truth."""
    n, g = len(boxes), len(gt_boxes)
    iou = np.zeros((n, g))
    if n and g:
        iou = box_iou(
            torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4),
            torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4),
        ).numpy()
    same = np.asarray(labels)[:, None] == np.asarray(gt_labels)[None, :]
    found = np.zeros(g, dtype=bool)
    outcomes = [""] * n
    for d in np.argsort(-np.asarray(scores), kind="stable"):
        own = np.where(same[d], iou[d], -1.0)
        best = int(own.argmax()) if g else -1
        if g and own[best] >= iou_thresh:
            if gt_difficult[best]:
                outcomes[d] = IGNORED
            elif found[best]:
                outcomes[d] = DUPLICATE
            else:
                outcomes[d], found[best] = TRUE_POSITIVE, True
        elif g and np.where(same[d], -1.0, iou[d]).max() >= iou_thresh:
            outcomes[d] = WRONG_CLASS
        elif g and own[best] >= LOCALISED_IOU:
            outcomes[d] = POOR_LOCALISATION
        else:
            outcomes[d] = BACKGROUND
    return ImageOutcomes(outcomes, ~found & ~np.asarray(gt_difficult, dtype=bool))
