"""Reading and resizing images: the shorter side to `min_size`, the longer capped at `max_size`."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from pipeline.data.records import read_regular_file
from pipeline.errors import DatasetError

log = logging.getLogger(__name__)

# Prepared canvases are padded to a multiple of this, which every supported feature stride
# divides, so that a backbone's pooling windows line up with the anchor grid.
CANVAS_MULTIPLE = 32
# ImageNet statistics; images are normalised with them whatever the backbone.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def read_image_bytes(path: Path) -> bytes:
    try:
        return read_regular_file(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image ({exc.strerror})") from None


# EXIF orientations that turn the stored image by 90 degrees when it is displayed.
TRANSPOSED = {5, 6, 7, 8}
EXIF_ORIENTATION = 0x0112
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def _open(data: bytes, path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():  # `image_size` says it once, naming the file
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise DatasetError(
            f"{path}: refused as a decompression bomb (more than {2 * Image.MAX_IMAGE_PIXELS} "
            "pixels)"
        ) from None
    except UNREADABLE as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


# Pillow modes that convert to RGB as a viewer shows them (alpha dropped, palettes looked up).
TO_RGB = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


def decode_image(data: bytes, path: Path) -> Image.Image:
    """The image as displayed (EXIF orientation applied, as annotation tools show it), in 8-bit
    RGB; a truncated or non-image file is a DatasetError.

    Each mode by its real range: 8-bit modes as Pillow converts them; 16-bit greyscale scaled
    from 0-65535 (not clipped); 32-bit integer greyscale the same when every value is in
    0-65535 (how Pillow widens some 16-bit files), 32-bit float greyscale from 0-1; any other
    range or mode has no scale to read it by and is refused, naming the file."""
    image = _open(data, path)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except UNREADABLE as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
    if image.mode in TO_RGB:
        return image.convert("RGB")
    if image.mode in SIXTEEN_BIT or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" else 65535.0
        if values.size and not (
            np.isfinite(values).all() and values.min() >= 0 and values.max() <= top
        ):
            kind = "float" if image.mode == "F" else "integer"
            raise DatasetError(
                f"{path}: 32-bit {kind} pixels outside 0-{top:g} "
                f"({values.min():g} to {values.max():g}): no range to scale them to 8 bits by; "
                "save the image with 8 or 16 bits per channel"
            )
        grey = (values * (255.0 / top)).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    raise DatasetError(f"{path}: images of mode {image.mode} are not supported; save it as RGB")


def image_size(data: bytes, path: Path) -> tuple[int, int]:
    """(height, width) as displayed, from the header only, without decoding the pixels."""
    image = _open(data, path)
    width, height = image.size
    if width * height > Image.MAX_IMAGE_PIXELS:
        log.warning(
            "%s: %dx%d, a very large image: each read decodes it whole (%.0f MiB) before it is "
            "resized",
            path,
            width,
            height,
            width * height * 3 / 2**20,
        )
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except UNREADABLE:
        orientation = 1
    return (width, height) if orientation in TRANSPOSED else (height, width)


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """The factor that brings the shorter side to min_size unless the longer would pass max_size."""
    scale = min_size / min(height, width)
    if round(max(height, width) * scale) > max_size:
        scale = max_size / max(height, width)
    return scale


def resized_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def canvas_shape(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """The smallest canvas that holds every image, padded up to CANVAS_MULTIPLE."""
    return padded(max(h for h, _ in shapes)), padded(max(w for _, w in shapes))


def to_canvas(image: Image.Image, shape: tuple[int, int], canvas: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8: the image resized to `shape`, top-left on a zero canvas."""
    height, width = shape
    resized = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    out = np.zeros((*canvas, 3), dtype=np.uint8)
    out[:height, :width] = resized
    return out


def padded(n: int) -> int:
    return -(-n // CANVAS_MULTIPLE) * CANVAS_MULTIPLE


def normalise(pixels: np.ndarray, height: int, width: int, flipped: bool) -> Tensor:
    """[3, H', W'] float32: the valid region normalised, mirrored if asked, zero padding
    up to the next CANVAS_MULTIPLE."""
    image = torch.from_numpy(np.array(pixels[:height, :width])).float() / 255.0
    if flipped:
        image = image.flip(1)
    image = (image - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    out = torch.zeros(3, padded(height), padded(width))
    out[:, :height, :width] = image.permute(2, 0, 1)
    return out


def augmented_view(
    image: Tensor, size: tuple[int, int], factor: float, flipped: bool
) -> tuple[Tensor, tuple[int, int]]:
    """One view of a normalised, padded [3, H', W'] image for test-time augmentation: its
    `size` (height, width) region resized by `factor` and mirrored if asked, zero-padded up
    to the next CANVAS_MULTIPLE; and the view's own size. Factor 1 unmirrored is the image."""
    height, width = size
    region = image[:, :height, :width]
    if flipped:
        region = region.flip(2)
    if factor != 1.0:
        size = resized_shape(height, width, factor)
        region = F.interpolate(
            region[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0]
    out = region.new_zeros(3, padded(size[0]), padded(size[1]))
    out[:, : size[0], : size[1]] = region
    return out, size
