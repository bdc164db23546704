"""COCO instances reader: one JSON per split, images in a folder that `file_name` is relative to.

COCO boxes are [x, y, width, height] in continuous pixels. `iscrowd` regions become `difficult`
objects: both are excluded from the positives and the false positives when evaluating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.data.records import (
    ImageRecord,
    check_box,
    make_record,
    parse_coordinate,
    parse_side,
    read_text,
    safe_join,
)
from pipeline.errors import DatasetError


def annotation_path(root: Path, template: str, split: str) -> Path:
    return safe_join(root, template.format(split=split), "data.coco_annotations")


KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def field(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`entry[key]`, present and of `kind`, or a DatasetError naming the entry and the field."""
    if key not in entry:
        raise DatasetError(f"{where}: no '{key}'")
    value = entry[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        wanted = " or ".join(KINDS[k] for k in kinds)
        raise DatasetError(f"{where}: '{key}' is {value!r:.60}, not {wanted}")
    return value


def _entries(data: dict[str, Any], key: str, path: Path, required: bool) -> list[dict]:
    if key not in data and not required:
        return []
    entries = field(data, key, list, str(path))
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: {key}[{n}] is {entry!r:.60}, not an object")
    return entries


def load_coco_json(path: Path) -> dict[str, Any]:
    """The parsed file, with the structure of every field this reader uses checked."""
    try:
        data = json.loads(read_text(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise DatasetError(f"{path}: nested too deeply to be a COCO instances file") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DatasetError(f"{path}: unreadable JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    for n, image in enumerate(_entries(data, "images", path, required=True)):
        field(image, "id", (int, str), f"{path}: images[{n}]")
        field(image, "file_name", str, f"{path}: images[{n}]")
    for n, category in enumerate(_entries(data, "categories", path, required=False)):
        field(category, "id", int, f"{path}: categories[{n}]")
        field(category, "name", str, f"{path}: categories[{n}]")
    _entries(data, "annotations", path, required=False)
    return data


def coco_classes(path: Path) -> tuple[str, ...]:
    """Category names in category-id order: the class list a COCO dataset implies."""
    categories = load_coco_json(path).get("categories") or []
    if not categories:
        raise DatasetError(f"{path}: no 'categories' listed")
    ids: dict[str, int] = {}
    for category in sorted(categories, key=lambda c: c["id"]):
        name = category["name"]
        if name in ids:
            raise DatasetError(
                f"{path}: categories {ids[name]} and {category['id']} are both named {name!r}; "
                "list the classes in data.classes to merge them into one"
            )
        ids[name] = category["id"]
    return tuple(ids)


def read_coco_split(
    root: Path, annotations: Path, image_folder: str, classes: tuple[str, ...]
) -> list[ImageRecord]:
    if not root.is_dir():
        raise DatasetError(f"data.root: dataset folder {root} does not exist")
    data = load_coco_json(annotations)
    image_dir = safe_join(root, image_folder, "data.coco_images")
    index = {name: i + 1 for i, name in enumerate(classes)}
    category_label = {}
    for category in data.get("categories") or []:
        if category["name"] not in index:
            known = ", ".join(index)
            raise DatasetError(
                f"{annotations}: unknown category {category['name']!r} (known: {known})"
            )
        category_label[category["id"]] = index[category["name"]]

    files: dict[Any, Path] = {}
    sizes: dict[Any, tuple[int, int] | None] = {}
    for n, image in enumerate(data["images"]):
        if image["id"] in files:
            raise DatasetError(f"{annotations}: duplicate image id {image['id']!r}")
        files[image["id"]] = safe_join(
            image_dir, image["file_name"], f"{annotations}: image", within=root
        )
        sizes[image["id"]] = _declared_size(image, f"{annotations}: images[{n}]")
    if not files:
        raise DatasetError(f"{annotations}: empty split, no images listed")

    objects: dict[Any, list] = {image_id: [] for image_id in files}
    for n, ann in enumerate(data.get("annotations") or []):
        where = f"{annotations}: annotation {ann.get('id', n)}"
        if ann.get("image_id") not in files:
            raise DatasetError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in category_label:
            raise DatasetError(f"{where}: category_id {ann.get('category_id')!r} is unknown")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DatasetError(f"{where}: bbox {bbox!r} is not [x, y, width, height]")
        for i, value in enumerate(bbox):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DatasetError(f"{where}: bbox[{i}] is {value!r:.60}, not a number")
        x, y, w, h = (parse_coordinate(v, where, f"bbox[{i}]") for i, v in enumerate(bbox))
        box = [x, y, x + w, y + h]
        check_box(box, where)
        label = category_label[ann["category_id"]]
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            raise DatasetError(f"{where}: 'iscrowd' is {crowd!r:.60}, not 0 or 1")
        objects[ann["image_id"]].append((box, label, bool(crowd)))
    return [
        make_record(str(i), files[i], objects[i], f"{annotations}: image {i}", sizes[i])
        for i in files
    ]


def _declared_size(image: dict, where: str) -> tuple[int, int] | None:
    """(height, width) from an image entry; optional in hand-made files, checked when given."""
    if "width" not in image and "height" not in image:
        return None
    return parse_side(image.get("height"), where, "height"), parse_side(
        image.get("width"), where, "width"
    )
