"""Region Proposal Network: the head, and the proposal layer that turns its outputs into boxes.

Outputs are flattened y-major, (y * W + x) * A + a, the order `anchors.grid_anchors` lays
anchors in, so prediction i always belongs to anchor i.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, remove_small_boxes

from pipeline.config import AnchorParams, ProposalParams, RPNParams
from pipeline.model.anchors import image_anchors
from pipeline.model.boxes import decode, nms_best_first


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then sibling 1x1 convs: one objectness logit and 4 deltas per anchor."""

    def __init__(self, in_channels: int, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)  # the paper's init, section 3.1.3
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """[N, H*W*A] objectness logits and [N, H*W*A, 4] deltas."""
        hidden = torch.relu(self.conv(features))
        return flatten_outputs(self.objectness(hidden), self.deltas(hidden))


def flatten_outputs(objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    n, a, h, w = objectness.shape
    logits = objectness.permute(0, 2, 3, 1).reshape(n, -1)
    boxes = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    return logits, boxes


def propose(
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    image_size: tuple[int, int],
    min_size: float,
    pre_nms: int,
    post_nms: int,
    nms_iou: float,
) -> tuple[Tensor, Tensor]:
    """Proposals of one image: [P, 4] boxes and [P] objectness probabilities, best first.

    Decode, clip to the image, drop boxes smaller than `min_size` (in resized pixels), keep the
    `pre_nms` best, NMS, keep the `post_nms` best (paper section 3.3, py-faster-rcnn's order).
    """
    boxes, scores = ranked_candidates(anchors, logits, deltas, image_size, min_size, pre_nms)
    keep = nms_best_first(boxes, nms_iou, post_nms)
    return boxes[keep], scores[keep]


def ranked_candidates(
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    image_size: tuple[int, int],
    min_size: float,
    pre_nms: int,
) -> tuple[Tensor, Tensor]:
    """What NMS chooses proposals from: the `pre_nms` best boxes, best first, and their scores."""
    boxes = clip_boxes_to_image(decode(anchors, deltas.float()), image_size)
    scores = torch.sigmoid(logits.float())
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    order = scores.argsort(descending=True, stable=True)[:pre_nms]
    return boxes[order], scores[order]


def build_rpn(anchors: AnchorParams, rpn: RPNParams, in_channels: int) -> RPNHead:
    return RPNHead(in_channels, rpn.channels, anchors.num_anchors)


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
