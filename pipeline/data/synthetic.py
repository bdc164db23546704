"""A seeded synthetic detection dataset, written in PASCAL VOC layout.

Six shape classes that differ by outline; texture, colour, size (from ~12 px to most of the
image), aspect ratio and rotation vary within every class, so outline is the only cue. Objects
occlude each other and are cut by the border; background gradients, scribbles and sensor noise
add clutter. Objects that are mostly hidden or tiny are marked `difficult`, as VOC does.
Each image is drawn from its own generator seeded by (seed, index), so any image can be
regenerated alone and the output does not depend on the order of work.
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.config import SyntheticParams
from pipeline.errors import ParamError

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "ring", "cross")

# Objects less visible than this (occluded or cut by the border) are annotated as difficult;
# below the second threshold they are not annotated at all (nothing left to see).
DIFFICULT_VISIBLE = 0.4
UNANNOTATED_VISIBLE = 0.12
DIFFICULT_SIDE = 14  # px: smaller objects are difficult
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SyntheticObject:
    name: str
    box: tuple[int, int, int, int]  # inclusive pixel indices x0, y0, x1, y1
    difficult: bool
    truncated: bool


def _unit_outline(name: str) -> list[tuple[float, float]]:
    """Polygon of a class in [-1, 1]^2 (circle and ring are drawn as ellipses instead)."""
    if name == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if name == "triangle":
        return [(0, -1), (1, 1), (-1, 1)]
    if name == "cross":
        t = 0.34
        return [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ]
    if name == "star":
        points = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else 0.42
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        return points
    raise ValueError(name)


def _shape_mask(
    name: str,
    size: tuple[int, int],
    centre: tuple[float, float],
    half: tuple[float, float],
    angle: float,
    rng: np.random.Generator,
) -> np.ndarray:
    width, height = size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre
    hx, hy = half
    ellipse = [cx - hx, cy - hy, cx + hx, cy + hy]
    if name == "circle":
        draw.ellipse(ellipse, fill=255)
    elif name == "ring":
        draw.ellipse(ellipse, fill=255)
        inner = rng.uniform(0.45, 0.65)
        draw.ellipse([cx - hx * inner, cy - hy * inner, cx + hx * inner, cy + hy * inner], fill=0)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        polygon = [
            (cx + x * hx * cos - y * hy * sin, cy + x * hx * sin + y * hy * cos)
            for x, y in _unit_outline(name)
        ]
        draw.polygon(polygon, fill=255)
    return np.asarray(mask) > 127


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float texture: solid, stripes, checks, speckle or gradient in random colours."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(5)
    if kind == 0:
        weight = np.zeros((height, width), np.float32)
    elif kind == 1:
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 12)
        weight = np.sin((x * math.cos(theta) + y * math.sin(theta)) * 2 * math.pi / period) > 0
    elif kind == 2:
        cell = rng.integers(3, 9)
        weight = ((x // cell + y // cell) % 2).astype(np.float32)
    elif kind == 3:
        weight = rng.random((height, width)) < 0.3
    else:
        theta = rng.uniform(0, 2 * math.pi)
        ramp = x * math.cos(theta) + y * math.sin(theta)
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    weight = np.asarray(weight, np.float32)[..., None]
    return a * (1 - weight) + b * weight


def _background(rng: np.random.Generator, height: int, width: int, clutter: int) -> np.ndarray:
    gradient = _texture_gradient(rng, height, width)
    canvas = Image.fromarray(np.clip(gradient, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(clutter):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:  # a scribble: a short random walk
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            points = [(x, y)]
            for _ in range(int(rng.integers(2, 6))):
                x, y = x + rng.normal(0, 25), y + rng.normal(0, 25)
                points.append((x, y))
            draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
        else:  # a dot too small to be an object
            x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 4)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return np.asarray(canvas, dtype=np.float32)


def _texture_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    a, b = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    theta = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = x * math.cos(theta) + y * math.sin(theta)
    weight = ((ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0))[..., None]
    return a * (1 - weight) + b * weight


def render_image(
    rng: np.random.Generator, params: SyntheticParams
) -> tuple[np.ndarray, list[SyntheticObject]]:
    """One [H, W, 3] uint8 image and its annotated objects, drawn back to front."""
    width = int(rng.integers(params.min_side, params.max_side + 1))
    height = int(rng.integers(params.min_side, params.max_side + 1))
    image = _background(rng, height, width, params.clutter)
    drawn: list[tuple[str, np.ndarray, int]] = []  # name, in-image mask, full shape area
    names = params.classes or SYNTHETIC_CLASSES
    for _ in range(int(rng.integers(1, params.max_objects + 1))):
        name = names[int(rng.integers(len(names)))]
        # Log-uniform size: small objects are as common as large ones, as in real photos.
        largest = 0.8 * min(width, height)
        side = math.exp(rng.uniform(math.log(params.min_object), math.log(largest)))
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        half = (side * math.sqrt(aspect) / 2, side / math.sqrt(aspect) / 2)
        # One object in four may stick out of the image; the rest lie fully inside it.
        margin = -0.6 if rng.random() < 0.25 else 1.0
        lo_x, hi_x = half[0] * margin, width - half[0] * margin
        lo_y, hi_y = half[1] * margin, height - half[1] * margin
        if lo_x >= hi_x or lo_y >= hi_y:
            continue
        centre = (rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y))
        # Drawn on a canvas padded by the object's size so that the part cut off by the
        # border still counts in its area.
        pad = math.ceil(max(half)) + 2
        padded = _shape_mask(
            name,
            (width + 2 * pad, height + 2 * pad),
            (centre[0] + pad, centre[1] + pad),
            half,
            rng.uniform(-0.35, 0.35),
            rng,
        )
        mask = padded[pad : pad + height, pad : pad + width]
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        texture = _texture(rng, int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
        image[ys, xs] = texture[ys - ys.min(), xs - xs.min()]
        drawn.append((name, mask, int(padded.sum())))
    image += rng.normal(0, rng.uniform(3, 12), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), _annotate(drawn)


def _annotate(drawn: list[tuple[str, np.ndarray, int]]) -> list[SyntheticObject]:
    """Boxes of the drawn shapes; visibility counts what the border and later shapes hide."""
    objects = []
    covered = np.zeros_like(drawn[0][1]) if drawn else None
    for name, mask, full_area in reversed(drawn):
        visible = float((mask & ~covered).sum()) / full_area
        covered |= mask
        if visible < UNANNOTATED_VISIBLE:
            continue
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        small = min(box[2] - box[0], box[3] - box[1]) + 1 < DIFFICULT_SIDE
        truncated = int(mask.sum()) < full_area
        objects.append(SyntheticObject(name, box, visible < DIFFICULT_VISIBLE or small, truncated))
    return objects[::-1]


def _annotation_xml(
    image_id: str, width: int, height: int, objects: list[SyntheticObject]
) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "synthetic"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(obj.truncated))
        ET.SubElement(node, "difficult").text = str(int(obj.difficult))
        bndbox = ET.SubElement(node, "bndbox")
        x0, y0, x1, y1 = obj.box
        # VOC stores 1-based inclusive pixel indices.
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1 + 1), ("ymax", y1 + 1)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def generate_synthetic(root: Path, params: SyntheticParams) -> dict[str, int]:
    """Write the whole dataset to `root` (via `<root>.partial`, renamed when complete)."""
    unknown = sorted(set(params.classes or ()) - set(SYNTHETIC_CLASSES))
    if unknown:
        raise ParamError(
            f"params.yaml: 'synthetic.classes' names {unknown}; allowed: {list(SYNTHETIC_CLASSES)}"
        )
    work = root.with_name(root.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (work / sub).mkdir(parents=True)
    total = params.num_trainval + params.num_test
    counts = {"images": total, "objects": 0, "difficult": 0}
    for index in tqdm(range(total), desc="synthetic", unit="img", leave=False, disable=None):
        image_id = f"{index:06d}"
        pixels, objects = render_image(np.random.default_rng([params.seed, index]), params)
        Image.fromarray(pixels).save(work / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
        xml = _annotation_xml(image_id, pixels.shape[1], pixels.shape[0], objects)
        (work / "Annotations" / f"{image_id}.xml").write_bytes(xml)
        counts["objects"] += len(objects)
        counts["difficult"] += sum(o.difficult for o in objects)
    ids = [f"{i:06d}" for i in range(total)]
    main = work / "ImageSets" / "Main"
    (main / "trainval.txt").write_text("".join(f"{i}\n" for i in ids[: params.num_trainval]))
    (main / "test.txt").write_text("".join(f"{i}\n" for i in ids[params.num_trainval :]))
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)
    return counts
