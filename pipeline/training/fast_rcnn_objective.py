"""What steps 2 and 4 minimise per mini-batch: the Fast R-CNN loss on sampled RoIs, whatever
computes the features (the backbone, or the cache)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pipeline.artifacts.proposal_targets import ProposalTargets
from pipeline.config import RoIParams
from pipeline.data.feeding import BatchReader, FeatureSource
from pipeline.model.losses import fast_rcnn_loss, mean_over_views
from pipeline.model.roi_head import FastRCNNHead, rois_with_batch_index
from pipeline.model.sampling import sample_foreground_background
from pipeline.seeds import derived_seed

ViewTargets = tuple[Tensor, Tensor, Tensor, Tensor]  # candidate boxes, best IoU, class, deltas


class ProposalTargetBatch:
    """Reader: a batch's feature input (images or cached features, by `features`) and the
    proposal targets of each of its views."""

    def __init__(self, features: BatchReader, targets: ProposalTargets) -> None:
        self.features, self.targets = features, targets

    def __call__(self, batch: list[int]) -> tuple[Any, list[ViewTargets]]:
        return self.features(batch), [self.targets.of_view(v) for v in batch]


class FastRCNNLoss:
    """Classification and box loss of the head on 128 sampled RoIs per view (steps 2 and 4)."""

    def __init__(self, head: FastRCNNHead, features: FeatureSource, params: RoIParams) -> None:
        self.head, self.features, self.params = head, features, params

    def sample(
        self, targets: ViewTargets, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """RoIs, class labels (0 for background) and box targets of one view's mini-batch."""
        p = self.params
        boxes, iou, labels, deltas = targets
        foreground = iou >= p.fg_iou
        background = (iou >= p.bg_iou_low) & (iou < p.bg_iou_high)
        fg, bg = sample_foreground_background(
            foreground, background, p.batch_size, p.fg_fraction, generator
        )
        keep = torch.cat((fg, bg))
        classes = torch.cat((labels[fg], torch.zeros(len(bg), dtype=labels.dtype)))
        return boxes[keep], classes, deltas[keep]

    def __call__(
        self, views: list[tuple[Any, list[ViewTargets]]], seeds: list[int]
    ) -> dict[str, Tensor]:
        """The mean over `views` (each read as a batch of one) of their losses; view k samples
        its RoIs and draws its dropout from `seeds[k]`. Each view's RoIs are pooled from its
        own features; the fc layers then run once on all of them."""
        pooled, classes, targets = [], [], []
        for (feature_input, (view_targets,)), seed in zip(views, seeds, strict=True):
            features = self.features(feature_input)
            rois, view_classes, view_deltas = self.sample(
                view_targets, torch.Generator().manual_seed(seed)
            )
            rois = rois_with_batch_index([rois.to(features.device)])
            pooled.append(self.head.pool(features, rois))
            classes.append(view_classes.to(features.device))
            targets.append(view_deltas.to(features.device))
        rows = [len(c) for c in classes]
        with self.head.dropout_by_view(rows, [derived_seed(s, "dropout") for s in seeds]):
            class_logits, box_deltas = self.head.classify(torch.cat(pooled))
        terms = []
        for logits, deltas, view_classes, view_deltas in zip(
            class_logits.split(rows), box_deltas.split(rows), classes, targets, strict=True
        ):
            classification, box = fast_rcnn_loss(
                logits, deltas, view_classes, view_deltas, self.params.box_sigma
            )
            terms.append({"fast_rcnn_classification": classification, "fast_rcnn_box": box})
        return mean_over_views(terms)
