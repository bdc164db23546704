"""VOC AP on hand-built cases, the COCO conversion, proposal recall."""

import numpy as np
import pytest

from pipeline.evaluation.metrics import (
    ClassCurve,
    ImageDetections,
    ImageTruth,
    area_ap,
    class_curve,
    coco_ground_truth,
    coco_metrics,
    coco_results,
    proposal_recall,
    voc07_ap,
    voc_metrics,
)

CLASSES = ["__background__", "cat", "dog"]
A, B, C = [0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 70, 30]


def truth(boxes, labels, difficult=None):
    boxes = np.array(boxes, float).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult)
    return ImageTruth(boxes, np.array(labels, int), difficult)


def dets(boxes, scores, labels):
    return ImageDetections(np.array(boxes, float).reshape(-1, 4), np.array(scores, float),
                           np.array(labels, int))  # fmt: skip


def ap(truths, detections, label=1):
    curve = class_curve(truths, detections, label)
    return voc07_ap(curve), area_ap(curve)


def test_perfect_detections_score_one():
    truths = [truth([A, B], [1, 1]), truth([C], [1])]
    found = [dets([A, B], [0.9, 0.8], [1, 1]), dets([C], [0.7], [1])]
    assert ap(truths, found) == (pytest.approx(1.0), pytest.approx(1.0))


def test_all_wrong_scores_zero():
    truths = [truth([A], [1])]
    found = [dets([C, B], [0.9, 0.8], [1, 1])]
    assert ap(truths, found) == (0.0, 0.0)


def test_a_duplicate_is_a_false_positive():
    truths = [truth([A, B], [1, 1])]
    # A, A again (duplicate), then B: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    found = [dets([A, A, B], [0.9, 0.8, 0.7], [1, 1, 1])]
    curve = class_curve(truths, found, 1)
    np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0])
    # all-point: 0.5 * 1 + 0.5 * 2/3; 11-point: 6 points at 1 (recall <= 0.5), 5 at 2/3
    assert area_ap(curve) == pytest.approx(0.5 + 1 / 3)
    assert voc07_ap(curve) == pytest.approx((6 * 1 + 5 * (2 / 3)) / 11)


def test_matches_to_difficult_objects_count_neither_way():
    truths = [truth([A, B], [1, 1], difficult=[False, True])]
    found = [dets([B, A], [0.9, 0.8], [1, 1])]  # the best detection hits the difficult one
    curve = class_curve(truths, found, 1)
    assert curve.positives == 1
    assert ap(truths, found) == (pytest.approx(1.0), pytest.approx(1.0))


def test_eleven_point_and_area_differ():
    curve = ClassCurve(precision=np.array([1.0, 0.5]), recall=np.array([0.25, 0.5]), positives=4)
    # 11-point: recall >= 0, .1, .2 -> 1; .3, .4, .5 -> 0.5; above -> 0
    assert voc07_ap(curve) == pytest.approx((3 * 1 + 3 * 0.5) / 11)
    assert area_ap(curve) == pytest.approx(0.25 * 1 + 0.25 * 0.5)


def test_a_class_without_gt_has_no_ap_and_stays_out_of_the_mean():
    truths = [truth([A], [1])]
    found = [dets([A, B], [0.9, 0.8], [1, 2])]
    metrics, _ = voc_metrics(truths, found, CLASSES)
    assert metrics["per_class"]["dog"]["ap_voc07"] is None
    assert metrics["map_voc07"] == pytest.approx(1.0)


def test_coco_conversion_keeps_coordinates_ids_and_categories():
    truths = [truth([A], [1]), truth([B, C], [2, 1], difficult=[False, True])]
    gt = coco_ground_truth(truths, [(50, 60), (80, 90)], CLASSES)
    assert gt["images"][1] == {"id": 2, "height": 80, "width": 90}
    assert gt["annotations"][1]["bbox"] == [20.0, 20.0, 20.0, 20.0]
    assert gt["annotations"][2]["iscrowd"] == 1
    assert gt["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    results = coco_results([dets([A], [0.9], [1]), dets([B], [0.8], [2])], CLASSES)
    assert results[1] == {"image_id": 2, "category_id": 2, "category_name": "dog",
                          "bbox": [20.0, 20.0, 20.0, 20.0], "score": 0.8}  # fmt: skip


def test_coco_metrics_come_from_pycocotools():
    truths = [truth([A, B], [1, 2]), truth([C], [1])]
    gt = coco_ground_truth(truths, [(100, 100), (100, 100)], CLASSES)
    perfect = coco_results([dets([A, B], [0.9, 0.9], [1, 2]), dets([C], [0.9], [1])], CLASSES)
    assert coco_metrics(gt, perfect)["map_coco"] == pytest.approx(1.0)
    shifted = coco_results(
        [dets([[1, 1, 11, 11], B], [0.9, 0.9], [1, 2]), dets([C], [0.9], [1])], CLASSES
    )
    metrics = coco_metrics(gt, shifted)
    assert metrics["map_coco_50"] == pytest.approx(1.0)
    assert metrics["map_coco"] < 1.0  # IoU 0.68 fails the stricter thresholds
    assert metrics["map_coco_large"] is None  # no gt above 96^2 px
    assert coco_metrics(gt, [])["map_coco"] == 0.0


def test_proposal_recall_counts_non_difficult_gt_covered():
    truths = [truth([A, B], [1, 1]), truth([C], [1], difficult=[True])]
    proposals = [np.array([[0, 0, 10, 12], [100, 100, 120, 120]], float), np.zeros((0, 4))]
    recall = proposal_recall(truths, proposals, 300, (0.5, 0.9))
    assert recall == {"recall@300_iou0.5": 0.5, "recall@300_iou0.9": 0.0}
