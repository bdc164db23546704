"""Ragged per-item rows stored flat (offsets) and reading an array shard by shard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import zarr


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
