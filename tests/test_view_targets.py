"""A mirrored training view is the mirror of its image in everything the pipeline stores for it:
pixels, boxes, anchor labels and regression targets, proposal targets.

The views are built the way every stage builds them (`make_views`, `ViewSet`) over a prepared
dataset of random integer boxes, and the targets are written by the artifact writers
themselves. With image widths a multiple of the stride and anchors of exact coordinates
(ratios 1/4, 1 and 4), mirroring is exact: column j of the anchor grid is column W/stride-1-j
of the mirrored view, and dx changes sign."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from pipeline.artifacts.anchor_targets import write_anchor_targets
from pipeline.artifacts.proposal_targets import write_proposal_targets
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.views import ViewSet, make_views
from pipeline.config import AnchorParams, AnchorTargetParams
from pipeline.data.images import padded
from pipeline.data.records import TEST, TRAIN

STRIDE = 8
ANCHORS = AnchorParams(stride=STRIDE, ratios=(0.25, 1.0, 4.0), scales=(1.0, 2.0, 4.0))
TARGETS = AnchorTargetParams(fg_iou=0.5, bg_iou=0.3, allowed_border=0)
MIRROR_DELTAS = np.array([-1.0, 1.0, 1.0, 1.0], dtype=np.float32)  # (dx, dy, dw, dh)


@dataclass
class Prepared:
    """What `ViewSet` reads of a prepared dataset: one train image and one test image."""

    images: np.ndarray  # [N, H, W, 3] uint8 on the canvas
    image_sizes: np.ndarray  # [N, 2]
    box_lists: list[np.ndarray]
    label_lists: list[np.ndarray]
    split = np.array([TRAIN, TEST], dtype=np.int8)
    scales = np.ones(2, dtype=np.float32)

    @property
    def canvas(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    def boxes(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.box_lists[i])

    def labels(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.label_lists[i])


@dataclass
class StoredProposals:
    """What `write_proposal_targets` reads of a proposal artifact."""

    views: np.ndarray
    rows: list[np.ndarray]

    @property
    def cap(self) -> int:
        return max(len(r) for r in self.rows)

    def of_view(self, v: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.rows[v]), torch.ones(len(self.rows[v]))


def mirrored(boxes: np.ndarray, width: int) -> np.ndarray:
    """By hand, not by the code under test: x1' = W - x2, x2' = W - x1."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


