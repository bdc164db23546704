"""How much cheaper are steps 3 and 4 (cached features) than steps 1 and 2 (images), per
image, and how long do they wait for their data?

Builds a small project of the profile (bench/project.py), takes each training stage's own
`training(params)` (its modules, reader and loss) and times SGD iterations of the four steps,
interleaved round by round so that machine noise hits all four alike. Per step: the time the
reader takes for a batch when it runs in this process, and the time the loop waits for a batch
when `--workers` DataLoader processes read ahead, as the stages do (steps 3 and 4 read in
process when they keep their inputs in memory). Medians over rounds.

    python -m bench.cache_gain [--profile default|vgg16] [--iterations 10] [--rounds 3]
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from pathlib import Path

import click
import torch

from bench.project import PROFILES, build_project, inside, profile_params, sgd_stepper
from pipeline import layout
from pipeline.data.feeding import EachView, feed
from pipeline.training.loop import batch_at
from pipeline.training.train_and_save import StageTraining

STEPS = (layout.STEP1_RPN, layout.STEP2_FAST_RCNN, layout.STEP3_RPN, layout.STEP4_FAST_RCNN)


def timed_round(
    training: StageTraining,
    batch_size: int,
    first: int,
    iterations: int,
    workers: int,
    amp: str = "fp32",
) -> dict[str, float]:
    """Seconds per image: reading in this process, and iterating fed by `workers` readers
    (total, and the part spent waiting for the next batch)."""
    sgd_step = sgd_stepper(training, amp)
    batches = [
        batch_at(first + i, batch_size, training.views, seed=0) for i in range(iterations + 1)
    ]
    start = time.perf_counter()
    read_views = EachView(training.read)
    for batch in batches[1:]:
        read_views(batch)
    read = time.perf_counter() - start

    if training.in_memory:  # the stage's own choice: no reader process when reading memory
        workers = 0
    inputs = iter(feed(read_views, batches, workers, training.device))

    sgd_step(next(inputs))  # untimed: starts the reader processes, warms up allocators
    wait = 0.0
    start = time.perf_counter()
    for _ in batches[1:]:
        asked = time.perf_counter()
        batch_inputs = next(inputs)
        wait += time.perf_counter() - asked
        sgd_step(batch_inputs)
    if training.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    images = iterations * batch_size
    return {
        "read": read / images,
        "iteration": elapsed / images,
        "wait": wait / images,
        "workers": workers,
    }


@click.command()
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="default")
@click.option("--images", default=8, show_default=True, help="Train images of the project.")
@click.option("--iterations", default=10, show_default=True, help="Iterations per round.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--workers", default=1, show_default=True, help="DataLoader processes.")
@click.option(
    "--in-memory",
    type=click.Choice(["auto", "never"]),
    default="auto",
    show_default=True,
    help="never: every step streams its inputs (images or cached features, and targets) from "
    "disk through the workers.",
)
def main(
    profile: str, images: int, iterations: int, rounds: int, workers: int, in_memory: str
) -> None:
    params = profile_params(profile, images, in_memory=in_memory)
    with tempfile.TemporaryDirectory() as folder, inside(Path(folder)):
        click.echo(f"building a {profile} project of {images} train images ...", err=True)
        build_project(Path(folder), params, until=layout.STEP4_PROPOSAL_TARGETS.name)
        trainings = {
            s.name: importlib.import_module(f"stages.{s.name}").training(params) for s in STEPS
        }
        sizes = {s.name: getattr(params.train, t.step).images_per_batch
                 for s, t in zip(STEPS, trainings.values(), strict=True)}  # fmt: skip
        times: dict[str, list[dict[str, float]]] = {name: [] for name in trainings}
        for round_ in range(rounds):
            for name, training in trainings.items():
                first = round_ * iterations
                times[name].append(timed_round(training, sizes[name], first, iterations, workers))
    med = {
        name: {
            k: statistics.median(r[k] for r in rounds_) * (1 if k == "workers" else 1000)
            for k in rounds_[0]
        }
        for name, rounds_ in times.items()
    }
    click.echo(
        f"profile {profile}, device {next(iter(trainings.values())).device}, {rounds} rounds x "
        f"{iterations} iterations; medians, ms per image (readers: DataLoader processes; 0 where "
        "a step keeps its inputs in memory, train.images_in_memory and features_in_memory):"
    )
    click.echo(
        "| step | images/iteration | readers | iteration | read (in process) | wait (fed) "
        "| wait % |"
    )
    click.echo("|---|---:|---:|---:|---:|---:|---:|")
    for name, m in med.items():
        click.echo(
            f"| {name} | {sizes[name]} | {m['workers']:.0f} | {m['iteration']:.1f} | "
            f"{m['read']:.1f} | {m['wait']:.2f} | {100 * m['wait'] / m['iteration']:.1f} |"
        )
    step1, step2, step3, step4 = (med[s.name]["iteration"] for s in STEPS)
    click.echo(
        f"per image: step1 / step3 = {step1 / step3:.1f}x, step2 / step4 = {step2 / step4:.1f}x"
    )


if __name__ == "__main__":
    main()
