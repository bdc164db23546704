"""Views: what the per-image artifacts index. View v is prepared image `image[v]`, mirrored
left-right when `flipped[v]`. Views 0..N-1 are the images as they are; with `augment.flip`,
the train images follow mirrored (py-faster-rcnn's flipped roidb), so a test image is always
its own view.

Training artifacts (proposals, proposal targets) hold the train views only and evaluation's
hold the test views, each as a `views` array; `view_rows` maps views to the rows of another
artifact (the feature cache holds every view).

Each view is fed to the backbone on its own canvas, padded only up to CANVAS_MULTIPLE, which
is also how the exported detector pads a new image: features computed here equal the
detector's, bit for bit, whatever the size of the dataset's canvas.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from pipeline.artifacts.prepared import PreparedDataset
from pipeline.data.images import normalise
from pipeline.data.records import TRAIN
from pipeline.errors import ArtifactError
from pipeline.model.boxes import flip_boxes


def make_views(split: np.ndarray, flip: bool) -> np.ndarray:
    """[V, 2] int64 rows of (image index, flipped)."""
    images = np.arange(len(split))
    views = [np.stack((images, np.zeros_like(images)), axis=1)]
    if flip:
        train = images[split == TRAIN]
        views.append(np.stack((train, np.ones_like(train)), axis=1))
    return np.concatenate(views).astype(np.int64)


def split_views(split: np.ndarray, flip: bool, which: int) -> np.ndarray:
    """The rows of `make_views` whose image is in split `which`, in the same order."""
    views = make_views(split, flip)
    return views[split[views[:, 0]] == which]


def view_rows(views: np.ndarray, of: np.ndarray, where: str) -> np.ndarray:
    """Index into `of` ([V', 2]) of each row of `views` ([V, 2]); `where` names `of`."""
    row = {(int(i), int(f)): r for r, (i, f) in enumerate(of)}
    missing = [tuple(v) for v in views.tolist() if tuple(v) not in row]
    if missing:
        raise ArtifactError(f"{where}: has no view {missing[0]}; run `dvc repro`")
    return np.array([row[(int(i), int(f))] for i, f in views], dtype=np.int64)


class ViewSet:
    """Images and boxes of the views of a prepared dataset."""

    def __init__(self, prepared: PreparedDataset, views: np.ndarray) -> None:
        self.prepared = prepared
        self.views = views

    def __len__(self) -> int:
        return len(self.views)

    def size(self, v: int) -> tuple[int, int]:
        height, width = self.prepared.image_sizes[self.views[v, 0]]
        return int(height), int(width)

    def scale(self, v: int) -> float:
        """Resized / original size of the view's image."""
        return float(self.prepared.scales[self.views[v, 0]])

    def image(self, v: int) -> Tensor:
        image, flipped = self.views[v]
        return normalise(self.prepared.images[image], *self.size(v), bool(flipped))

    def boxes(self, v: int) -> Tensor:
        image, flipped = self.views[v]
        boxes = self.prepared.boxes(int(image))
        return flip_boxes(boxes, self.size(v)[1]) if flipped else boxes

    def labels(self, v: int) -> Tensor:
        return self.prepared.labels(int(self.views[v, 0]))

    def of_split(self, split: int) -> np.ndarray:
        """Indices of the views whose image is in `split`."""
        return np.nonzero(self.prepared.split[self.views[:, 0]] == split)[0]


class ViewImages:
    """Reader: the images of a batch of views on one canvas (steps 1 and 2 feed them to the
    backbone)."""

    def __init__(self, views: ViewSet) -> None:
        self.views = views

    def __call__(self, batch: list[int]) -> Tensor:
        return batch_images([self.views.image(v) for v in batch])


def batch_images(images: list[Tensor]) -> Tensor:
    """[B, 3, H, W]: each image top-left on a zero canvas as large as the largest."""
    height = max(i.shape[1] for i in images)
    width = max(i.shape[2] for i in images)
    batch = images[0].new_zeros(len(images), 3, height, width)
    for b, image in enumerate(images):
        batch[b, :, : image.shape[1], : image.shape[2]] = image
    return batch
