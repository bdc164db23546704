"""The `frcnn` command: look inside the artifacts, draw them, run the detector on images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.api import VIEWS, Detector, Views, as_rgb
from pipeline.artifacts.model_files import verify_model_file
from pipeline.artifacts.store import verify_artifact
from pipeline.cli.detect_images import coco_results, draw_results, drawing_paths, image_paths
from pipeline.cli.dvc_yaml import dvc_yaml_problems, dvc_yaml_text
from pipeline.cli.inspect_artifact import damage_found, describe_artifact, format_description
from pipeline.cli.show_image import LAYERS, draw_layers
from pipeline.errors import FrcnnError
from pipeline.evaluation.report import build_report
from pipeline.layout import DATA, EXPORT
from pipeline.runner import report_errors


@click.group()
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """staged-frcnn: Faster R-CNN as a stage-wise DVC pipeline with cached Zarr artifacts."""
    ctx.obj = {"debug": debug}


def _fraction(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0 <= value <= 1:  # also refuses nan, which click's FloatRange lets through
        raise click.BadParameter(f"{value} is not a number in [0, 1]")
    return value


PICTURES = {".png", ".jpg", ".jpeg"}


def _picture_path(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    if value.suffix.lower() not in PICTURES:
        raise click.BadParameter(f"{value} is not a .png or .jpg file name")
    return value


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Compute value statistics over at most this many images per array.",
)
@click.option("--all", "all_items", is_flag=True, help="Statistics over every image (slow).")
@click.pass_context
def inspect(ctx: click.Context, path: str, as_json: bool, limit: int, all_items: bool) -> None:
    """Show an artifact's arrays (shape, dtype, chunks, shards, size, stats) and provenance."""
    limit_or_all = None if all_items else limit
    summary = report_errors(ctx.obj["debug"], lambda: describe_artifact(path, limit_or_all))
    click.echo(json.dumps(summary, indent=2) if as_json else format_description(summary))
    damage = damage_found(summary)
    for problem in damage:
        click.echo(f"error: {path}: {problem}", err=True)
    if damage:
        click.echo(
            f"error: {path}: damaged; `frcnn verify {path}` checks every file, and "
            "`dvc checkout` or `dvc repro -f <stage>` restores it",
            err=True,
        )
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def verify(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Check every file of the artifacts (Zarr folders or .pt model files) at PATHS against what
    their stage wrote."""
    damaged = 0
    for path in paths:
        check = verify_artifact if path.is_dir() else verify_model_file
        files, problems = report_errors(ctx.obj["debug"], lambda p=path, c=check: c(p))
        for problem in problems:
            click.echo(f"error: {path}: {problem}", err=True)
        if problems:
            damaged += 1
        else:
            click.echo(f"{path}: {files} file{'' if files == 1 else 's'} intact")
    if damaged:
        click.echo(
            f"error: {damaged} of {len(paths)} artifacts damaged; restore them with "
            "`dvc checkout` or rebuild them with `dvc repro -f <stage>`",
            err=True,
        )
        sys.exit(1)


@main.command()
@click.option("--image", "reference", required=True, help="Dataset image id, or index.")
@click.option(
    "--layers",
    default="gt,detections",
    show_default=True,
    help=f"Comma-separated, any of: {', '.join(LAYERS)}.",
)
@click.option(
    "--step",
    type=click.Choice(["1", "3"]),
    default="3",
    show_default=True,
    help="Whose proposals to draw.",
)
@click.option(
    "--top-k", type=click.IntRange(min=0), default=20, show_default=True, help="Proposals to draw."
)
@click.option(
    "--score-thresh", default=0.5, show_default=True, callback=_fraction, help="Detections to draw."
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0.1, max=16),
    default=None,
    help="Enlarge the picture by this factor [default: to at least 576 px on the short side].",
)
@click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=str(DATA), show_default=True
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    callback=_picture_path,
    help="The picture: .png or .jpg.",
)
@click.pass_context
def show(
    ctx: click.Context,
    reference: str,
    layers: str,
    step: str,
    top_k: int,
    score_thresh: float,
    scale: float | None,
    data: Path,
    out: Path,
) -> None:
    """Draw an image with its ground truth, anchors, proposals and detections (a PNG)."""

    def draw() -> None:
        folder = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
        if folder is not None and not folder.is_dir():
            raise FrcnnError(f"{out}: cannot write it, {folder} is a file, not a folder")
        chosen = [layer.strip() for layer in layers.split(",") if layer.strip()]
        picture = draw_layers(data, reference, chosen, int(step), top_k, score_thresh, scale)
        out.parent.mkdir(parents=True, exist_ok=True)
        picture.save(out)

    report_errors(ctx.obj["debug"], draw)
    click.echo(f"wrote {out}")


@main.command()
@click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=str(DATA), show_default=True
)
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.yaml",
    show_default=True,
)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default="report.html",
              show_default=True)  # fmt: skip
@click.pass_context
def report(ctx: click.Context, data: Path, params_path: Path, out: Path) -> None:
    """Write one self-contained HTML page of the run: metrics, curves, samples (no network)."""

    def write() -> None:
        page = build_report(data, params_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")

    report_errors(ctx.obj["debug"], write)
    click.echo(f"wrote {out}")


@main.command(name="dvc-yaml")
@click.option(
    "--check",
    "check_path",
    type=click.Path(dir_okay=False, path_type=Path),
    is_flag=False,
    flag_value="dvc.yaml",
    help="Compare this dvc.yaml (default: dvc.yaml) with the declarations; exit 1 naming each "
    "difference.",
)
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False, path_type=Path),
    is_flag=False,
    flag_value="dvc.yaml",
    help="Write it to this file (default: dvc.yaml).",
)
@click.pass_context
def dvc_yaml(ctx: click.Context, check_path: Path | None, write_to: Path | None) -> None:
    """Print dvc.yaml as the stage declarations (pipeline/layout.py) and imports make it."""
    if write_to is not None:
        report_errors(ctx.obj["debug"], lambda: write_to.write_text(dvc_yaml_text()))
        click.echo(f"{write_to}: written from pipeline/layout.py and the stages' imports")
        return
    if check_path is None:
        click.echo(dvc_yaml_text(), nl=False)
        return
    problems = report_errors(ctx.obj["debug"], lambda: dvc_yaml_problems(check_path))
    for problem in problems:
        click.echo(f"{check_path}: {problem}", err=True)
    if problems:
        click.echo(f"{check_path}: run `frcnn dvc-yaml --write` to bring it up to date", err=True)
        sys.exit(1)
    click.echo(f"{check_path}: every stage matches its declaration and its imports")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=str(EXPORT.out),
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="detections.json",
    show_default=True,
    help="COCO results JSON.",
)
@click.option(
    "--draw",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write each image with its detections as a PNG here.",
)
@click.option("--score-thresh", default=0.5, show_default=True, callback=_fraction)
@click.option(
    "--views",
    type=click.Choice(VIEWS),
    default="exported",
    show_default=True,
    help="exported: the test-time views the evaluation measured; one: each image once, at its "
    "own size (several times faster).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Images read and detected together (with --views one, images of one size share a "
    "forward pass).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.pass_context
def detect(
    ctx: click.Context,
    images: tuple[Path, ...],
    model_path: Path,
    out: Path,
    draw: Path | None,
    score_thresh: float,
    views: Views,
    batch_size: int,
    device: str,
) -> None:
    """Detect objects in IMAGES (files, folders, or quoted patterns such as 'photos/*.jpg')
    with the exported model; images that cannot be read are reported and skipped."""
    state = {"images": 0, "failed": 0}

    def run() -> None:
        paths = image_paths(images)
        state["images"] = len(paths)
        detector = Detector.load(model_path, device)
        drawings = drawing_paths(paths, draw) if draw is not None else {}
        results: list[dict] = []
        try:
            with click.progressbar(length=len(paths), label="detect", file=sys.stderr) as bar:
                for start in range(0, len(paths), batch_size):
                    batch = paths[start : start + batch_size]
                    readable = []
                    for path in batch:
                        try:
                            readable.append((path, as_rgb(path)))
                        except FrcnnError as exc:  # a bad image: say so, and go on
                            state["failed"] += 1
                            click.echo(f"\nerror: {exc}", err=True)
                    found = detector.detect(
                        [pixels for _, pixels in readable], max(len(readable), 1), views
                    )
                    for (path, pixels), detections in zip(readable, found, strict=True):
                        kept = coco_results(path, detections, score_thresh)
                        results += kept
                        if path in drawings:
                            draw_results(pixels, kept, drawings[path])
                    bar.update(len(batch))
        finally:  # whatever stops the run, the results found so far are kept
            out.write_text(json.dumps(results, indent=1) + "\n")
        read = len(paths) - state["failed"]
        click.echo(f"{len(results)} detections in {read} images -> {out}")

    report_errors(ctx.obj["debug"], run)
    if state["failed"]:
        click.echo(
            f"error: {state['failed']} of {state['images']} images could not be read", err=True
        )
        sys.exit(1)
