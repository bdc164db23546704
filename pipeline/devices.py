"""Which device a stage computes on."""

from __future__ import annotations

import torch

from pipeline.errors import FrcnnError


def resolve_device(name: str) -> torch.device:
    """`train.device`: auto (CUDA when there is one), cpu or cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FrcnnError("params.yaml: 'train.device' is 'cuda' but no CUDA device is available")
    return torch.device(name)


def configure_backend(device: torch.device, deterministic: bool) -> None:
    """On CUDA, let cuDNN autotune its kernels (fastest, not bit-reproducible) unless
    `train.deterministic` asks for deterministic ones. A CPU run is bit-exact either way."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
