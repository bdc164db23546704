"""The artifact contract: atomic commit, shard-level resume, refusal of stale or partial work."""

import dataclasses
import logging
import shutil

import numpy as np
import pytest
import zarr

from bench.project import inside
from pipeline.artifacts import memory
from pipeline.artifacts.provenance import RECORDED_PARAMS, Provenance
from pipeline.artifacts.ragged import offsets_from_counts, ragged_rows
from pipeline.artifacts.store import open_artifact
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.codebase import code_fingerprint
from pipeline.config import to_dict
from pipeline.errors import ArtifactError, ParamError
from pipeline.layout import ANCHOR_TARGETS, PREPARE
from tests.conftest import tiny_params

PROVENANCE = Provenance("demo", params={"demo": {"k": 1}}, inputs={"upstream": "abc"})


def item(i: int) -> dict[str, np.ndarray]:
    return {"values": np.full((2, 3), i, dtype=np.int32)}


def interrupted_at(stop: int, made: list[int]):
    """An item maker that records what it made and dies like a killed process at `stop`."""

    def make(i: int) -> dict[str, np.ndarray]:
        if i == stop:
            raise KeyboardInterrupt
        made.append(i)
        return item(i)

    return make


def write_demo(path, provenance=PROVENANCE, make_item=item, n=10, shard=4):
    writer = ArtifactWriter(path, provenance)
    values = writer.array("values", (n, 2, 3), np.int32, shard_items=shard)
    writer.write_sharded({"values": values}, make_item, desc="demo")
    return writer


def test_commit_moves_a_complete_group_into_place(tmp_path):
    out = tmp_path / "demo.zarr"
    writer = write_demo(out)
    assert not out.exists()
    writer.commit(summary={"counts": {"n": 10}})
    group = open_artifact(out, "demo", expect={"inputs.upstream": "abc", "params.demo.k": 1})
    assert group["values"][7, 0, 0] == 7
    assert group["values"].shards == (4, 2, 3)
    assert group.attrs["counts"] == {"n": 10}
    assert not (tmp_path / "demo.zarr.partial").exists()
    # One file per shard, not per image.
    assert len(list((out / "values" / "c").iterdir())) == 3


def test_an_interrupted_run_resumes_from_its_finished_shards(tmp_path):
    out = tmp_path / "demo.zarr"
    made: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        write_demo(out, make_item=interrupted_at(6, made))
    assert made == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ArtifactError, match="not found"):
        open_artifact(out, "demo")

    made.clear()
    writer = write_demo(out, make_item=interrupted_at(-1, made))
    assert writer.resumed
    assert made == [4, 5, 6, 7, 8, 9]  # shard 0 (items 0-3) was finished; shard 1 is redone
    writer.commit()
    np.testing.assert_array_equal(open_artifact(out, "demo")["values"][:, 0, 0], np.arange(10))


def test_leftovers_from_other_params_are_discarded(tmp_path):
    out = tmp_path / "demo.zarr"
    with pytest.raises(KeyboardInterrupt):
        write_demo(out, make_item=interrupted_at(5, []))
    other = Provenance("demo", params={"demo": {"k": 2}}, inputs={"upstream": "abc"})
    made: list[int] = []
    writer = write_demo(out, provenance=other, make_item=interrupted_at(-1, made))
    assert not writer.resumed
    assert made == list(range(10))


def test_incomplete_artifacts_are_refused(tmp_path):
    out = tmp_path / "demo.zarr"
    writer = write_demo(out)
    writer.group_dir.rename(out)  # as if someone copied the working folder into place
    with pytest.raises(ArtifactError, match=r"demo.zarr: incomplete .*dvc repro demo"):
        open_artifact(out, "demo")


def test_stale_artifacts_name_what_differs(tmp_path):
    out = tmp_path / "demo.zarr"
    write_demo(out).commit()
    with pytest.raises(ArtifactError, match=r'stale, inputs.upstream is "abc" but this run '
                       r'expects "xyz"; run `dvc repro demo`'):  # fmt: skip
        open_artifact(out, "demo", expect={"inputs.upstream": "xyz"})
    with pytest.raises(ArtifactError, match="made by stage 'demo', expected 'prepare'"):
        open_artifact(out, "prepare")


@pytest.mark.parametrize("manifest", [None, {}])
def test_an_artifact_without_its_manifest_is_refused(tmp_path, manifest):
    """Without the list of its files, a deleted shard would read as zeros."""
    out = tmp_path / "demo.zarr"
    write_demo(out).commit()
    group = zarr.open_group(out, mode="r+")
    if manifest is None:
        del group.attrs["manifest"]
    else:
        group.attrs["manifest"] = manifest
    with pytest.raises(ArtifactError, match=r"demo.zarr: no manifest of its files"):
        open_artifact(out, "demo")


def test_foreign_folders_are_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ArtifactError, match="not a Zarr group written by this pipeline"):
        open_artifact(tmp_path / "junk", "demo")


