"""The real `dvc repro` on a tiny profile, in a throw-away copy of the repository."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.prepared import PreparedDataset
from pipeline.store import open_artifact
from tests.conftest import REPO, TINY, with_changes

pytestmark = pytest.mark.slow

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
        expect={"inputs.prepared": prepared.fingerprint, "params.anchors.scales": [1, 2, 4]},
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


def dvc_killed_once(root: Path, when: Path) -> None:
    """Start `dvc repro`, SIGKILL it (and its stage) as soon as `when` exists."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    process = subprocess.Popen(
        [str(Path(bin_dir) / "dvc"), "repro"], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not when.exists():
        assert process.poll() is None, "the pipeline ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_full_pipeline_is_byte_reproducible_and_survives_a_kill(tmp_path):
    first = make_project(tmp_path / "first")
    output = dvc(first, "repro")
    assert stages_run(output)[-1] == "export"
    assert "up to date" in dvc(first, "status")
    reference = artifact_bytes(first)
    assert "data/model/faster_rcnn.pt" in reference
    assert any(name.startswith("data/step3/features.zarr/") for name in reference)

    second = make_project(tmp_path / "second")
    assert artifact_bytes(second) == {}
    # Killed in step 2's training, right after its first checkpoint.
    dvc_killed_once(second, second / "data/step2/detector.pt.partial/checkpoint.pt")
    assert not (second / "data/step2/detector.pt").exists()
    output = dvc(second, "repro")
    assert stages_run(output)[0] == "step2_fast_rcnn"
    assert artifact_bytes(second) == reference
    assert "up to date" in dvc(second, "status")
