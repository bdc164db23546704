"""The artifact contract: every stage output is a Zarr v3 group written through this module.

Writing happens in `<out>.partial/`, beside the declared DVC out (so `dvc repro` never wipes it):
the group in `group/`, one whole shard at a time, a marker per finished shard in `progress/`.
A rerun with the same provenance picks up the finished shards. Only `commit()` marks the group
complete and renames it into place, so a reader never sees half an artifact under the real
name. Readers go through `open_artifact`, which refuses an incomplete artifact or one made from
other params or inputs.

Under torchrun (`pipeline/distributed.py`) the ranks split the shards: rank 0 creates the group
and its arrays, each rank writes whole shards of its own (Zarr never sees two writers in one
shard), and rank 0 commits once every rank is done. A shard is written by the same code
whichever rank writes it, so the artifact does not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.codecs import Crc32cCodec, ZstdCodec

from pipeline import __version__, distributed
from pipeline.artifacts.integrity import CheckedGroup, check_present, manifest_of, verify
from pipeline.artifacts.lineage import check_lineage
from pipeline.codebase import code_fingerprint
from pipeline.config import Params, to_dict
from pipeline.errors import ArtifactError, ParamError
from pipeline.layout import Stage

log = logging.getLogger(__name__)
# 2: provenance records the code hash, every chunk a CRC32C, the group a manifest of its files;
#    proposals split into train and test artifacts.
FORMAT_VERSION = 2
PARTIAL_SUFFIX = ".partial"
# The checksum is outermost, so zarr checks it before it decompresses a chunk.
COMPRESSORS = (ZstdCodec(level=3), Crc32cCodec())


@dataclass(frozen=True)
class Provenance:
    """What made an artifact: the stage, the params it read, the fingerprints of its inputs and
    the hash of the code that ran (see pipeline/codebase.py)."""

    stage: str
    params: Mapping[str, Any]
    inputs: Mapping[str, str]
    code: str = ""

    @classmethod
    def of_stage(
        cls, stage: Stage, params: Mapping[str, Any], inputs: Mapping[str, str]
    ) -> Provenance:
        """Provenance of `stage`'s output, with the hash of `stages/<name>.py`'s closure."""
        return cls(stage.name, params, inputs, code_fingerprint(stage.module))

    @property
    def fingerprint(self) -> str:
        """Same stage, params, inputs and code give the same fingerprint; anything else not."""
        payload = json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "stage": self.stage,
                "params": self.params,
                "inputs": self.inputs,
                "code": self.code,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def attrs(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "params": dict(self.params),
            "inputs": dict(self.inputs),
            "code": self.code,
            "fingerprint": self.fingerprint,
            "format_version": FORMAT_VERSION,
            "code_version": __version__,
        }


class ArtifactWriter:
    """Builds one artifact in a working folder and moves it into place when complete."""

    def __init__(self, path: str | Path, provenance: Provenance, extra_attrs: Mapping = ()) -> None:
        self.path = Path(path)
        self.work = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        # Progress markers live beside the group, not in it, so Zarr never lists them.
        self.group_dir, self.progress_dir = self.work / "group", self.work / "progress"
        self.provenance = provenance
        self.main = distributed.is_main()
        if self.main:
            self.resumed = self._reopen()
            if not self.resumed:
                self._start_over(dict(extra_attrs))
        distributed.barrier()
        if not self.main:  # rank 0 has made the group by now
            self.group, self.resumed = zarr.open_group(self.group_dir, mode="r+"), True

    def _reopen(self) -> bool:
        """Reuse a working folder left by an interrupted run, if it was made the same way."""
        if not self.group_dir.exists():
            return False
        try:
            group = zarr.open_group(self.group_dir, mode="r+")
            same = group.attrs.get("fingerprint") == self.provenance.fingerprint
        except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
            same = False
        if not same:
            log.info(
                "%s: discarding unfinished work made from other params, inputs or code", self.work
            )
            return False
        self.group = group
        return True

    def _start_over(self, extra_attrs: dict[str, Any]) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.progress_dir.mkdir(parents=True)
        self.group = zarr.open_group(self.group_dir, mode="w", zarr_format=3)
        self.group.attrs.update({**self.provenance.attrs(), **extra_attrs, "complete": False})

    def array(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: str | np.dtype,
        *,
        shard_items: int | None = None,
        fill_value: Any = 0,
        attrs: Mapping[str, Any] = (),
    ) -> zarr.Array:
        """A new array chunked one item (image) per chunk along axis 0, `shard_items` per shard.

        Unsharded arrays are for small per-dataset data (offsets, sizes): see `put`.
        """
        if self.main and not (self.resumed and name in self.group):
            self._create(name, shape, dtype, shard_items, fill_value, attrs)
        distributed.barrier()  # the other ranks open what rank 0 created
        return zarr.open_group(self.group_dir, mode="r+")[name]

    def put(self, name: str, values: np.ndarray, attrs: Mapping[str, Any] = ()) -> None:
        """A small unsharded array holding `values`, written whole (by rank 0)."""
        array = self.array(name, values.shape, values.dtype, attrs=attrs)
        if self.main and values.size:
            array[...] = values

    def _create(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: str | np.dtype,
        shard_items: int | None,
        fill_value: Any,
        attrs: Mapping[str, Any],
    ) -> None:
        rest = tuple(shape[1:])
        if shard_items is None:
            chunks = shape if math.prod(shape) > 0 else (1, *rest)
            shards = None
        else:
            # A shard larger than the array would only make zarr allocate an index for nothing.
            shard_items = min(shard_items, max(shape[0], 1))
            check_shard_memory(name, shard_items, math.prod(rest) * np.dtype(dtype).itemsize)
            chunks = (1, *rest)
            shards = (shard_items, *rest)
        array = self.group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            shards=shards,
            dtype=dtype,
            fill_value=fill_value,
            compressors=COMPRESSORS,
        )
        array.attrs.update(dict(attrs))

    def write_sharded(
        self,
        arrays: Mapping[str, zarr.Array],
        make_item: Callable[..., Mapping[str, np.ndarray]],
        desc: str,
        feed_items: Callable[[list[int]], Iterable[Any]] | None = None,
    ) -> None:
        """Fill `arrays` item by item, one whole shard per write, skipping finished shards.

        Zarr cannot merge partial writes into one shard from several writers, so each shard is
        assembled in memory and written whole; that also makes a shard the unit of resumption
        and of the split between ranks: each takes every world-size-th unfinished shard.
        With `feed_items` (the inputs of the given items, in order, e.g. read ahead by
        `pipeline.data.feeding.feed`), item i is `make_item(i, its inputs)`, else `make_item(i)`.
        """
        first = next(iter(arrays.values()))
        n, per_shard = first.shape[0], first.shards[0]
        distributed.barrier()  # no rank marks a shard before every rank has listed them
        unfinished = [s for s in range(math.ceil(n / per_shard)) if not self._shard_done(first, s)]
        distributed.barrier()
        mine = unfinished[distributed.rank() :: distributed.world_size()]
        todo = [i for s in mine for i in range(s * per_shard, min(n, (s + 1) * per_shard))]
        inputs = iter(feed_items(todo)) if feed_items is not None else None
        # Rank 0 shows its own share of the work (all of it in one process).
        done = n - len(todo) if distributed.world_size() == 1 else 0
        with tqdm(
            total=len(todo) + done,
            initial=done,
            desc=desc,
            unit="img",
            leave=False,
            disable=None if self.main else True,
        ) as bar:
            for shard in mine:
                start, stop = shard * per_shard, min(n, (shard + 1) * per_shard)
                items = []
                for i in range(start, stop):
                    items.append(make_item(i) if inputs is None else make_item(i, next(inputs)))
                    bar.update()
                for name, array in arrays.items():
                    array[start:stop] = np.stack([item[name] for item in items])
                self._mark_shard_done(first, shard)
        distributed.barrier()  # every shard is written

    def _progress_file(self, array: zarr.Array, shard: int) -> Path:
        return self.progress_dir / f"{array.basename}.{shard}"

    def _shard_done(self, array: zarr.Array, shard: int) -> bool:
        return self._progress_file(array, shard).exists()

    def _mark_shard_done(self, array: zarr.Array, shard: int) -> None:
        self._progress_file(array, shard).touch()

    def commit(self, summary: Mapping[str, Any] = ()) -> Path:
        """Record what was written, mark the artifact complete and move it to its real name
        (replacing an old one). Rank 0 does it once every rank has called it."""
        distributed.barrier()
        if not self.main:
            return self.path
        manifest = manifest_of(self.group_dir)
        self.group.attrs.update({**dict(summary), "manifest": manifest, "complete": True})
        if self.path.exists():
            shutil.rmtree(self.path)
        self.group_dir.rename(self.path)
        shutil.rmtree(self.work)
        return self.path


class ReopensInWorkers:
    """Base of the artifact readers: pickled as the arguments that open them (paths), so a
    DataLoader worker, forked or spawned, opens its own Zarr handles instead of copies."""

    reopen_args: tuple

    def __reduce__(self) -> tuple:
        return type(self), self.reopen_args


def keep_in_memory(choice: str, key: str, arrays: Sequence[tuple[object, str]]) -> bool:
    """Replace each (reader, attribute) array by its whole content in memory, so that training
    reads RAM instead of disk: with `choice` "always" (refused, naming `key`, when they would
    take over `memory_budget()`), "auto" (when they fit) or "never"."""
    size = sum(
        math.prod(getattr(r, a).shape) * np.dtype(getattr(r, a).dtype).itemsize for r, a in arrays
    )
    fits = size <= memory_budget()
    if choice == "always" and not fits:
        raise ParamError(
            f"params.yaml: '{key}' is 'always' but the arrays take {size / 2**30:.1f} GiB, over "
            f"a quarter of this machine's memory (per rank: split between its ranks); allowed "
            "here: auto or never"
        )
    keep = choice == "always" or (choice == "auto" and fits)
    if keep:
        for reader, attribute in arrays:
            setattr(reader, attribute, getattr(reader, attribute)[...])
    return keep


def memory_budget() -> int:
    """Bytes one process may hold for a shard being assembled or a cache read into memory: a
    quarter of the machine's memory, shared by the ranks that run on it."""
    try:
        quarter = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        quarter = 4 << 30
    return quarter // distributed.ranks_on_this_machine()


