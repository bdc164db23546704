"""Model files: safe loading, provenance checks, atomic writes."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.artifacts.exported_model import load_detector
from pipeline.artifacts.model_files import content_digest, load_model, save_model
from pipeline.artifacts.provenance import Provenance
from pipeline.cli.main import main
from pipeline.config import to_dict
from pipeline.data.records import BACKGROUND_CLASS
from pipeline.errors import ArtifactError
from pipeline.model.faster_rcnn import DetectorConfig
from tests.conftest import detector_config, exported_detector
from tests.test_backbones import Exploit

PROVENANCE = Provenance("step1_rpn", params={"rpn": {"channels": 8}}, inputs={"x": "abc"})


def test_round_trip_with_provenance(tmp_path):
    path = tmp_path / "rpn.pt"
    save_model(path, PROVENANCE, {"rpn": {"w": torch.ones(2)}})
    model = load_model(path, "step1_rpn", expect={"inputs.x": "abc"})
    assert torch.equal(model["parts"]["rpn"]["w"], torch.ones(2))
    assert model["fingerprint"] == PROVENANCE.fingerprint
    assert not (tmp_path / "rpn.pt.tmp").exists()


def test_stale_or_foreign_model_files_are_refused(tmp_path):
    path = tmp_path / "rpn.pt"
    save_model(path, PROVENANCE, {"rpn": {}})
    with pytest.raises(ArtifactError, match="stale, params.rpn.channels is 8"):
        load_model(path, "step1_rpn", expect={"params.rpn.channels": 16})
    with pytest.raises(ArtifactError, match="made by stage 'step1_rpn', expected 'step3_rpn'"):
        load_model(path, "step3_rpn")
    with pytest.raises(ArtifactError, match="missing.pt: not found; run `dvc repro step3_rpn`"):
        load_model(tmp_path / "missing.pt", "step3_rpn")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "rpn.pt"
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ArtifactError, match="rpn.pt: not a checkpoint or model file"):
        load_model(path, "step1_rpn")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_a_truncated_model_file_is_refused_naming_it(tmp_path, keep):
    path = tmp_path / "rpn.pt"
    save_model(path, PROVENANCE, {"rpn": {"w": torch.ones(64, 64)}})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArtifactError, match="rpn.pt: not a checkpoint or model file"):
        load_model(path, "step1_rpn")


def test_a_full_disk_while_saving_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full(obj, f):
        Path(f).write_bytes(b"part")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed")

    monkeypatch.setattr(torch, "save", full)
    path = tmp_path / "rpn.pt"
    with pytest.raises(OSError, match=r"cannot write it .*is the disk full\?") as raised:
        save_model(path, PROVENANCE, {"rpn": {}})
    assert raised.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_a_malicious_checkpoint_is_refused_not_executed(tmp_path):
    path, marker = tmp_path / "rpn.pt", tmp_path / "pwned"
    torch.save({"format_version": 1, "stage": "step1_rpn", "parts": Exploit(marker)}, path)
    with pytest.raises(ArtifactError, match="rpn.pt: not a checkpoint or model file"):
        load_model(path, "step1_rpn")
    assert not marker.exists()


def flip_a_weight(path):
    """Change one float of a tensor in place, leaving torch's container valid."""
    data = bytearray(path.read_bytes())
    at = data.index(bytes.fromhex("0000803f") * 4)  # four float32 ones
    data[at + 1] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_model_file_with_a_changed_weight_is_refused(tmp_path):
    path = tmp_path / "rpn.pt"
    save_model(path, PROVENANCE, {"rpn": {"w": torch.ones(64)}})
    flip_a_weight(path)
    assert not torch.equal(torch.load(path, weights_only=True)["parts"]["rpn"]["w"], torch.ones(64))
    with pytest.raises(
        ArtifactError,
        match=r"rpn.pt: damaged, its content does not match its recorded SHA-256; `dvc checkout",
    ):
        load_model(path, "step1_rpn")


def test_content_digest_sees_every_key_shape_dtype_and_byte():
    state = {"a": torch.zeros(2, 3), "b": [1, 2.5, "x", None], "c": {3: torch.ones(1)}}
    digest = content_digest(state)
    assert digest == content_digest({"c": {3: torch.ones(1)}, **state})  # order is not content
    for changed in (
        {**state, "a": torch.zeros(3, 2)},
        {**state, "a": torch.zeros(2, 3, dtype=torch.float64)},
        {**state, "a": torch.tensor([[0.0, 0, 0], [0, 0, 1e-30]])},
        {**state, "b": [1, 2.5, "x", 0]},
        {**state, "c": {"3": torch.ones(1)}},
    ):
        assert content_digest(changed) != digest


def test_verify_checks_model_files_too(tmp_path):
    path = tmp_path / "rpn.pt"
    save_model(path, PROVENANCE, {"rpn": {"w": torch.ones(64)}})
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 0 and f"{path}: 1 file intact" in result.output
    flip_a_weight(path)
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 1
    assert f"error: {path}: damaged, its content does not match" in result.output


def test_a_detector_config_from_before_the_test_time_keys_detects_as_the_paper(params):
    saved = to_dict(detector_config(params, (BACKGROUND_CLASS, "a")))
    keys = ("box_vote_iou", "refine_boxes", "scales", "flip", "enlarged_max_box")
    for key in keys:
        del saved["detect"][key]
    detect = DetectorConfig.from_dict(saved).detect
    assert tuple(getattr(detect, key) for key in keys) == (None, False, (1.0,), False, None)
    saved["detect"].update(box_vote_iou=0.7, refine_boxes=True, scales=[1.0, 1.5], flip=True,
                           enlarged_max_box=50)  # fmt: skip
    detect = DetectorConfig.from_dict(saved).detect
    assert tuple(getattr(detect, key) for key in keys) == (0.7, True, (1.0, 1.5), True, 50)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["rpn"].update(channelz=3), "unknown key 'config.rpn.channelz'"),
        (lambda c: c["detect"].update(scales=[9.0]),
         "'config.detect.scales' is [9.0]; allowed: a non-empty list of numbers in [0.25, 4]"),
        (lambda c: c.update(classes=["cat", "dog"]),
         "'config.classes' is ['cat', 'dog']; allowed: '__background__' then one or more"),
        (lambda c: c.update(classes=[BACKGROUND_CLASS, "cat"]),
         "the head weights do not fit the network its config describes (size mismatch"),
        (lambda c: c["rpn"].update(channels=c["rpn"]["channels"] * 2),
         "the rpn weights do not fit the network its config describes"),
        (lambda c: c.pop("min_size"), "missing key 'config.min_size'"),
        (lambda c: c["roi"].update(size="7"), "'config.roi.size' is '7' (str); expected an int"),
    ],
)  # fmt: skip
def test_a_tampered_exported_detector_is_refused_naming_file_and_key(
    tmp_path, params, change, message
):
    path = exported_detector(tmp_path / "model.pt", params, change)
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    result = CliRunner().invoke(main, ["detect", str(image), "--model", str(path),
                                       "--out", str(tmp_path / "d.json")])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    assert result.output.startswith(f"error: {path}: ") and message in result.output, result.output


def test_an_untampered_exported_detector_loads(tmp_path, params):
    detector = load_detector(exported_detector(tmp_path / "model.pt", params))
    assert detector.config.classes == (BACKGROUND_CLASS, "cat", "dog")
