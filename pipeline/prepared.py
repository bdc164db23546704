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

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from pipeline.config import DataParams, StoreParams, to_dict
from pipeline.datasets.coco import annotation_path, coco_classes, read_coco_split
from pipeline.datasets.records import BACKGROUND, ImageRecord
from pipeline.datasets.synthetic import SYNTHETIC_CLASSES
from pipeline.datasets.voc import VOC_CLASSES, read_voc_split
from pipeline.errors import DatasetError
from pipeline.images import (
    canvas_shape,
    decode_image,
    image_size,
    read_image_bytes,
    resize_scale,
    resized_shape,
    to_canvas,
)
from pipeline.store import (
    ArtifactWriter,
    Provenance,
    offsets_from_counts,
    open_artifact,
    ragged_rows,
)

log = logging.getLogger(__name__)
STAGE = "prepare"
TRAIN, TEST = 0, 1


def dataset_classes(data: DataParams) -> tuple[str, ...]:
    """The class list (without background): params' own, else the source's."""
    if data.classes is not None:
        return data.classes
    if data.source == "coco":
        root = Path(data.root)
        return coco_classes(annotation_path(root, data.coco_annotations, data.train_split))
    return SYNTHETIC_CLASSES if data.source == "synthetic" else VOC_CLASSES


def read_splits(data: DataParams, classes: tuple[str, ...]) -> list[tuple[int, ImageRecord]]:
    """(split, record) for the train then the test split; an id may appear in one split only."""
    root = Path(data.root)
    if not root.is_dir():
        raise DatasetError(f"data.root: dataset folder {root} does not exist")
    pairs = []
    for split, name in ((TRAIN, data.train_split), (TEST, data.test_split)):
        if data.source == "coco":
            path = annotation_path(root, data.coco_annotations, name)
            records = read_coco_split(root, path, data.coco_images.format(split=name), classes)
        else:
            records = read_voc_split(root, name, classes)
        pairs += [(split, r) for r in records]
    seen: set[str] = set()
    for _, record in pairs:
        if record.image_id in seen:
            raise DatasetError(f"data.root: image id {record.image_id!r} is listed twice")
        seen.add(record.image_id)
    return pairs


def fit_boxes(boxes: np.ndarray, height: int, width: int, where: str) -> tuple[np.ndarray, int]:
    """Clip boxes to the image; return them and how many changed.

    Annotations that stick out of the image a little are common (rounding, careless tools):
    clipping keeps the object. A box with no part inside the image is a broken annotation.
    """
    clipped = boxes.copy()
    clipped[:, 0::2] = boxes[:, 0::2].clip(0, width)
    clipped[:, 1::2] = boxes[:, 1::2].clip(0, height)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        k = int(np.argmax(empty))
        raise DatasetError(
            f"{where}: object {k + 1} box {boxes[k].tolist()} lies outside the "
            f"{width}x{height} image"
        )
    return clipped, int((clipped != boxes).any(axis=1).sum())


@dataclass(frozen=True)
class _Scan:
    """What a first, cheap pass over the raw files learns: sizes and a content fingerprint."""

    original_sizes: np.ndarray
    fingerprint: str


def _scan(pairs: list[tuple[int, ImageRecord]]) -> _Scan:
    hasher = hashlib.sha256()
    sizes = []
    for split, record in pairs:
        data = read_image_bytes(record.path)
        sizes.append(image_size(data, record.path))
        hasher.update(f"{split}:{record.image_id}:".encode())
        hasher.update(hashlib.sha256(data).digest())
        for array in (record.boxes, record.labels, record.difficult):
            hasher.update(np.ascontiguousarray(array).tobytes())
    return _Scan(np.array(sizes, dtype=np.int32).reshape(-1, 2), hasher.hexdigest()[:24])


