"""The one training loop behind all training stages.

Deterministic by construction: the data order of epoch e is a permutation seeded by (seed, e),
and iteration i reseeds torch's generator with (seed, stage, i) and gives each view of its
batch the seed (seed, stage, i, its position in the batch), from which the loss draws that
view's samples and dropout. The random state at any iteration is therefore a function of the
iteration number, which the checkpoint records with the model and optimizer state, so a
resumed run draws exactly what an uninterrupted one would. The learning rate is a function of
the iteration too (step decay), so there is no scheduler state to lose. Inputs are read ahead
by DataLoader workers (`pipeline/data/feeding.py`); what they read depends only on the batch.

An iteration's loss is the mean over its views of each view's loss. That makes the loop
data-parallel without changing what it computes: under torchrun each rank takes every
world-size-th view of the batch, and DistributedDataParallel averages the ranks' gradients,
which gives the one-process gradient up to the order of float additions.

On a GPU the loop never waits for the device within an iteration: losses are summed on the
device and read (with the finiteness checks) only when a log line or a checkpoint is due.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dvclive import Live
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline import distributed
from pipeline.artifacts.model_files import atomic_save, safe_load
from pipeline.config import StepParams, TrainParams
from pipeline.data.feeding import BatchReader, EachView, feed
from pipeline.devices import configure_backend
from pipeline.errors import ArtifactError, FrcnnError, ParamError
from pipeline.seeds import derived_seed

log = logging.getLogger(__name__)
# The inputs of some views of a batch and a seed per view -> the mean over those views of
# each view's loss terms (each view draws its samples and dropout from its seed alone).
LossFn = Callable[[list[Any], list[int]], dict[str, Tensor]]


class TrainingDiverged(FrcnnError):
    pass


def batch_at(iteration: int, batch_size: int, views: np.ndarray, seed: int) -> list[int]:
    """The views of one iteration: consecutive slices of per-epoch seeded permutations."""
    batch = []
    for position in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, offset = divmod(position, len(views))
        batch.append(int(views[_epoch_order(len(views), seed, epoch)[offset]]))
    return batch


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return torch.randperm(n, generator=generator).numpy()


def lr_at(iteration: int, step: StepParams) -> float:
    """Linear warm-up from lr / 10 over `warmup` iterations, then step decay."""
    decayed = step.lr * step.lr_gamma ** sum(iteration >= s for s in step.lr_steps)
    if iteration < step.warmup:
        return decayed * (0.1 + 0.9 * iteration / step.warmup)
    return decayed


@dataclass(frozen=True)
class TrainingRun:
    stage: str
    module: nn.Module  # everything whose weights are saved; only parameters with grad train
    read: BatchReader  # a batch's views -> its inputs, in a DataLoader worker
    loss_fn: LossFn  # a batch's inputs -> its loss terms, here
    views: np.ndarray  # the training views
    step: StepParams
    common: TrainParams
    work: Path  # working folder: checkpoint and DVCLive logs
    fingerprint: str  # of the stage's params, inputs and code; a checkpoint of another is ignored
    schedule_key: str  # the params key of this step's schedule ("train.step1"), for advice
    workers: int = 0  # DataLoader processes reading ahead


def _optimizer(module: nn.Module, common: TrainParams, step: StepParams) -> torch.optim.SGD:
    weights = [p for n, p in module.named_parameters() if p.requires_grad and p.ndim > 1]
    others = [p for n, p in module.named_parameters() if p.requires_grad and p.ndim <= 1]
    if not weights and not others:
        raise FrcnnError("nothing to train: every parameter is frozen (backbone.freeze_below?)")
    return torch.optim.SGD(
        [
            {"params": weights, "weight_decay": common.weight_decay},
            {"params": others, "weight_decay": 0.0},  # biases and norms: no decay, as usual
        ],
        lr=step.lr,
        momentum=common.momentum,
    )


class _Objective(nn.Module):
    """The trained parts and the loss as one module, so that DistributedDataParallel sees
    every parameter and the forward of each iteration."""

    def __init__(self, module: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.module, self.loss_fn = module, loss_fn

    def forward(self, inputs: list[Any], seeds: list[int]) -> dict[str, Tensor]:
        return self.loss_fn(inputs, seeds)


def train(run: TrainingRun, device: torch.device) -> list[dict[str, float]]:
    """Train `run.module` in place, resuming from the working folder; returns the loss log
    (rank 0's: the other ranks return an empty one)."""
    ranks, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    _check_batch_split(run, ranks)
    run.work.mkdir(parents=True, exist_ok=True)
    configure_backend(device, run.common.deterministic)
    optimizer = _optimizer(run.module, run.common, run.step)
    scaler = torch.amp.GradScaler("cuda", enabled=run.common.amp == "fp16")
    checkpoint = _Checkpoint(run, optimizer, scaler, main)
    start, history, sums = checkpoint.resume()
    live = _replay_log(run.work / "live", history) if main else None
    # One rank alone must not stop on a bad value the others never see: checked per iteration
    # only in one CPU process, else where every rank holds the same sums (log, checkpoint).
    guard = _Guard(run, checkpoint.path, exact=device.type == "cpu" and ranks == 1)
    run.module.train()
    objective: nn.Module = _Objective(run.module, run.loss_fn)
    if ranks > 1:
        objective = DistributedDataParallel(objective)
    bar = _progress_bar(run, start, main)
    batches = [
        batch_at(i, run.step.images_per_batch, run.views, run.common.seed)[rank::ranks]
        for i in range(start, run.step.iterations)
    ]
    updater = _Updater(
        run,
        objective,
        optimizer,
        scaler,
        autocast(run.common.amp, device),
        guard,
        positions=range(rank, run.step.images_per_batch, ranks),
    )
    inputs = feed(EachView(run.read), batches, run.workers, device)
    waited, began = 0.0, time.perf_counter()
    with _deferred_interrupt(enabled=ranks == 1) as interrupted:
        fed = iter(inputs)
        for iteration in bar:
            asked = time.perf_counter()
            batch_inputs = next(fed)
            waited += time.perf_counter() - asked
            for name, value in updater.step(iteration, batch_inputs).items():
                sums[name] = sums.get(name, 0.0) + value.double()
            done = iteration + 1
            finished = done == run.step.iterations
            log_due = done % run.common.log_every == 0 or finished
            save_due = done % run.common.checkpoint_every == 0 or finished or interrupted()
            pending: dict[str, float] = {}
            if log_due or save_due:
                pending = _over_ranks(sums)
                guard.check_pending(pending, iteration)
            if log_due:
                row = _log_row(run, iteration, pending)
                history.append(row)
                if live is not None:
                    _log(live, row)
                bar.set_postfix(loss=f"{row['loss/total']:.3f}")
                sums, pending = {}, {}
            if save_due:
                checkpoint.save(done, history, pending)
            if interrupted():
                bar.close()
                raise KeyboardInterrupt(f"{run.stage}: interrupted; checkpoint at iteration {done}")
    bar.close()
    if live is None:
        return []
    live.end()
    if batches:
        _report_throughput(run.stage, len(batches), time.perf_counter() - began, waited)
    return history


def _check_batch_split(run: TrainingRun, ranks: int) -> None:
    """A batch holds each view at most once, and each rank takes an equal share of it."""
    if run.step.images_per_batch > len(run.views):
        raise ParamError(
            f"params.yaml: '{run.schedule_key}.images_per_batch' is "
            f"{run.step.images_per_batch}, more than the {len(run.views)} views it trains on"
        )
    if run.step.images_per_batch % ranks:
        raise ParamError(
            f"params.yaml: '{run.schedule_key}.images_per_batch' is "
            f"{run.step.images_per_batch}; with {ranks} processes (dist.nproc_per_node x "
            f"dist.nnodes) it must be a multiple of {ranks}"
        )


class _Checkpoint:
    """The run's checkpoint in its working folder: the weights, optimizer and loss log at an
    iteration, taken up again by a run of the same fingerprint."""

    def __init__(
        self,
        run: TrainingRun,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        main: bool,
    ) -> None:
        self.run, self.optimizer, self.scaler, self.main = run, optimizer, scaler, main
        self.path = run.work / "checkpoint.pt"

    def resume(self) -> tuple[int, list[dict[str, float]], dict[str, float]]:
        """(first iteration to run, loss log so far, loss sums not logged yet): from the
        checkpoint if one of this run's fingerprint is there, else from the start."""
        run = self.run
        if not self.path.exists():
            return 0, [], {}
        try:
            checkpoint = safe_load(self.path)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc}; delete it to start {run.stage} over") from None
        if checkpoint.get("fingerprint") != run.fingerprint:
            if self.main:
                log.info(
                    "%s: discarding a checkpoint made from other params, inputs or code", self.path
                )
            return 0, [], {}
        run.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler"])
        # The sums are over every rank: one rank carries them on, or they would count twice.
        sums = checkpoint["pending_sums"] if self.main else {}
        return checkpoint["iteration"], checkpoint["history"], sums

    def save(self, done: int, history: list[dict[str, float]], pending: dict[str, float]) -> None:
        state = {
            "fingerprint": self.run.fingerprint,
            "iteration": done,
            "model": self.run.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": history,
            "pending_sums": pending,  # over every rank, since the last log line
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        if self.main:
            atomic_save(state, self.path)


def _progress_bar(run: TrainingRun, start: int, main: bool) -> tqdm:
    return tqdm(
        range(start, run.step.iterations),
        initial=start,
        total=run.step.iterations,
        desc=run.stage,
        unit="it",
        leave=False,
        disable=None if main else True,  # none when stderr is not a terminal (logs, CI)
    )


def _log_row(run: TrainingRun, iteration: int, pending: dict[str, float]) -> dict[str, float]:
    """One line of the loss log: the mean of each loss term since the last line, their total
    and the learning rate."""
    count = (iteration % run.common.log_every) + 1
    row = {"iteration": iteration + 1, "lr": lr_at(iteration, run.step)}
    row.update({f"loss/{k}": v / count for k, v in pending.items()})
    row["loss/total"] = sum(v for k, v in row.items() if k.startswith("loss/"))
    return row


def _report_throughput(stage: str, iterations: int, elapsed: float, waited: float) -> None:
    log.info(
        "%s: %d iterations in %.0f s, %.0f%% of it waiting for data",
        stage,
        iterations,
        elapsed,
        100 * waited / elapsed,
    )


def _over_ranks(sums: dict[str, Tensor | float]) -> dict[str, float]:
    """Loss sums added over every rank (each holds its views' share), as plain numbers."""
    if not sums:
        return {}
    names = sorted(sums)
    values = torch.stack([torch.as_tensor(sums[n], dtype=torch.float64) for n in names])
    return dict(zip(names, distributed.sum_over_ranks(values).tolist(), strict=True))


@contextmanager
def _deferred_interrupt(enabled: bool) -> Iterator[Callable[[], bool]]:
    """Ctrl-C sets a flag instead of stopping mid-update; the loop checks it between
    iterations, so the checkpoint it writes holds a consistent model and optimizer. Ranks would
    see the flag at different iterations, so under torchrun Ctrl-C stops them where they are
    and a rerun resumes from the last checkpoint."""
    if not enabled:
        yield lambda: False
        return
    pressed = []
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    except ValueError:  # not the main thread: Ctrl-C cannot reach us here anyway
        yield lambda: False
        return
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


class _Guard:
    """Refuses non-finite losses and gradients. On a CPU (`exact`) every iteration is checked
    before its update. On a GPU, where reading a value waits for the device, the values are
    accumulated there and checked before each log line and checkpoint, so no checkpoint ever
    holds a diverged model; the error then names the last iteration of the interval."""

    def __init__(self, run: TrainingRun, checkpoint_path: Path, exact: bool) -> None:
        self.stage, self.exact = run.stage, exact
        self.pending_norm: Tensor | float = 0.0
        # The checkpoint records the lr it was made with, so a rerun with another lr starts
        # over rather than mixing two schedules in one model.
        self.advice = (
            f"lower {run.schedule_key}.lr and rerun: training starts over with it (the last good "
            f"checkpoint, {checkpoint_path}, resumes only a rerun with the same params)"
        )

    def check_losses(self, losses: dict[str, Tensor], iteration: int) -> None:
        if self.exact:
            self._refuse_non_finite(losses, "loss term", iteration)

    def check_gradient(self, norm: Tensor, iteration: int) -> None:
        if self.exact:
            self._refuse_non_finite({"norm": norm}, "gradient", iteration)
        else:
            self.pending_norm = self.pending_norm + norm.detach()

    def check_pending(self, sums: dict[str, Tensor | float], iteration: int) -> None:
        if not self.exact:
            self._refuse_non_finite(sums, "loss term", iteration)
            self._refuse_non_finite({"norm": self.pending_norm}, "gradient", iteration)
            self.pending_norm = 0.0

    def _refuse_non_finite(self, values: dict, what: str, iteration: int) -> None:
        for name, value in values.items():
            value = value.item() if isinstance(value, Tensor) else value
            if not math.isfinite(value):
                subject = f"{what} {name}" if what != "gradient" else "gradient norm"
                where = f"at iteration {iteration}" if self.exact else f"by iteration {iteration}"
                raise TrainingDiverged(f"{self.stage}: {subject} is {value} {where}; {self.advice}")


@dataclass(frozen=True)
class _Updater:
    """What every SGD iteration of a run uses: the model and loss, the optimizer, the
    mixed-precision context and scaler, the guard against non-finite values, and which views
    of each batch are this rank's."""

    run: TrainingRun
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: AbstractContextManager
    guard: _Guard
    positions: Sequence[int]  # this rank's share of a batch: the views at these positions

    def step(self, iteration: int, inputs: list[Any]) -> dict[str, Tensor]:
        """One seeded SGD iteration on this rank's views of the batch (their inputs); returns
        this rank's share of the batch's loss terms, detached."""
        run, optimizer, scaler, positions = self.run, self.optimizer, self.scaler, self.positions
        torch.manual_seed(derived_seed(run.common.seed, run.stage, iteration))
        seeds = [derived_seed(run.common.seed, run.stage, iteration, p) for p in positions]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(iteration, run.step)
        with self.amp:
            losses = self.objective(inputs, seeds)  # the mean over this rank's views
        total = sum(losses.values())
        self.guard.check_losses({**losses, "total": total}, iteration)
        optimizer.zero_grad(set_to_none=True)
        # DistributedDataParallel averages the ranks' gradients: the batch mean's gradient.
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        if not scaler.is_enabled():  # with fp16, GradScaler skips steps with inf gradients itself
            grads = [p.grad for p in run.module.parameters() if p.grad is not None]
            self.guard.check_gradient(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])),
                iteration,
            )
        scaler.step(optimizer)
        scaler.update()
        share = len(positions) / run.step.images_per_batch
        return {name: value.detach() * share for name, value in losses.items()}


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    if amp == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _replay_log(folder: Path, history: list[dict[str, float]]) -> Live:
    """A DVCLive log holding exactly the checkpointed history (a kill may have left more)."""
    shutil.rmtree(folder, ignore_errors=True)
    live = Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None)
    for row in history:
        _log(live, row)
    return live


def _log(live: Live, row: dict[str, float]) -> None:
    live.step = int(row["iteration"])
    for name, value in row.items():
        if name != "iteration" and math.isfinite(value):
            live.log_metric(name, value)
    live.next_step()


def publish_log(work: Path, out: Path) -> None:
    """Copy the finished DVCLive log to the stage's declared plots folder."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(work / "live", out)
