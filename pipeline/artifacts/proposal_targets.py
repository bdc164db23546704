"""Proposal targets: the candidates of each train view's Fast R-CNN mini-batch (its proposals
plus its gt boxes), with what each would be trained towards.

proposal_targets.zarr (the train views of the proposals it was made from):
  views   [V, 2] int64          (prepared image, flipped), as in pipeline/artifacts/views.py
  boxes   [V, cap, 4] float32
  iou     [V, cap] float32      best IoU with any gt (0 when the view has none)
  labels  [V, cap] int16        class of that gt; the sampler turns low-IoU rows into background
  deltas  [V, cap, 4] float32   regression target to that gt, divided by roi.box_stds
  count   [V] int32
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import Proposals, pad_rows
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.store import ArtifactReader, open_artifact
from pipeline.artifacts.views import ViewSet
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.layout import PREPARE, Stage
from pipeline.model.targets import proposal_targets


def label_proposals(inputs: StageInputs, source: Stage) -> dict[str, float]:
    """The body of both proposal-target stages: the targets of the proposals `source` wrote."""
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    proposals = inputs.open(source, Proposals.of)
    params = inputs.params
    return write_proposal_targets(
        inputs.stage.out,
        inputs.provenance(),
        proposals,
        ViewSet(prepared, proposals.views),
        params.roi.box_stds,
        params.store.shard_size,
    )


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
    writer.put("views", proposals.views.astype(np.int64))
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
            "boxes": pad_rows(boxes.numpy(), cap),
            "iou": pad_rows(iou.numpy(), cap),
            "labels": pad_rows(labels.numpy(), cap, np.int16),
            "deltas": pad_rows(deltas.numpy(), cap),
            "count": np.int32(len(boxes)),
        }

    writer.write_sharded(arrays, make, desc=provenance.stage)
    summary = {"views": n, "candidates": int(arrays["count"][...].sum())}
    writer.commit(summary={"counts": summary})
    return summary


class ProposalTargets(ArtifactReader):
    """Read access to a proposal-target artifact of `stage`, refused if stale."""

    @classmethod
    def of(cls, source: Stage, expect: Mapping[str, Any]) -> ProposalTargets:
        return cls(source.out, source.name, expect)

    def __init__(self, path: str | Path, stage: str, expect: dict | None = None) -> None:
        self.path = Path(path)
        self.reopen_args = (self.path, stage)
        self.group = open_artifact(path, stage, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.views: np.ndarray = self.group["views"][...]
        self.count = self.group["count"][...]
        # Arrays or, after `hold_in_memory`, their content.
        self.boxes, self.iou = self.group["boxes"], self.group["iou"]
        self.labels, self.deltas = self.group["labels"], self.group["deltas"]

    def of_view(self, v: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Candidate boxes, best IoU, class (int64) and normalised deltas of view v."""
        n = int(self.count[v])
        return (
            torch.from_numpy(np.array(self.boxes[v, :n])),
            torch.from_numpy(np.array(self.iou[v, :n])),
            torch.from_numpy(self.labels[v, :n].astype(np.int64)),
            torch.from_numpy(np.array(self.deltas[v, :n])),
        )
