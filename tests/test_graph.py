"""The graph reruns exactly what a change touches, for code as for params, with the real
`dvc` on the tiny profile in a throw-away copy of the repository."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from bench.project import inside
from pipeline.config import load_params
from pipeline.layout import STAGES
from pipeline.model.backbones import Backbone
from tests.conftest import stage_function
from tests.test_end_to_end import dvc, make_project, stages_run

pytestmark = pytest.mark.slow

TRAINING = {"step1_rpn", "step2_fast_rcnn", "step3_rpn", "step4_fast_rcnn"}
ALL = [stage.name for stage in STAGES]


def changed(root) -> set[str]:
    """Stages `dvc status` reports as changed (their own deps, not what follows them)."""
    return set(json.loads(dvc(root, "status", "--json")))


def values_of(tree: object, key: str) -> list:
    """Every value stored under `key` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        found = [tree[key]] if key in tree else []
        return found + [v for child in tree.values() for v in values_of(child, key)]
    if isinstance(tree, list):
        return [v for child in tree for v in values_of(child, key)]
    return []


def appended(path, line: str = "\n# edited\n") -> bytes:
    before = path.read_bytes()
    path.write_bytes(before + line.encode())
    return before


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("graph") / "project")
    dvc(root, "repro")
    assert changed(root) == set()
    return root


def test_an_edit_to_the_step_4_stage_file_reruns_step_4_and_what_follows(built):
    appended(built / "stages" / "step4_fast_rcnn.py")
    assert changed(built) == {"step4_fast_rcnn"}
    assert stages_run(dvc(built, "repro")) == ["step4_fast_rcnn", "export", "evaluate"]
    assert changed(built) == set()


def test_an_edit_to_the_artifact_store_dirties_every_stage_that_reads_or_writes_through_it(built):
    path = built / "pipeline" / "artifacts" / "store.py"
    before = appended(path)
    try:
        assert changed(built) == set(ALL) - {"generate"}
    finally:
        path.write_bytes(before)
    assert changed(built) == set()


def test_an_edit_to_the_rpn_head_dirties_the_stages_that_build_it(built):
    path = built / "pipeline" / "model" / "rpn.py"
    before = appended(path)
    try:
        assert changed(built) == {
            "step1_rpn",
            "step1_proposals",
            "step1_test_proposals",
            "step3_rpn",
            "step3_proposals",
            "step3_test_proposals",
            "export",
            "evaluate",
        }
    finally:
        path.write_bytes(before)


def test_checkpoint_and_log_frequency_how_inputs_are_read_and_process_count_dirty_nothing(
    built,
):
    path = built / "params.yaml"
    before = path.read_bytes()
    params = yaml.safe_load(before)
    params["train"]["checkpoint_every"] += 1
    params["train"]["log_every"] += 1
    params["train"]["workers"] += 1
    params["train"]["features_in_memory"] = "never"
    params["train"]["images_in_memory"] = "never"
    params["dist"].update(nproc_per_node=8, backend="nccl")
    path.write_text(yaml.safe_dump(params))
    try:
        assert changed(built) == set()
    finally:
        path.write_bytes(before)


def test_exp_run_of_a_test_time_param_runs_no_training_stage(built):
    output = dvc(built, "exp", "run", "-S", "proposals.test_post_nms=100")
    ran = stages_run(output)
    assert ran == ["step1_test_proposals", "step3_test_proposals", "export", "evaluate"], ran
    assert not TRAINING & set(ran)


def test_exp_run_set_accepts_every_kind_of_value_params_yaml_holds(built):
    """DVC rewrites params.yaml when it applies -S (quotes go): every value must survive."""
    output = dvc(
        built,
        "exp",
        "run",
        "-S", "detect.score_thresh=0.1",  # a number that changes: export and evaluate rerun
        "-S", "train.amp=fp32",  # the amp mode
        "-S", "data.classes=null",
        "-S", "anchors.ratios=[0.5,1.0,2.0]",
        "-S", "data.coco_annotations='annotations/{split}.json'",  # DVC's grammar: quote braces
        "-S", "backbone.name=small",
        "-S", "augment.flip=true",
    )  # fmt: skip
    assert stages_run(output) == ["export", "evaluate"]
    written = load_params(built / "params.yaml")  # as DVC wrote it back
    assert written.train.amp == "fp32" and written.data.classes is None
    assert written.data.coco_annotations == "annotations/{split}.json"
    assert written.detect.score_thresh == 0.1
    shown = json.loads(dvc(built, "exp", "show", "--json"))
    assert any(isinstance(v, float) for v in values_of(shown, "map_voc07"))
    assert 0.1 in values_of(shown, "score_thresh")


def test_a_killed_stage_rerun_after_a_code_edit_starts_afresh(tmp_path, monkeypatch):
    root = make_project(tmp_path / "project")
    dvc(root, "repro", "step2_fast_rcnn")
    # Killed in the middle of its second shard: the real stage, stopped where a kill would.
    forward, calls = Backbone.forward, {"n": 0}

    def dies_at_the_sixth_view(self, images):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return forward(self, images)

    monkeypatch.setattr(Backbone, "forward", dies_at_the_sixth_view)
    with inside(root), pytest.raises(KeyboardInterrupt):
        stage_function("step3_features")(load_params(root / "params.yaml"))
    monkeypatch.undo()
    progress = root / "data" / "step3" / "features.zarr.partial" / "progress"
    assert sorted(p.name for p in progress.iterdir()) == ["features.0"]

    appended(root / "stages" / "step3_features.py")
    output = dvc(root, "repro", "step3_features")
    assert stages_run(output) == ["step3_features"]
    assert "discarding unfinished work made from other params, inputs or code" in output
    assert not (root / "data" / "step3" / "features.zarr.partial").exists()


def test_a_clone_pulls_the_artifacts_from_a_remote_and_reruns_nothing(built, tmp_path):
    dvc(built, "repro")  # whatever the tests before left, the workspace and dvc.lock agree
    remote = tmp_path / "remote"
    dvc(built, "remote", "add", "--local", "-d", "shared", str(remote))
    pushed = dvc(built, "push")
    assert re.search(r"\d+ files? pushed", pushed), pushed
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(built), str(clone)], check=True)
    # What git would hold after `dvc repro`: the project's files as they are now, dvc.lock and
    # the metrics (not cached by DVC).
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=built, capture_output=True, text=True, check=True
    ).stdout.split()
    for committed in (*tracked, "dvc.lock", "data/eval/metrics.json"):
        (clone / committed).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(built / committed, clone / committed)
    dvc(clone, "remote", "add", "--local", "-d", "shared", str(remote))
    dvc(clone, "pull")
    assert changed(clone) == set()
    assert stages_run(dvc(clone, "repro")) == []  # the feature cache is pulled, not recomputed
    features = "data/step3/features.zarr"
    mine = {p.relative_to(built / features): p.read_bytes()
            for p in (built / features).rglob("*") if p.is_file()}  # fmt: skip
    theirs = {p.relative_to(clone / features): p.read_bytes()
              for p in (clone / features).rglob("*") if p.is_file()}  # fmt: skip
    assert mine == theirs
