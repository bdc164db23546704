"""Proposals of the RPN of step 1 or 3: ragged per view, stored as a fixed cap plus a count.

proposals.zarr (train views, train top-N) and test_proposals.zarr (test views, test top-N):
  views   [V, 2] int64          (prepared image, flipped), as in pipeline/artifacts/views.py
  boxes   [V, cap, 4] float32   best first; rows past count[v] are zero
  scores  [V, cap] float32      objectness probability
  count   [V] int32
A cap rather than flat arrays with offsets lets each shard of views be written whole, and so
resumed, like every other array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.store import ArtifactReader, open_artifact
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.layout import Stage


def pad_rows(values: np.ndarray, cap: int, dtype: type = np.float32) -> np.ndarray:
    out = np.zeros((cap, *values.shape[1:]), dtype=dtype)
    out[: len(values)] = values
    return out


def write_proposals(
    out: Path,
    provenance: Provenance,
    views: np.ndarray,
    cap: int,
    shard_size: int,
    propose: Callable[[int, Any], tuple[Tensor, Tensor]],
    feed_views: Callable[[list[int]], Iterable[Any]],
) -> dict[str, float]:
    """Proposals of `views`: `propose(v, inputs)` gives the boxes and scores of view v (at most
    `cap`) from its inputs, which `feed_views` reads ahead."""
    writer = ArtifactWriter(out, provenance)
    n = len(views)
    writer.put("views", views.astype(np.int64))
    arrays = {
        "boxes": writer.array("boxes", (n, cap, 4), np.float32, shard_items=shard_size),
        "scores": writer.array("scores", (n, cap), np.float32, shard_items=shard_size),
        "count": writer.array("count", (n,), np.int32, shard_items=shard_size),
    }

    def make(v: int, inputs: Any) -> dict[str, np.ndarray]:
        boxes, scores = propose(v, inputs)
        return {
            "boxes": pad_rows(boxes.cpu().numpy(), cap),
            "scores": pad_rows(scores.cpu().numpy(), cap),
            "count": np.int32(len(boxes)),
        }

    writer.write_sharded(arrays, make, provenance.stage, feed_views)
    counts = arrays["count"][...]
    summary = {
        "views": n,
        "mean_proposals": float(counts.mean()),
        "min_proposals": int(counts.min()),
    }
    writer.commit(summary={"counts": summary})
    return summary


class Proposals(ArtifactReader):
    """Read access to a proposal artifact of `stage`, refused if stale."""

    @classmethod
    def of(cls, source: Stage, expect: Mapping[str, Any]) -> Proposals:
        return cls(source.out, source.name, expect)

    def __init__(self, path: str | Path, stage: str, expect: Mapping | None = None) -> None:
        self.reopen_args = (path, stage)
        self.group = open_artifact(path, stage, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.views = self.group["views"][...]
        self.count = self.group["count"][...]
        self.cap = self.group["boxes"].shape[1]

    def of_view(self, v: int) -> tuple[Tensor, Tensor]:
        n = int(self.count[v])
        boxes = torch.from_numpy(self.group["boxes"][v, :n])
        return boxes, torch.from_numpy(self.group["scores"][v, :n])
