"""What every dataset reader returns (per image, its file and its boxes in original pixels),
and the plan of the prepared dataset made from them."""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DatasetError

BACKGROUND_CLASS = "__background__"  # class 0 of every class list
TRAIN, TEST = 0, 1  # split codes


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    path: Path
    boxes: np.ndarray  # [K, 4] float32, [x1, y1, x2, y2] in original pixels
    labels: np.ndarray  # [K] int64, index into the class list (0 is background)
    difficult: np.ndarray  # [K] bool
    source: str  # where the annotation came from, for error messages
    declared_size: tuple[int, int] | None = None  # (height, width) the annotation states


@dataclass(frozen=True)
class DatasetPlan:
    """Everything `prepare` writes except the pixels, which are decoded one shard at a time."""

    classes: tuple[str, ...]  # without background
    records: list[tuple[int, ImageRecord]]  # (split, record), train then test
    fingerprint: str  # of the raw files and annotations
    original_sizes: np.ndarray  # [N, 2] int32 (height, width)
    scales: np.ndarray  # [N] float32, resized / original
    shapes: list[tuple[int, int]]  # resized (height, width)
    canvas: tuple[int, int]
    boxes: list[np.ndarray]  # per image, [K, 4] in resized pixels, clipped to the image
    boxes_clipped: int


def make_record(
    image_id: str,
    path: Path,
    objects: list[tuple[list[float], int, bool]],
    source: str,
    declared_size: tuple[int, int] | None = None,
) -> ImageRecord:
    boxes = np.array([o[0] for o in objects], dtype=np.float32).reshape(-1, 4)
    labels = np.array([o[1] for o in objects], dtype=np.int64)
    difficult = np.array([o[2] for o in objects], dtype=bool)
    return ImageRecord(image_id, path, boxes, labels, difficult, source, declared_size)


def parse_side(raw: object, where: str, name: str) -> int:
    """An image side stated by an annotation: a positive whole number of pixels."""
    value = parse_coordinate(raw, where, name)
    if value < 1 or value != int(value):
        raise DatasetError(f"{where}: {name} is {raw!r}, not a positive whole number of pixels")
    return int(value)


# Pixel coordinates beyond this lie outside any image this pipeline decodes (fewer pixels than
# that in all), and near float32's limit would overflow the boxes as stored.
MAX_COORDINATE = 1e9


def parse_coordinate(raw: object, where: str, name: str) -> float:
    """A finite number, or a DatasetError that says which coordinate of which object is bad."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} is {raw!r}, not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {name} is {raw!r}, not a finite number")
    if abs(value) > MAX_COORDINATE:
        raise DatasetError(f"{where}: {name} is {raw!r}, beyond any image ({MAX_COORDINATE:g} px)")
    return value


def check_box(box: list[float], where: str) -> None:
    x1, y1, x2, y2 = box
    if x2 <= x1:
        raise DatasetError(f"{where}: x2 ({x2:g}) <= x1 ({x1:g}), an empty box")
    if y2 <= y1:
        raise DatasetError(f"{where}: y2 ({y2:g}) <= y1 ({y1:g}), an empty box")


def safe_join(root: Path, relative: object, what: str, within: Path | None = None) -> Path:
    """`root / relative`, refusing names that would reach outside `root` (.., absolute paths,
    control characters) and links that resolve outside `within` (default `root`)."""
    if not isinstance(relative, str):
        raise DatasetError(f"{what}: {relative!r} is not a file name")
    candidate = Path(relative)
    if relative == "" or candidate.is_absolute() or ".." in candidate.parts:
        raise DatasetError(f"{what}: {relative!r} escapes the folder {root}")
    if any(ord(c) < 32 for c in relative):
        raise DatasetError(f"{what}: {relative!r} holds control characters")
    joined = root / candidate
    boundary = (within or root).resolve()
    if joined.exists() and not joined.resolve().is_relative_to(boundary):
        raise DatasetError(
            f"{what}: {joined} is a link to {joined.resolve()}, outside the dataset {boundary}"
        )
    return joined


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file; anything else (a named pipe, a device, a folder) is refused
    before it is opened, as reading it could block or never end."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise DatasetError(f"{path}: not a regular file")
    return path.read_bytes()


def read_text(path: Path) -> str:
    """A dataset text file (split list, annotation JSON), refused in one line if not UTF-8."""
    try:
        # A byte-order mark is no part of the first line (editors on Windows write one).
        return read_regular_file(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
