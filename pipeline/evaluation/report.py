"""`frcnn report`: one self-contained HTML page of a finished run, to send to a colleague: its
metrics, per-class and per-size AP, proposal recall, the training curves and PR curves, a grid
of evaluated samples, and the params that made it. Every picture is inlined as a data URI and
the page loads nothing from anywhere, so it opens offline and survives being mailed."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from pipeline.errors import ArtifactError
from pipeline.layout import (
    CURVES,
    EVALUATE,
    PRETRAIN,
    STEP1_RPN,
    STEP2_FAST_RCNN,
    STEP3_RPN,
    STEP4_FAST_RCNN,
    live_log,
    under,
)

TRAINING = (PRETRAIN, STEP1_RPN, STEP2_FAST_RCNN, STEP3_RPN, STEP4_FAST_RCNN)
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1320px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 4px; vertical-align: top; }
.grid img { width: 420px; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def build_report(data: Path, params: Path | None) -> str:
    """The report of the run whose outputs are under `data` (and, if given, its params file)."""
    evaluation = under(data, EVALUATE)
    metrics_path = evaluation / "metrics.json"
    if not metrics_path.exists():
        raise ArtifactError(f"{metrics_path}: not found; run `dvc repro` (the report needs it)")
    metrics = json.loads(metrics_path.read_text())
    summary = [
        ["VOC07 mAP@0.5 (11-point)", _number(metrics["map_voc07"])],
        ["VOC mAP@0.5 (all-point)", _number(metrics["map_area"])],
        ["COCO AP@[.5:.95]", _number(metrics["map_coco"])],
        [
            "COCO AP@0.5 / @0.75",
            f"{_number(metrics['map_coco_50'])} / {_number(metrics['map_coco_75'])}",
        ],
    ]
    sizes = [[size, _number(metrics[f"map_coco_{size}"])] for size in ("small", "medium", "large")]
    per_class = [
        [name, _number(v["ap_voc07"]), _number(v["ap_area"]), str(v["positives"])]
        for name, v in metrics["per_class"].items()
    ]
    recall = [
        [step.removesuffix("_proposals").replace("step", "step "),
         *(_number(v) for v in metrics[step].values())]
        for step in ("step1_proposals", "step3_proposals") if step in metrics
    ]  # fmt: skip
    curves = [
        _image(live_log(stage, data) / CURVES, f"{stage.name} curves")
        for stage in TRAINING
        if (live_log(stage, data) / CURVES).exists()
    ]
    figures = [
        _image(evaluation / "plots" / name, name)
        for name in ("pr_curves.png", "ap_by_size.png")
        if (evaluation / "plots" / name).exists()
    ]
    samples = [_image(p, p.stem) for p in sorted((evaluation / "samples").glob("*.png"))]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>staged-frcnn run report</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>staged-frcnn: run report</h1>",
        f"<p>Outputs under <code>{html.escape(str(data))}</code>; the test split only.</p>",
        "<h2>Detection</h2>",
        _table(["metric", "value"], summary),
        "<h2>AP by object size (COCO)</h2>",
        _table(["objects", "AP@[.5:.95]"], sizes),
        "<h2>AP per class</h2>",
        _table(["class", "VOC07 AP", "all-point AP", "objects"], per_class),
        "<h2>Proposal recall at 300 proposals</h2>",
        _table(["RPN", "IoU 0.5", "IoU 0.7"], recall),
        "<h2>PR curves and AP by size</h2>",
        *figures,
        "<h2>Training curves</h2>",
        *curves,
        "<h2>Samples</h2>",
        "<p>Detections scoring 0.5 or more, coloured by outcome; missed objects in blue.</p>",
        f'<div class="grid">{"".join(samples)}</div>',
    ]
    if params is not None and params.exists():
        parts += ["<h2>Params</h2>", f"<pre>{html.escape(params.read_text())}</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
