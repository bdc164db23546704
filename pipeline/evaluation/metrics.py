"""Detection quality: PASCAL VOC AP (11-point and all-point), COCO AP through pycocotools,
and the recall of RPN proposals (the paper's measure of proposal quality).

Boxes are [x1, y1, x2, y2] in continuous pixels, so IoU has no "+1" (the VOC devkit's +1 is
for its 1-based inclusive pixel indices, which the readers already converted).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou


@dataclass(frozen=True)
class ImageTruth:
    boxes: np.ndarray  # [G, 4]
    labels: np.ndarray  # [G]
    difficult: np.ndarray  # [G] bool


@dataclass(frozen=True)
class ImageDetections:
    boxes: np.ndarray  # [D, 4]
    scores: np.ndarray  # [D]
    labels: np.ndarray  # [D]


@dataclass(frozen=True)
class ClassCurve:
    precision: np.ndarray
    recall: np.ndarray
    positives: int  # non-difficult gt objects of the class


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


def class_curve(
    truths: list[ImageTruth], detections: list[ImageDetections], label: int, iou: float = 0.5
) -> ClassCurve:
    """Precision/recall of one class over a dataset with the VOC matching rules.

    Detections are taken best first; each matches the unmatched gt of its image with which it
    has the highest IoU (> `iou`). A match to a difficult gt is neither a true nor a false
    positive; a second match to the same gt is a false positive (a duplicate).
    """
    images, scores, boxes = [], [], []
    for i, det in enumerate(detections):
        mine = det.labels == label
        images.append(np.full(int(mine.sum()), i))
        scores.append(det.scores[mine])
        boxes.append(det.boxes[mine].reshape(-1, 4))
    image_of = np.concatenate(images) if images else np.zeros(0, int)
    order = np.argsort(-np.concatenate(scores), kind="stable") if scores else np.zeros(0, int)
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))

    gt = [(t.boxes[t.labels == label], t.difficult[t.labels == label]) for t in truths]
    positives = int(sum((~difficult).sum() for _, difficult in gt))
    taken = [np.zeros(len(b), bool) for b, _ in gt]
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, d in enumerate(order):
        gt_boxes, difficult = gt[image_of[d]]
        if len(gt_boxes) == 0:
            fp[rank] = 1
            continue
        overlaps = _iou(all_boxes[d : d + 1], gt_boxes)[0]
        best = int(overlaps.argmax())
        if overlaps[best] <= iou:
            fp[rank] = 1
        elif difficult[best]:
            continue
        elif taken[image_of[d]][best]:
            fp[rank] = 1
        else:
            tp[rank] = 1
            taken[image_of[d]][best] = True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(positives, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return ClassCurve(precision, recall, positives)


def voc07_ap(curve: ClassCurve) -> float:
    """The VOC2007 11-point AP: mean of the best precision at recall >= 0, 0.1, ..., 1."""
    points = []
    for threshold in np.linspace(0, 1, 11):
        reached = curve.precision[curve.recall >= threshold]
        points.append(reached.max() if reached.size else 0.0)
    return float(np.mean(points))


def area_ap(curve: ClassCurve) -> float:
    """The all-point AP (VOC2010+): area under the monotone precision envelope."""
    recall = np.concatenate(([0.0], curve.recall, [1.0]))
    precision = np.concatenate(([0.0], curve.precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def voc_metrics(
    truths: list[ImageTruth], detections: list[ImageDetections], classes: list[str]
) -> tuple[dict, dict[str, ClassCurve]]:
    """Per-class and mean AP (both VOC flavours); a class with no positives has no AP."""
    per_class, curves = {}, {}
    for label, name in enumerate(classes[1:], start=1):
        curve = class_curve(truths, detections, label)
        curves[name] = curve
        has_gt = curve.positives > 0
        per_class[name] = {
            "ap_voc07": voc07_ap(curve) if has_gt else None,
            "ap_area": area_ap(curve) if has_gt else None,
            "positives": curve.positives,
        }
    scored = [v for v in per_class.values() if v["ap_voc07"] is not None]
    metrics = {
        "map_voc07": float(np.mean([v["ap_voc07"] for v in scored])) if scored else 0.0,
        "map_area": float(np.mean([v["ap_area"] for v in scored])) if scored else 0.0,
        "per_class": per_class,
    }
    return metrics, curves


def coco_ground_truth(
    truths: list[ImageTruth], sizes: list[tuple[int, int]], classes: list[str]
) -> dict:
    """A COCO instances dict; image id i + 1 is image i; difficult objects become crowd."""
    images = [{"id": i + 1, "height": int(h), "width": int(w)} for i, (h, w) in enumerate(sizes)]
    annotations = []
    for i, truth in enumerate(truths):
        for box, label, difficult in zip(truth.boxes, truth.labels, truth.difficult, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(difficult),
                }
            )
    categories = [{"id": k, "name": name} for k, name in enumerate(classes) if k > 0]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(detections: list[ImageDetections], classes: list[str]) -> list[dict]:
    """Detections in the COCO results format (image id i + 1 is image i)."""
    results = []
    for i, det in enumerate(detections):
        for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label),
                    "category_name": classes[int(label)],
                    "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(float(score), 5),
                }
            )
    return results


COCO_STATS = ("map_coco", "map_coco_50", "map_coco_75", "map_coco_small", "map_coco_medium",
              "map_coco_large")  # fmt: skip


def coco_metrics(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """COCO AP@[.5:.95], @.5, @.75 and by size, computed by pycocotools itself."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(COCO_STATS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # -1 marks "no gt of this size": report it as null, not as a score.
    return {
        name: (float(v) if v >= 0 else None)
        for name, v in zip(COCO_STATS, evaluation.stats[:6], strict=True)
    }


def proposal_recall(
    truths: list[ImageTruth], proposals: list[np.ndarray], top: int, thresholds: tuple[float, ...]
) -> dict[str, float]:
    """Fraction of non-difficult gt boxes covered by one of the `top` best proposals."""
    best = []
    for truth, boxes in zip(truths, proposals, strict=True):
        gt = truth.boxes[~truth.difficult]
        if len(gt) == 0:
            continue
        if len(boxes) == 0:
            best.append(np.zeros(len(gt)))
            continue
        best.append(_iou(gt, boxes[:top]).max(axis=1))
    covered = np.concatenate(best) if best else np.zeros(0)
    return {
        f"recall@{top}_iou{t:g}": float((covered >= t).mean()) if covered.size else 0.0
        for t in thresholds
    }
