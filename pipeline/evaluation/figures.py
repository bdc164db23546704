"""The evaluation's figures, written as PNG next to its data plots: PR curves and AP by object
size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from PIL import Image

from pipeline.charts import Series, bar_chart, line_chart

if TYPE_CHECKING:  # only a type: the figures need not rerun when the metrics code changes
    from pipeline.evaluation.metrics import ClassCurve

SIZES = {"small": "map_coco_small", "medium": "map_coco_medium", "large": "map_coco_large"}


def pr_curves(curves: Mapping[str, ClassCurve], per_class: Mapping[str, Mapping]) -> Image.Image:
    """Precision against recall of every class, its VOC07 AP in the legend."""
    series = [
        Series(
            f"{name} AP {per_class[name]['ap_voc07']:.3f}",
            [0.0, *curve.recall.tolist()],
            [1.0, *curve.precision.tolist()],
        )
        for name, curve in curves.items()
        if per_class[name]["ap_voc07"] is not None
    ]
    return line_chart(series, "PR curves (VOC07 AP)", "recall", "precision", y_range=(0.0, 1.0))


def ap_by_size(metrics: Mapping[str, float]) -> Image.Image:
    """COCO AP@[.5:.95] of small, medium and large objects (a size the test split has no
    object of has no bar)."""
    values = {size: float(metrics[key]) for size, key in SIZES.items() if metrics[key] is not None}
    return bar_chart(values, "COCO AP by object size", "AP@[.5:.95]")
