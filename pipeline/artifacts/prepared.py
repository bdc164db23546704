"""The prepared dataset: resized images on a padded canvas plus boxes, as one Zarr artifact.

Arrays (N images, M boxes in all):
  images          [N, H, W, 3] uint8   resized image top-left on a zero canvas; 1 chunk per image
  image_sizes     [N, 2] int32         (height, width) of the resized image inside the canvas
  original_sizes  [N, 2] int32         (height, width) of the source image
  scales          [N] float32          resized / original
  split           [N] int8             0 train, 1 test
  object_offsets  [N + 1] int64        image i owns rows object_offsets[i]:object_offsets[i + 1]
  boxes           [M, 4] float32       [x1, y1, x2, y2] in resized pixels
  labels          [M] int16            index into attrs["classes"] (0 is background)
  difficult       [M] bool
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts.integrity import CheckedArray
from pipeline.artifacts.memory import holds_in_memory
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.ragged import offsets_from_counts, ragged_rows
from pipeline.artifacts.store import ArtifactReader, open_artifact
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.data.images import decode_image, read_image_bytes, to_canvas
from pipeline.data.records import BACKGROUND_CLASS, TEST, TRAIN, DatasetPlan
from pipeline.layout import PREPARE


def write_prepared(
    out: Path, provenance: Provenance, plan: DatasetPlan, shard_size: int
) -> dict[str, int]:
    """Write the planned dataset, decoding and resizing its images one shard at a time."""
    writer = ArtifactWriter(out, provenance)
    records = plan.records
    n = len(records)
    counts = [len(b) for b in plan.boxes]
    small = {
        "image_sizes": np.array(plan.shapes, dtype=np.int32).reshape(-1, 2),
        "original_sizes": plan.original_sizes,
        "scales": plan.scales,
        "split": np.array([s for s, _ in records], dtype=np.int8),
        "object_offsets": offsets_from_counts(counts),
    }
    ragged = {
        "boxes": np.concatenate(plan.boxes).astype(np.float32).reshape(-1, 4),
        "labels": np.concatenate([r.labels for _, r in records]).astype(np.int16),
        "difficult": np.concatenate([r.difficult for _, r in records]).astype(bool),
    }
    for name, values in small.items():
        writer.put(name, values)
    for name, values in ragged.items():
        writer.put(name, values, attrs={"ragged_by": "object_offsets"})
    images = writer.array("images", (n, *plan.canvas, 3), np.uint8, shard_items=shard_size)

    def canvas_image(i: int) -> dict[str, np.ndarray]:
        record = records[i][1]
        image = decode_image(read_image_bytes(record.path), record.path)
        return {"images": to_canvas(image, plan.shapes[i], plan.canvas)}

    writer.write_sharded({"images": images}, canvas_image, desc=provenance.stage)
    summary = {
        "images": n,
        "train_images": int((small["split"] == TRAIN).sum()),
        "test_images": int((small["split"] == TEST).sum()),
        "boxes": int(sum(counts)),
        "boxes_clipped": plan.boxes_clipped,
    }
    writer.group.attrs.update(
        {
            "classes": [BACKGROUND_CLASS, *plan.classes],
            "image_ids": [r.image_id for _, r in records],
            "image_files": [str(r.path) for _, r in records],
            "canvas": list(plan.canvas),
        }
    )
    writer.commit(summary={"counts": summary})
    return summary


class PreparedDataset(ArtifactReader):
    """Read access to the prepared artifact; the one place later stages get images and boxes."""

    def __init__(self, path: str | Path, expect: dict | None = None) -> None:
        self.path = Path(path)
        self.reopen_args = (self.path,)
        self.group = open_artifact(self.path, PREPARE.name, expect)
        attrs = self.group.attrs.asdict()
        self.fingerprint: str = attrs["fingerprint"]
        self.classes: list[str] = attrs["classes"]
        self.image_ids: list[str] = attrs["image_ids"]
        self.canvas: tuple[int, int] = tuple(attrs["canvas"])
        self.image_sizes = self.group["image_sizes"][...]
        self.original_sizes = self.group["original_sizes"][...]
        self.scales = self.group["scales"][...]
        self.split = self.group["split"][...]
        self._offsets = self.group["object_offsets"][...]
        self._boxes = self.group["boxes"][...]
        self._labels = self.group["labels"][...]
        self._difficult = self.group["difficult"][...]
        self.images: CheckedArray | np.ndarray = self.group["images"]  # [N, H, W, 3] uint8

    def __len__(self) -> int:
        return len(self.image_ids)

    def keep_images_in_memory(self, choice: str) -> bool:
        """Read every image into memory once when `train.images_in_memory` allows it, so that
        a training stage decodes each image once rather than once per iteration that uses it."""
        keep = holds_in_memory(choice, "train.images_in_memory", [self.images])
        if keep:
            self.hold_in_memory("images")
        return keep

    def boxes(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._boxes[ragged_rows(self._offsets, i)])

    def labels(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._labels[ragged_rows(self._offsets, i)].astype(np.int64))

    def difficult(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._difficult[ragged_rows(self._offsets, i)])
