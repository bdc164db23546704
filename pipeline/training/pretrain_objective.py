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


class CropClassification:
    """Cross-entropy over every object of each view of the batch, jittered, and
    `background_crops` background crops per view."""

    def __init__(
        self,
        backbone: Backbone,
        classifier: nn.Linear,
        views: ViewSet,
        params: PretrainParams,
        device: torch.device,
    ) -> None:
        self.backbone, self.classifier, self.views = backbone, classifier, views
        self.params, self.device = params, device

    def __call__(self, batch: list[int], generator: torch.Generator) -> dict[str, Tensor]:
        boxes, labels = [], []
        for v in batch:
            gt = self.views.boxes(v)
            background = background_boxes(
                self.views.size(v),
                gt,
                self.params.background_crops,
                self.params.background_iou,
                min_side=self.backbone.stride,
                generator=generator,
            )
            boxes.append(torch.cat((jitter_boxes(gt, self.params.jitter, generator), background)))
            labels.append(
                torch.cat((self.views.labels(v).long(), torch.zeros(len(background)).long()))
            )
        images = batch_images([self.views.image(v) for v in batch])
        crops = crop_images(images, boxes, self.params.crop_size).to(self.device)
        logits = self.classifier(self.backbone(crops).mean(dim=(2, 3)))
        return {"crop_classification": F.cross_entropy(logits, torch.cat(labels).to(self.device))}
