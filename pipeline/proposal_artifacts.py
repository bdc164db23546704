"""Proposals and proposal targets: ragged per view, stored as a fixed cap plus a count.

proposals.zarr (V views):
  views   [V, 2] int64          (prepared image, flipped), as in pipeline/views.py
  boxes   [V, cap, 4] float32   best first; rows past count[v] are zero
  scores  [V, cap] float32      objectness probability
  count   [V] int32
proposal_targets.zarr: the candidates of the Fast R-CNN mini-batch of each view (its proposals
plus its gt boxes):
  boxes   [V, cap, 4] float32
  iou     [V, cap] float32      best IoU with any gt (0 when the view has none)
  labels  [V, cap] int16        class of that gt; the sampler turns low-IoU rows into background
  deltas  [V, cap, 4] float32   regression target to that gt, divided by roi.box_stds
  count   [V] int32
A cap rather than flat arrays with offsets lets each shard of views be written whole, and so
resumed, like every other array.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import Tensor

from pipeline.store import ArtifactWriter, Provenance, open_artifact
from pipeline.targets import proposal_targets
from pipeline.views import ViewSet


def _pad(values: np.ndarray, cap: int, dtype: type = np.float32) -> np.ndarray:
    out = np.zeros((cap, *values.shape[1:]), dtype=dtype)
    out[: len(values)] = values
    return out


def write_proposals(
    out: Path,
    provenance: Provenance,
    views: np.ndarray,
    cap: int,
    shard_size: int,
    propose: Callable[[int], tuple[Tensor, Tensor]],
) -> dict[str, float]:
    """`propose(v)` gives the boxes and scores of view v, at most `cap` of them."""
    writer = ArtifactWriter(out, provenance)
    n = len(views)
    writer.array("views", views.shape, np.int64)[...] = views
    arrays = {
        "boxes": writer.array("boxes", (n, cap, 4), np.float32, shard_items=shard_size),
        "scores": writer.array("scores", (n, cap), np.float32, shard_items=shard_size),
        "count": writer.array("count", (n,), np.int32, shard_items=shard_size),
    }

    def make(v: int) -> dict[str, np.ndarray]:
        boxes, scores = propose(v)
        return {
            "boxes": _pad(boxes.cpu().numpy(), cap),
            "scores": _pad(scores.cpu().numpy(), cap),
            "count": np.int32(len(boxes)),
        }

    writer.write_sharded(arrays, make, desc=provenance.stage)
    counts = arrays["count"][...]
    summary = {
        "views": n,
        "mean_proposals": float(counts.mean()),
        "min_proposals": int(counts.min()),
    }
    writer.commit(summary={"counts": summary})
    return summary


class Proposals:
    def __init__(self, path: str | Path, stage: str, expect: dict | None = None) -> None:
        self.group = open_artifact(path, stage, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.views = self.group["views"][...]
        self.count = self.group["count"][...]
        self.cap = self.group["boxes"].shape[1]

    def of_view(self, v: int) -> tuple[Tensor, Tensor]:
        n = int(self.count[v])
        boxes = torch.from_numpy(self.group["boxes"][v, :n])
        return boxes, torch.from_numpy(self.group["scores"][v, :n])


def write_proposal_targets(
    out: Path,
    provenance: Provenance,
    proposals: Proposals,
    views: ViewSet,
    stds: tuple[float, ...],
    shard_size: int,
) -> dict[str, float]:
    writer = ArtifactWriter(out, provenance)
    n = len(proposals.views)
    most_gt = max(len(views.boxes(v)) for v in range(n))
    cap = proposals.cap + most_gt
    writer.array("views", proposals.views.shape, np.int64)[...] = proposals.views
    arrays = {
        "boxes": writer.array("boxes", (n, cap, 4), np.float32, shard_items=shard_size),
        "iou": writer.array("iou", (n, cap), np.float32, shard_items=shard_size),
        "labels": writer.array("labels", (n, cap), np.int16, shard_items=shard_size),
        "deltas": writer.array("deltas", (n, cap, 4), np.float32, shard_items=shard_size),
        "count": writer.array("count", (n,), np.int32, shard_items=shard_size),
    }

    def make(v: int) -> dict[str, np.ndarray]:
        boxes, iou, labels, deltas = proposal_targets(
            proposals.of_view(v)[0], views.boxes(v), views.labels(v), tuple(stds)
        )
        return {
            "boxes": _pad(boxes.numpy(), cap),
            "iou": _pad(iou.numpy(), cap),
            "labels": _pad(labels.numpy(), cap, np.int16),
            "deltas": _pad(deltas.numpy(), cap),
            "count": np.int32(len(boxes)),
        }

    writer.write_sharded(arrays, make, desc=provenance.stage)
    summary = {"views": n, "candidates": int(arrays["count"][...].sum())}
    writer.commit(summary={"counts": summary})
    return summary


class ProposalTargets:
    def __init__(self, path: str | Path, stage: str, expect: dict | None = None) -> None:
        self.group: zarr.Group = open_artifact(path, stage, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.count = self.group["count"][...]

    def of_view(self, v: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Candidate boxes, best IoU, class (int64) and normalised deltas of view v."""
        n = int(self.count[v])
        g = self.group
        return (
            torch.from_numpy(g["boxes"][v, :n]),
            torch.from_numpy(g["iou"][v, :n]),
            torch.from_numpy(g["labels"][v, :n].astype(np.int64)),
            torch.from_numpy(g["deltas"][v, :n]),
        )
