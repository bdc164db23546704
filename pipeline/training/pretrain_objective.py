"""What the `pretrain` stage minimises: the backbone plus a throw-away linear classifier tell
the train views' object crops (their class) from background crops (class 0). This is the role
ImageNet plays in the paper: steps 1 and 2 start from a backbone that already sees objects."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import PretrainParams
from pipeline.data.views import ViewSet, batch_images
from pipeline.model.backbones import Backbone
from pipeline.model.crops import background_boxes, crop_images, jitter_boxes

ViewObjects = tuple[tuple[int, int], Tensor, Tensor]  # (height, width), boxes, classes


class ObjectBatch:
    """Reader: a batch's images on one canvas, and each view's size, boxes and classes."""

    def __init__(self, views: ViewSet) -> None:
        self.views = views

    def __call__(self, batch: list[int]) -> tuple[Tensor, list[ViewObjects]]:
        images = batch_images([self.views.image(v) for v in batch])
        objects = [(self.views.size(v), self.views.boxes(v), self.views.labels(v)) for v in batch]
        return images, objects


class CropClassification:
    """Cross-entropy over every object of each view of the batch, jittered, and
    `background_crops` background crops per view."""

    def __init__(
        self,
        backbone: Backbone,
        classifier: nn.Linear,
        params: PretrainParams,
        device: torch.device,
    ) -> None:
        self.backbone, self.classifier = backbone, classifier
        self.params, self.device = params, device

    def __call__(
        self, inputs: tuple[Tensor, list[ViewObjects]], generator: torch.Generator
    ) -> dict[str, Tensor]:
        images, objects = inputs
        boxes, labels = [], []
        for size, gt, classes in objects:
            background = background_boxes(
                size,
                gt,
                self.params.background_crops,
                self.params.background_iou,
                min_side=self.backbone.stride,
                generator=generator,
            )
            boxes.append(torch.cat((jitter_boxes(gt, self.params.jitter, generator), background)))
            labels.append(torch.cat((classes.long(), torch.zeros(len(background)).long())))
        crops = crop_images(images, boxes, self.params.crop_size).to(self.device)
        logits = self.classifier(self.backbone(crops).mean(dim=(2, 3)))
        return {"crop_classification": F.cross_entropy(logits, torch.cat(labels).to(self.device))}