def test_leftovers_from_other_code_are_discarded_with_a_notice(tmp_path, caplog):
    out = tmp_path / "demo.zarr"
    with pytest.raises(KeyboardInterrupt):
        write_demo(out, make_item=interrupted_at(5, []))
    edited = dataclasses.replace(PROVENANCE, code="another")
    made: list[int] = []
    with caplog.at_level(logging.INFO):
        writer = write_demo(out, provenance=edited, make_item=interrupted_at(-1, made))
    assert not writer.resumed
    assert made == list(range(10))
    assert "discarding unfinished work made from other params, inputs or code" in caplog.text


def test_stage_provenance_records_the_hash_of_the_stage_code_and_its_declared_params():
    params = tiny_params()
    provenance = Provenance.of_stage(PREPARE, params, inputs={})
    assert provenance.code == code_fingerprint("stages.prepare")
    assert provenance.params == {
        "data": to_dict(params.data),
        "store": {"shard_size": params.store.shard_size},
    }
    assert provenance.attrs()["code"] == provenance.code
    assert dataclasses.replace(provenance, code="x").fingerprint != provenance.fingerprint


def test_fingerprint_changes_with_params_and_inputs_only():
    same = Provenance("demo", params={"demo": {"k": 1}}, inputs={"upstream": "abc"})
    assert same.fingerprint == PROVENANCE.fingerprint
    assert Provenance("demo", {"demo": {"k": 1}}, {"upstream": "abd"}).fingerprint != (
        PROVENANCE.fingerprint
    )


def test_ragged_offsets():
    offsets = offsets_from_counts([2, 0, 3])
    assert offsets.tolist() == [0, 2, 2, 5]
    assert ragged_rows(offsets, 1) == slice(2, 2)
    assert ragged_rows(offsets, 2) == slice(2, 5)


def test_a_shard_that_would_not_fit_in_memory_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "memory_budget", lambda: 4 * 2 * 3 * 4 - 1)  # < 4 items of 24 B
    with pytest.raises(ParamError, match=r"'store.shard_size' is 4; a shard of 'values' would"):
        write_demo(tmp_path / "demo.zarr", shard=4)
    write_demo(tmp_path / "small.zarr", shard=3)  # 3 items fit


def test_an_item_too_large_for_memory_is_blamed_on_the_canvas_not_the_shard_size(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(memory, "memory_budget", lambda: 2 * 3 * 4 - 1)  # < 1 item of 24 B
    with pytest.raises(ParamError, match=r"one item of 'values' would take .* lower 'data.max"):
        write_demo(tmp_path / "demo.zarr", shard=1)


def test_a_shard_size_beyond_the_array_is_one_shard(tmp_path):
    writer = write_demo(tmp_path / "demo.zarr", shard=1_000_000_000)
    assert writer.group["values"].shards == (10, 2, 3)


def test_every_recorded_params_key_must_have_this_runs_value_but_the_shard_size(tmp_path):
    """A reader passing all its params (RECORDED_PARAMS) refuses an input that recorded any key
    with another value, named by its dotted path, whether or not the reader names the key;
    the shard size only changes how an input is stored, so it is not compared."""
    params = tiny_params()
    recorded = {"rpn": to_dict(params.rpn), "store": {"shard_size": 99}, "other": 1}
    out = tmp_path / "demo.zarr"
    write_demo(out, provenance=Provenance("demo", params=recorded, inputs={})).commit()
    open_artifact(out, "demo", expect={RECORDED_PARAMS: to_dict(params)})
    changed = dataclasses.replace(params, rpn=dataclasses.replace(params.rpn, box_sigma=9.0))
    with pytest.raises(ArtifactError, match=r"made with rpn.box_sigma = 3.0 but this run has 9"):
        open_artifact(out, "demo", expect={RECORDED_PARAMS: to_dict(changed)})


def test_an_input_made_from_another_version_of_its_own_input_is_refused(tmp_path):
    """At their layout places: an artifact recording another fingerprint for its input than the
    input there now has is refused, naming the artifact."""
    with inside(tmp_path):
        source = write_demo(PREPARE.out, provenance=Provenance(PREPARE.name, {}, {}))
        source.commit()
        made_from = open_artifact(PREPARE.out, PREPARE.name).attrs["fingerprint"]
        reader = ANCHOR_TARGETS.out
        write_demo(reader, Provenance(ANCHOR_TARGETS.name, {}, {PREPARE.name: made_from})).commit()
        open_artifact(reader, ANCHOR_TARGETS.name)
        shutil.rmtree(PREPARE.out)
        write_demo(PREPARE.out, provenance=Provenance(PREPARE.name, {"k": 2}, {})).commit()
        with pytest.raises(ArtifactError, match="anchor_targets.zarr: stale, made from another"):
            open_artifact(reader, ANCHOR_TARGETS.name)


def test_a_full_disk_during_a_shard_write_names_the_artifact(tmp_path, monkeypatch):
    def full(self, key, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", full)
    with pytest.raises(OSError, match="No space left on device") as raised:
        write_demo(tmp_path / "demo.zarr")
    assert raised.value.filename == str(tmp_path / "demo.zarr.partial")
