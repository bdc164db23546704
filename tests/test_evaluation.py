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


def test_imperfect_detections_give_the_hand_computed_voc07_all_point_and_coco_aps():
    """Two objects; the detections, best first: a hit, a false positive, and a box at IoU 0.68
    with the second object (a hit at IoU 0.5 to 0.65, a miss at 0.7 and above)."""
    partial = [20, 20, 40, 33.6]  # 20 x 13.6 inside B's 20 x 20: IoU 272 / 400 = 0.68
    truths = [truth([A, B], [1, 1])]
    found = [dets([A, C, partial], [0.9, 0.8, 0.7], [1, 1, 1])]
    metrics, _ = voc_metrics(truths, found, CLASSES)
    # Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1. 11-point: recall >= 0 .. 0.5 (six points)
    # reach precision 1, the five above reach 2/3. All-point: 1/2 * 1 + 1/2 * 2/3.
    assert metrics["map_voc07"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert metrics["map_area"] == pytest.approx(1 / 2 + 1 / 3)
    assert metrics["per_class"]["cat"]["ap_voc07"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    # COCO: 101 recall points. At IoU .5 .55 .6 .65 as above (51 points at 1, 50 at 2/3); at
    # .7 ... .95 the third box misses (51 points at 1, 50 at 0); the mean over the ten.
    gt = coco_ground_truth(truths, [(100, 100)], CLASSES)
    coco = coco_metrics(gt, coco_results(found, CLASSES))
    low, high = (51 + 50 * 2 / 3) / 101, 51 / 101
    assert coco["map_coco"] == pytest.approx((4 * low + 6 * high) / 10)
    assert coco["map_coco_50"] == pytest.approx(low)
    assert coco["map_coco_75"] == pytest.approx(high)
    assert coco["map_coco_small"] == pytest.approx(coco["map_coco"])  # both under 32^2 px
    assert coco["map_coco_medium"] is None
    assert len({metrics["map_voc07"], metrics["map_area"], coco["map_coco"]}) == 3
