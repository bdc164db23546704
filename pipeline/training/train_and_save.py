"""What the training stages share: seeded initialisation, and training a set of parts, then
saving them as the stage's model file with its provenance."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline import distributed
from pipeline.artifacts.model_files import save_model
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.writer import PARTIAL_SUFFIX
from pipeline.charts import save_png
from pipeline.config import Params
from pipeline.data.feeding import BatchReader
from pipeline.layout import CURVES, Stage, live_log
from pipeline.seeds import derived_seed
from pipeline.training.curves import training_curves
from pipeline.training.loop import LossFn, TrainingRun, publish_log, train


def seeded_init(params: Params, stage: Stage) -> None:
    """Seed torch before a stage builds its fresh layers, so their initial weights are fixed."""
    torch.manual_seed(derived_seed(params.train.seed, stage.name, "init"))


@dataclass(frozen=True)
class StageTraining:
    """What a training stage trains: `parts` with the `train.<step>` schedule on `views`,
    inputs read by `read`, minimising `loss_fn`. The model records the provenance of the
    `inputs` the stage opened."""

    inputs: StageInputs
    step: str
    parts: dict[str, nn.Module]
    read: BatchReader
    loss_fn: LossFn
    views: np.ndarray
    device: torch.device
    in_memory: bool = False  # `read` reads memory: it needs no reader process of its own


def train_and_save(training: StageTraining, params: Params) -> dict[str, float]:
    """Train, save the parts as the stage's model file with its provenance and publish the
    loss log; return the last logged losses (on rank 0; the other ranks return nothing)."""
    stage, step, device = training.inputs.stage, training.step, training.device
    parts = training.parts
    schedule = getattr(params.train, step)
    provenance = training.inputs.provenance()
    work = stage.out.with_name(stage.out.name + PARTIAL_SUFFIX)
    module = nn.ModuleDict(parts).to(device)
    run = TrainingRun(
        stage.name,
        module,
        training.read,
        training.loss_fn,
        training.views,
        schedule,
        params.train,
        work,
        provenance.fingerprint,
        schedule_key=f"train.{step}",
        workers=0 if training.in_memory else params.train.workers,
    )
    history = train(run, device)
    if not distributed.is_main():  # rank 0 alone writes the stage's output
        return {}
    module.cpu()
    save_model(stage.out, provenance, {name: part.state_dict() for name, part in parts.items()})
    publish_log(work, live_log(stage))
    save_png(training_curves(stage.name, history), live_log(stage) / CURVES)
    shutil.rmtree(work)
    return history[-1]
