"""Entry points as a user meets them: one-line errors, non-zero exits, readable inspection."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.api import Detections
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.cli import main as cli_main
from pipeline.cli.detect_images import drawing_paths
from pipeline.cli.main import main
from pipeline.layout import PREPARE
from pipeline.runner import stage_command
from stages.prepare import prepare_dataset
from tests.conftest import REPO, TinyImage, tiny_images, write_voc
from tests.test_prepare import stored, voc_params


def run_stage(cwd, stage, *args):
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_params(tmp_path, change) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    change(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize(
    ("change", "damage", "message"),
    [
        (lambda raw: raw["anchors"].update(ratioz=[1]), None,
         "error: params.yaml: unknown key 'anchors.ratioz'"),
        (lambda raw: raw["data"].update(root="missing"), None,
         "error: data.root: dataset folder missing does not exist"),
        (None, lambda root: (root / "Annotations" / "a.xml").write_text("<annotation>"),
         "voc/Annotations/a.xml: malformed XML"),
        (None, lambda root: (root / "JPEGImages" / "b.jpg").write_text("GIF89a"),
         "voc/JPEGImages/b.jpg: unreadable image"),
    ],
)  # fmt: skip
def test_prepare_stage_fails_with_one_line_and_no_artifact(tmp_path, change, damage, message):
    root = write_voc(
        tmp_path / "voc",
        {
            "trainval": [TinyImage("a", 40, 40, [("cat", [2, 2, 20, 20], False)])],
            "test": [TinyImage("b", 40, 40)],
        },
    )
    if damage:
        damage(root)

    def configure(raw):
        raw["data"].update(source="voc", root="voc", classes=["cat", "dog"])
        if change:
            change(raw)

    write_params(tmp_path, configure)
    result = run_stage(tmp_path, "prepare")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "data" / "prepared.zarr").exists()


def test_debug_shows_the_traceback(tmp_path):
    write_params(tmp_path, lambda raw: raw["data"].update(source="voc", root="missing"))
    result = run_stage(tmp_path, "prepare", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_anchor_targets_stage_refuses_a_missing_prepared_artifact(tmp_path):
    write_params(tmp_path, lambda raw: None)
    result = run_stage(tmp_path, "anchor_targets")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: data/prepared.zarr: not found; run `dvc repro prepare` to build it"
    )


@pytest.fixture
def prepared_path(tmp_path, params):
    images = tiny_images(count=5)
    root = write_voc(tmp_path / "voc", {"trainval": images[:3], "test": images[3:]})
    out = tmp_path / "prepared.zarr"
    prepare_dataset(stored(voc_params(params, root)), out)
    return out


def test_inspect_prints_layout_stats_and_provenance(prepared_path):
    result = CliRunner().invoke(main, ["inspect", str(prepared_path)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "(complete)" in text
    assert 'stage: "prepare"' in text
    assert "images: uint8 [5, " in text and "shards 4x" in text
    assert "per image: min" in text  # ragged boxes
    assert "values (all): 0: 3 (60%), 1: 2 (40%)" in text  # the split array


def test_inspect_json_is_machine_readable(prepared_path):
    result = CliRunner().invoke(main, ["inspect", "--json", str(prepared_path)])
    summary = json.loads(result.output)
    arrays = {a["name"]: a for a in summary["arrays"]}
    assert arrays["images"]["shards"][0] == 4
    assert arrays["split"]["stats"]["histogram"] == {"0": 3, "1": 2}
    assert arrays["boxes"]["per_image"]["max"] >= 1
    assert summary["attrs"]["complete"] is True
    assert 0 < arrays["images"]["stored_bytes"] < arrays["images"]["raw_bytes"]


def test_inspect_of_a_damaged_artifact_shows_the_rest_and_names_the_damage(prepared_path):
    shard = prepared_path / "images" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[200:204] = bytes(b ^ 0xFF for b in data[200:204])
    shard.write_bytes(bytes(data))
    (prepared_path / "boxes" / "c" / "0" / "0").unlink()

    result = CliRunner().invoke(main, ["inspect", str(prepared_path)])
    assert result.exit_code == 1
    assert "internal error" not in result.output
    assert "values (all): 0: 3 (60%), 1: 2 (40%)" in result.output  # intact arrays still shown
    assert "DAMAGED: array 'images' is damaged (Stored and computed checksum" in result.output
    assert "DAMAGED: array 'boxes', shard c/0/0 is missing" in result.output
    assert result.output.rstrip().endswith("restores it")


def test_inspect_shows_an_incomplete_working_folder(tmp_path):
    writer = ArtifactWriter(tmp_path / "demo.zarr", Provenance("demo", {}, {}))
    writer.array("values", (3, 2), "int32", shard_items=2)
    result = CliRunner().invoke(main, ["inspect", str(writer.group_dir)])
    assert result.exit_code == 0
    assert "(INCOMPLETE)" in result.output


def test_inspect_of_a_missing_path_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 1
    assert result.output.strip().endswith("nothing.zarr: not found")


def test_an_unexpected_exception_is_one_line_and_exit_2_unless_debugging():
    def broken(params):
        raise TypeError("unsupported operand")

    command = stage_command(PREPARE, broken)
    result = CliRunner().invoke(command, ["--params", str(REPO / "params.yaml")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "error: internal error (TypeError: unsupported operand); rerun with --debug for the "
        "traceback and report it"
    ]
    debugged = CliRunner().invoke(command, ["--params", str(REPO / "params.yaml"), "--debug"])
    assert isinstance(debugged.exception, TypeError)


def test_a_library_warning_is_one_line_without_its_source_unless_debugging():
    def warns(params):
        warnings.warn("overflow encountered in cast", RuntimeWarning, stacklevel=1)

    command = stage_command(PREPARE, warns)
    result = CliRunner().invoke(command, ["--params", str(REPO / "params.yaml")])
    assert result.exit_code == 0
    assert result.output.strip() == "warning: overflow encountered in cast"


def test_drawings_of_images_with_one_name_do_not_overwrite_each_other(tmp_path):
    a, b, c = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "a" / "y.jpg"
    d = tmp_path / "a" / "x.png"
    drawn = tmp_path / "drawn"
    assert drawing_paths([a, c], drawn) == {a: drawn / "x.png", c: drawn / "y.png"}
    assert drawing_paths([a, b, c], drawn) == {
        a: drawn / "a" / "x.png", b: drawn / "b" / "x.png", c: drawn / "y.png"
    }  # fmt: skip
    assert drawing_paths([a, d], drawn) == {a: drawn / "x.jpg.png", d: drawn / "x.png.png"}


def test_detect_keeps_the_results_found_before_a_failure(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")

    class Failing:
        """A detector with a bug that shows on its second batch."""

        calls = 0

        def detect(self, images, batch_size, views):
            Failing.calls += 1
            if Failing.calls == 2:
                raise RuntimeError("a bug")
            box = np.array([[1, 1, 4, 4]], np.float32)
            return [Detections(box, np.ones(1, np.float32), np.ones(1, np.int64), ("cat",))]

    monkeypatch.setattr(cli_main.Detector, "load", lambda path, device: Failing())
    out = tmp_path / "found.json"
    images = [str(tmp_path / f"{name}.png") for name in ("a", "b", "c")]
    result = CliRunner().invoke(main, ["detect", *images, "--out", str(out)])
    assert result.exit_code == 2 and "internal error" in result.output
    assert [r["file_name"] for r in json.loads(out.read_text())] == images[:1]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--score-thresh", "nan"], "--score-thresh"), (["--score-thresh", "-1"], "--score-thresh")],
)
def test_detect_refuses_bad_option_values(args, message):
    result = CliRunner().invoke(main, ["detect", "a.jpg", *args])
    assert result.exit_code == 2 and message in result.output


def test_detect_on_cuda_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["detect", str(REPO / "README.md"), "--device", "cuda"])
    assert result.exit_code == 1
    assert "device 'cuda': no CUDA device is visible here; use cpu" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.xyz"], "x.xyz is not a .png or .jpg file name"),
        (["-o", "x.png", "--top-k", "-1"], "--top-k"),
        (["-o", "x.png", "--score-thresh", "nan"], "--score-thresh"),
    ],
)
def test_show_refuses_bad_option_values_before_reading_anything(args, message):
    result = CliRunner().invoke(main, ["show", "--image", "0", *args])
    assert result.exit_code == 2 and message in result.output


def test_show_into_a_file_as_if_a_folder_names_it(tmp_path):
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" / "x.png"
    result = CliRunner().invoke(main, ["show", "--image", "0", "-o", str(out)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'taken'} is a file, not a folder" in result.output
