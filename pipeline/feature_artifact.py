"""Cached backbone features (step 3): what steps 3 and 4 train from instead of images.

features.zarr (V views):
  views          [V, 2] int64            (prepared image, flipped)
  features       [V, C, Hf, Wf] float32  the view's feature map top-left on the canvas grid
  feature_sizes  [V, 2] int32            (h, w) of the valid part
Zero padding beyond the valid part compresses to almost nothing, and is exactly what the
exported detector's convs see beyond an image's own feature map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.backbones import Backbone
from pipeline.store import ArtifactWriter, Provenance
from pipeline.views import ViewSet


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
