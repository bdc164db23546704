"""PASCAL VOC layout reader: ImageSets/Main/<split>.txt, Annotations/<id>.xml, JPEGImages/<id>.jpg.

VOC coordinates are 1-based inclusive pixel indices; pixel i spans [i - 1, i) in continuous
coordinates, so a box becomes [xmin - 1, ymin - 1, xmax, ymax].
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.data.records import (
    ImageRecord,
    make_record,
    parse_coordinate,
    parse_side,
    read_text,
    safe_join,
)
from pipeline.errors import DatasetError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def split_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    ids = [line.split()[0] for line in read_text(path).splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: empty split, no image ids listed")
    return ids


def read_voc_split(root: Path, split: str, classes: tuple[str, ...]) -> list[ImageRecord]:
    """Records of one split; `classes` excludes background (label i + 1 is classes[i])."""
    if not root.is_dir():
        raise DatasetError(f"data.root: dataset folder {root} does not exist")
    index = {name: i + 1 for i, name in enumerate(classes)}
    records = []
    for image_id in split_ids(root, split):
        xml_path = safe_join(root, f"Annotations/{image_id}.xml", f"{split}.txt")
        image_path = safe_join(root, f"JPEGImages/{image_id}.jpg", f"{split}.txt")
        records.append(_read_annotation(xml_path, image_id, image_path, index))
    return records


def _read_annotation(
    xml_path: Path, image_id: str, image_path: Path, index: dict[str, int]
) -> ImageRecord:
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: annotation file not found") from None
    except ET.ParseError as exc:
        raise DatasetError(f"{xml_path}: malformed XML ({exc})") from None
    root = tree.getroot()
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{xml_path}: no <size> element")
    height, width = (
        parse_side(size.findtext(tag), str(xml_path), f"<size><{tag}>")
        for tag in ("height", "width")
    )
    objects = []
    for n, obj in enumerate(root.iter("object"), start=1):
        where = f"{xml_path}: object {n}"
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            known = ", ".join(index)
            raise DatasetError(f"{where}: unknown class {name!r} (known: {known})")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{where}: no <bndbox>")
        xmin, ymin, xmax, ymax = (
            parse_coordinate(bndbox.findtext(tag), where, f"<{tag}>")
            for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin or ymax < ymin:
            raise DatasetError(
                f"{where}: empty box, xmin {xmin:g} xmax {xmax:g} ymin {ymin:g} ymax {ymax:g}"
            )
        box = [xmin - 1, ymin - 1, xmax, ymax]
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DatasetError(f"{where}: <difficult> is {difficult!r:.60}, not 0 or 1")
        objects.append((box, index[name], difficult == "1"))
    return make_record(image_id, image_path, objects, str(xml_path), (height, width))
