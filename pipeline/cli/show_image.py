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
from pipeline.artifacts.views import view_rows
from pipeline.data.records import TRAIN
from pipeline.errors import ArtifactError, FrcnnError
from pipeline.evaluation.drawing import (
    GT,
    MISSED,
    MISSED_LABEL,
    NEGATIVE_ANCHOR,
    OUTCOME_COLOURS,
    POSITIVE_ANCHOR,
    PROPOSAL,
    auto_scale,
    draw_boxes,
    enlarged,
    with_legend,
)
from pipeline.evaluation.outcomes import image_outcomes
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
    data: Path,
    reference: str,
    layers: list[str],
    step: int,
    top_k: int,
    score_thresh: float,
    scale: float | None = None,
) -> Image.Image:
    """The prepared (resized) image with the requested layers and a legend, enlarged by
    `scale` (None: a whole factor that makes the shorter side at least 576 px). Detections
    are coloured by outcome against the ground truth, as in the evaluation samples."""
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise FrcnnError(f"--layers: unknown {', '.join(unknown)}; choose from {', '.join(LAYERS)}")
    prepared = PreparedDataset(under(data, PREPARE))
    image = find_image(prepared, reference)
    h, w = prepared.image_sizes[image]
    plain = Image.fromarray(prepared.images[image][:h, :w])
    scale = auto_scale(plain) if scale is None else scale
    picture = enlarged(plain, scale)
    classes = prepared.classes
    legend: list[tuple[str, tuple[int, int, int]]] = []
    if "anchors" in layers:
        targets = AnchorTargets(under(data, ANCHOR_TARGETS))
        anchors = targets.anchors[...].reshape(-1, 4) * scale
        labels = targets.labels[image].reshape(-1)  # view i is image i, unflipped
        negatives = np.nonzero(labels == BACKGROUND)[0]
        shown = np.random.default_rng(0).permutation(negatives)[:NEGATIVES_SHOWN]
        draw_boxes(picture, anchors[shown], NEGATIVE_ANCHOR, width=1)
        draw_boxes(picture, anchors[labels == FOREGROUND], POSITIVE_ANCHOR, width=1)
        legend += [
            ("foreground anchor", POSITIVE_ANCHOR),
            (f"background anchor ({NEGATIVES_SHOWN} of them)", NEGATIVE_ANCHOR),
        ]
    if "proposals" in layers:
        stage = PROPOSALS[step][0 if prepared.split[image] == TRAIN else 1]
        proposals = Proposals(under(data, stage), stage.name)
        (row,) = view_rows(np.array([[image, 0]]), proposals.views, str(under(data, stage)))
        boxes, scores = proposals.of_view(int(row))
        captions = [f"{s:.2f}" for s in scores[:top_k].tolist()]
        draw_boxes(picture, boxes[:top_k].numpy() * scale, PROPOSAL, captions, width=1)
        legend.append((f"step-{step} proposal (top {min(top_k, len(boxes))})", PROPOSAL))
    gt_boxes, gt_labels = prepared.boxes(image).numpy(), prepared.labels(image).numpy()
    if "gt" in layers:
        draw_boxes(picture, gt_boxes * scale, GT, [classes[k] for k in gt_labels])
        legend.append(("ground truth", GT))
    if "detections" in layers:
        boxes, scores, labels = _detections(
            under(data, EVALUATE) / "detections.json", prepared, image, score_thresh
        )
        outcomes = image_outcomes(
            boxes, scores, labels, gt_boxes, gt_labels, prepared.difficult(image).numpy()
        )
        captions = [f"{classes[k]} {s:.2f}" for k, s in zip(labels, scores, strict=True)]
        for outcome, colour in OUTCOME_COLOURS.items():
            chosen = [n for n, o in enumerate(outcomes.detections) if o == outcome]
            draw_boxes(picture, boxes[chosen] * scale, colour, [captions[n] for n in chosen])
            legend += [(outcome, colour)] if chosen else []
        if outcomes.missed.any():
            missed = gt_boxes[outcomes.missed] * scale
            draw_boxes(picture, missed, MISSED, [classes[k] for k in gt_labels[outcomes.missed]])
            legend.append((MISSED_LABEL, MISSED))
    return with_legend(picture, legend) if legend else picture


def _detections(
    path: Path, prepared: PreparedDataset, image: int, score_thresh: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (in prepared pixels), scores and labels of the evaluation's detections on `image`
    scoring at least `score_thresh`."""
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
    scores = np.array([r["score"] for r in mine], dtype=float)
    labels = np.array([prepared.classes.index(r["category_name"]) for r in mine], dtype=int)
    return boxes.reshape(-1, 4) * scale, scores, labels
