"""Model files: safe loading, provenance checks, atomic writes."""

import pytest
import torch

from pipeline.artifacts.model_files import load_model, save_model
from pipeline.artifacts.store import Provenance
from pipeline.errors import ArtifactError
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


def test_a_malicious_checkpoint_is_refused_not_executed(tmp_path):
    path, marker = tmp_path / "rpn.pt", tmp_path / "pwned"
    torch.save({"format_version": 1, "stage": "step1_rpn", "parts": Exploit(marker)}, path)
    with pytest.raises(ArtifactError, match="rpn.pt: not a checkpoint or model file"):
        load_model(path, "step1_rpn")
    assert not marker.exists()
