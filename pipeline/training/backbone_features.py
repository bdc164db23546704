"""The backbone of steps 1 and 2: where both start from, and the features it computes on
images, with grad as it trains. (Steps 3 and 4 read features from the cache instead, and
only move them to the device: `pipeline.data.feeding.on_device`.)"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.artifacts.reads import StageInputs
from pipeline.layout import PRETRAIN
from pipeline.model.backbones import Backbone, saved_backbone


def initial_backbone(inputs: StageInputs) -> Backbone:
    """The backbone steps 1 and 2 both start from (the paper: from ImageNet, not from each
    other): the `pretrain` stage's, opened as an input of the stage."""
    params = inputs.params
    saved = inputs.model(PRETRAIN)
    backbone = saved_backbone(params.backbone, params.anchors.stride, saved["parts"]["backbone"])
    backbone.freeze_below(params.backbone.freeze_below)
    return backbone


class BackboneFeatures:
    """Features of a batch of images (`ViewImages`) computed by the backbone, with grad when
    it trains."""

    def __init__(
        self, backbone: Backbone, device: torch.device, channels_last: bool = False
    ) -> None:
        self.backbone, self.device = backbone, device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: Tensor) -> Tensor:
        return self.backbone(
            images.to(self.device, memory_format=self.memory_format, non_blocking=True)
        )
