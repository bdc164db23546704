"""How much one process may hold in memory: shards being assembled, caches read whole."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from pipeline import distributed
from pipeline.errors import ParamError


def holds_in_memory(choice: str, key: str, arrays: Iterable) -> bool:
    """Whether to read `arrays` whole into memory, so that training reads RAM instead of disk:
    with `choice` "always" (refused, naming `key`, when they would take over
    `memory_budget()`), "auto" (when they fit) or "never"."""
    size = sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in arrays)
    fits = size <= memory_budget()
    if choice == "always" and not fits:
        raise ParamError(
            f"params.yaml: '{key}' is 'always' but the arrays take {size / 2**30:.1f} GiB, over "
            f"a quarter of this machine's memory (per rank: split between its ranks); allowed "
            "here: auto or never"
        )
    return choice == "always" or (choice == "auto" and fits)


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
    if item_bytes > budget:  # no shard size helps: the item itself is too large
        raise ParamError(
            f"params.yaml: one item of '{name}' would take {item_bytes / 2**20:.0f} MiB, over the "
            f"{budget / 2**20:.0f} MiB one process may hold here; lower 'data.max_size', which "
            "bounds the canvas every image is padded to and so every per-image array"
        )
    if shard_items * item_bytes > budget:
        raise ParamError(
            f"params.yaml: 'store.shard_size' is {shard_items}; a shard of '{name}' would take "
            f"{shard_items * item_bytes / 2**20:.0f} MiB of memory ({item_bytes / 2**20:.1f} "
            f"MiB per item); allowed: at most {max(budget // item_bytes, 1)} here"
        )