def check_shard_memory(name: str, shard_items: int, item_bytes: int) -> None:
    """Refuse a shard size whose shards would not fit in memory, before any work is done."""
    budget = memory_budget()
    if shard_items * item_bytes > budget:
        raise ParamError(
            f"params.yaml: 'store.shard_size' is {shard_items}; a shard of '{name}' would take "
            f"{shard_items * item_bytes / 2**20:.0f} MiB of memory ({item_bytes / 2**20:.1f} "
            f"MiB per item); allowed: at most {max(budget // item_bytes, 1)} here"
        )


def open_artifact(
    path: str | Path, stage: str, expect: Mapping[str, Any] | None = None
) -> CheckedGroup:
    """Open a finished artifact made by `stage`, refusing anything stale, incomplete or damaged.

    `expect` maps dotted attribute keys (e.g. "params.anchors") to the values this reader needs.
    """
    path = Path(path)
    fix = f"run `dvc repro {stage}`"
    if not path.exists():
        raise ArtifactError(f"{path}: not found; {fix} to build it")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = group.attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: not a Zarr group written by this pipeline; {fix}") from None
    if attrs.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {attrs.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}; run `dvc repro -f {stage}`"
        )
    if attrs.get("stage") != stage:
        raise ArtifactError(f"{path}: made by stage {attrs.get('stage')!r}, expected {stage!r}")
    if attrs.get("complete") is not True:
        raise ArtifactError(f"{path}: incomplete (its stage did not finish); {fix}")
    restore = f"run `dvc checkout {path}` or `dvc repro -f {stage}`"
    check_present(path, attrs.get("manifest", {}), restore)
    check_expected(path, attrs, expect, fix)
    return CheckedGroup(group, path, restore)


