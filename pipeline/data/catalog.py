"""What a dataset source holds, and how `prepare` lays it out: the class list, the records of
the train and test splits, a fingerprint of their content, and each image's resize."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.config import DataParams
from pipeline.data.coco import annotation_path, coco_classes, read_coco_split
from pipeline.data.images import (
    canvas_shape,
    image_size,
    read_image_bytes,
    resize_scale,
    resized_shape,
)
from pipeline.data.records import TEST, TRAIN, DatasetPlan, ImageRecord
from pipeline.data.synthetic import SYNTHETIC_CLASSES
from pipeline.data.voc import VOC_CLASSES, read_voc_split
from pipeline.errors import DatasetError


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
    listed_in: dict[str, Path] = {}
    for split, name in ((TRAIN, data.train_split), (TEST, data.test_split)):
        if data.source == "coco":
            source = annotation_path(root, data.coco_annotations, name)
            records = read_coco_split(root, source, data.coco_images.format(split=name), classes)
        else:
            source = root / "ImageSets" / "Main" / f"{name}.txt"
            records = read_voc_split(root, name, classes)
        for record in records:
            if record.image_id in listed_in:
                raise DatasetError(
                    f"{source}: image id {record.image_id!r} is also listed in "
                    f"{listed_in[record.image_id]}; an image belongs to one split, and ids "
                    "must differ between the splits' files"
                )
            listed_in[record.image_id] = source
        pairs += [(split, r) for r in records]
    if not any(len(record.boxes) for split, record in pairs if split == TRAIN):
        # Every stage would run and "train" on background alone.
        raise DatasetError(
            f"data.root: no object of the classes {list(classes)} in the train split "
            f"{data.train_split!r}"
        )
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


def check_declared_size(record: ImageRecord, displayed: tuple[int, int]) -> None:
    """Refuse an annotation whose stated image size is not the image's: its boxes were drawn
    on another picture (a resized copy, or the stored one before its EXIF rotation)."""
    if record.declared_size is None or record.declared_size == displayed:
        return
    (height, width), (shown_h, shown_w) = record.declared_size, displayed
    hint = (
        "; width and height swapped: annotated before the image's EXIF rotation?"
        if (height, width) == (shown_w, shown_h)
        else ""
    )
    raise DatasetError(
        f"{record.source}: states a {width}x{height} image but {record.path} is {shown_w}x"
        f"{shown_h} as displayed{hint}"
    )


def plan_dataset(data: DataParams) -> DatasetPlan:
    """Read the annotations and image headers of the dataset `data` names."""
    classes = dataset_classes(data)
    records = read_splits(data, classes)
    hasher = hashlib.sha256()
    sizes = []
    for split, record in records:
        raw = read_image_bytes(record.path)
        sizes.append(image_size(raw, record.path))
        check_declared_size(record, sizes[-1])
        hasher.update(f"{split}:{record.image_id}:".encode())
        hasher.update(hashlib.sha256(raw).digest())
        for array in (record.boxes, record.labels, record.difficult):
            hasher.update(np.ascontiguousarray(array).tobytes())
    original_sizes = np.array(sizes, dtype=np.int32).reshape(-1, 2)
    scales = np.array(
        [resize_scale(h, w, data.min_size, data.max_size) for h, w in original_sizes],
        dtype=np.float32,
    )
    shapes = [resized_shape(h, w, s) for (h, w), s in zip(original_sizes, scales, strict=True)]
    boxes, clipped = [], 0
    for (_, record), (h, w), scale in zip(records, original_sizes, scales, strict=True):
        fitted, changed = fit_boxes(record.boxes, int(h), int(w), record.source)
        clipped += changed
        boxes.append(fitted * scale)
    return DatasetPlan(
        classes,
        records,
        hasher.hexdigest()[:24],
        original_sizes,
        scales,
        shapes,
        canvas_shape(shapes),
        boxes,
        clipped,
    )
