"""The shared training loop: it learns, it is deterministic, it resumes exactly, it stops on NaN."""

import dataclasses
import logging
import os
import pickle
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench.project import inside
from pipeline import layout
from pipeline.artifacts import memory
from pipeline.artifacts.anchor_targets import AnchorTargets
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewImages, ViewSet
from pipeline.config import parse_params
from pipeline.data.feeding import _Batches
from pipeline.data.records import TRAIN
from pipeline.errors import ArtifactError, ParamError
from pipeline.model.rpn import build_rpn
from pipeline.training import loop
from pipeline.training.backbone_features import BackboneFeatures, initial_backbone
from pipeline.training.loop import TrainingDiverged, TrainingRun, batch_at, lr_at, train
from pipeline.training.rpn_objective import AnchorTargetBatch, RPNLoss
from tests.conftest import TINY, raw_params, stage_function, tiny_params, with_changes
from tests.stage_runs import set_key

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    p = tiny_params()
    with inside(root):
        for stage in (layout.GENERATE, layout.PREPARE, layout.ANCHOR_TARGETS, layout.PRETRAIN):
            stage_function(stage.name)(p)
    return root, p


def rpn_run(root: Path, p, work: Path, iterations: int, lr: float = 0.01) -> TrainingRun:
    prepared = PreparedDataset(root / layout.PREPARE.out)
    targets = AnchorTargets(root / layout.ANCHOR_TARGETS.out)
    views = ViewSet(prepared, targets.views)
    with inside(root):
        backbone = initial_backbone(StageInputs(layout.STEP1_RPN, p))
    torch.manual_seed(1)
    rpn = build_rpn(p.anchors, p.rpn, backbone.out_channels)
    # One view per iteration, so that a call of the loss is an iteration.
    step = dataclasses.replace(
        p.train.step1, iterations=iterations, images_per_batch=1, lr=lr, lr_steps=()
    )
    return TrainingRun(
        "step1_rpn",
        nn.ModuleDict({"backbone": backbone, "rpn": rpn}),
        AnchorTargetBatch(ViewImages(views), targets),
        RPNLoss(rpn, BackboneFeatures(backbone, CPU), p.rpn),
        views.of_split(TRAIN),
        step,
        p.train,
        work,
        "fingerprint",
        "train.step1",
    )


def state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_drives_the_rpn_loss_down(tiny_data, tmp_path):
    root, p = tiny_data
    history = train(rpn_run(root, p, tmp_path / "work", iterations=80, lr=0.02), CPU)
    totals = [row["loss/total"] for row in history]
    first, last = np.mean(totals[:4]), np.mean(totals[-4:])
    assert last < 0.6 * first, (first, last)


def test_two_runs_give_identical_weights(tiny_data, tmp_path):
    root, p = tiny_data
    a = rpn_run(root, p, tmp_path / "a", iterations=8)
    b = rpn_run(root, p, tmp_path / "b", iterations=8)
    train(a, CPU)
    train(b, CPU)
    assert_same_state(state_of(a.module), state_of(b.module))


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    root, p = tiny_data
    reference = rpn_run(root, p, tmp_path / "reference", iterations=12)
    train(reference, CPU)

    calls = {"n": 0}
    interrupted = rpn_run(root, p, tmp_path / "work", iterations=12)

    def dies_at_the_eighth(views, seeds):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # killed after the checkpoint of iteration 5
        return interrupted.loss_fn(views, seeds)

    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(interrupted, loss_fn=dies_at_the_eighth), CPU)
    resumed = rpn_run(root, p, tmp_path / "work", iterations=12)
    after = {"n": 0}

    def counted(views, seeds):
        after["n"] += 1
        return resumed.loss_fn(views, seeds)

    history = train(dataclasses.replace(resumed, loss_fn=counted), CPU)
    assert after["n"] == 12 - 5  # resumed at the checkpoint of iteration 5, not from 0
    assert_same_state(state_of(resumed.module), state_of(reference.module))
    assert [row["iteration"] for row in history] == [2, 4, 6, 8, 10, 12]


