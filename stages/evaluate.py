"""evaluate: run the exported detector on the test split and measure it (VOC07 and COCO AP,
proposal recall of steps 1 and 3); write metrics, PR curves, detections and sample pictures."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.artifacts.exported_model import detector_of
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import Proposals
from pipeline.artifacts.reads import StageInputs
from pipeline.charts import save_png
from pipeline.config import Params
from pipeline.data.images import normalise
from pipeline.data.records import TEST
from pipeline.evaluation.drawing import auto_scale, draw_outcomes
from pipeline.evaluation.figures import ap_by_size, pr_curves
from pipeline.evaluation.metrics import (
    ImageDetections,
    ImageTruth,
    coco_ground_truth,
    coco_metrics,
    coco_results,
    proposal_recall,
    voc_metrics,
)
from pipeline.evaluation.outcomes import image_outcomes
from pipeline.layout import (
    EVALUATE,
    EXPORT,
    PREPARE,
    STEP1_TEST_PROPOSALS,
    STEP3_TEST_PROPOSALS,
)
from pipeline.model.faster_rcnn import FasterRCNN
from pipeline.runner import stage_command

SAMPLES = 6
SAMPLE_SCORE = 0.5  # detections drawn on the samples
RECALL_TOP = 300


def ground_truth_of(prepared: PreparedDataset, images: np.ndarray) -> list[ImageTruth]:
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
    detector: FasterRCNN, prepared: PreparedDataset, images: np.ndarray
) -> list[ImageDetections]:
    """Detections of the exported detector on prepared images, in original pixels."""
    found = []
    for i in tqdm(images, desc=EVALUATE.name, unit="img", leave=False, disable=None):
        size = tuple(int(v) for v in prepared.image_sizes[i])
        image = normalise(prepared.images[int(i)], *size, False)
        out = detector.detect_view(image, size, float(prepared.scales[i]))
        found.append(
            ImageDetections(out["boxes"].numpy(), out["scores"].numpy(), out["labels"].numpy())
        )
    return found


def evaluate(
    prepared: PreparedDataset,
    detector: FasterRCNN,
    proposals: Mapping[str, Proposals],
    out: Path,
) -> dict:
    """Measure `detector` on the test images of `prepared`; `proposals` maps a metric name to
    a test-proposal artifact whose recall to report."""
    images = np.nonzero(prepared.split == TEST)[0]
    truths = ground_truth_of(prepared, images)
    found = detect_prepared(detector, prepared, images)
    metrics, curves = voc_metrics(truths, found, prepared.classes)
    sizes = [tuple(int(v) for v in prepared.original_sizes[i]) for i in images]
    results = coco_results(found, prepared.classes)
    for result in results:
        result["image_name"] = prepared.image_ids[images[result["image_id"] - 1]]
    metrics.update(coco_metrics(coco_ground_truth(truths, sizes, prepared.classes), results))
    for name, test_proposals in proposals.items():
        recall = proposal_recall(
            truths, _test_proposals(test_proposals, prepared), RECALL_TOP, (0.5, 0.7)
        )
        metrics[name] = recall

    if out.exists():
        shutil.rmtree(out)
    (out / "pr").mkdir(parents=True)
    save_png(pr_curves(curves, metrics["per_class"]), out / "plots" / "pr_curves.png")
    save_png(ap_by_size(metrics), out / "plots" / "ap_by_size.png")
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
    """The first test images with their detections (score >= SAMPLE_SCORE) coloured by
    outcome, and the objects they missed."""
    folder.mkdir(parents=True)
    for i, det in zip(images, found, strict=False):
        h, w = prepared.image_sizes[i]
        scale = prepared.scales[i]
        picture = Image.fromarray(prepared.images[int(i)][:h, :w])
        keep = det.scores >= SAMPLE_SCORE
        boxes, labels, scores = det.boxes[keep] * scale, det.labels[keep], det.scores[keep]
        gt_boxes, gt_labels = prepared.boxes(int(i)).numpy(), prepared.labels(int(i)).numpy()
        outcomes = image_outcomes(
            boxes, scores, labels, gt_boxes, gt_labels, prepared.difficult(int(i)).numpy()
        )
        names = prepared.classes
        drawn = draw_outcomes(
            picture,
            boxes,
            [f"{names[k]} {s:.2f}" for k, s in zip(labels, scores, strict=True)],
            outcomes.detections,
            gt_boxes[outcomes.missed],
            [names[k] for k in gt_labels[outcomes.missed]],
            auto_scale(picture),
        )
        save_png(drawn, folder / f"{prepared.image_ids[i]}.png")


def run(params: Params) -> dict:
    """Measure the exported detector on the test split: VOC and COCO AP, proposal recall."""
    inputs = StageInputs(EVALUATE, params)
    prepared = inputs.open(PREPARE, PreparedDataset.of)
    detector = detector_of(inputs.model(EXPORT), EXPORT.out)
    proposals = {
        "step1_proposals": inputs.open(STEP1_TEST_PROPOSALS, Proposals.of),
        "step3_proposals": inputs.open(STEP3_TEST_PROPOSALS, Proposals.of),
    }
    return evaluate(prepared, detector, proposals, EVALUATE.out)


main = stage_command(EVALUATE, run)

if __name__ == "__main__":
    main()
