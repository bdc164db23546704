"""Seeds derived from names, so the random state of any (seed, stage, iteration) is fixed
without carrying a generator's state around."""

from __future__ import annotations

import hashlib


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any names and numbers: (seed, stage, iteration) and the like."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
