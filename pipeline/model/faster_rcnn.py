"""The unified, shared-conv Faster R-CNN that `export` writes, and its post-processing.

The same pieces (backbone, RPN head, Fast R-CNN head) serve training and inference; this
module only puts them together behind one `detect_view` call, which `frcnn detect` and the
`evaluate` stage both use.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_area, clip_boxes_to_image

from pipeline.config import (
    AnchorParams,
    BackboneParams,
    DetectParams,
    ProposalParams,
    RoIParams,
    RPNParams,
    checked,
    parse_section,
)
from pipeline.data.images import augmented_view, normalise, resize_scale, resized_shape
from pipeline.data.records import BACKGROUND_CLASS
from pipeline.model.backbones import Backbone, build_backbone
from pipeline.model.boxes import decode, flip_boxes, resize_boxes, vote
from pipeline.model.roi_head import FastRCNNHead, build_head, rois_with_batch_index
from pipeline.model.rpn import RPNHead, build_rpn, view_proposals


def class_boxes(
    proposals: Tensor,
    class_logits: Tensor,
    box_deltas: Tensor,
    image_size: tuple[int, int],
    stds: tuple[float, ...],
) -> tuple[Tensor, Tensor, Tensor]:
    """Every proposal's box, score and label for each class 1..C (the head's per-class
    regression and softmax), flattened: what post-processing chooses from."""
    scores = torch.softmax(class_logits.float(), dim=1)[:, 1:]
    num_classes = scores.shape[1]
    boxes = decode(
        proposals[:, None, :].expand(-1, num_classes, 4), box_deltas[:, 1:].float(), tuple(stds)
    )
    boxes = clip_boxes_to_image(boxes, image_size)
    labels = torch.arange(1, num_classes + 1, device=boxes.device).expand(len(proposals), -1)
    return boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)


def post_processed(
    boxes: Tensor, scores: Tensor, labels: Tensor, params: DetectParams
) -> tuple[Tensor, Tensor, Tensor]:
    """Detections among `class_boxes`: score threshold, per-class NMS, and box voting when
    `params.box_vote_iou` is set."""
    keep = (
        (scores > params.score_thresh) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, params.nms_iou)[: params.max_detections]
    if params.box_vote_iou is None:
        return boxes[keep], scores[keep], labels[keep]
    return vote(boxes, scores, labels, keep, params.box_vote_iou), scores[keep], labels[keep]


@dataclass(frozen=True)
class AugmentedView:
    """One look at an image at test time, resized and mirrored or not: its features, and its
    pixels' relation to the image's."""

    features: Tensor
    size: tuple[int, int]
    image_size: tuple[int, int]
    flipped: bool
    max_box: float | None = None  # the largest box side (in the image) it is trusted with

    def trusts(self, boxes: Tensor) -> Tensor:
        """Which of the image's `boxes` this view may place and score."""
        if self.max_box is None:
            return torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
        return box_area(boxes) <= self.max_box**2

    def to_image(self, boxes: Tensor) -> Tensor:
        boxes = flip_boxes(boxes, self.size[1]) if self.flipped else boxes
        return resize_boxes(boxes, self.size, self.image_size)

    def from_image(self, boxes: Tensor) -> Tensor:
        boxes = resize_boxes(boxes, self.image_size, self.size)
        return flip_boxes(boxes, self.size[1]) if self.flipped else boxes


# Files exported before these `detect` keys existed detect as they did then: as the paper.
PAPER_TEST_TIME = {
    "box_vote_iou": None,
    "refine_boxes": False,
    "scales": [1.0],
    "flip": False,
    "enlarged_max_box": None,
}


