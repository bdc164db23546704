"""What the four training stages share: seeded initialisation, and training a set of parts,
then saving them as the stage's model file with its provenance."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import distributed
from pipeline.artifacts.model_files import save_model
from pipeline.artifacts.store import PARTIAL_SUFFIX, Provenance
from pipeline.config import Params, StepParams, to_dict
from pipeline.data.feeding import BatchReader
from pipeline.evaluation.figures import save_png, training_curves
from pipeline.layout import CURVES, Stage, live_log
from pipeline.seeds import derived_seed
from pipeline.training.loop import LossFn, TrainingRun, publish_log, train

# How often a run checkpoints and logs, and how and by how many processes its inputs are read,
# change none of its results, so none is provenance.
NOT_PROVENANCE = {
    "checkpoint_every",
    "log_every",
    "workers",
    "features_in_memory",
    "images_in_memory",
}


def seeded_init(params: Params, stage: Stage) -> None:
    """Seed torch before a stage builds its fresh layers, so their initial weights are fixed."""
    torch.manual_seed(derived_seed(params.train.seed, stage.name, "init"))


@dataclass(frozen=True)
class StageTraining:
    """What a training stage trains: `parts` with the `train.<step>` schedule on `views`,
    inputs read by `read`, minimising `loss_fn`. The model records `sections` of the params,
    the training params and the fingerprints of its `inputs`."""

    stage: Stage
    step: str
    parts: dict[str, nn.Module]
    read: BatchReader
    loss_fn: LossFn
    views: np.ndarray
    sections: dict[str, Any]
    inputs: dict[str, str]
    device: torch.device
    in_memory: bool = False  # `read` reads memory: it needs no reader process of its own


def train_and_save(training: StageTraining, params: Params) -> dict[str, float]:
    """Train, save the parts as the stage's model file with its provenance and publish the
    loss log; return the last logged losses (on rank 0; the other ranks return nothing)."""
    stage, step, parts, device = training.stage, training.step, training.parts, training.device
    schedule = getattr(params.train, step)
    # The stage's own schedule is its provenance; the other steps' schedules are not (a new
    # pretrain lr must not restart step 1's checkpoints).
    schedules = {
        f.name
        for f in dataclasses.fields(params.train)
        if isinstance(getattr(params.train, f.name), StepParams)
    }
    common = {
        k: v
        for k, v in to_dict(params.train).items()
        if k not in schedules and k not in NOT_PROVENANCE
    }
    provenance = Provenance.of_stage(
        stage,
        params={**training.sections, "train": {**common, step: to_dict(schedule)}},
        inputs=training.inputs,
    )
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
        lr_key=f"train.{step}.lr",
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
