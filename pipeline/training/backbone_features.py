"""Features of steps 1 and 2: the backbone run on images, with grad when it trains. (Steps 3
and 4 read them from the cache instead: `artifacts.features.CachedFeatures`, same interface.)"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.data.views import ViewSet, batch_images
from pipeline.model.backbones import Backbone


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
