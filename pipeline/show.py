"""`frcnn show`: an image with any mix of its ground truth, anchors, proposals and detections,
all read from the pipeline's artifacts (nothing is recomputed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.drawing import DETECTION, GT, NEGATIVE_ANCHOR, POSITIVE_ANCHOR, PROPOSAL, draw_boxes
from pipeline.errors import ArtifactError, FrcnnError
from pipeline.prepared import PreparedDataset
from pipeline.proposal_artifacts import Proposals
from pipeline.store import open_artifact
from pipeline.targets import BACKGROUND, FOREGROUND

LAYERS = ("gt", "anchors", "proposals", "detections")
# Negative anchors are everywhere; a few, chosen at random (seeded), show what they look like.
NEGATIVES_SHOWN = 24


def find_image(prepared: PreparedDataset, reference: str) -> int:
    """An image by its dataset id, or else by its index in the prepared artifact."""
    if reference in prepared.image_ids:
        return prepared.image_ids.index(reference)
    if reference.isdigit() and int(reference) < len(prepared):
        return int(reference)
    raise FrcnnError(f"--image: no image with id or index {reference!r} in {prepared.path}")


def render(
    data: Path, reference: str, layers: list[str], step: int, top_k: int, score_thresh: float
) -> Image.Image:
    """The prepared (resized) image with the requested layers, in its resized pixels."""
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise FrcnnError(f"--layers: unknown {', '.join(unknown)}; choose from {', '.join(LAYERS)}")
    prepared = PreparedDataset(data / "prepared.zarr")
    image = find_image(prepared, reference)
    h, w = prepared.image_sizes[image]
    picture = Image.fromarray(prepared.images[image][:h, :w])
    classes = prepared.classes
    if "anchors" in layers:
        targets = open_artifact(data / "anchor_targets.zarr", "anchor_targets")
        anchors = targets["anchors"][...].reshape(-1, 4)
        labels = targets["labels"][image].reshape(-1)  # view i is image i, unflipped
        negatives = np.nonzero(labels == BACKGROUND)[0]
        shown = np.random.default_rng(0).permutation(negatives)[:NEGATIVES_SHOWN]
        draw_boxes(picture, anchors[shown], NEGATIVE_ANCHOR, width=1)
        draw_boxes(picture, anchors[labels == FOREGROUND], POSITIVE_ANCHOR, width=1)
    if "proposals" in layers:
        proposals = Proposals(data / f"step{step}" / "proposals.zarr", f"step{step}_proposals")
        boxes, scores = proposals.of_view(image)
        captions = [f"{s:.2f}" for s in scores[:top_k].tolist()]
        draw_boxes(picture, boxes[:top_k].numpy(), PROPOSAL, captions, width=1)
    if "gt" in layers:
        labels = prepared.labels(image).tolist()
        draw_boxes(picture, prepared.boxes(image).numpy(), GT, [classes[k] for k in labels])
    if "detections" in layers:
        boxes, captions = _detections(
            data / "eval" / "detections.json", prepared, image, score_thresh
        )
        draw_boxes(picture, boxes, DETECTION, captions)
    return picture


def _detections(
    path: Path, prepared: PreparedDataset, image: int, score_thresh: float
) -> tuple[np.ndarray, list[str]]:
    if not path.exists():
        raise ArtifactError(
            f"{path}: not found; run `dvc repro evaluate` (detections exist for test images only)"
        )
    name = prepared.image_ids[image]
    mine = [
        r
        for r in json.loads(path.read_text())
        if r.get("image_name") == name and r["score"] >= score_thresh
    ]
    scale = float(prepared.scales[image])
    boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (r["bbox"] for r in mine)])
    captions = [f"{r['category_name']} {r['score']:.2f}" for r in mine]
    return boxes.reshape(-1, 4) * scale, captions
