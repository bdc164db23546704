"""The trained detector as a library: load the exported file, detect objects in images of any
kind and size, in batches, on the device of your choice.

    from pipeline.api import Detector

    detector = Detector.load("data/model/faster_rcnn.pt", device="cpu")
    for found in detector.detect(["street.jpg", pil_image, numpy_image], batch_size=4):
        for box, score, name in zip(found.boxes, found.scores, found.names):
            print(name, score, box)  # box: x1, y1, x2, y2 in the image's own pixels

Test-time views are chosen per call: `views="exported"` detects as `evaluate` measured (the
views, box voting and refinement the exported file records), `views="one"` looks once at the
image at its own size, as the paper does, and runs a batch's images through the network
together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.artifacts.exported_model import load_detector
from pipeline.data.images import TO_RGB, decode_image, read_image_bytes
from pipeline.errors import FrcnnError
from pipeline.model.faster_rcnn import FasterRCNN

ImageLike = str | Path | Image.Image | np.ndarray | Tensor
Views = Literal["exported", "one"]
VIEWS: tuple[Views, ...] = ("exported", "one")


@dataclass(frozen=True)
class Detections:
    """What the detector found in one image, highest score first."""

    boxes: np.ndarray  # [K, 4] float32: x1, y1, x2, y2 in the image's own pixels
    scores: np.ndarray  # [K] float32
    labels: np.ndarray  # [K] int64: index into `Detector.classes` (0 is the background)
    names: tuple[str, ...]  # the class name of each detection

    def __len__(self) -> int:
        return len(self.scores)


def as_rgb(image: ImageLike, name: str = "image") -> np.ndarray:
    """[H, W, 3] uint8 RGB from a file path, a PIL image, a numpy array ([H, W, 3] or [H, W]
    uint8) or a tensor ([3, H, W] uint8, or float in [0, 1] as torchvision's `to_tensor`
    makes); anything else is a one-line FrcnnError naming `name`."""
    if isinstance(image, str | Path):
        path = Path(image)
        return np.asarray(decode_image(read_image_bytes(path), path))
    if isinstance(image, Image.Image):
        if image.mode not in TO_RGB:
            raise FrcnnError(f"{name}: a PIL image of mode {image.mode}; convert it to RGB first")
        return np.asarray(image.convert("RGB"))
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise FrcnnError(f"{name}: a tensor of shape {list(image.shape)}, expected [3, H, W]")
        if image.is_floating_point():
            pixels = image.detach().float().cpu()
            if not (torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
                raise FrcnnError(f"{name}: a float tensor with values outside [0, 1]")
            image = (pixels * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise FrcnnError(f"{name}: a tensor of {image.dtype}, expected uint8 or float")
        return image.cpu().permute(1, 2, 0).contiguous().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise FrcnnError(f"{name}: an array of {image.dtype}, expected uint8")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise FrcnnError(f"{name}: an array of shape {list(image.shape)}, expected [H, W, 3]")
        return np.ascontiguousarray(image)
    raise FrcnnError(f"{name}: a {type(image).__name__}, not an image path, PIL image or array")


class Detector:
    """An exported Faster R-CNN, ready to detect: `Detector.load(path)`, then `detect`."""

    def __init__(self, model: FasterRCNN) -> None:
        self.model = model.eval()

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Detector:
        """The detector `export` wrote to `path`, on `device` ("cpu", "cuda", "cuda:1" or
        "auto"); a missing, damaged or foreign file is an ArtifactError naming it."""
        on = _device(device)  # before the file is read: a typo here costs nothing
        return cls(load_detector(path).to(on))

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names by label; label 0 is the background."""
        return self.model.config.classes

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def detect(
        self,
        images: ImageLike | Sequence[ImageLike],
        batch_size: int = 1,
        views: Views = "exported",
        score_thresh: float = 0.0,
    ) -> list[Detections]:
        """Detections of each image (one image or a list), in order; `score_thresh` drops the
        weaker ones (the file's own threshold applies in any case)."""
        single = isinstance(images, str | Path | Image.Image | np.ndarray | Tensor)
        found = list(self.detect_each([images] if single else images, batch_size, views))
        kept = [_above(f, score_thresh) for f in found]
        return kept

    def detect_each(
        self, images: Sequence[ImageLike], batch_size: int = 1, views: Views = "exported"
    ) -> Iterator[Detections]:
        """`detect`, one result at a time, as each batch finishes (for progress bars)."""
        if batch_size < 1:
            raise FrcnnError(f"batch_size is {batch_size}; allowed: an integer >= 1")
        if views not in VIEWS:
            raise FrcnnError(f"views is {views!r}; allowed: {' | '.join(VIEWS)}")
        for start in range(0, len(images), batch_size):
            batch = [
                as_rgb(image, _name(image, start + i))
                for i, image in enumerate(images[start : start + batch_size])
            ]
            yield from self._detect_batch(batch, views)

    @torch.no_grad()
    def _detect_batch(self, batch: list[np.ndarray], views: Views) -> list[Detections]:
        if views == "exported":
            return [self._detections(self.model.detect(pixels)) for pixels in batch]
        inputs = [self.model.network_input(pixels) for pixels in batch]
        found: dict[int, Detections] = {}
        # Images of one padded size share a forward pass; padding a smaller image further
        # would change its features at the border, and so its detections.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (image, _, _) in enumerate(inputs):
            by_shape.setdefault(tuple(image.shape), []).append(i)
        for members in by_shape.values():
            outs = self.model.detect_one_view([inputs[i] for i in members])
            found.update((i, self._detections(out)) for i, out in zip(members, outs, strict=True))
        return [found[i] for i in range(len(batch))]

    def _detections(self, out: dict[str, Tensor]) -> Detections:
        labels = out["labels"].cpu().numpy().astype(np.int64)
        return Detections(
            boxes=out["boxes"].float().cpu().numpy(),
            scores=out["scores"].float().cpu().numpy(),
            labels=labels,
            names=tuple(self.classes[label] for label in labels.tolist()),
        )


def _above(found: Detections, score_thresh: float) -> Detections:
    keep = found.scores >= score_thresh
    return Detections(
        found.boxes[keep],
        found.scores[keep],
        found.labels[keep],
        tuple(n for n, k in zip(found.names, keep.tolist(), strict=True) if k),
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = f"device {name!r}: not a device here; allowed: cpu, cuda, cuda:N, auto"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise FrcnnError(allowed) from None
    if device.type not in ("cpu", "cuda"):
        raise FrcnnError(allowed)
    if not torch.cuda.is_available() and device.type == "cuda":
        raise FrcnnError(f"device {name!r}: no CUDA device is visible here; use cpu")
    return device


def _name(image: ImageLike, index: int) -> str:
    return str(image) if isinstance(image, str | Path) else f"image {index}"
