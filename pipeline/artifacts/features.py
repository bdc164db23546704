"""Cached backbone features (step 3): what steps 3 and 4 train from instead of images.

features.zarr (V views):
  views          [V, 2] int64            (prepared image, flipped)
  features       [V, C, Hf, Wf] float32  the view's feature map top-left on the canvas grid
  feature_sizes  [V, 2] int32            (h, w) of the valid part
Zero padding beyond the valid part compresses to almost nothing, and is exactly what the
exported detector's convs see beyond an image's own feature map.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pipeline.artifacts.integrity import CheckedArray
from pipeline.artifacts.store import ArtifactWriter, Provenance, ReopensInWorkers, open_artifact
from pipeline.data.views import ViewSet
from pipeline.layout import STEP3_FEATURES

if TYPE_CHECKING:  # steps 3 and 4 read the cache without any backbone code
    from pipeline.model.backbones import Backbone


@torch.no_grad()
def write_features(
    out: Path,
    provenance: Provenance,
    backbone: Backbone,
    views: ViewSet,
    device: torch.device,
    shard_size: int,
) -> dict[str, int]:
    canvas = views.prepared.canvas
    grid = (canvas[0] // backbone.stride, canvas[1] // backbone.stride)
    n, channels = len(views), backbone.out_channels
    writer = ArtifactWriter(out, provenance)
    writer.array("views", views.views.shape, np.int64)[...] = views.views
    arrays = {
        "features": writer.array(
            "features", (n, channels, *grid), np.float32, shard_items=shard_size
        ),
        "feature_sizes": writer.array("feature_sizes", (n, 2), np.int32, shard_items=shard_size),
    }
    backbone.eval().to(device)

    def make(v: int) -> dict[str, np.ndarray]:
        features = backbone(views.image(v)[None].to(device))[0].float().cpu().numpy()
        _, height, width = features.shape
        canvas_features = np.zeros((channels, *grid), dtype=np.float32)
        canvas_features[:, :height, :width] = features
        return {"features": canvas_features, "feature_sizes": np.array([height, width], np.int32)}

    writer.write_sharded(arrays, make, desc=provenance.stage)
    summary = {"views": n, "channels": channels}
    writer.commit(summary={"counts": summary})
    return summary


class Features(ReopensInWorkers):
    """Read access to the feature cache, refused if stale (see `open_artifact`)."""

    def __init__(self, path: str | Path, expect: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.reopen_args = (self.path,)
        self.group = open_artifact(self.path, STEP3_FEATURES.name, expect)
        self.fingerprint: str = self.group.attrs["fingerprint"]
        self.views: np.ndarray = self.group["views"][...]
        self.features: CheckedArray = self.group["features"]
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
        return torch.from_numpy(np.stack(blocks))
