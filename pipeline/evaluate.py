"""The `evaluate` stage: run the exported detector on the test split and measure it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.drawing import DETECTION, GT, draw_boxes
from pipeline.evaluation import (
    ImageDetections,
    ImageTruth,
    coco_ground_truth,
    coco_metrics,
    coco_results,
    proposal_recall,
    voc_metrics,
)
from pipeline.model import detections, load_detector
from pipeline.prepared import TEST, PreparedDataset
from pipeline.proposal_artifacts import Proposals
from pipeline.views import normalise

EVAL = Path("data/eval")
SAMPLES = 6
RECALL_TOP = 300


def test_truths(prepared: PreparedDataset, images: np.ndarray) -> list[ImageTruth]:
    """Ground truth of the test images in original pixels."""
    return [
        ImageTruth(
            prepared.boxes(int(i)).numpy() / prepared.scales[i],
            prepared.labels(int(i)).numpy(),
            prepared.difficult(int(i)).numpy(),
        )
        for i in images
    ]


@torch.no_grad()
def detect_prepared(
    model_path: Path, prepared: PreparedDataset, images: np.ndarray
) -> list[ImageDetections]:
    """Detections of the exported model on prepared images, in original pixels."""
    detector = load_detector(model_path)
    config = detector.config
    found = []
    for i in tqdm(images, desc="evaluate", unit="img", leave=False, disable=None):
        size = tuple(int(v) for v in prepared.image_sizes[i])
        scale = float(prepared.scales[i])
        out = detector.forward_view(normalise(prepared.images[int(i)], *size, False), size, scale)
        boxes, scores, labels = detections(
            out["proposals"],
            out["class_logits"],
            out["box_deltas"],
            size,
            config.roi.box_stds,
            config.detect,
        )
        found.append(ImageDetections(boxes.numpy() / scale, scores.numpy(), labels.numpy()))
    return found


def evaluate(
    prepared_path: Path, model_path: Path, proposals: dict[str, Path], out: Path = EVAL
) -> dict:
    prepared = PreparedDataset(prepared_path)
    images = np.nonzero(prepared.split == TEST)[0]
    truths = test_truths(prepared, images)
    found = detect_prepared(model_path, prepared, images)
    metrics, curves = voc_metrics(truths, found, prepared.classes)
    sizes = [tuple(int(v) for v in prepared.group["original_sizes"][i]) for i in images]
    results = coco_results(found, prepared.classes)
    for result in results:
        result["image_name"] = prepared.image_ids[images[result["image_id"] - 1]]
    metrics.update(coco_metrics(coco_ground_truth(truths, sizes, prepared.classes), results))
    for stage, path in proposals.items():
        recall = proposal_recall(
            truths, _test_proposals(Proposals(path, stage), prepared), RECALL_TOP, (0.5, 0.7)
        )
        metrics[f"{stage.split('_')[0]}_proposals"] = recall

    if out.exists():
        shutil.rmtree(out)
    (out / "pr").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "detections.json").write_text(json.dumps(results) + "\n")
    for name, curve in curves.items():
        with (out / "pr" / f"{name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["recall", "precision"])
            writer.writerows(zip(curve.recall.round(5), curve.precision.round(5), strict=True))
    _samples(prepared, images[:SAMPLES], found, out / "samples")
    return {k: metrics[k] for k in ("map_voc07", "map_area", "map_coco")}


def _test_proposals(proposals: Proposals, prepared: PreparedDataset) -> list[np.ndarray]:
    """Step proposals of each test image (its unflipped view), in original pixels."""
    by_image = {int(i): v for v, (i, flipped) in enumerate(proposals.views) if not flipped}
    images = np.nonzero(prepared.split == TEST)[0]
    return [proposals.of_view(by_image[int(i)])[0].numpy() / prepared.scales[i] for i in images]


def _samples(
    prepared: PreparedDataset, images: np.ndarray, found: list[ImageDetections], folder: Path
) -> None:
    folder.mkdir(parents=True)
    for i, det in zip(images, found, strict=False):
        h, w = prepared.image_sizes[i]
        scale = prepared.scales[i]
        picture = Image.fromarray(prepared.images[int(i)][:h, :w])
        draw_boxes(picture, prepared.boxes(int(i)).numpy(), GT)
        captions = [
            f"{prepared.classes[k]} {s:.2f}" for k, s in zip(det.labels, det.scores, strict=True)
        ]
        keep = det.scores >= 0.5
        draw_boxes(
            picture,
            det.boxes[keep] * scale,
            DETECTION,
            [c for c, k in zip(captions, keep, strict=True) if k],
        )
        picture.save(folder / f"{prepared.image_ids[i]}.png")
