"""What bf16 autocast (`train.amp: bf16`) buys each training stage on this machine's device:
SGD iterations of pretraining and the four steps' own training, in fp32 and in bf16, the two
precisions interleaved round by round so that machine noise hits both alike. On a CPU with
native bf16 instructions (avx512_bf16, AMX) the convolutions gain; elsewhere bf16 is emulated
and slower. Medians over rounds, ms per training image.

    python -m bench.precision [--images 8] [--iterations 10] [--rounds 3]
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
from pathlib import Path

import click

from bench.cache_gain import STEPS, timed_round
from bench.project import build_project, inside, profile_params
from pipeline import layout

STAGES = (layout.PRETRAIN, *STEPS)
PRECISIONS = ("fp32", "bf16")


@click.command()
@click.option("--images", default=8, show_default=True, help="Train images of the project.")
@click.option("--iterations", default=10, show_default=True, help="Iterations per round.")
@click.option("--rounds", default=3, show_default=True)
def main(images: int, iterations: int, rounds: int) -> None:
    params = profile_params("default", images)
    with tempfile.TemporaryDirectory() as folder, inside(Path(folder)):
        click.echo(f"building a default project of {images} train images ...", err=True)
        build_project(Path(folder), params, until=layout.STEP4_PROPOSAL_TARGETS.name)
        trainings = {
            s.name: importlib.import_module(f"stages.{s.name}").training(params) for s in STAGES
        }
        sizes = {name: getattr(params.train, t.step).images_per_batch
                 for name, t in trainings.items()}  # fmt: skip
        seconds: dict[tuple[str, str], list[float]] = {}
        for round_ in range(rounds):
            for name, training in trainings.items():
                for amp in PRECISIONS:
                    timing = timed_round(
                        training, sizes[name], round_ * iterations, iterations, 0, amp
                    )
                    seconds.setdefault((name, amp), []).append(timing["iteration"])
    device = next(iter(trainings.values())).device
    click.echo(
        f"device {device}, {rounds} rounds x {iterations} iterations; medians, ms per image:"
    )
    click.echo("| stage | images/iteration | fp32 | bf16 | fp32 / bf16 |")
    click.echo("|---|---:|---:|---:|---:|")
    for name in trainings:
        fp32, bf16 = (statistics.median(seconds[name, amp]) * 1000 for amp in PRECISIONS)
        click.echo(f"| {name} | {sizes[name]} | {fp32:.1f} | {bf16:.1f} | {fp32 / bf16:.2f}x |")


if __name__ == "__main__":
    main()
