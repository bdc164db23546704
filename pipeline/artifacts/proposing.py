"""The bodies of the proposal stages: the RPN of step 1 on images, or of step 3 on the feature
cache, proposing for the train views (train top-N, what the next step trains on) or the test
views (test top-N, the recall `evaluate` reports)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import write_proposals
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewImages, ViewSet, split_views, view_rows
from pipeline.config import Params
from pipeline.data.feeding import BatchReader, feed
from pipeline.data.records import TRAIN
from pipeline.devices import resolve_device
from pipeline.errors import ParamError
from pipeline.layout import PREPARE, STEP1_RPN, STEP3_FEATURES, STEP3_RPN
from pipeline.model.backbones import saved_backbone
from pipeline.model.rpn import build_rpn, view_proposals


@torch.no_grad()
def propose_on_images(inputs: StageInputs, split: int) -> dict:
    """Proposals of the views of `split` from the step-1 backbone and RPN."""
    params = inputs.params
    device = resolve_device(params.train.device)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    saved = inputs.model(STEP1_RPN)
    backbone = saved_backbone(params.backbone, params.anchors.stride, saved["parts"]["backbone"])
    rpn = build_rpn(params.anchors, params.rpn, backbone.out_channels)
    rpn.load_state_dict(saved["parts"]["rpn"])
    backbone.eval().to(device)
    rpn.eval().to(device)
    views = ViewSet(prepared, split_views(prepared.split, params.augment.flip, split))

    def propose(v: int, image: Tensor) -> tuple[Tensor, Tensor]:
        return _view_proposals(params, rpn, backbone(image.to(device)), views, v, split)

    return _write(inputs, views, split, propose, ViewImages(views), device)


@torch.no_grad()
def propose_on_cache(inputs: StageInputs, split: int) -> dict:
    """Proposals of the views of `split` from the step-3 RPN on the cached features."""
    params = inputs.params
    device = resolve_device(params.train.device)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    cache = inputs.open(STEP3_FEATURES, Features.of)
    saved = inputs.model(STEP3_RPN)
    rpn = build_rpn(params.anchors, params.rpn, cache.channels)
    rpn.load_state_dict(saved["parts"]["rpn"])
    rpn.eval().to(device)
    views = ViewSet(prepared, split_views(prepared.split, params.augment.flip, split))
    cached = CachedFeatures(cache, view_rows(views.views, cache.views, str(cache.path)))

    def propose(v: int, features: Tensor) -> tuple[Tensor, Tensor]:
        return _view_proposals(params, rpn, features.to(device), views, v, split)

    return _write(inputs, views, split, propose, cached, device)


def _view_proposals(
    params: Params, rpn: torch.nn.Module, features: Tensor, views: ViewSet, v: int, split: int
) -> tuple[Tensor, Tensor]:
    return view_proposals(
        rpn,
        features,
        params.anchors,
        params.proposals,
        views.size(v),
        views.scale(v),
        split == TRAIN,
    )


def _check_min_size(min_size: float, views: ViewSet) -> None:
    """Refuse a `proposals.min_size` no proposal can reach (a box inside an image is at most
    its shorter side in both directions): every proposal would be dropped, and the steps after
    would train and evaluate on nothing."""
    images = views.views[:, 0]
    resized = views.prepared.image_sizes[...][images].min(axis=1)
    largest = float((resized / views.prepared.scales[...][images]).max())
    if min_size > largest:
        raise ParamError(
            f"params.yaml: 'proposals.min_size' is {min_size:g}; no proposal can be that large "
            f"(the shorter side of every image is at most {largest:.0f} px, in the image's own "
            f"pixels); allowed here: at most {largest:.0f}"
        )


def _write(
    inputs: StageInputs,
    views: ViewSet,
    split: int,
    propose: Callable[[int, Any], tuple[Tensor, Tensor]],
    read: BatchReader,
    device: torch.device,
) -> dict:
    params = inputs.params
    proposals = params.proposals
    _check_min_size(proposals.min_size, views)
    cap = proposals.train_post_nms if split == TRAIN else proposals.test_post_nms

    def feed_views(items: list[int]) -> Iterable[Any]:
        return feed(read, [[v] for v in items], params.train.workers, device)

    return write_proposals(
        inputs.stage.out,
        inputs.provenance(),
        views.views,
        cap,
        params.store.shard_size,
        propose,
        feed_views,
    )
