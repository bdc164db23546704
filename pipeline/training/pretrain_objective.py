"""What the `pretrain` stage minimises: the backbone plus a throw-away linear classifier tell
the train views' object crops (their class) from background crops (class 0). This is the role
ImageNet plays in the paper: steps 1 and 2 start from a backbone that already sees objects."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.artifacts.views import ViewSet, batch_images
from pipeline.config import PretrainParams
from pipeline.model.backbones import Backbone
from pipeline.model.crops import background_boxes, crop_images, jitter_boxes, zoom_out_boxes
from pipeline.model.losses import mean_over_views
from pipeline.training.backbone_features import BackboneFeatures

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
    """Cross-entropy over every object of each view, jittered and zoomed out, and
    `background_crops` background crops per view; the crops of all views go through the
    backbone at once."""

    def __init__(
        self,
        backbone: Backbone,
        classifier: nn.Linear,
        params: PretrainParams,
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        self.backbone, self.classifier = backbone, classifier
        self.features = BackboneFeatures(backbone, device, channels_last)
        self.params, self.device = params, device

    def __call__(
        self, views: list[tuple[Tensor, list[ViewObjects]]], seeds: list[int]
    ) -> dict[str, Tensor]:
        """The mean over `views` (each read as a batch of one) of their crops' mean loss;
        view k draws its crops with `seeds[k]`."""
        crops, labels = [], []
        for (image, ((size, gt, classes),)), seed in zip(views, seeds, strict=True):
            generator = torch.Generator().manual_seed(seed)
            background = background_boxes(
                size,
                gt,
                self.params.background_crops,
                self.params.background_iou,
                min_side=self.backbone.stride,
                generator=generator,
            )
            objects = jitter_boxes(gt, self.params.jitter, generator)
            # at 1 nothing is drawn: the crops, and the run, stay those of pretraining without zoom
            if self.params.zoom_out > 1:
                objects = zoom_out_boxes(objects, self.params.zoom_out, generator)
            boxes = torch.cat((objects, background))
            crops.append(crop_images(image, [boxes], self.params.crop_size))
            labels.append(torch.cat((classes.long(), torch.zeros(len(background)).long())))
        logits = self.classifier(self.features(torch.cat(crops)).mean(dim=(2, 3)))
        per_view = logits.split([len(v) for v in labels])
        terms = [
            {"crop_classification": F.cross_entropy(view_logits, view_labels.to(self.device))}
            for view_logits, view_labels in zip(per_view, labels, strict=True)
        ]
        return mean_over_views(terms)
