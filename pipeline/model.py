"""Building the networks from params, and the unified Faster R-CNN that `export` writes.

The same pieces (backbone, RPN head, Fast R-CNN head) serve training and inference; only the
exported detector puts them together behind one `detect` call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import batched_nms

from pipeline.anchors import base_anchors, grid_anchors
from pipeline.backbones import Backbone, build_backbone, head_fc_layers
from pipeline.boxes import decode
from pipeline.config import (
    AnchorParams,
    BackboneParams,
    DetectParams,
    ProposalParams,
    RoIParams,
    RPNParams,
)
from pipeline.images import resize_scale, resized_shape
from pipeline.model_io import load_model
from pipeline.roi_head import FastRCNNHead
from pipeline.rpn import RPNHead, propose
from pipeline.views import normalise

EXPORT_STAGE = "export"


def build_rpn(anchors: AnchorParams, rpn: RPNParams, in_channels: int) -> RPNHead:
    return RPNHead(in_channels, rpn.channels, anchors.num_anchors)


def build_head(
    backbone: BackboneParams, roi: RoIParams, in_channels: int, num_classes: int, stride: int
) -> FastRCNNHead:
    fc = head_fc_layers(backbone, in_channels * roi.size * roi.size, roi.fc_dim)
    return FastRCNNHead(fc, num_classes, roi.pool, roi.size, stride, roi.dropout)


def image_anchors(anchors: AnchorParams, feature_size: tuple[int, int]) -> Tensor:
    """[H*W*A, 4] anchors of a feature map, in the RPN head's output order."""
    base = base_anchors(anchors.stride, anchors.ratios, anchors.scales)
    return grid_anchors(base, *feature_size, anchors.stride).reshape(-1, 4)


def view_proposals(
    rpn: RPNHead,
    features: Tensor,
    anchors: AnchorParams,
    params: ProposalParams,
    image_size: tuple[int, int],
    scale: float,
    train: bool,
) -> tuple[Tensor, Tensor]:
    """Proposals of one image from its [1, C, h, w] features, with the train or test top-N."""
    logits, deltas = rpn(features)
    grid = image_anchors(anchors, tuple(features.shape[-2:])).to(features.device)
    pre, post = (
        (params.train_pre_nms, params.train_post_nms)
        if train
        else (params.test_pre_nms, params.test_post_nms)
    )
    return propose(
        grid, logits[0], deltas[0], image_size, params.min_size * scale, pre, post, params.nms_iou
    )


def detections(
    proposals: Tensor,
    class_logits: Tensor,
    box_deltas: Tensor,
    image_size: tuple[int, int],
    stds: tuple[float, ...],
    params: DetectParams,
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes, scores and labels (1..C) of one image: per-class decode, threshold, NMS."""
    height, width = image_size
    scores = torch.softmax(class_logits.float(), dim=1)[:, 1:]
    num_classes = scores.shape[1]
    boxes = decode(
        proposals[:, None, :].expand(-1, num_classes, 4), box_deltas[:, 1:].float(), tuple(stds)
    )
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
    labels = torch.arange(1, num_classes + 1, device=boxes.device).expand(len(proposals), -1)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    keep = (
        (scores > params.score_thresh) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, params.nms_iou)[: params.max_detections]
    return boxes[keep], scores[keep], labels[keep]


@dataclass(frozen=True)
class DetectorConfig:
    """Everything besides weights that inference needs; stored in the exported file."""

    backbone: BackboneParams
    anchors: AnchorParams
    rpn: RPNParams
    proposals: ProposalParams
    roi: RoIParams
    detect: DetectParams
    classes: tuple[str, ...]
    min_size: int
    max_size: int


class FasterRCNN(nn.Module):
    """The unified, shared-conv network: step-2 backbone, step-3 RPN, step-4 head."""

    def __init__(
        self, config: DetectorConfig, backbone: Backbone, rpn: RPNHead, head: FastRCNNHead
    ) -> None:
        super().__init__()
        self.config, self.backbone, self.rpn, self.head = config, backbone, rpn, head

    @classmethod
    def from_config(cls, config: DetectorConfig) -> FasterRCNN:
        # The weights come from the exported file, not from ImageNet.
        structure = dataclasses.replace(config.backbone, weights=None, freeze_below=None)
        backbone = build_backbone(structure)
        rpn = build_rpn(config.anchors, config.rpn, backbone.out_channels)
        head = build_head(
            structure, config.roi, backbone.out_channels, len(config.classes), backbone.stride
        )
        return cls(config, backbone, rpn, head)

    @torch.no_grad()
    def forward_view(
        self, image: Tensor, image_size: tuple[int, int], scale: float
    ) -> dict[str, Tensor]:
        """Everything inference computes for one normalised, padded [3, H, W] image."""
        features = self.backbone(image[None])
        proposals, objectness = view_proposals(
            self.rpn,
            features,
            self.config.anchors,
            self.config.proposals,
            image_size,
            scale,
            train=False,
        )
        rois = torch.cat((proposals.new_zeros(len(proposals), 1), proposals), dim=1)
        class_logits, box_deltas = self.head(features, rois)
        return {
            "features": features,
            "proposals": proposals,
            "objectness": objectness,
            "class_logits": class_logits,
            "box_deltas": box_deltas,
        }

    @torch.no_grad()
    def detect(self, pixels: np.ndarray) -> dict[str, Tensor]:
        """Detections on one [H, W, 3] uint8 RGB image, in that image's pixel coordinates."""
        height, width = pixels.shape[:2]
        scale = resize_scale(height, width, self.config.min_size, self.config.max_size)
        size = resized_shape(height, width, scale)
        resized = np.asarray(
            Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        )
        device = next(self.parameters()).device
        image = normalise(resized, *size, flipped=False).to(device)
        out = self.forward_view(image, size, scale)
        boxes, scores, labels = detections(
            out["proposals"],
            out["class_logits"],
            out["box_deltas"],
            size,
            self.config.roi.box_stds,
            self.config.detect,
        )
        return {"boxes": boxes / scale, "scores": scores, "labels": labels}


def load_detector(path: str | Path) -> FasterRCNN:
    """The exported detector, in eval mode on the CPU."""
    saved = load_model(path, EXPORT_STAGE)
    config = detector_config_from_dict(saved["config"])
    model = FasterRCNN.from_config(config)
    model.backbone.load_state_dict(saved["parts"]["backbone"])
    model.rpn.load_state_dict(saved["parts"]["rpn"])
    model.head.load_state_dict(saved["parts"]["head"])
    return model.eval()


def detector_config_from_dict(raw: dict[str, Any]) -> DetectorConfig:
    def tupled(section: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}

    return DetectorConfig(
        backbone=BackboneParams(**raw["backbone"]),
        anchors=AnchorParams(**tupled(raw["anchors"])),
        rpn=RPNParams(**raw["rpn"]),
        proposals=ProposalParams(**raw["proposals"]),
        roi=RoIParams(**tupled(raw["roi"])),
        detect=DetectParams(**raw["detect"]),
        classes=tuple(raw["classes"]),
        min_size=raw["min_size"],
        max_size=raw["max_size"],
    )
