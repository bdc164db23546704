"""`frcnn detect`: the exported detector on image files, folders and globs, results as COCO
JSON."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.api import Detections
from pipeline.errors import FrcnnError
from pipeline.evaluation.drawing import DETECTION, draw_boxes

# What a folder given to `frcnn detect` is searched for (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def image_paths(arguments: Sequence[Path]) -> list[Path]:
    """The image files named by `arguments`, in order: a file as it is (an unreadable one is
    reported when it is read), a folder as the image files below it, sorted, and a pattern
    with *, ? or [ as the files it matches, sorted. A folder or pattern without images is an
    error, as a typo there would otherwise detect nothing in silence."""
    paths: list[Path] = []
    for argument in arguments:
        text = str(argument)
        if argument.is_dir():
            found = sorted(
                p for p in argument.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                raise FrcnnError(f"{argument}: a folder with no image files ({_suffixes()})")
        elif glob.has_magic(text) and not argument.exists():
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise FrcnnError(f"{argument}: no file matches this pattern")
        else:
            found = [argument]
        paths += found
    return paths


def _suffixes() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))


def coco_results(path: Path, found: Detections, score_thresh: float) -> list[dict]:
    """The detections of the image at `path` as COCO result dicts, with class names."""
    results = []
    for box, score, label, name in zip(
        found.boxes.tolist(), found.scores.tolist(), found.labels.tolist(), found.names,
        strict=True,
    ):  # fmt: skip
        if score < score_thresh:
            continue
        x1, y1, x2, y2 = (round(v, 2) for v in box)
        results.append(
            {
                "file_name": str(path),
                "category_id": int(label),
                "category_name": name,
                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(score, 5),
            }
        )
    return results


def draw_results(pixels: np.ndarray, results: list[dict], out: Path) -> None:
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)])
    captions = [f"{r['category_name']} {r['score']:.2f}" for r in results]
    picture = Image.fromarray(pixels)
    draw_boxes(picture, boxes.reshape(-1, 4), DETECTION, captions)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)


def drawing_paths(images: Sequence[Path], folder: Path) -> dict[Path, Path]:
    """Where each image's drawing goes in `folder`: `<name>.png`, unless images of one name
    would overwrite each other's drawing (a/x.jpg and b/x.jpg): those keep their path below
    their common folder (a/x.png, b/x.png), and their suffix where that still collides."""
    by_name: dict[str, set[Path]] = {}
    for path in images:
        by_name.setdefault(f"{path.stem}.png", set()).add(path.resolve())
    drawings = {}
    for path in images:
        name, clashing = f"{path.stem}.png", by_name[f"{path.stem}.png"]
        if len(clashing) == 1:
            drawings[path] = folder / name
            continue
        common = Path(os.path.commonpath([p.parent for p in clashing]))
        relative = path.resolve().relative_to(common)
        same_folder = sum(p.parent == path.resolve().parent for p in clashing) > 1
        drawings[path] = folder / (
            relative.with_name(f"{relative.name}.png")
            if same_folder
            else relative.with_suffix(".png")
        )
    return drawings
