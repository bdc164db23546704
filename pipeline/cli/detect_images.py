"""`frcnn detect`: the exported detector on image files, results as COCO JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.data.images import decode_image, read_image_bytes
from pipeline.evaluation.drawing import DETECTION, draw_boxes
from pipeline.model.faster_rcnn import FasterRCNN


def detect_file(
    detector: FasterRCNN, path: Path, score_thresh: float
) -> tuple[np.ndarray, list[dict]]:
    """The image's pixels and its detections (COCO result dicts, with names), or DatasetError."""
    pixels = np.asarray(decode_image(read_image_bytes(path), path))
    with torch.no_grad():
        found = detector.detect(pixels)
    classes = detector.config.classes
    results = []
    for box, score, label in zip(
        found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist(), strict=True
    ):
        if score < score_thresh:
            continue
        x1, y1, x2, y2 = (round(v, 2) for v in box)
        results.append(
            {
                "file_name": str(path),
                "category_id": int(label),
                "category_name": classes[int(label)],
                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(score, 5),
            }
        )
    return pixels, results


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
