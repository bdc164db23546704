"""Writing an artifact: a Zarr v3 group built in `<out>.partial/` and moved into place whole.

Writing happens beside the declared DVC out (so `dvc repro` never wipes it): the group in
`group/`, one whole shard at a time, a marker per finished shard in `progress/`. A rerun with
the same provenance picks up the finished shards. Only `commit()` marks the group complete and
renames it into place, so a reader never sees half an artifact under the real name.

Under torchrun (`pipeline/distributed.py`) the ranks split the shards: rank 0 creates the group
and its arrays, each rank writes whole shards of its own (Zarr never sees two writers in one
shard), and rank 0 commits once every rank is done. A shard is written by the same code
whichever rank writes it, so the artifact does not depend on the number of processes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.codecs import Crc32cCodec, ZstdCodec

from pipeline import distributed
from pipeline.artifacts.integrity import manifest_of
from pipeline.artifacts.memory import check_shard_memory
from pipeline.artifacts.provenance import Provenance

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"
# The checksum is outermost, so zarr checks it before it decompresses a chunk.
COMPRESSORS = (ZstdCodec(level=3), Crc32cCodec())


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
                self._write_shard(arrays, items, start, stop)
                self._mark_shard_done(first, shard)
        distributed.barrier()  # every shard is written

    def _write_shard(
        self,
        arrays: Mapping[str, zarr.Array],
        items: list[Mapping[str, np.ndarray]],
        start: int,
        stop: int,
    ) -> None:
        try:
            for name, array in arrays.items():
                array[start:stop] = np.stack([item[name] for item in items])
        except OSError as exc:  # zarr's store names no file: name the artifact being written
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.work)) from None

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
