"""The `frcnn` command: look inside the pipeline's artifacts."""

from __future__ import annotations

import json

import click

from pipeline.inspect import render, summarise
from pipeline.runner import report_errors


@click.group()
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """staged-frcnn: Faster R-CNN as a stage-wise DVC pipeline with cached Zarr artifacts."""
    ctx.obj = {"debug": debug}


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
    summary = report_errors(ctx.obj["debug"], lambda: summarise(path, None if all_items else limit))
    click.echo(json.dumps(summary, indent=2) if as_json else render(summary))
