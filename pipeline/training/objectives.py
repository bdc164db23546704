"""What each training step computes per mini-batch: features, then the RPN or Fast R-CNN loss.

Features come from one of two sources with one interface: the backbone run on images (steps 1
and 2, the backbone trains too: `BackboneFeatures`) or the cached feature artifact (steps 3 and
4, no backbone at all: `artifacts.features.CachedFeatures`). Everything else is shared
between the steps that train the same head.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.artifacts.proposal_targets import ProposalTargets
from pipeline.config import RoIParams, RPNParams
from pipeline.data.views import ViewSet, batch_images
from pipeline.model.backbones import Backbone
from pipeline.model.losses import fast_rcnn_loss, rpn_loss
from pipeline.model.roi_head import FastRCNNHead, rois_with_batch_index
from pipeline.model.rpn import RPNHead
from pipeline.model.sampling import sample_foreground_background
from pipeline.model.targets import BACKGROUND, FOREGROUND, IGNORE

FeatureSource = Callable[[list[int]], Tensor]


class BackboneFeatures:
    """Features of a batch of views computed by the backbone (with grad when it trains)."""

    def __init__(
        self, backbone: Backbone, views: ViewSet, device: torch.device, channels_last: bool = False
    ) -> None:
        self.backbone, self.views, self.device = backbone, views, device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batch: list[int]) -> Tensor:
        images = batch_images([self.views.image(v) for v in batch])
        return self.backbone(images.to(self.device, memory_format=self.memory_format))


class RPNLoss:
    """Objectness and box loss of the RPN on 256 sampled anchors per view (steps 1 and 3)."""

    def __init__(
        self, head: RPNHead, features: FeatureSource, targets: AnchorTargets, params: RPNParams
    ) -> None:
        self.head, self.features, self.params = head, features, params
        self.labels, self.deltas = targets.labels, targets.deltas

    def __call__(self, batch: list[int], generator: torch.Generator) -> dict[str, Tensor]:
        features = self.features(batch)
        logits, deltas = self.head(features)
        height, width = features.shape[-2:]
        labels = torch.from_numpy(
            np.stack([self.labels[v, :height, :width] for v in batch]).reshape(len(batch), -1)
        ).long()
        targets = torch.from_numpy(
            np.stack([self.deltas[v, :height, :width] for v in batch]).reshape(len(batch), -1, 4)
        )
        sampled = torch.full_like(labels, IGNORE)
        for b in range(len(batch)):
            fg, bg = sample_foreground_background(
                labels[b] == FOREGROUND,
                labels[b] == BACKGROUND,
                self.params.batch_size,
                self.params.fg_fraction,
                generator,
            )
            sampled[b, fg], sampled[b, bg] = FOREGROUND, BACKGROUND
        device = logits.device
        objectness, box = rpn_loss(
            logits, deltas, sampled.to(device), targets.to(device), self.params.box_sigma
        )
        return {"rpn_objectness": objectness, "rpn_box": box}


class FastRCNNLoss:
    """Classification and box loss of the head on 128 sampled RoIs per view (steps 2 and 4)."""

    def __init__(
        self,
        head: FastRCNNHead,
        features: FeatureSource,
        targets: ProposalTargets,
        params: RoIParams,
    ) -> None:
        self.head, self.features, self.targets, self.params = head, features, targets, params

    def sample(self, view: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """RoIs, class labels (0 for background) and box targets of one view's mini-batch."""
        p = self.params
        boxes, iou, labels, deltas = self.targets.of_view(view)
        foreground = iou >= p.fg_iou
        background = (iou >= p.bg_iou_low) & (iou < p.bg_iou_high)
        fg, bg = sample_foreground_background(
            foreground, background, p.batch_size, p.fg_fraction, generator
        )
        keep = torch.cat((fg, bg))
        classes = torch.cat((labels[fg], torch.zeros(len(bg), dtype=labels.dtype)))
        return boxes[keep], classes, deltas[keep]

    def __call__(self, batch: list[int], generator: torch.Generator) -> dict[str, Tensor]:
        features = self.features(batch)
        rois, classes, targets = zip(*(self.sample(v, generator) for v in batch), strict=True)
        device = features.device
        class_logits, box_deltas = self.head(
            features, rois_with_batch_index([r.to(device) for r in rois])
        )
        classification, box = fast_rcnn_loss(
            class_logits,
            box_deltas,
            torch.cat(classes).to(device),
            torch.cat(targets).to(device),
            self.params.box_sigma,
        )
        return {"fast_rcnn_classification": classification, "fast_rcnn_box": box}
