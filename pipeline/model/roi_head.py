"""Fast R-CNN head: RoI pooling on the shared features, fc6/fc7, class scores and boxes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from pipeline.config import BackboneParams, RoIParams
from pipeline.model.backbones import head_fc_layers


class ViewDropout(nn.Module):
    """Dropout that can draw each view's mask from that view's own generator (see
    `FastRCNNHead.dropout_by_view`), so the masks of a batch's views do not depend on which
    views share a call: the same whether a batch runs in one process or is split between
    several. Otherwise it is `nn.Dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.by_view: list[tuple[int, torch.Generator]] | None = None  # (rows, generator)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self.by_view is None:
            return F.dropout(x, self.p, training=True)
        keep = torch.cat(
            [
                torch.empty((rows, x.shape[1]), device=x.device).bernoulli_(1 - self.p, generator=g)
                for rows, g in self.by_view
            ]
        )
        return x * keep / (1 - self.p)


class FastRCNNHead(nn.Module):
    def __init__(
        self,
        fc_layers: nn.Sequential,
        num_classes: int,
        pool: str,
        pool_size: int,
        stride: int,
        dropout: float,
    ) -> None:
        """`num_classes` counts background; `fc_layers` is fc6 + ReLU + fc7 + ReLU."""
        super().__init__()
        self.pool_op, self.pool_size, self.scale = pool, pool_size, 1.0 / stride
        fc_dim = fc_layers.fc7.out_features
        # Dropout after each fc ReLU, as in VGG16 (the tutorial's head has none).
        self.fc = nn.Sequential(
            fc_layers.fc6,
            fc_layers.relu6,
            ViewDropout(dropout),
            fc_layers.fc7,
            fc_layers.relu7,
            ViewDropout(dropout),
        )
        self.class_logits = nn.Linear(fc_dim, num_classes)
        self.box_deltas = nn.Linear(fc_dim, 4 * num_classes)
        nn.init.normal_(self.class_logits.weight, std=0.01)
        nn.init.normal_(self.box_deltas.weight, std=0.001)
        nn.init.zeros_(self.class_logits.bias)
        nn.init.zeros_(self.box_deltas.bias)

    def forward(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """`rois` is [K, 5] (batch index, x1, y1, x2, y2); returns [K, C] logits, [K, C, 4]."""
        return self.classify(self.pool(features, rois))

    def pool(self, features: Tensor, rois: Tensor) -> Tensor:
        """[K, C, size, size]: each RoI pooled from its image's features."""
        size = (self.pool_size, self.pool_size)
        if self.pool_op == "roi_align":
            return roi_align(features, rois, size, self.scale, sampling_ratio=2, aligned=True)
        return roi_pool(features, rois, size, self.scale)

    def classify(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits [K, C] and box deltas [K, C, 4] of pooled RoIs."""
        hidden = self.fc(pooled.flatten(1))
        deltas = self.box_deltas(hidden)
        # The class count is spelt out: with no RoI at all, -1 would be ambiguous.
        return self.class_logits(hidden), deltas.view(len(pooled), deltas.shape[1] // 4, 4)

    @contextmanager
    def dropout_by_view(self, rows: list[int], seeds: list[int]) -> Iterator[None]:
        """While active, the dropout masks of the first rows[0] RoIs come from seeds[0], of the
        next rows[1] from seeds[1], and so on."""
        device = next(self.parameters()).device
        generators = [
            (n, torch.Generator(device).manual_seed(s)) for n, s in zip(rows, seeds, strict=True)
        ]
        layers = [m for m in self.fc if isinstance(m, ViewDropout)]
        for layer in layers:
            layer.by_view = generators
        try:
            yield
        finally:
            for layer in layers:
                layer.by_view = None


def rois_with_batch_index(boxes: list[Tensor]) -> Tensor:
    """[K, 5] RoIs from per-image box lists, in the layout torchvision's pooling ops take."""
    index = torch.cat([torch.full((len(b), 1), float(i)) for i, b in enumerate(boxes)])
    return torch.cat((index.to(boxes[0]), torch.cat(boxes)), dim=1)


def build_head(
    backbone: BackboneParams, roi: RoIParams, in_channels: int, num_classes: int, stride: int
) -> FastRCNNHead:
    fc = head_fc_layers(backbone, in_channels * roi.size * roi.size, roi.fc_dim)
    return FastRCNNHead(fc, num_classes, roi.pool, roi.size, stride, roi.dropout)
