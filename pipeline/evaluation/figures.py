"""The figures a run writes as PNG next to its data plots: each training stage's loss terms
and learning rate, and the evaluation's PR curves and AP by object size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from pipeline.evaluation.charts import Series, bar_chart, line_chart, stacked
from pipeline.evaluation.metrics import ClassCurve

SIZES = {"small": "map_coco_small", "medium": "map_coco_medium", "large": "map_coco_large"}


def training_curves(stage: str, history: Sequence[Mapping[str, float]]) -> Image.Image:
    """Every logged loss term (and their total) above the learning rate, per iteration."""
    steps = [row["iteration"] for row in history]
    terms = [k for k in history[0] if k.startswith("loss/")] if history else []
    losses = [Series(k.removeprefix("loss/"), steps, [row[k] for row in history]) for k in terms]
    lr = [Series("lr", steps, [row["lr"] for row in history])]
    return stacked([
        line_chart(losses, f"{stage}: loss terms", "iteration", "loss"),
        line_chart(lr, f"{stage}: learning rate", "iteration", "lr"),
    ])  # fmt: skip


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


def save_png(image: Image.Image, path: Path) -> None:
    """PNG without timestamps or other metadata: the same figure gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False)
