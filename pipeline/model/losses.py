"""Losses of the RPN and the Fast R-CNN head, normalised as py-faster-rcnn does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_l1(predicted: Tensor, target: Tensor, sigma: float) -> Tensor:
    """Elementwise smooth L1 with the Fast R-CNN paper's sigma: quadratic within 1 / sigma^2.

    The values are `F.smooth_l1_loss(beta=1 / sigma**2)`'s (a test holds them together), but
    its gradient differs in the last bit; swapping it in moved the default run's VOC07 mAP from
    0.532 to 0.514, so the formula stays written out and the trained weights stay as they were.
    """
    diff = predicted - target
    beta = 1.0 / sigma**2
    absolute = diff.abs()
    return torch.where(absolute < beta, 0.5 * absolute**2 / beta, absolute - 0.5 * beta)


def rpn_loss(
    logits: Tensor, deltas: Tensor, labels: Tensor, targets: Tensor, sigma: float
) -> tuple[Tensor, Tensor]:
    """Objectness BCE over sampled anchors (labels 0/1; -1 ignored) and box loss on positives.

    The box loss is summed over positives and divided by the number of sampled anchors, as
    py-faster-rcnn's rpn_bbox_outside_weights do, so both terms share one scale.
    """
    sampled = labels >= 0
    count = sampled.sum().clamp(min=1)
    objectness = (
        F.binary_cross_entropy_with_logits(
            logits[sampled], labels[sampled].float(), reduction="sum"
        )
        / count
    )
    positive = labels == 1
    box = smooth_l1(deltas[positive], targets[positive], sigma).sum() / count
    return objectness, box


def fast_rcnn_loss(
    class_logits: Tensor, box_deltas: Tensor, labels: Tensor, targets: Tensor, sigma: float
) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy over the sampled RoIs and smooth L1 on the true class's deltas.

    `box_deltas` is [R, num_classes, 4]; only foreground RoIs (label > 0) have a box loss,
    summed and divided by the number of RoIs (py-faster-rcnn's normalisation).
    """
    count = max(len(labels), 1)
    classification = F.cross_entropy(class_logits, labels, reduction="sum") / count
    foreground = torch.nonzero(labels > 0).flatten()
    chosen = box_deltas[foreground, labels[foreground]]
    box = smooth_l1(chosen, targets[foreground], sigma).sum() / count
    return classification, box


def mean_over_views(terms: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Each loss term averaged over views, each view's term normalised on its own: the loss of
    a batch is then the same however its views are split between processes."""
    return {name: torch.stack([t[name] for t in terms]).mean() for name in terms[0]}
