"""Stages under torchrun with gloo on the CPU: two ranks give what one process gives.

Caching stages split the work by whole shards and must write byte-identical artifacts; training
stages split each batch's views and must end within float tolerance of one process; a rank
SIGKILLed mid-stage and a rerun end like an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bench.project import inside
from pipeline import distributed, layout
from pipeline.artifacts import memory
from pipeline.config import DistParams, parse_params
from pipeline.errors import ParamError
from tests.conftest import REPO, TINY, raw_params, stage_function, with_changes

# Two shards of train views per rank (12 views, 2 per shard), so ranks share every stage.
PROFILE = {**TINY, "store": {"shard_size": 2}}
BUILT_BY_ONE = (
    layout.GENERATE, layout.PREPARE, layout.ANCHOR_TARGETS, layout.PRETRAIN, layout.STEP1_RPN,
    layout.STEP1_PROPOSALS, layout.STEP1_PROPOSAL_TARGETS, layout.STEP2_FAST_RCNN,
    layout.STEP3_FEATURES,
)  # fmt: skip
CACHING = (
    layout.ANCHOR_TARGETS, layout.STEP1_PROPOSALS, layout.STEP1_PROPOSAL_TARGETS,
    layout.STEP3_FEATURES,
)  # fmt: skip

# Test-only instrumentation of the ranks: a SIGKILL of rank 1 at the nth call of a function.
KILL_HOOK = r"""
import os, signal
if os.environ.get("RANK") == "1" and "KILL_AT" in os.environ:
    import importlib
    module, path, nth = os.environ["KILL_AT"].split(":")  # module:[Class.]function:n
    *owner, name = path.split(".")
    target = importlib.import_module(module)
    for attribute in owner:
        target = getattr(target, attribute)
    original, seen = getattr(target, name), {"n": 0}

    def dies_on_the_nth(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(target, name, dies_on_the_nth)
"""


def write_params(root: Path, processes: int, changes: dict | None = None) -> Path:
    raw = with_changes(raw_params(), {**PROFILE, "dist": {"nproc_per_node": processes}})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(with_changes(raw, changes or {})))
    return path


def run_stage(
    root: Path, stage: layout.Stage, kill_at: str | None = None
) -> subprocess.CompletedProcess:
    """`python -m stages.<name>` in `root`, as a user (or dvc) runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(root / "hook")])}
    if kill_at:
        env["KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", stage.module],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def files_of(root: Path, stage: layout.Stage) -> dict[str, bytes]:
    out = root / stage.out
    return {
        p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The tiny project built in one process, up to the step-3 feature cache."""
    root = tmp_path_factory.mktemp("one_process")
    write_params(root, 1)
    (root / "hook").mkdir()
    (root / "hook" / "sitecustomize.py").write_text(KILL_HOOK)
    params = parse_params(yaml.safe_load((root / "params.yaml").read_text()))
    # One thread, as torchrun runs each rank: a conv's weight gradient sums over the threads'
    # shares of the image, so the thread count, not only the ranks, decides its rounding.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with inside(root):
            for stage in BUILT_BY_ONE:
                stage_function(stage.name)(params)
    finally:
        torch.set_num_threads(threads)
    return root


def two_process_copy(one_process: Path, target: Path, *remove: layout.Stage) -> Path:
    shutil.copytree(one_process, target)
    write_params(target, 2)
    for stage in remove:
        out = target / stage.out
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    return target


def test_torchrun_command_for_one_node_and_for_several():
    one = distributed.torchrun_command(DistParams(4, 1, None, "auto"), "stages.step1_rpn", [])
    assert one[1:] == [
        "-m", "torch.distributed.run", "--nproc-per-node=4", "--nnodes=1", "--standalone",
        "-m", "stages.step1_rpn",
    ]  # fmt: skip
    several = distributed.torchrun_command(
        DistParams(8, 2, "node0:29500", "nccl"), "stages.step3_features", ["--debug"]
    )
    assert "--rdzv-endpoint=node0:29500" in several and "--rdzv-backend=c10d" in several
    assert several[-3:] == ["-m", "stages.step3_features", "--debug"]


def test_several_nodes_need_a_rendezvous_endpoint():
    raw = with_changes(raw_params(), {"dist": {"nnodes": 2}})
    with pytest.raises(ParamError, match="'dist.rdzv_endpoint' is None; allowed: host:port"):
        parse_params(raw)


def test_one_process_is_a_world_of_one():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.sum_over_ranks(values), values)


def test_ranks_on_one_machine_share_its_memory_budget(monkeypatch):
    alone = memory.memory_budget()
    for name, value in {"LOCAL_RANK": "0", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    assert distributed.ranks_on_this_machine() == 4
    assert memory.memory_budget() == alone // 4


@pytest.mark.slow
def test_caching_stages_on_two_ranks_write_the_bytes_one_process_writes(one_process, tmp_path):
    root = two_process_copy(one_process, tmp_path / "two", *CACHING)
    for stage in CACHING:
        result = run_stage(root, stage)
        assert result.returncode == 0, result.stderr
        assert files_of(root, stage) == files_of(one_process, stage), stage.name
        assert not (root / f"{stage.out}.partial").exists()


def trained_parts(root: Path, stage: layout.Stage) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(root / stage.out, weights_only=True)["parts"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "exact"),
    [(layout.STEP1_RPN, True), (layout.STEP2_FAST_RCNN, False)],
    ids=["step1_rpn", "step2_fast_rcnn"],
)
def test_a_training_stage_on_two_ranks_ends_where_one_process_does(
    one_process, tmp_path, stage, exact
):
    """Two views per batch, one per rank. Step 1 computes each view apart, and halving the sum
    of the two views' gradients is exact in float: bit-identical weights. Step 2 runs its fc
    layers on both views' RoIs at once in one process, so their weight gradient adds the rows
    in another order than two ranks do: equal to float rounding (1.5e-8 measured). Step 2's
    dropout masks are each view's own, whichever process draws them."""
    root = two_process_copy(one_process, tmp_path / "two", stage)
    result = run_stage(root, stage)
    assert result.returncode == 0, result.stderr
    one, two = trained_parts(one_process, stage), trained_parts(root, stage)
    for part in one:
        for name, weights in one[part].items():
            if exact:
                assert torch.equal(two[part][name], weights), (part, name)
            else:
                torch.testing.assert_close(two[part][name], weights, rtol=1e-5, atol=1e-6)
    assert not (root / f"{stage.out}.partial").exists()


@pytest.mark.slow
def test_two_views_per_rank_end_within_float_tolerance_of_one_process(one_process, tmp_path):
    """Four views per batch: each rank accumulates two before the all-reduce, so the gradient
    sums the same four terms in another order: after 10 iterations the weights differ by float
    rounding only (1e-8 measured), far inside a tolerance (1e-6) far below what training moved."""
    four = {"train": {"step1": {**TINY["train"]["step1"], "images_per_batch": 4}}}
    one = two_process_copy(one_process, tmp_path / "one", layout.STEP1_RPN)
    write_params(one, 1, four)
    assert run_stage(one, layout.STEP1_RPN).returncode == 0
    two = two_process_copy(one_process, tmp_path / "two", layout.STEP1_RPN)
    write_params(two, 2, four)
    result = run_stage(two, layout.STEP1_RPN)
    assert result.returncode == 0, result.stderr
    want, got = trained_parts(one, layout.STEP1_RPN), trained_parts(two, layout.STEP1_RPN)
    start = trained_parts(one_process, layout.PRETRAIN)["backbone"]
    for part in want:
        for name, weights in want[part].items():
            torch.testing.assert_close(got[part][name], weights, rtol=1e-5, atol=1e-6)
    # The backbone moved by 100 times the tolerance (the ranks' weights differ by ~1e-8).
    moved = max((want["backbone"][k] - start[k]).abs().max() for k in start)
    assert moved > 100 * 1e-6


@pytest.mark.slow
def test_a_batch_that_does_not_split_evenly_over_the_ranks_is_refused(one_process, tmp_path):
    root = two_process_copy(one_process, tmp_path / "two", layout.STEP1_RPN)
    write_params(root, 2, {"train": {"step1": {**TINY["train"]["step1"], "images_per_batch": 3}}})
    result = run_stage(root, layout.STEP1_RPN)
    assert result.returncode != 0
    assert "'train.step1.images_per_batch' is 3; with 2 processes" in result.stderr
    assert not (root / layout.STEP1_RPN.out).exists()


@pytest.mark.slow
def test_a_rank_killed_mid_stage_and_a_rerun_end_like_an_uninterrupted_run(one_process, tmp_path):
    """Rank 1 dies before marking its second shard; torchrun stops rank 0. The rerun keeps
    every shard marked finished and writes the rest."""
    stage = layout.STEP3_FEATURES
    root = two_process_copy(one_process, tmp_path / "two", stage)
    killed = run_stage(
        root, stage, kill_at="pipeline.artifacts.writer:ArtifactWriter._mark_shard_done:2"
    )
    assert killed.returncode != 0
    progress = root / f"{stage.out}.partial" / "progress"
    finished = sorted(p.name for p in progress.iterdir())
    assert (
        "features.1" in finished and "features.3" not in finished
    )  # rank 1's first, not its second
    # A shard of the 4-d features array is the file c/<shard>/0/0/0.
    shards = root / f"{stage.out}.partial" / "group" / "features" / "c"
    written = {f"features.{p.parts[-4]}": p.stat().st_mtime_ns for p in shards.glob("*/0/0/0")}
    time.sleep(0.01)
    rerun = run_stage(root, stage)
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(root, stage) == files_of(one_process, stage)
    for marker in finished:  # not written again
        shard = root / stage.out / "features" / "c" / marker.split(".")[1] / "0" / "0" / "0"
        assert shard.stat().st_mtime_ns == written[marker]


@pytest.mark.slow
def test_a_training_rank_killed_mid_stage_resumes_from_the_checkpoint(one_process, tmp_path):
    uninterrupted = two_process_copy(one_process, tmp_path / "uninterrupted", layout.STEP1_RPN)
    assert run_stage(uninterrupted, layout.STEP1_RPN).returncode == 0
    root = two_process_copy(one_process, tmp_path / "killed", layout.STEP1_RPN)
    # Rank 1 dies in iteration 8 of 10, after the checkpoint of iteration 5.
    killed = run_stage(root, layout.STEP1_RPN, kill_at="pipeline.training.loop:_Updater.step:8")
    assert killed.returncode != 0
    checkpoint = torch.load(
        root / f"{layout.STEP1_RPN.out}.partial" / "checkpoint.pt", weights_only=True
    )
    assert checkpoint["iteration"] == 5
    rerun = run_stage(root, layout.STEP1_RPN)
    assert rerun.returncode == 0, rerun.stderr
    want = trained_parts(uninterrupted, layout.STEP1_RPN)
    got = trained_parts(root, layout.STEP1_RPN)
    for part in want:
        for name in want[part]:
            assert torch.equal(got[part][name], want[part][name]), (part, name)
