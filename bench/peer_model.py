"""torchvision's FasterRCNN built to match a profile: the same backbone module (and so the
same weights, when given), anchors, proposal counts, RoIAlign size, fc width and test-time
thresholds, on the same normalised images. What a user would pick instead of this pipeline."""

from __future__ import annotations

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from pipeline.config import Params
from pipeline.model.backbones import Backbone


def torchvision_detector(params: Params, backbone: Backbone, num_classes: int) -> FasterRCNN:
    """`num_classes` counts background. Images are given normalised, at the prepared size:
    torchvision's own transform then neither rescales nor renormalises them."""
    anchors, proposals, roi = params.anchors, params.proposals, params.roi
    sizes = tuple(float(anchors.stride * s) for s in anchors.scales)
    generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(tuple(anchors.ratios),))
    channels = backbone.out_channels
    return FasterRCNN(
        backbone,
        min_size=params.data.min_size,
        max_size=params.data.max_size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=generator,
        rpn_head=RPNHead(channels, generator.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=proposals.train_pre_nms,
        rpn_post_nms_top_n_train=proposals.train_post_nms,
        rpn_pre_nms_top_n_test=proposals.test_pre_nms,
        rpn_post_nms_top_n_test=proposals.test_post_nms,
        rpn_nms_thresh=proposals.nms_iou,
        rpn_fg_iou_thresh=params.anchor_targets.fg_iou,
        rpn_bg_iou_thresh=params.anchor_targets.bg_iou,
        rpn_batch_size_per_image=params.rpn.batch_size,
        rpn_positive_fraction=params.rpn.fg_fraction,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=roi.size, sampling_ratio=2),
        box_head=TwoMLPHead(channels * roi.size**2, roi.fc_dim),
        box_predictor=FastRCNNPredictor(roi.fc_dim, num_classes),
        box_score_thresh=params.detect.score_thresh,
        box_nms_thresh=params.detect.nms_iou,
        box_detections_per_img=params.detect.max_detections,
        box_fg_iou_thresh=roi.fg_iou,
        box_bg_iou_thresh=roi.bg_iou_high,
        box_batch_size_per_image=roi.batch_size,
        box_positive_fraction=roi.fg_fraction,
        bbox_reg_weights=tuple(1.0 / s for s in roi.box_stds),
    )
