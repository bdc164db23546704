"""What steps 1 and 3 minimise per mini-batch: the RPN loss on sampled anchors, whatever
computes the features (the backbone, or the cache)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.config import RPNParams
from pipeline.model.losses import rpn_loss
from pipeline.model.rpn import RPNHead
from pipeline.model.sampling import sample_foreground_background
from pipeline.model.targets import BACKGROUND, FOREGROUND, IGNORE
from pipeline.training.loop import FeatureSource


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