def test_a_checkpoint_of_other_code_is_discarded_and_training_starts_over(
    tiny_data, tmp_path, caplog
):
    root, p = tiny_data
    first = rpn_run(root, p, tmp_path / "work", iterations=6)
    train(first, CPU)
    assert (tmp_path / "work" / "checkpoint.pt").exists()
    calls = {"n": 0}
    edited = rpn_run(root, p, tmp_path / "work", iterations=6)

    def counted(views, seeds):
        calls["n"] += 1
        return edited.loss_fn(views, seeds)

    with caplog.at_level(logging.INFO):
        train(dataclasses.replace(edited, loss_fn=counted, fingerprint="other code"), CPU)
    assert calls["n"] == 6  # all six iterations again, none resumed
    assert "discarding a checkpoint made from other params, inputs or code" in caplog.text


def test_a_nan_loss_stops_with_the_term_and_keeps_the_last_checkpoint(tiny_data, tmp_path):
    root, p = tiny_data
    run = rpn_run(root, p, tmp_path / "work", iterations=12)
    calls = {"n": 0}

    def nan_at_seven(views, seeds):
        calls["n"] += 1
        losses = run.loss_fn(views, seeds)
        if calls["n"] == 7:
            losses["rpn_box"] = losses["rpn_box"] * float("nan")
        return losses

    with pytest.raises(
        TrainingDiverged, match="step1_rpn: loss term rpn_box is nan at iteration 6"
    ):
        train(dataclasses.replace(run, loss_fn=nan_at_seven), CPU)
    checkpoint = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 5
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_after_a_nan_a_rerun_with_a_lower_lr_starts_over_as_the_message_says(tiny_data, tmp_path):
    root, p = tiny_data
    run = rpn_run(root, p, tmp_path / "work", iterations=12)

    def nan_at_seven(views, seeds):
        losses = run.loss_fn(views, seeds)
        if calls["n"] == 6:
            losses["rpn_box"] = losses["rpn_box"] * float("nan")
        calls["n"] += 1
        return losses

    calls = {"n": 0}
    with pytest.raises(TrainingDiverged, match=r"lower train.step1.lr and rerun: training starts"):
        train(dataclasses.replace(run, loss_fn=nan_at_seven), CPU)
    # The stage's fingerprint covers its lr: a lower lr is another fingerprint.
    lower = dataclasses.replace(run, fingerprint="fingerprint with lr 0.001")
    calls = {"n": 100}  # no more NaNs
    history = train(dataclasses.replace(lower, loss_fn=nan_at_seven), CPU)
    assert calls["n"] == 100 + 12  # every iteration again, from 0
    assert history[0]["iteration"] == 2


def test_data_order_covers_each_view_once_per_epoch():
    views = np.arange(10, 20)
    seen = [v for i in range(5) for v in batch_at(i, 2, views, seed=3)]
    assert sorted(seen) == list(range(10, 20))
    assert seen != sorted(seen)
    assert batch_at(7, 2, views, seed=3) == batch_at(7, 2, views, seed=3)


def test_step_learning_rate():
    step = dataclasses.replace(
        tiny_params().train.step1, lr=0.1, lr_steps=(5, 8), lr_gamma=0.1, warmup=0
    )
    assert [round(lr_at(i, step), 6) for i in (0, 4, 5, 7, 8)] == [0.1, 0.1, 0.01, 0.01, 0.001]


def test_warmup_ramps_linearly_from_a_tenth_of_the_lr():
    step = dataclasses.replace(
        tiny_params().train.step1, lr=0.1, lr_steps=(8,), lr_gamma=0.1, warmup=4
    )
    assert [round(lr_at(i, step), 6) for i in (0, 2, 4, 8)] == [0.01, 0.055, 0.1, 0.01]


