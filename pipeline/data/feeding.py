"""Feeding a loop: each batch's inputs are read from the artifacts by DataLoader workers while
the model computes on the batch before.

A reader maps a batch's views to its inputs: arrays read, decoded and normalised, with no
randomness and no model. So reading can run in another process and ahead of time without
changing a single result; what an iteration computes on is fixed by its batch, and its batch
by the iteration number. Readers pickle as the paths of the artifacts they read
(`ArtifactReader`), so a worker opens its own Zarr handles, forked or spawned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

BatchReader = Callable[[list[int]], Any]  # a batch's views -> its inputs (tensors)
FeatureSource = Callable[[Any], Tensor]  # a batch's read input -> its [B, C, h, w] features


def on_device(device: torch.device) -> FeatureSource:
    """The features of steps 3 and 4: read from the cache (`CachedFeatures`) as they are,
    moved to `device`."""
    return lambda features: features.to(device, non_blocking=True)


class EachView:
    """Reader of a batch view by view, each read as a batch of one: a loss normalises each
    view on its own, so a batch's views can be split between processes
    (`pipeline/training/loop.py`)."""

    def __init__(self, read: BatchReader) -> None:
        self.read = read

    def __call__(self, batch: list[int]) -> list[Any]:
        return [self.read([v]) for v in batch]


class _Batches(Dataset):
    def __init__(self, read: BatchReader, batches: Sequence[list[int]]) -> None:
        self.read, self.batches = read, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.read(self.batches[i])


def feed(
    read: BatchReader, batches: Sequence[list[int]], workers: int, device: torch.device
) -> Iterable[Any]:
    """The inputs of `batches`, in order, read `workers` processes ahead (0: in this one),
    in pinned memory when they go to a GPU."""
    return DataLoader(
        _Batches(read, batches),
        batch_size=None,  # a reader returns whole batches
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
