"""`frcnn show`: an image with any mix of its ground truth, anchors, proposals and detections,
all read from the pipeline's artifacts (nothing is recomputed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import Proposals
from pipeline.data.records import TRAIN
from pipeline.data.views import view_rows
from pipeline.errors import ArtifactError, FrcnnError
from pipeline.evaluation.drawing import (
    DETECTION,
    GT,
    NEGATIVE_ANCHOR,
    POSITIVE_ANCHOR,
    PROPOSAL,
    draw_boxes,
)
from pipeline.layout import (
    ANCHOR_TARGETS,
    EVALUATE,
    PREPARE,
    STEP1_PROPOSALS,
    STEP1_TEST_PROPOSALS,
    STEP3_PROPOSALS,
    STEP3_TEST_PROPOSALS,
    under,
)
from pipeline.model.targets import BACKGROUND, FOREGROUND

LAYERS = ("gt", "anchors", "proposals", "detections")
# Negative anchors are everywhere; a few, chosen at random (seeded), show what they look like.
NEGATIVES_SHOWN = 24
# Whose proposals to draw: by step, then by the image's split (train, test).
PROPOSALS = {
    1: (STEP1_PROPOSALS, STEP1_TEST_PROPOSALS),
    3: (STEP3_PROPOSALS, STEP3_TEST_PROPOSALS),
}


def find_image(prepared: PreparedDataset, reference: str) -> int:
    """An image by its dataset id, or else by its index in the prepared artifact."""
    if reference in prepared.image_ids:
        return prepared.image_ids.index(reference)
    if reference.isdigit() and int(reference) < len(prepared):
        return int(reference)
    raise FrcnnError(f"--image: no image with id or index {reference!r} in {prepared.path}")


def draw_layers(
    data: Path, reference: str, layers: list[str], step: int, top_k: int, score_thresh: float
) -> Image.Image:
    """The prepared (resized) image with the requested layers, in its resized pixels."""
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise FrcnnError(f"--layers: unknown {', '.join(unknown)}; choose from {', '.join(LAYERS)}")
    prepared = PreparedDataset(under(data, PREPARE))
    image = find_image(prepared, reference)
    h, w = prepared.image_sizes[image]
    picture = Image.fromarray(prepared.images[image][:h, :w])
    classes = prepared.classes
    if "anchors" in layers:
        targets = AnchorTargets(under(data, ANCHOR_TARGETS))
        anchors = targets.anchors[...].reshape(-1, 4)
        labels = targets.labels[image].reshape(-1)  # view i is image i, unflipped
        negatives = np.nonzero(labels == BACKGROUND)[0]
        shown = np.random.default_rng(0).permutation(negatives)[:NEGATIVES_SHOWN]
        draw_boxes(picture, anchors[shown], NEGATIVE_ANCHOR, width=1)
        draw_boxes(picture, anchors[labels == FOREGROUND], POSITIVE_ANCHOR, width=1)
    if "proposals" in layers:
        stage = PROPOSALS[step][0 if prepared.split[image] == TRAIN else 1]
        proposals = Proposals(under(data, stage), stage.name)
        (row,) = view_rows(np.array([[image, 0]]), proposals.views, str(under(data, stage)))
        boxes, scores = proposals.of_view(int(row))
        captions = [f"{s:.2f}" for s in scores[:top_k].tolist()]
        draw_boxes(picture, boxes[:top_k].numpy(), PROPOSAL, captions, width=1)
    if "gt" in layers:
        labels = prepared.labels(image).tolist()
        draw_boxes(picture, prepared.boxes(image).numpy(), GT, [classes[k] for k in labels])
    if "detections" in layers:
        boxes, captions = _detections(
            under(data, EVALUATE) / "detections.json", prepared, image, score_thresh
        )
        draw_boxes(picture, boxes, DETECTION, captions)
    return picture


def _detections(
    path: Path, prepared: PreparedDataset, image: int, score_thresh: float
) -> tuple[np.ndarray, list[str]]:
    if not path.exists():
        raise ArtifactError(
            f"{path}: not found; run `dvc repro {EVALUATE.name}` "
            "(detections exist for test images only)"
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
