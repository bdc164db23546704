"""Outcome of each detection, and the figures drawn from a run's numbers."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pipeline.charts import Series, bar_chart, line_chart, nice_ticks
from pipeline.evaluation.drawing import MISSED, OUTCOME_COLOURS, draw_outcomes
from pipeline.evaluation.figures import ap_by_size
from pipeline.evaluation.outcomes import (
    BACKGROUND,
    DUPLICATE,
    IGNORED,
    POOR_LOCALISATION,
    TRUE_POSITIVE,
    WRONG_CLASS,
    image_outcomes,
)
from pipeline.training.curves import training_curves

GT = np.array([[0, 0, 100, 100], [200, 200, 300, 300], [400, 0, 500, 100]], dtype=float)
GT_LABELS = np.array([1, 2, 1])


def outcomes(boxes, scores, labels, difficult=(False, False, False)):
    return image_outcomes(
        np.array(boxes, dtype=float).reshape(-1, 4),
        np.array(scores),
        np.array(labels),
        GT,
        GT_LABELS,
        np.array(difficult),
    )


def test_each_kind_of_detection_gets_its_outcome_and_the_missed_object_is_named():
    found = outcomes(
        [
            [0, 0, 100, 100],  # on object 0, its class
            [2, 2, 100, 100],  # again on object 0, lower score
            [200, 200, 300, 300],  # on object 1 (class 2) as class 1
            [0, 0, 100, 30],  # on object 0, IoU 0.3
            [600, 600, 700, 700],  # on nothing
        ],
        [0.9, 0.8, 0.7, 0.6, 0.5],
        [1, 1, 1, 1, 1],
    )
    assert found.detections == [TRUE_POSITIVE, DUPLICATE, WRONG_CLASS, POOR_LOCALISATION,
                                BACKGROUND]  # fmt: skip
    assert found.missed.tolist() == [False, True, True]


def test_the_higher_score_takes_the_object_whatever_the_order_given():
    found = outcomes([[2, 2, 100, 100], [0, 0, 100, 100]], [0.6, 0.9], [1, 1])
    assert found.detections == [DUPLICATE, TRUE_POSITIVE]


def test_a_difficult_object_is_neither_found_nor_missed():
    found = outcomes([[400, 0, 500, 100]], [0.9], [1], difficult=(False, False, True))
    assert found.detections == [IGNORED]
    assert found.missed.tolist() == [True, True, False]


def test_no_ground_truth_makes_every_detection_background():
    found = image_outcomes(
        np.array([[0, 0, 10, 10]], float), np.array([0.9]), np.array([1]),
        np.zeros((0, 4)), np.zeros(0, int), np.zeros(0, bool),
    )  # fmt: skip
    assert found.detections == [BACKGROUND] and found.missed.shape == (0,)


@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(1e-3, 1e6, allow_nan=False),
)
def test_ticks_are_round_and_cover_the_range(low, span):
    high = low + span
    ticks = nice_ticks(low, high)
    steps = np.diff(ticks)
    assert 2 <= len(ticks) <= 12 and np.allclose(steps, steps[0], rtol=1e-6)
    assert ticks[0] <= low + 1e-6 * steps[0] and ticks[-1] >= high - 1e-6 * steps[0]
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6


def test_a_chart_draws_each_series_in_its_colour():
    chart = line_chart([Series("a", [0, 1], [0, 1]), Series("b", [0, 1], [1, 0])], "t", "x", "y")
    colours = {c for _, c in chart.getcolors(1 << 16)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours


def test_figures_are_the_same_bytes_for_the_same_numbers(tmp_path):
    history = [{"iteration": i, "lr": 0.01, "loss/a": 1 / i, "loss/total": 1 / i}
               for i in range(10, 110, 10)]  # fmt: skip
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        training_curves("step1_rpn", history).save(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert Image.open(paths[0]).size == (640, 720)


def test_ap_by_size_leaves_out_a_size_without_objects():
    metrics = {"map_coco_small": None, "map_coco_medium": 0.5, "map_coco_large": 0.75}
    assert ap_by_size(metrics).size == bar_chart({"medium": 0.5, "large": 0.75}, "", "").size


@pytest.mark.parametrize("scale", [1, 2])
def test_outcome_colours_appear_on_the_picture_with_a_legend_below(scale):
    picture = Image.new("RGB", (120, 100), (128, 128, 128))
    drawn = draw_outcomes(
        picture, np.array([[10.0, 10, 50, 50]]), ["circle 0.9"], [TRUE_POSITIVE],
        np.array([[60.0, 60, 100, 90]]), ["star"], scale,
    )  # fmt: skip
    assert drawn.width == 120 * scale and drawn.height > 100 * scale
    colours = {c for _, c in drawn.getcolors(1 << 20)}
    assert OUTCOME_COLOURS[TRUE_POSITIVE] in colours and MISSED in colours
    assert OUTCOME_COLOURS[BACKGROUND] not in colours
