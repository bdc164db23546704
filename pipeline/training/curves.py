"""Each training stage's figure of its loss terms and learning rate, drawn with the chart
primitives only, so that no training stage depends on the evaluation code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image

from pipeline.charts import Series, line_chart, stacked


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