def prepare_dataset(data: DataParams, store: StoreParams, out: Path) -> dict[str, int]:
    """Read the dataset named by `data`, resize it and write the prepared artifact to `out`."""
    classes = dataset_classes(data)
    pairs = read_splits(data, classes)
    scan = _scan(pairs)
    scales = np.array(
        [resize_scale(h, w, data.min_size, data.max_size) for h, w in scan.original_sizes],
        dtype=np.float32,
    )
    shapes = [resized_shape(h, w, s) for (h, w), s in zip(scan.original_sizes, scales, strict=True)]
    canvas = canvas_shape(shapes)

    boxes, counts = [], []
    clipped = 0
    for (_, record), (h, w), scale in zip(pairs, scan.original_sizes, scales, strict=True):
        fitted, changed = fit_boxes(record.boxes, int(h), int(w), record.source)
        clipped += changed
        boxes.append(fitted * scale)
        counts.append(len(fitted))

    provenance = Provenance(
        STAGE,
        params={"data": to_dict(data), "store": to_dict(store)},
        inputs={"dataset": scan.fingerprint},
    )
    writer = ArtifactWriter(out, provenance)
    n = len(pairs)
    small = {
        "image_sizes": np.array(shapes, dtype=np.int32).reshape(-1, 2),
        "original_sizes": scan.original_sizes,
        "scales": scales,
        "split": np.array([s for s, _ in pairs], dtype=np.int8),
        "object_offsets": offsets_from_counts(counts),
    }
    ragged = {
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
        "labels": np.concatenate([r.labels for _, r in pairs]).astype(np.int16),
        "difficult": np.concatenate([r.difficult for _, r in pairs]).astype(bool),
    }
    for name, values in small.items():
        writer.array(name, values.shape, values.dtype)[...] = values
    for name, values in ragged.items():
        array = writer.array(
            name, values.shape, values.dtype, attrs={"ragged_by": "object_offsets"}
        )
        if values.size:
            array[...] = values
    images = writer.array("images", (n, *canvas, 3), np.uint8, shard_items=store.shard_size)

    def canvas_image(i: int) -> dict[str, np.ndarray]:
        record = pairs[i][1]
        image = decode_image(read_image_bytes(record.path), record.path)
        return {"images": to_canvas(image, shapes[i], canvas)}

    writer.write_sharded({"images": images}, canvas_image, desc=STAGE)
    summary = {
        "images": n,
        "train_images": int((small["split"] == TRAIN).sum()),
        "test_images": int((small["split"] == TEST).sum()),
        "boxes": int(sum(counts)),
        "boxes_clipped": clipped,
    }
    writer.group.attrs.update(
        {
            "classes": [BACKGROUND, *classes],
            "image_ids": [r.image_id for _, r in pairs],
            "image_files": [str(r.path) for _, r in pairs],
            "canvas": list(canvas),
        }
    )
    writer.commit(summary={"counts": summary})
    if clipped:
        log.warning("prepare: %d boxes clipped to their image", clipped)
    return summary


class PreparedDataset:
    """Read access to the prepared artifact; the one place later stages get images and boxes."""

    def __init__(self, path: str | Path, expect: dict | None = None) -> None:
        self.path = Path(path)
        self.group = open_artifact(self.path, STAGE, expect)
        attrs = self.group.attrs.asdict()
        self.fingerprint: str = attrs["fingerprint"]
        self.classes: list[str] = attrs["classes"]
        self.image_ids: list[str] = attrs["image_ids"]
        self.canvas: tuple[int, int] = tuple(attrs["canvas"])
        self.image_sizes = self.group["image_sizes"][...]
        self.scales = self.group["scales"][...]
        self.split = self.group["split"][...]
        self._offsets = self.group["object_offsets"][...]
        self._boxes = self.group["boxes"][...]
        self._labels = self.group["labels"][...]
        self._difficult = self.group["difficult"][...]

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def images(self) -> zarr.Array:
        return self.group["images"]

    def boxes(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._boxes[ragged_rows(self._offsets, i)])

    def labels(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._labels[ragged_rows(self._offsets, i)].astype(np.int64))

    def difficult(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._difficult[ragged_rows(self._offsets, i)])
