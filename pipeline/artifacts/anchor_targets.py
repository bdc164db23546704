"""The anchor-target artifact: per view, per anchor of the canvas grid, a label and a target.

Arrays (V views, see pipeline/artifacts/views.py; a Hf x Wf feature grid over the prepared canvas; A
anchors per cell):
  views    [V, 2] int64            (prepared image index, flipped)
  anchors  [Hf, Wf, A, 4] float32  the canvas anchors, [x1, y1, x2, y2], the head's output order
  labels   [V, Hf, Wf, A] int8     -1 ignore, 0 background, 1 foreground (before sampling)
  deltas   [V, Hf, Wf, A, 4] float32  (dx, dy, dw, dh) to the matched gt; zero unless foreground

Anchors are laid on the whole padded canvas, so every image shares one grid; cells beyond an
image's own size hold anchors that cross its border, which are ignored (-1) like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from pipeline.artifacts.integrity import CheckedArray
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.ragged import iter_blocks
from pipeline.artifacts.store import ArtifactReader, open_artifact
from pipeline.artifacts.views import ViewSet
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.config import AnchorParams, AnchorTargetParams
from pipeline.data.records import TRAIN
from pipeline.errors import ParamError
from pipeline.layout import ANCHOR_TARGETS
from pipeline.model.anchors import base_anchors, grid_anchors
from pipeline.model.targets import IGNORE, anchor_targets, best_anchor_iou

log = logging.getLogger(__name__)


def feature_grid(canvas: tuple[int, int], stride: int) -> tuple[int, int]:
    height, width = canvas
    if height % stride or width % stride:
        raise ParamError(
            f"params.yaml: 'anchors.stride' is {stride}; allowed: a divisor of the prepared "
            f"canvas {height}x{width}"
        )
    return height // stride, width // stride


def write_anchor_targets(
    out: Path,
    provenance: Provenance,
    views: ViewSet,
    anchors_params: AnchorParams,
    target_params: AnchorTargetParams,
    shard_size: int,
) -> dict[str, int]:
    """Label every anchor of every view in `views` and write the artifact to `out`."""
    grid = feature_grid(views.prepared.canvas, anchors_params.stride)
    base = base_anchors(anchors_params.stride, anchors_params.ratios, anchors_params.scales)
    anchors = grid_anchors(base, *grid, anchors_params.stride)
    flat_anchors = anchors.reshape(-1, 4)
    coverage = anchor_coverage(views, flat_anchors, anchors_params, target_params)
    writer = ArtifactWriter(out, provenance)
    n, shape = len(views), (*grid, anchors_params.num_anchors)
    writer.put("views", views.views.astype(np.int64))
    writer.put("anchors", anchors.numpy().astype(np.float32))
    labels = writer.array("labels", (n, *shape), np.int8, shard_items=shard_size, fill_value=IGNORE)
    deltas = writer.array("deltas", (n, *shape, 4), np.float32, shard_items=shard_size)

    def targets_of(v: int) -> dict[str, np.ndarray]:
        label, delta = anchor_targets(
            flat_anchors,
            views.boxes(v),
            views.size(v),
            target_params.fg_iou,
            target_params.bg_iou,
            target_params.allowed_border,
        )
        return {"labels": label.reshape(shape).numpy(), "deltas": delta.reshape(*shape, 4).numpy()}

    writer.write_sharded({"labels": labels, "deltas": deltas}, targets_of, desc=provenance.stage)
    counts = _label_counts(labels)
    if counts["background"] == 0:  # the RPN would learn that everything is an object
        raise ParamError(
            f"params.yaml: 'anchors.scales' is {list(anchors_params.scales)}: no anchor is "
            "background in any image (anchors crossing the border are ignored); choose scales "
            "that fit the images and objects"
        )
    writer.commit(summary={"counts": counts, "coverage": coverage})
    return {**counts, **coverage}


def anchor_coverage(
    views: ViewSet, flat_anchors: torch.Tensor, anchors: AnchorParams, targets: AnchorTargetParams
) -> dict[str, int]:
    """How many gt boxes of the train views reach `fg_iou` with some anchor, and how many no
    anchor overlaps at all; said before any work, and refused when no box can be foreground."""
    best = torch.cat(
        [
            best_anchor_iou(flat_anchors, views.boxes(v), views.size(v), targets.allowed_border)
            for v in views.of_split(TRAIN)
        ]
    )
    coverage = {
        "gt_boxes": len(best),
        "gt_below_fg_iou": int((best < targets.fg_iou).sum()),
        "gt_without_anchor": int((best == 0).sum()),
    }
    if len(best) and coverage["gt_without_anchor"] == len(best):
        raise ParamError(
            f"params.yaml: 'anchors.scales' is {list(anchors.scales)}: no anchor inside an image "
            f"overlaps any of the {len(best)} train boxes, so the RPN would see no foreground; "
            "choose scales that fit the images and objects"
        )
    if coverage["gt_below_fg_iou"]:
        log.warning(
            "%s: %d of %d train boxes reach no anchor at IoU >= %g (their best anchor is their "
            "only target); %d overlap no anchor at all",
            ANCHOR_TARGETS.name,
            coverage["gt_below_fg_iou"],
            len(best),
            targets.fg_iou,
            coverage["gt_without_anchor"],
        )
    return coverage


def _label_counts(labels: zarr.Array) -> dict[str, int]:
    counts = np.zeros(3, dtype=np.int64)
    for block in iter_blocks(labels):
        counts += np.bincount(block.ravel().astype(np.int64) - IGNORE, minlength=3)
    return dict(zip(("ignore", "background", "foreground"), counts.tolist(), strict=True))


class AnchorTargets(ArtifactReader):
    """Read access to the anchor-target artifact, refused if stale (see `open_artifact`)."""

    def __init__(self, path: str | Path, expect: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.reopen_args = (self.path,)
        self.group = open_artifact(path, ANCHOR_TARGETS.name, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.views: np.ndarray = self.group["views"][...]
        self.anchors: CheckedArray = self.group["anchors"]
        self.labels: CheckedArray = self.group["labels"]
        self.deltas: CheckedArray = self.group["deltas"]