def verify_artifact(path: str | Path) -> tuple[int, list[str]]:
    """The number of data files of a finished artifact, and every one of them that is missing,
    damaged (hashed against the manifest its commit recorded) or not written by its stage."""
    path = Path(path)
    try:
        attrs = zarr.open_group(path, mode="r").attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: not a Zarr group written by this pipeline") from None
    if attrs.get("complete") is not True or "manifest" not in attrs:
        raise ArtifactError(f"{path}: not a finished artifact (no manifest of its files)")
    return len(attrs["manifest"]), verify(path, attrs["manifest"])


# The `expect` key under which a reader passes all of this run's params: every params key an
# input recorded must have this run's value (whether or not the reader names it), except those
# that change how it is stored and none of its values.
RECORDED_PARAMS = "params"
LAYOUT_ONLY = {"store.shard_size"}


def expect_params(params: Params, *keys: str) -> dict[str, Any]:
    """What an input's provenance must record for these params keys ("rpn", "data.min_size")
    to be what this run would make, and no recorded key another value: a reader's `expect`."""
    expected: dict[str, Any] = {RECORDED_PARAMS: to_dict(params)}
    for key in keys:
        value: Any = params
        for part in key.split("."):
            value = getattr(value, part)
        expected[f"params.{key}"] = to_dict(value) if is_dataclass(value) else _plain(value)
    return expected


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_expected(
    path: Path, attrs: Mapping[str, Any], expect: Mapping[str, Any] | None, fix: str
) -> None:
    """Refuse an artifact whose recorded provenance differs from what the reader needs, or was
    made from another lineage than the artifacts at its inputs' places now."""
    named = {k: v for k, v in (expect or {}).items() if k != RECORDED_PARAMS}
    for key, wanted in named.items():  # first: the reader's own words for what it needs
        found = _lookup(attrs, key)
        if found != wanted:
            raise ArtifactError(
                f"{path}: stale, {key} is {json.dumps(found)} but this run expects "
                f"{json.dumps(wanted)}; {fix}"
            )
    if expect and RECORDED_PARAMS in expect:
        _check_recorded(path, attrs.get("params") or {}, expect[RECORDED_PARAMS], fix)
    check_lineage(path, str(attrs.get("stage")), attrs.get("inputs") or {})