def test_ctrl_c_checkpoints_the_finished_iteration_and_resumes_exactly(tiny_data, tmp_path):
    root, p = tiny_data
    reference = rpn_run(root, p, tmp_path / "reference", iterations=12)
    train(reference, CPU)

    run = rpn_run(root, p, tmp_path / "work", iterations=12)
    calls = {"n": 0}

    def ctrl_c_during_the_seventh(views, seeds):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return run.loss_fn(views, seeds)

    with pytest.raises(KeyboardInterrupt, match="checkpoint at iteration 7"):
        train(dataclasses.replace(run, loss_fn=ctrl_c_during_the_seventh), CPU)
    checkpoint = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 7  # not 5, the last periodic one
    resumed = rpn_run(root, p, tmp_path / "work", iterations=12)
    train(resumed, CPU)
    assert_same_state(state_of(resumed.module), state_of(reference.module))


def test_a_nan_gradient_stops_the_stage(tiny_data, tmp_path):
    root, p = tiny_data
    run = rpn_run(root, p, tmp_path / "work", iterations=12)
    weight = next(iter(run.module.parameters()))

    def nan_gradient(views, seeds):
        losses = run.loss_fn(views, seeds)
        # sqrt at 0: the value is finite (0), its gradient is not.
        losses["rpn_box"] = losses["rpn_box"] + torch.sqrt(weight.sum() * 0.0)
        return losses

    with pytest.raises(TrainingDiverged, match="step1_rpn: gradient norm is nan at iteration 0"):
        train(dataclasses.replace(run, loss_fn=nan_gradient), CPU)


def test_a_corrupt_checkpoint_is_refused(tiny_data, tmp_path):
    root, p = tiny_data
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArtifactError, match="checkpoint.pt: not a checkpoint or model file"):
        train(rpn_run(root, p, tmp_path / "work", iterations=4), CPU)


def test_bf16_autocast_trains_on_the_cpu_too(tiny_data, tmp_path):
    root, p = tiny_data
    run = rpn_run(root, p, tmp_path / "work", iterations=4)
    run = dataclasses.replace(run, common=dataclasses.replace(p.train, amp="bf16"))
    before = state_of(run.module)
    history = train(run, CPU)
    assert all(np.isfinite(row["loss/total"]) for row in history)
    after = state_of(run.module)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_reader_pickles_as_paths_and_reads_the_same_in_a_spawned_worker(tiny_data):
    root, _ = tiny_data
    with inside(root):
        prepared = PreparedDataset(layout.PREPARE.out)
        targets = AnchorTargets(layout.ANCHOR_TARGETS.out)
        read = AnchorTargetBatch(ViewImages(ViewSet(prepared, targets.views)), targets)
        pickled = pickle.dumps(read)
        assert len(pickled) < 10_000  # paths and the view table, not arrays or handles
        batches = [[0, 3], [5], [2, 1]]
        here = [read(batch) for batch in batches]
        for context in ("spawn", "fork"):
            loader = DataLoader(
                _Batches(pickle.loads(pickled), batches),
                batch_size=None,
                num_workers=1,
                multiprocessing_context=context,
            )
            for expected, fed in zip(here, loader, strict=True):
                for a, b in zip(expected, fed, strict=True):
                    assert torch.equal(a, b)


def test_readers_ahead_change_nothing(tiny_data, tmp_path):
    root, p = tiny_data
    runs = {}
    for workers in (0, 2):
        run = dataclasses.replace(
            rpn_run(root, p, tmp_path / str(workers), iterations=6), workers=workers
        )
        runs[workers] = (run, train(run, CPU))
    assert runs[0][1] == runs[2][1]  # the loss log
    assert_same_state(state_of(runs[0][0].module), state_of(runs[2][0].module))


