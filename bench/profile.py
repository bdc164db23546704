"""Where does a training step's time go? torch.profiler over a few SGD iterations of each
training stage's own `training(params)` (a small project of the profile, bench/project.py),
printing the operators that take the most time, self time first.

    python -m bench.profile [--profile default] [--iterations 20] [--top 12] [STAGE ...]
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import click
from torch.profiler import ProfilerActivity, profile

from bench.project import PROFILES, build_project, inside, profile_params, sgd_stepper
from pipeline import layout
from pipeline.data.feeding import EachView
from pipeline.training.loop import batch_at
from pipeline.training.train_and_save import StageTraining

TRAINING = ("pretrain", "step1_rpn", "step2_fast_rcnn", "step3_rpn", "step4_fast_rcnn")


def profiled(training: StageTraining, size: int, iterations: int) -> profile:
    """The profiler's record of `iterations` SGD iterations, after an untimed one."""
    sgd_step = sgd_stepper(training)

    def step(i: int) -> None:
        sgd_step(EachView(training.read)(batch_at(i, size, training.views, seed=0)))

    step(0)
    activities = [ProfilerActivity.CPU]
    if training.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as recording:
        for i in range(1, iterations + 1):
            step(i)
    return recording


@click.command()
@click.argument("stages", nargs=-1, type=click.Choice(TRAINING))
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="default")
@click.option("--images", default=8, show_default=True)
@click.option("--iterations", default=20, show_default=True)
@click.option("--top", default=12, show_default=True)
def main(
    stages: tuple[str, ...], profile_name: str, images: int, iterations: int, top: int
) -> None:
    params = profile_params(profile_name, images)
    with tempfile.TemporaryDirectory() as tmp, inside(Path(tmp)):
        build_project(Path(tmp), params, until=layout.STEP4_PROPOSAL_TARGETS.name)
        for name in stages or TRAINING:
            training = importlib.import_module(f"stages.{name}").training(params)
            size = getattr(params.train, training.step).images_per_batch
            recording = profiled(training, size, iterations)
            click.echo(f"== {name}: {iterations} iterations of {size} view(s)")
            click.echo(recording.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


if __name__ == "__main__":
    main()
