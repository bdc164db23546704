"""How every entry point runs: one line on stderr and a non-zero exit for a user's mistake."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, TextIO

import click

from pipeline import distributed
from pipeline.config import Params, load_params
from pipeline.errors import FrcnnError
from pipeline.layout import Stage


def report_errors(debug: bool, action: Callable[[], Any]) -> Any:
    """Run `action`; a user's problem becomes one line on stderr and a non-zero exit.

    FrcnnError (bad params, data or artifacts) and OSError (unwritable folder, full disk)
    exit 1, Ctrl-C exits 130; anything else is a bug of ours, one line too (exit 2), and
    `debug` shows the traceback instead.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not debug:
        warnings.showwarning = _one_line_warning
    try:
        return action()
    except (FrcnnError, OSError) as exc:
        if debug:
            raise
        click.echo(f"error: {_describe(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        click.echo(f"interrupted{': ' + str(exc) if str(exc) else ''}", err=True)
        sys.exit(130)
    except Exception as exc:  # the last resort: every known failure has its own message
        if debug:
            raise
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        click.echo(
            f"error: internal error ({type(exc).__name__}: {reason}); rerun with --debug "
            "for the traceback and report it",
            err=True,
        )
        sys.exit(2)


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A library's warning as one line, without the library's file and source line (`--debug`
    shows them)."""
    click.echo(f"warning: {str(message).strip().splitlines()[0]}", err=True)


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def stage_command(stage: Stage, run: Callable[[Params], Any], ranks: bool = False) -> click.Command:
    """Make `run(params)` the command of `stage`: `python -m stages.<name> [--params F]`.

    A stage that splits its work by rank (`ranks`) runs under torchrun when params.yaml's
    `dist` asks for more than one process: the command re-executes itself as every rank."""

    @click.command(name=stage.name, help=run.__doc__)
    @click.option("--params", "params_path", default="params.yaml", show_default=True)
    @click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
    def command(params_path: str, debug: bool) -> None:
        def action() -> Any:
            params = load_params(params_path)
            if ranks and distributed.processes(params.dist) > 1 and not distributed.launched():
                args = ["--params", params_path] + (["--debug"] if debug else [])
                distributed.relaunch(params.dist, stage.module, args)
            with distributed.process_group(params.dist.backend, params.train.device):
                summary = run(params)
                return summary if distributed.is_main() else None

        summary = report_errors(debug, action)
        if summary:
            logging.info("%s: %s", stage.name, json.dumps(summary))

    return command
