"""What steps 1 and 3 minimise per mini-batch: the RPN loss on sampled anchors, whatever
computes the features (the backbone, or the cache)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.config import RPNParams
from pipeline.data.feeding import BatchReader, FeatureSource
from pipeline.model.losses import mean_over_views, rpn_loss
from pipeline.model.rpn import RPNHead
from pipeline.model.sampling import sample_foreground_background
from pipeline.model.targets import BACKGROUND, FOREGROUND, IGNORE


class AnchorTargetBatch:
    """Reader: a batch's feature input (images or cached features, by `features`) and the
    anchor labels and deltas of its views over the whole canvas grid."""

    def __init__(self, features: BatchReader, targets: AnchorTargets) -> None:
        self.features, self.targets = features, targets

    def __call__(self, batch: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        labels = np.stack([self.targets.labels[v] for v in batch])
        deltas = np.stack([self.targets.deltas[v] for v in batch])
        return self.features(batch), torch.from_numpy(labels), torch.from_numpy(deltas)


class RPNLoss:
    """Objectness and box loss of the RPN on 256 sampled anchors per view (steps 1 and 3)."""

    def __init__(self, head: RPNHead, features: FeatureSource, params: RPNParams) -> None:
        self.head, self.features, self.params = head, features, params

    def __call__(
        self, views: list[tuple[Tensor, Tensor, Tensor]], seeds: list[int]
    ) -> dict[str, Tensor]:
        """The mean over `views` (each read as a batch of one) of their losses; view k samples
        its anchors with `seeds[k]`."""
        return mean_over_views([self.view_loss(v, s) for v, s in zip(views, seeds, strict=True)])

    def view_loss(self, inputs: tuple[Tensor, Tensor, Tensor], seed: int) -> dict[str, Tensor]:
        feature_input, grid_labels, grid_deltas = inputs
        features = self.features(feature_input)
        logits, deltas = self.head(features)
        (height, width) = features.shape[-2:]
        # The head sees the view's canvas: the anchors of its cells, in the head's order.
        labels = grid_labels[0, :height, :width].reshape(-1).long()
        targets = grid_deltas[0, :height, :width].reshape(-1, 4)
        fg, bg = sample_foreground_background(
            labels == FOREGROUND,
            labels == BACKGROUND,
            self.params.batch_size,
            self.params.fg_fraction,
            torch.Generator().manual_seed(seed),
        )
        sampled = torch.full_like(labels, IGNORE)
        sampled[fg], sampled[bg] = FOREGROUND, BACKGROUND
        device = logits.device
        objectness, box = rpn_loss(
            logits,
            deltas,
            sampled[None].to(device),
            targets[None].to(device),
            self.params.box_sigma,
        )
        return {"rpn_objectness": objectness, "rpn_box": box}
