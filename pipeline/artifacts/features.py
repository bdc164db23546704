"""Cached backbone features (step 3): what steps 3 and 4 train from instead of images.

features.zarr (V views):
  views          [V, 2] int64            (prepared image, flipped)
  features       [V, C, Hf, Wf]          the view's feature map top-left on the canvas grid,
                                         as `store.feature_dtype` (attrs["values"]): float32,
                                         float16, or bfloat16 bits in int16 (numpy has none)
  feature_sizes  [V, 2] int32            (h, w) of the valid part
Zero padding beyond the valid part compresses to almost nothing, and is exactly what the
exported detector's convs see beyond an image's own feature map. Readers get float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.integrity import CheckedArray
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.store import ArtifactReader, open_artifact
from pipeline.artifacts.views import ViewImages, ViewSet
from pipeline.artifacts.writer import ArtifactWriter
from pipeline.data.feeding import feed
from pipeline.layout import STEP3_FEATURES

if TYPE_CHECKING:  # steps 3 and 4 read the cache without any backbone code
    from pipeline.model.backbones import Backbone


STORED_AS = {"float32": np.float32, "float16": np.float16, "bfloat16": np.int16}


def to_storage(features: Tensor, dtype: str) -> np.ndarray:
    """Features as stored: rounded to `dtype` (bfloat16 as its bits)."""
    if dtype == "bfloat16":
        return features.to(torch.bfloat16).view(torch.int16).numpy()
    return features.to(getattr(torch, dtype)).numpy()


def from_storage(stored: np.ndarray, dtype: str) -> Tensor:
    """Stored features as float32, what the heads compute with."""
    values = torch.from_numpy(stored)
    return (values.view(torch.bfloat16) if dtype == "bfloat16" else values).float()


@torch.no_grad()
def write_features(
    out: Path,
    provenance: Provenance,
    backbone: Backbone,
    views: ViewSet,
    device: torch.device,
    shard_size: int,
    dtype: str = "float32",
    workers: int = 0,
) -> dict[str, int]:
    """The features of `views` computed by `backbone`, images read ahead by `workers`."""
    canvas = views.prepared.canvas
    grid = (canvas[0] // backbone.stride, canvas[1] // backbone.stride)
    n, channels = len(views), backbone.out_channels
    writer = ArtifactWriter(out, provenance)
    writer.put("views", views.views.astype(np.int64))
    arrays = {
        "features": writer.array(
            "features",
            (n, channels, *grid),
            STORED_AS[dtype],
            shard_items=shard_size,
            attrs={"values": dtype},
        ),
        "feature_sizes": writer.array("feature_sizes", (n, 2), np.int32, shard_items=shard_size),
    }
    backbone.eval().to(device)

    def make(v: int, image: Tensor) -> dict[str, np.ndarray]:
        features = to_storage(backbone(image.to(device))[0].cpu(), dtype)
        _, height, width = features.shape
        canvas_features = np.zeros((channels, *grid), dtype=STORED_AS[dtype])
        canvas_features[:, :height, :width] = features
        return {"features": canvas_features, "feature_sizes": np.array([height, width], np.int32)}

    def feed_images(items: list[int]) -> Iterable[Tensor]:
        return feed(ViewImages(views), [[v] for v in items], workers, device)

    writer.write_sharded(arrays, make, provenance.stage, feed_images)
    summary = {"views": n, "channels": channels}
    writer.commit(summary={"counts": summary})
    return summary


class Features(ArtifactReader):
    """Read access to the feature cache, refused if stale (see `open_artifact`)."""

    def __init__(self, path: str | Path, expect: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.reopen_args = (self.path,)
        self.group = open_artifact(self.path, STEP3_FEATURES.name, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.views: np.ndarray = self.group["views"][...]
        self.features: CheckedArray | np.ndarray = self.group["features"]  # see hold_in_memory
        self.dtype: str = self.features.attrs.get("values", "float32")
        self.sizes: np.ndarray = self.group["feature_sizes"][...]

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])


class CachedFeatures:
    """Reader: the features of a batch of views, from the feature artifact; no backbone
    involved (steps 3 and 4 feed these to their heads where steps 1 and 2 run the backbone).

    `rows[v]` is the cache row of view v of the artifact being trained on (the cache holds
    every view; proposal targets hold the train views only); None when they are the same.
    """

    def __init__(self, cache: Features, rows: np.ndarray | None = None) -> None:
        self.cache, self.rows = cache, rows

    def __call__(self, batch: list[int]) -> Tensor:
        if self.rows is not None:
            batch = [int(self.rows[v]) for v in batch]
        height = int(self.cache.sizes[batch, 0].max())
        width = int(self.cache.sizes[batch, 1].max())
        blocks = [self.cache.features[v, :, :height, :width] for v in batch]
        return from_storage(np.stack(blocks), self.cache.dtype)