def _check_recorded(
    path: Path, recorded: Mapping[str, Any], current: Mapping[str, Any], fix: str, prefix: str = ""
) -> None:
    for key, value in recorded.items():
        if key not in current:  # recorded under a name that is no params key
            continue
        name = f"{prefix}{key}"
        if name in LAYOUT_ONLY:
            continue
        if isinstance(value, Mapping) and isinstance(current[key], Mapping):
            _check_recorded(path, value, current[key], fix, f"{name}.")
        elif value != current[key]:
            raise ArtifactError(
                f"{path}: stale, made with {name} = {json.dumps(value)} but this run has "
                f"{json.dumps(current[key])}; {fix}"
            )


def _lookup(attrs: Mapping[str, Any], dotted: str) -> Any:
    value: Any = attrs
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def offsets_from_counts(counts: list[int] | np.ndarray) -> np.ndarray:
    """[N + 1] int64 offsets: item i owns rows offsets[i]:offsets[i + 1] of a flat array."""
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int64)


def ragged_rows(offsets: np.ndarray, i: int) -> slice:
    return slice(int(offsets[i]), int(offsets[i + 1]))


def iter_blocks(array: zarr.Array, limit: int | None = None) -> Iterator[np.ndarray]:
    """Read an array shard by shard (or chunk by chunk) along axis 0, up to `limit` items."""
    n = array.shape[0] if limit is None else min(limit, array.shape[0])
    step = (array.shards or array.chunks)[0] if array.ndim else 1
    for start in range(0, n, max(step, 1)):
        yield array[start : min(n, start + step)]