@st.composite
def integer_boxes(draw, height: int, width: int, most: int, least: int = 0) -> np.ndarray:
    boxes = []
    for _ in range(draw(st.integers(least, most))):
        w = draw(st.integers(4, width // 2))
        h = draw(st.integers(4, height // 2))
        x = draw(st.integers(0, width - w))
        y = draw(st.integers(0, height - h))
        boxes.append([x, y, x + w, y + h])
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


@st.composite
def prepared_datasets(draw) -> Prepared:
    height, width = (STRIDE * draw(st.integers(4, 10)) for _ in range(2))
    boxes = draw(integer_boxes(height, width, most=4))
    labels = np.array([draw(st.integers(1, 3)) for _ in boxes], dtype=np.int64)
    canvas = (padded(height), padded(width))
    seed = draw(st.integers(0, 2**16))
    images = np.zeros((2, *canvas, 3), dtype=np.uint8)
    images[:, :height, :width] = np.random.default_rng(seed).integers(0, 256, (2, height, width, 3))
    return Prepared(images, np.array([[height, width]] * 2), [boxes, boxes[:0]],
                    [labels, labels[:0]])  # fmt: skip


def train_views(prepared: Prepared) -> ViewSet:
    views = ViewSet(prepared, make_views(prepared.split, flip=True))
    # The train image as it is, the test image, then the train image mirrored.
    assert views.views.tolist() == [[0, 0], [1, 0], [0, 1]]
    return views


@given(prepared_datasets())
@settings(max_examples=30, deadline=None)
def test_a_mirrored_view_holds_the_mirrored_image_and_boxes(prepared):
    views = train_views(prepared)
    height, width = views.size(2)
    assert views.size(2) == views.size(0)
    np.testing.assert_array_equal(
        views.image(2)[:, :height, :width].numpy(),
        views.image(0)[:, :height, :width].flip(-1).numpy(),
    )
    np.testing.assert_array_equal(views.boxes(2).numpy(), mirrored(prepared.box_lists[0], width))
    np.testing.assert_array_equal(views.labels(2).numpy(), prepared.label_lists[0])


@given(prepared_datasets())
@settings(max_examples=30, deadline=None)
def test_a_mirrored_view_gets_the_mirrored_anchor_labels_and_targets(prepared):
    views = train_views(prepared)
    width = views.size(0)[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "anchor_targets.zarr"
        provenance = Provenance("anchor_targets", params={}, inputs={})
        write_anchor_targets(out, provenance, views, ANCHORS, TARGETS, shard_size=2)
        group = zarr.open_group(out, mode="r")
        labels, deltas = group["labels"][...], group["deltas"][...]
    columns = width // STRIDE  # the grid cells over the image; the rest cross its border
    assert (labels[:, :, columns:] == -1).all()
    np.testing.assert_array_equal(labels[2, :, :columns], labels[0, :, :columns][:, ::-1])
    np.testing.assert_array_equal(
        deltas[2, :, :columns], deltas[0, :, :columns][:, ::-1] * MIRROR_DELTAS
    )
    if len(prepared.box_lists[0]):
        assert (labels[0] == 1).any()


@given(prepared_datasets(), st.data())
@settings(max_examples=30, deadline=None)
def test_a_mirrored_view_gets_the_mirrored_proposal_targets(prepared, data):
    views = train_views(prepared)
    height, width = views.size(0)
    proposals = data.draw(integer_boxes(height, width, most=6, least=1))
    train = views.views[[0, 2]]
    stored = StoredProposals(train, [proposals, mirrored(proposals, width)])
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "proposal_targets.zarr"
        provenance = Provenance("step1_proposal_targets", params={}, inputs={})
        write_proposal_targets(
            out, provenance, stored, ViewSet(prepared, train), (0.1, 0.1, 0.2, 0.2), shard_size=1
        )
        group = zarr.open_group(out, mode="r")
        count = group["count"][...]
        boxes, iou = group["boxes"][...], group["iou"][...]
        labels, deltas = group["labels"][...], group["deltas"][...]
    n = len(proposals) + len(prepared.box_lists[0])  # each proposal, then each gt box
    assert count.tolist() == [n, n]
    np.testing.assert_array_equal(boxes[1, :n], mirrored(boxes[0, :n], width))
    np.testing.assert_array_equal(iou[1, :n], iou[0, :n])
    np.testing.assert_array_equal(labels[1, :n], labels[0, :n])
    np.testing.assert_allclose(deltas[1, :n], deltas[0, :n] * MIRROR_DELTAS, atol=1e-6)
    if len(prepared.box_lists[0]):  # the gt boxes themselves are candidates, at IoU 1
        np.testing.assert_array_equal(iou[0, len(proposals) : n], 1.0)


def test_anchor_labels_follow_the_anchor_target_thresholds_of_params():
    """One 32 px object among 32 px anchors half a cell to two cells off its centre, at IoU
    0.78, 0.38 and 0.24: with fg_iou 0.6 and bg_iou 0.2 the first are foreground, the others
    ignored, those further off background; thresholds swapped or read from elsewhere label
    them otherwise."""
    box = np.array([[8.0, 8.0, 40.0, 40.0]], dtype=np.float32)
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    prepared = Prepared(images, np.array([[64, 64]] * 2), [box, box[:0]],
                        [np.ones(1, dtype=np.int64), np.zeros(0, dtype=np.int64)])  # fmt: skip
    views = train_views(prepared)
    anchors = AnchorParams(stride=STRIDE, ratios=(1.0,), scales=(4.0,))
    thresholds = AnchorTargetParams(fg_iou=0.6, bg_iou=0.2, allowed_border=0)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "anchor_targets.zarr"
        write_anchor_targets(out, Provenance("anchor_targets", {}, {}), views, anchors,
                             thresholds, shard_size=2)  # fmt: skip
        group = zarr.open_group(out, mode="r")
        labels, grid = group["labels"][0, ..., 0], group["anchors"][..., 0, :]
    iou = box_iou(torch.from_numpy(grid.reshape(-1, 4)), torch.from_numpy(box))
    iou = iou.reshape(grid.shape[:2]).numpy()
    inside = (grid[..., 0] >= 0) & (grid[..., 1] >= 0) & (grid[..., 2] <= 64) & (grid[..., 3] <= 64)
    expected = np.full(labels.shape, -1)
    expected[inside & (iou < 0.2)] = 0
    expected[inside & (iou >= 0.6 - 1e-6)] = 1
    np.testing.assert_array_equal(labels, expected)
    ignored = inside & (expected == -1)
    assert set(np.round(iou[ignored].astype(float), 2).tolist()) == {0.38, 0.24}  # between
    assert (expected == 1).sum() == 4 and (expected == 0).sum() > 0