@dataclass(frozen=True)
class DetectorConfig:
    """Everything besides weights that inference needs; stored in the exported file."""

    backbone: BackboneParams
    anchors: AnchorParams
    rpn: RPNParams
    proposals: ProposalParams
    roi: RoIParams
    detect: DetectParams
    classes: tuple[str, ...] = checked(
        lambda v: len(v) >= 2 and v[0] == BACKGROUND_CLASS and len(set(v)) == len(v),
        f"'{BACKGROUND_CLASS}' then one or more distinct class names",
    )
    min_size: int = checked(lambda v: v > 0, "an integer > 0")
    max_size: int = checked(lambda v: v > 0, "an integer > 0")

    @classmethod
    def from_dict(cls, raw: Any, source: str = "the exported config") -> DetectorConfig:
        """Inverse of `config.to_dict` on a config, checked key by key as params.yaml is: a
        config edited by hand is refused naming `source` and the key, not run."""
        if isinstance(raw, dict) and isinstance(raw.get("detect"), dict):
            raw = {**raw, "detect": {**PAPER_TEST_TIME, **raw["detect"]}}
        return parse_section(cls, raw, source, "config.")


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
        backbone = build_backbone(structure, config.anchors.stride)
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
        class_logits, box_deltas = self.head(features, rois_with_batch_index([proposals]))
        return {
            "features": features,
            "proposals": proposals,
            "objectness": objectness,
            "class_logits": class_logits,
            "box_deltas": box_deltas,
        }

    @torch.no_grad()
    def detect_view(
        self, image: Tensor, image_size: tuple[int, int], scale: float
    ) -> dict[str, Tensor]:
        """Detections on one normalised, padded image, in the original image's pixels. With
        `detect.scales` and `detect.flip`, the detector looks at the image resized and mirrored
        too (Fast R-CNN's multi-scale testing), and chooses among every view's boxes at once."""
        flips = (False, True) if self.config.detect.flip else (False,)
        views, candidates = zip(
            *(
                self.look(image, image_size, scale, factor, flipped)
                for factor, flipped in itertools.product(self.config.detect.scales, flips)
            ),
            strict=True,
        )
        boxes, scores, labels = post_processed(
            *(torch.cat(parts) for parts in zip(*candidates, strict=True)), self.config.detect
        )
        if self.config.detect.refine_boxes and len(boxes) > 0:
            boxes, scores = self.refined(views, boxes, scores, labels, image_size)
        return {"boxes": boxes / scale, "scores": scores, "labels": labels}

    def look(
        self, image: Tensor, image_size: tuple[int, int], scale: float, factor: float, flipped: bool
    ) -> tuple[AugmentedView, tuple[Tensor, Tensor, Tensor]]:
        """One view of the image, and the `class_boxes` it is trusted with, in the image's
        pixels. A view enlarged (factor > 1) is trusted with boxes up to
        `detect.enlarged_max_box` only (the side of a square of the same area): a large object
        enlarged outgrows what the detector was trained on, and is found better at the image's
        own size (SNIP, Singh & Davis 2018)."""
        pixels, size = augmented_view(image, image_size, factor, flipped)
        out = self.forward_view(pixels, size, scale * factor)
        max_box = self.config.detect.enlarged_max_box if factor > 1 else None
        view = AugmentedView(out["features"], size, image_size, flipped, max_box)
        boxes, scores, labels = class_boxes(
            out["proposals"], out["class_logits"], out["box_deltas"], size, self.config.roi.box_stds
        )
        boxes = view.to_image(boxes)
        trusted = view.trusts(boxes)
        return view, (boxes[trusted], scores[trusted], labels[trusted])

    def refined(
        self,
        views: Sequence[AugmentedView],
        boxes: Tensor,
        scores: Tensor,
        labels: Tensor,
        image_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor]:
        """A second round of iterative localisation (Gidaris & Komodakis, 2015): each detection
        pooled again at its box and moved by its class's regression once more, as one step from
        a loose proposal falls short of the object; averaged over the views that trust it. Its
        score becomes the mean of the two rounds' scores for its class."""
        rows = torch.arange(len(boxes), device=boxes.device)
        stds = tuple(self.config.roi.box_stds)
        moved, again = [], []
        for view in views:
            at = view.from_image(boxes)
            class_logits, box_deltas = self.head(view.features, rois_with_batch_index([at]))
            again.append(torch.softmax(class_logits.float(), dim=1)[rows, labels])
            there = clip_boxes_to_image(
                decode(at, box_deltas[rows, labels].float(), stds), view.size
            )
            moved.append(view.to_image(there))
        trusted = torch.stack([view.trusts(boxes) for view in views])
        weights = torch.where(trusted.any(0), trusted, True).float()  # none: every view
        weights = weights / weights.sum(0)
        moved_boxes = (torch.stack(moved) * weights[..., None]).sum(0)
        rescored = (scores + (torch.stack(again) * weights).sum(0)) / 2
        return clip_boxes_to_image(moved_boxes, image_size), rescored

    def network_input(self, pixels: np.ndarray) -> tuple[Tensor, tuple[int, int], float]:
        """An [H, W, 3] uint8 RGB image as the network takes it: resized as in training
        (shorter side to min_size, longer capped at max_size), normalised, zero-padded; with
        its resized size and the scale from the image's pixels to it."""
        height, width = pixels.shape[:2]
        scale = resize_scale(height, width, self.config.min_size, self.config.max_size)
        size = resized_shape(height, width, scale)
        resized = np.asarray(
            Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        )
        return normalise(resized, *size, flipped=False), size, scale

    @torch.no_grad()
    def detect(self, pixels: np.ndarray) -> dict[str, Tensor]:
        """Detections on one [H, W, 3] uint8 RGB image, in that image's pixel coordinates."""
        image, size, scale = self.network_input(pixels)
        device = next(self.parameters()).device
        return self.detect_view(image.to(device), size, scale)

    @torch.no_grad()
    def detect_one_view(
        self, inputs: Sequence[tuple[Tensor, tuple[int, int], float]]
    ) -> list[dict[str, Tensor]]:
        """Detections with one view of each image and the paper's test time (no voting, no
        refinement), for `network_input`s of one padded shape: the backbone and the head run
        once for them all, proposals and post-processing image by image. Each image gets what
        `detect_view` with one view gives it alone."""
        device = next(self.parameters()).device
        features = self.backbone(torch.stack([image for image, _, _ in inputs]).to(device))
        proposals = [
            view_proposals(
                self.rpn, features[i : i + 1], self.config.anchors, self.config.proposals,
                size, scale, train=False,
            )[0]
            for i, (_, size, scale) in enumerate(inputs)
        ]  # fmt: skip
        class_logits, box_deltas = self.head(features, rois_with_batch_index(proposals))
        counts = [len(p) for p in proposals]
        one_view = dataclasses.replace(self.config.detect, box_vote_iou=None)
        found = []
        for (_, size, scale), boxes, logits, deltas in zip(
            inputs, proposals, class_logits.split(counts), box_deltas.split(counts), strict=True
        ):
            candidates = class_boxes(boxes, logits, deltas, size, self.config.roi.box_stds)
            kept, scores, labels = post_processed(*candidates, one_view)
            found.append({"boxes": kept / scale, "scores": scores, "labels": labels})
        return found
