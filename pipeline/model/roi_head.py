"""Fast R-CNN head: RoI pooling on the shared features, fc6/fc7, class scores and boxes."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from pipeline.config import BackboneParams, RoIParams
from pipeline.model.backbones import head_fc_layers


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
        self.pool, self.pool_size, self.scale = pool, pool_size, 1.0 / stride
        fc_dim = fc_layers.fc7.out_features
        # Dropout after each fc ReLU, as in VGG16 (the tutorial's head has none).
        self.fc = nn.Sequential(
            fc_layers.fc6,
            fc_layers.relu6,
            nn.Dropout(dropout),
            fc_layers.fc7,
            fc_layers.relu7,
            nn.Dropout(dropout),
        )
        self.class_logits = nn.Linear(fc_dim, num_classes)
        self.box_deltas = nn.Linear(fc_dim, 4 * num_classes)
        nn.init.normal_(self.class_logits.weight, std=0.01)
        nn.init.normal_(self.box_deltas.weight, std=0.001)
        nn.init.zeros_(self.class_logits.bias)
        nn.init.zeros_(self.box_deltas.bias)

    def forward(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """`rois` is [K, 5] (batch index, x1, y1, x2, y2); returns [K, C] logits, [K, C, 4]."""
        size = (self.pool_size, self.pool_size)
        if self.pool == "roi_align":
            pooled = roi_align(features, rois, size, self.scale, sampling_ratio=2, aligned=True)
        else:
            pooled = roi_pool(features, rois, size, self.scale)
        hidden = self.fc(pooled.flatten(1))
        deltas = self.box_deltas(hidden)
        return self.class_logits(hidden), deltas.view(len(rois), -1, 4)


def rois_with_batch_index(boxes: list[Tensor]) -> Tensor:
    """[K, 5] RoIs from per-image box lists, in the layout torchvision's pooling ops take."""
    index = torch.cat([torch.full((len(b), 1), float(i)) for i, b in enumerate(boxes)])
    return torch.cat((index.to(boxes[0]), torch.cat(boxes)), dim=1)


def build_head(
    backbone: BackboneParams, roi: RoIParams, in_channels: int, num_classes: int, stride: int
) -> FastRCNNHead:
    fc = head_fc_layers(backbone, in_channels * roi.size * roi.size, roi.fc_dim)
    return FastRCNNHead(fc, num_classes, roi.pool, roi.size, stride, roi.dropout)
