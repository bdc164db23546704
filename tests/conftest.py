"""Shared fixtures: the repo's params, and tiny datasets written to disk in VOC or COCO form."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.artifacts.exported_model import save_detector
from pipeline.artifacts.model_files import save_model
from pipeline.artifacts.provenance import Provenance
from pipeline.config import Params, load_params, parse_params
from pipeline.data.records import BACKGROUND_CLASS
from pipeline.model.faster_rcnn import DetectorConfig, FasterRCNN

REPO = Path(__file__).resolve().parents[1]

# A profile small enough that the whole pipeline runs in seconds on a CPU.
TINY = {
    "synthetic": {"num_trainval": 6, "num_test": 3, "min_side": 64, "max_side": 96,
                  "max_objects": 3, "min_object": 8, "clutter": 2},
    "data": {"min_size": 64, "max_size": 96},
    "store": {"shard_size": 4},
    "anchors": {"scales": [1, 2, 4]},
    "backbone": {"width": 8},
    "pretrain": {"crop_size": 32},
    "rpn": {"channels": 32, "batch_size": 64},
    "proposals": {"train_pre_nms": 600, "train_post_nms": 100, "test_pre_nms": 300,
                  "test_post_nms": 50},
    "roi": {"fc_dim": 64, "batch_size": 32},
    "train": {"device": "cpu", "checkpoint_every": 5, "log_every": 2,
              **{step: {"iterations": 10, "images_per_batch": 2, "lr": 0.01, "lr_steps": [8],
                        "lr_gamma": 0.1, "warmup": 2}
                 for step in ("pretrain", "step1", "step2", "step3", "step4")}},
}  # fmt: skip


def stage_function(name: str) -> Callable[[Params], object]:
    """What `python -m stages.<name>` runs, to call in-process."""
    return importlib.import_module(f"stages.{name}").run


def raw_params() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())


def with_changes(raw: dict, changes: dict) -> dict:
    """`raw` with each section of `changes` merged in (one level deep)."""
    merged = copy.deepcopy(raw)
    for section, values in changes.items():
        merged[section].update(copy.deepcopy(values))
    return merged


def tiny_params() -> Params:
    return parse_params(with_changes(raw_params(), TINY))


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def detector_config(params: Params, classes: tuple[str, ...]) -> DetectorConfig:
    """The config `export` would write for `params` and this class list (background first)."""
    return DetectorConfig(
        params.backbone, params.anchors, params.rpn, params.proposals, params.roi,
        params.detect, classes, params.data.min_size, params.data.max_size,
    )  # fmt: skip


@dataclass
class TinyImage:
    image_id: str
    height: int
    width: int
    # (class name, [x1, y1, x2, y2] continuous pixels, difficult)
    objects: list[tuple[str, list[float], bool]] = field(default_factory=list)


def tiny_images(seed: int = 0, count: int = 6) -> list[TinyImage]:
    """A handful of images with integer boxes, so VOC's 1-based indices represent them exactly."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        objects = []
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
            x2, y2 = int(rng.integers(x1 + 4, width + 1)), int(rng.integers(y1 + 4, height + 1))
            name = ("cat", "dog")[int(rng.integers(2))]
            objects.append((name, [x1, y1, x2, y2], bool(rng.random() < 0.2)))
        images.append(TinyImage(f"img{i:03d}", height, width, objects))
    return images


def write_pixels(path: Path, image: TinyImage, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (image.height, image.width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def voc_xml(image: TinyImage) -> str:
    root = ET.Element("annotation")
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(image.width)
    ET.SubElement(size, "height").text = str(image.height)
    for name, (x1, y1, x2, y2), difficult in image.objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(value)
    return ET.tostring(root, encoding="unicode")


def write_voc(root: Path, splits: dict[str, list[TinyImage]]) -> Path:
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        ids = "".join(f"{im.image_id}\n" for im in images)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
        for n, image in enumerate(images):
            write_pixels(root / "JPEGImages" / f"{image.image_id}.jpg", image, seed=n)
            (root / "Annotations" / f"{image.image_id}.xml").write_text(voc_xml(image))
    return root


def write_coco(root: Path, splits: dict[str, list[TinyImage]], classes: tuple[str, ...]) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    category_id = {c["name"]: c["id"] for c in categories}
    next_image_id = 1
    for split, images in splits.items():
        entries, annotations = [], []
        for n, image in enumerate(images):
            write_pixels(root / "images" / f"{image.image_id}.jpg", image, seed=n)
            entries.append(
                {
                    "id": next_image_id,
                    "file_name": f"{image.image_id}.jpg",
                    "height": image.height,
                    "width": image.width,
                }
            )
            for name, (x1, y1, x2, y2), difficult in image.objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": next_image_id,
                        "category_id": category_id[name],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(difficult),
                    }
                )
            next_image_id += 1
        document = {"images": entries, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"{split}.json").write_text(json.dumps(document))
    return root


def with_data(params: Params, **changes: object) -> Params:
    return dataclasses.replace(params, data=dataclasses.replace(params.data, **changes))


def vgg16_weights_file(path: Path) -> dict:
    """A torchvision VGG16 state dict (seeded random, standing in for ImageNet's) saved at
    `path`; returns it."""
    import torch
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.vgg16().state_dict()
    torch.save(state, path)
    return state


def exported_detector(
    path: Path, params: Params, change: Callable[[dict], object] = lambda config: None
) -> Path:
    """An exported detector of `params` with random weights (classes cat and dog), its stored
    config changed by `change`: what `export` writes, without training anything."""
    torch.manual_seed(0)
    config = detector_config(params, (BACKGROUND_CLASS, "cat", "dog"))
    model = FasterRCNN.from_config(config)
    parts = {name: getattr(model, name).state_dict() for name in ("backbone", "rpn", "head")}
    save_detector(path, Provenance("export", {}, {}), config, parts)
    saved = torch.load(path, weights_only=True)
    change(saved["config"])
    save_model(path, Provenance("export", {}, {}), saved["parts"], config=saved["config"])
    return path
