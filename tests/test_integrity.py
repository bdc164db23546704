"""An artifact's bytes are what its stage wrote: a missing or damaged shard is refused with one
line naming the artifact, the array and the shard, never read as zeros or as other numbers."""

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.artifacts.store import open_artifact, verify_artifact
from pipeline.cli.main import main
from pipeline.errors import ArtifactError
from tests.test_store import write_demo


@pytest.fixture
def artifact(tmp_path):
    out = tmp_path / "demo.zarr"
    write_demo(out).commit()
    return out


def shard(artifact, index: int):
    return artifact / "values" / "c" / str(index) / "0" / "0"


def flip_a_byte(path, offset: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_commit_records_every_data_file_and_an_intact_artifact_verifies(artifact):
    manifest = open_artifact(artifact, "demo").attrs["manifest"]
    assert sorted(manifest) == [f"values/c/{i}/0/0" for i in range(3)]  # 10 items, 4 per shard
    assert verify_artifact(artifact) == (3, [])
    result = CliRunner().invoke(main, ["verify", str(artifact)])
    assert result.exit_code == 0 and "3 files intact" in result.output


def test_a_missing_shard_is_refused_at_open_not_read_as_zeros(artifact):
    shard(artifact, 1).unlink()
    with pytest.raises(
        ArtifactError, match=r"array 'values', shard c/1/0/0 is missing; run `dvc checkout"
    ):
        open_artifact(artifact, "demo")


def test_a_truncated_shard_is_refused_at_open(artifact):
    path = shard(artifact, 2)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ArtifactError, match=r"shard c/2/0/0 is damaged \("):
        open_artifact(artifact, "demo")


def test_flipped_bytes_fail_the_chunk_checksum_when_read(artifact):
    values = open_artifact(artifact, "demo")["values"]
    np.testing.assert_array_equal(values[4][0, 0], 4)
    flip_a_byte(shard(artifact, 0), offset=12)
    values = open_artifact(artifact, "demo")["values"]  # same size: open cannot tell
    with pytest.raises(ArtifactError, match=r"demo.zarr: array 'values' is damaged at"):
        values[0:4]


def test_verify_names_each_damaged_missing_or_foreign_file(artifact):
    flip_a_byte(shard(artifact, 0))
    shard(artifact, 1).unlink()
    (artifact / "values" / "c" / "9").mkdir()
    (artifact / "values" / "c" / "9" / "stray").write_bytes(b"x")
    files, problems = verify_artifact(artifact)
    assert files == 3
    assert (
        "array 'values', shard c/0/0/0 is damaged (its bytes differ from what was written)"
        in problems
    )
    assert "array 'values', shard c/1/0/0 is missing" in problems
    assert "values/c/9/stray: not written by its stage" in problems
    result = CliRunner().invoke(main, ["verify", str(artifact)])
    assert result.exit_code == 1
    assert "1 of 1 artifacts damaged" in result.output