def test_images_held_in_memory_read_as_from_disk(tiny_data, monkeypatch):
    root, _ = tiny_data
    with inside(root):  # the artifacts' arrays are read from where they were opened
        on_disk, in_memory = (PreparedDataset(layout.PREPARE.out) for _ in range(2))
        targets = AnchorTargets(layout.ANCHOR_TARGETS.out)
        assert not on_disk.keep_images_in_memory("never")
        assert in_memory.keep_images_in_memory("auto")
        assert isinstance(in_memory.images, np.ndarray)
        assert in_memory.images.any()
        mirrored = len(targets.views) - 1  # with augment.flip, the last view is a mirrored one
        assert targets.views[mirrored, 1] == 1
        for batch in ([0, mirrored], [3]):
            disk = ViewImages(ViewSet(on_disk, targets.views))(batch)
            assert torch.equal(disk, ViewImages(ViewSet(in_memory, targets.views))(batch))
        monkeypatch.setattr(memory, "memory_budget", lambda: 1000)
        with pytest.raises(ParamError, match="'train.images_in_memory' is 'always' but"):
            on_disk.keep_images_in_memory("always")


class Killed(Exception):
    """Stands in for a kill right after a checkpoint is written."""


@pytest.fixture(scope="module")
def step1_killed(tiny_data, tmp_path_factory):
    """The tiny project with step 1's training killed right after its first checkpoint
    (iteration 5 of 10)."""
    root = tmp_path_factory.mktemp("killed")
    shutil.copytree(tiny_data[0], root, dirs_exist_ok=True)
    original = loop.atomic_save

    def save_then_die(state, path):
        original(state, path)
        raise Killed

    with pytest.MonkeyPatch.context() as patch, inside(root):
        patch.setattr(loop, "atomic_save", save_then_die)
        with pytest.raises(Killed):
            stage_function(layout.STEP1_RPN.name)(tiny_data[1])
    return root


# One other value per key of train.step1: with any of them changed, a rerun must start over;
# with a key that is not step 1's, it must resume. The keys every step shares, and pretraining's
# schedule, are recorded by pretraining too: with one changed, step 1 refuses its weights.
RESTARTS = {
    f"step1.{k}": v
    for k, v in {"iterations": 12, "images_per_batch": 1, "lr": 0.02, "lr_steps": [6],
                 "lr_gamma": 0.5, "warmup": 0}.items()
}  # fmt: skip
RESUMES = {"step2.lr": 0.5, "checkpoint_every": 3, "log_every": 5}
REFUSES = {"seed": 1, "momentum": 0.8, "weight_decay": 0.001, "amp": "bf16", "pretrain.lr": 0.5}


@pytest.mark.parametrize("key", [None, *RESTARTS, *RESUMES, *REFUSES])
def test_a_killed_step_resumes_only_with_its_own_schedule_unchanged(
    key, step1_killed, tmp_path, monkeypatch
):
    """Counts the iterations the rerun executes: 10 - 5 when it resumes, all when it restarts
    (the README promises that a rerun with another lr starts over)."""
    root = shutil.copytree(step1_killed, tmp_path / "project")
    raw = with_changes(raw_params(), TINY)
    if key is not None:
        raw = set_key(raw, f"train.{key}", {**RESTARTS, **RESUMES, **REFUSES}[key])
    params = parse_params(raw)
    if key in REFUSES:
        with inside(root), pytest.raises(ArtifactError, match=f"made with train.{key} ="):
            stage_function(layout.STEP1_RPN.name)(params)
        return
    executed = []
    step = loop._Updater.step
    monkeypatch.setattr(
        loop._Updater, "step", lambda self, i, inputs: executed.append(i) or step(self, i, inputs)
    )
    with inside(root):
        stage_function(layout.STEP1_RPN.name)(params)
    if key in RESTARTS:
        assert executed == list(range(params.train.step1.iterations)), key
    else:
        assert executed == list(range(5, 10)), key


def test_a_batch_larger_than_the_views_it_trains_on_is_refused(tiny_data, tmp_path):
    root, p = tiny_data
    run = rpn_run(root, p, tmp_path / "work", iterations=2)
    run = dataclasses.replace(
        run, step=dataclasses.replace(run.step, images_per_batch=len(run.views) + 1)
    )
    with pytest.raises(ParamError, match=r"'train.step1.images_per_batch' is \d+, more than the"):
        train(run, CPU)
