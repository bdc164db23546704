"""The real `dvc repro` on a tiny profile, in a throw-away copy of the repository."""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.store import open_artifact
from pipeline.layout import STAGES
from tests.conftest import REPO, TINY, with_changes

pytestmark = pytest.mark.slow

PIPELINE = [stage.name for stage in STAGES]
PROJECT_FILES = [
    "pipeline", "stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore",
]  # fmt: skip


def make_project(root: Path) -> Path:
    for name in PROJECT_FILES:
        source, target = REPO / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    edit_params(root, TINY)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "project"]):
        subprocess.run([*git, *command], cwd=root, check=True)
    return root


def edit_params(root: Path, changes: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(with_changes(params, changes)))


def dvc(root: Path, *args: str) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(
        [str(Path(bin_dir) / "dvc"), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def test_dvc_repro_builds_the_artifacts_and_reruns_only_what_changed(tmp_path):
    root = make_project(tmp_path / "project")
    output = dvc(root, "repro", "anchor_targets")
    assert stages_run(output) == ["generate", "prepare", "anchor_targets"]

    prepared = PreparedDataset(root / "data" / "prepared.zarr")
    assert len(prepared) == 9 and prepared.split.sum() == 3
    targets = open_artifact(
        root / "data" / "anchor_targets.zarr",
        "anchor_targets",
        expect={"inputs.prepare": prepared.fingerprint, "params.anchors.scales": [1, 2, 4]},
    )
    assert targets["labels"].shape[0] == 9 + 6  # each image, then each train image flipped
    assert targets["labels"].shape[-1] == 9
    assert (targets["labels"][...] == 1).any()
    assert not list((root / "data").glob("*.partial"))
    assert "up to date" in dvc(root, "status", "anchor_targets")

    before = (root / "data" / "prepared.zarr" / "zarr.json").stat().st_mtime_ns
    edit_params(root, {"anchors": {"ratios": [1.0]}})
    output = dvc(root, "repro", "anchor_targets")
    assert stages_run(output) == ["anchor_targets"]
    assert (root / "data" / "prepared.zarr" / "zarr.json").stat().st_mtime_ns == before
    targets = open_artifact(root / "data" / "anchor_targets.zarr", "anchor_targets")
    assert targets["labels"].shape[-1] == 3
    assert "up to date" in dvc(root, "status", "anchor_targets")


def artifact_bytes(root: Path) -> dict[str, bytes]:
    """Every file the pipeline wrote, except the loss logs (DVCLive stamps them with times)."""
    files = {}
    for path in sorted((root / "data").rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and "_live/" not in relative:
            files[relative] = path.read_bytes()
    return files


def start_repro(root: Path, log: Path | None = None) -> subprocess.Popen:
    """`dvc repro` in its own process group, so that one signal reaches its stage too."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [str(Path(bin_dir) / "dvc"), "repro"], cwd=root, env=env, start_new_session=True,
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip


def dvc_killed_during(root: Path, stage: str, delay: float) -> str | None:
    """Start `dvc repro`; once `stage` has started, wait `delay` seconds and SIGKILL it all.

    Returns the stage that was running when killed, or None if the pipeline finished first.
    """
    log = root.parent / "repro.log"
    process = start_repro(root, log)
    deadline = time.monotonic() + 600
    while f"Running stage '{stage}'" not in log.read_text():
        if process.poll() is not None:
            return None
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        process.wait(timeout=delay)
        return None
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return stages_run(log.read_text())[-1]


def dvc_killed_once(root: Path, when: Path) -> None:
    """Start `dvc repro`, SIGKILL it (and its stage) as soon as `when` exists."""
    process = start_repro(root)
    deadline = time.monotonic() + 600
    while not when.exists():
        assert process.poll() is None, "the pipeline ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """The artifacts of one uninterrupted run of the whole tiny pipeline."""
    root = make_project(tmp_path_factory.mktemp("reference") / "project")
    output = dvc(root, "repro")
    assert stages_run(output)[-1] == "evaluate"
    assert "up to date" in dvc(root, "status")
    return artifact_bytes(root)


def test_full_pipeline_is_byte_reproducible_and_survives_a_kill(tmp_path, reference):
    assert "data/model/faster_rcnn.pt" in reference
    assert any(name.startswith("data/step3/features.zarr/") for name in reference)
    second = make_project(tmp_path / "second")
    assert artifact_bytes(second) == {}
    # Killed in step 2's training, right after its first checkpoint.
    dvc_killed_once(second, second / "data/step2/detector.pt.partial/checkpoint.pt")
    assert not (second / "data/step2/detector.pt").exists()
    output = dvc(second, "repro")
    assert stages_run(output)[0] == "step2_fast_rcnn"
    # A resume, not a restart that happens to end the same: 10 - 5 iterations run.
    assert "step2_fast_rcnn: 5 iterations in" in output, output
    assert artifact_bytes(second) == reference
    assert "up to date" in dvc(second, "status")


def test_killed_at_random_moments_it_still_ends_byte_identical(tmp_path, reference):
    """SIGKILL `dvc repro` at a seeded random moment inside each stage in turn (shard writes,
    checkpoints, renames into place...), rerunning after each kill, then let it finish."""
    root = make_project(tmp_path / "killed")
    rng = random.Random(2015)
    killed_in = []
    for stage in PIPELINE:
        running = dvc_killed_during(root, stage, rng.uniform(0.0, 1.5))
        if running is not None:
            killed_in.append(running)
    print(f"killed {len(killed_in)} times, in: {', '.join(killed_in)}")
    output = dvc(root, "repro")
    assert len(killed_in) >= 10, killed_in
    assert len(set(killed_in)) >= 8, killed_in
    assert stages_run(output), "the last rerun had nothing left to do"
    assert artifact_bytes(root) == reference
    assert "up to date" in dvc(root, "status")
    assert not list((root / "data").rglob("*.partial"))


# A stage run that SIGKILLs itself at one chosen moment of what it is doing: the moments where a
# half-done write would hurt most (a shard written but not marked, between the last shard and
# the commit, inside the rename into place, before the working folder is gone, inside the
# replace of a checkpoint or a model file).
KILLED_AT = r"""
import os, pathlib, signal, sys
import pipeline.artifacts.model_files as model_files
import pipeline.artifacts.writer as store

stage, moment, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = {"n": 0}

def die_on_the_nth(original, applies=lambda *a: True):
    def wrapper(*args, **kwargs):
        if applies(*args):
            seen["n"] += 1
            if seen["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper

W = store.ArtifactWriter
if moment == "shard_unmarked":
    W._mark_shard_done = die_on_the_nth(W._mark_shard_done)
elif moment == "before_commit":
    W.commit = die_on_the_nth(W.commit)
elif moment == "inside_rename":
    pathlib.Path.rename = die_on_the_nth(pathlib.Path.rename)
elif moment == "before_cleanup":
    store.shutil.rmtree = die_on_the_nth(
        store.shutil.rmtree, lambda path, *a: str(path).endswith(".partial"))
elif moment in ("checkpoint_replace", "model_replace"):
    checkpoint = moment == "checkpoint_replace"
    model_files.os.replace = die_on_the_nth(
        model_files.os.replace,
        lambda src, dst: (pathlib.Path(dst).name == "checkpoint.pt") == checkpoint)
sys.argv = [stage]
__import__(f"stages.{stage}", fromlist=["main"]).main()
"""

KILL_MOMENTS = {
    "prepare": [("shard_unmarked", 2), ("before_commit", 1), ("inside_rename", 1)],
    "anchor_targets": [("shard_unmarked", 1), ("shard_unmarked", 3), ("before_cleanup", 1)],
    "pretrain": [("checkpoint_replace", 1), ("model_replace", 1)],
    "step1_rpn": [("checkpoint_replace", 1), ("checkpoint_replace", 2), ("model_replace", 1)],
    "step1_proposals": [("inside_rename", 1), ("before_cleanup", 1)],
    "step1_proposal_targets": [("shard_unmarked", 2), ("before_commit", 1)],
    "step2_fast_rcnn": [("checkpoint_replace", 2), ("model_replace", 1)],
    "step3_features": [("shard_unmarked", 1), ("shard_unmarked", 4), ("inside_rename", 1)],
    "step3_rpn": [("checkpoint_replace", 1)],
    "step3_test_proposals": [("before_commit", 1)],
    "step4_proposal_targets": [("before_cleanup", 1)],
    "step4_fast_rcnn": [("checkpoint_replace", 2), ("model_replace", 1)],
    "export": [("model_replace", 1)],
}  # fmt: skip


# `dvc repro` of one stage, SIGKILLed at one chosen moment of DVC's own work after the stage's
# command has finished: before it hashes the outputs, after its nth file copy (while it tests
# link types in the workspace, or halfway through copying outputs into its cache, a temporary
# file left there), before it writes dvc.lock, and inside that write (DVC truncates dvc.lock in
# place, so a kill there leaves it empty).
DVC_KILLED_AT = r"""
import os, signal, sys
import dvc.stage
import dvc.utils.serialize._common as serialize
import dvc_objects.fs.local as local
from dvc.cli import main

stage, moment, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = {"n": 0}

def die_at_the_nth(original, after=False, applies=lambda *a: True):
    def wrapper(*args, **kwargs):
        due = applies(*args) and seen.update(n=seen["n"] + 1) is None and seen["n"] == nth
        if due and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if due:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

def truncate(path, *args, **kwargs):
    open(path, "w").close()

if moment == "outs_unhashed":
    dvc.stage.Stage.save_outs = die_at_the_nth(dvc.stage.Stage.save_outs)
elif moment == "cache_half_copied":
    local.copyfile = die_at_the_nth(local.copyfile, after=True)
elif moment == "lock_unwritten":
    dvc.stage.Stage.dump = die_at_the_nth(dvc.stage.Stage.dump)
elif moment == "lock_truncated":
    serialize._dump_data = die_at_the_nth(
        truncate, after=True, applies=lambda path, *a: str(path).endswith("dvc.lock"))
sys.exit(main(["repro", "--single-item", stage]))
"""

DVC_KILL_MOMENTS = {
    "anchor_targets": [("outs_unhashed", 1)],
    "step1_rpn": [("cache_half_copied", 2)],
    "step3_features": [("outs_unhashed", 1), ("cache_half_copied", 5)],
    "step4_fast_rcnn": [("lock_unwritten", 1)],
    "export": [("cache_half_copied", 1), ("lock_unwritten", 1)],
    "evaluate": [("lock_truncated", 1)],
}  # fmt: skip


def killed(root: Path, script: str, stage: str, moment: str, nth: int) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(
        [sys.executable, "-c", script, stage, moment, str(nth)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, (stage, moment, result.stderr)


def test_killed_at_chosen_moments_of_each_write_it_still_ends_byte_identical(tmp_path, reference):
    """Kills inside the stages' own writes, then inside DVC's bookkeeping after a stage; each
    rerun ends byte-identical to the uninterrupted run."""
    root = make_project(tmp_path / "chosen")
    kills = 0
    for stage in PIPELINE:
        for moment, nth in KILL_MOMENTS.get(stage, []):
            killed(root, KILLED_AT, stage, moment, nth)
            kills += 1
        for moment, nth in DVC_KILL_MOMENTS.get(stage, []):
            killed(root, DVC_KILLED_AT, stage, moment, nth)
            kills += 1
        if stage == "evaluate":  # dvc.lock was left empty: DVC refuses it in one line
            failed = subprocess.run(
                [str(Path(sys.executable).parent / "dvc"), "status"],
                cwd=root, capture_output=True, text=True,
            )  # fmt: skip
            assert failed.returncode != 0
            assert "dvc.lock' validation failed" in failed.stdout + failed.stderr
            (root / "dvc.lock").unlink()  # the README's fix: DVC's run cache restores it
            output = dvc(root, "repro")
            assert not stages_run(output), "every stage should come from DVC's run cache"
        else:
            output = dvc(root, "repro", "--single-item", stage)
            # After a kill past DVC's save, the run is in its run cache: restored, not rerun.
            assert stages_run(output) == [stage] or f"'{stage}' is cached" in output, output
    assert kills >= 34
    # A kill inside DVC's test of link types leaves its probe file behind (hidden, "test").
    for probe in (root / "data").rglob(".*.tmp"):
        assert probe.read_bytes() == b"test", probe
        probe.unlink()
    assert artifact_bytes(root) == reference
    assert "up to date" in dvc(root, "status")
    assert not list((root / "data").rglob("*.partial"))
