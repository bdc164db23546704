"""Where a stage computes and with what randomness: the device, and seeds derived from names."""

from __future__ import annotations

import hashlib

import torch

from pipeline.errors import FrcnnError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FrcnnError("params.yaml: 'train.device' is 'cuda' but no CUDA device is available")
    return torch.device(name)


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any names and numbers: (seed, stage, iteration) and the like."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
