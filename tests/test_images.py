"""Images are decoded as a person sees them: EXIF orientation applied, 16-bit scaled to 8-bit,
and a decompression bomb refused in one line."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import decode_image, image_size
from pipeline.errors import DatasetError

WHERE = Path("photo.jpg")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied_to_the_pixels_and_the_size():
    stored = np.zeros((40, 60, 3), dtype=np.uint8)  # 60 wide, 40 tall as stored
    stored[:, :10] = 255  # a white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: the band is on top
    data = encoded(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    assert image_size(data, WHERE) == (60, 40)
    shown = np.asarray(decode_image(data, WHERE))
    assert shown.shape == (60, 40, 3)
    assert shown[:8].mean() > 200 and shown[-8:].mean() < 50


def test_sixteen_bit_images_are_scaled_not_saturated():
    values = np.array([[0, 257 * 64, 32768, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(values), "PNG")
    decoded = np.asarray(decode_image(data, WHERE))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 64, 128, 255])


def test_a_decompression_bomb_is_one_line(monkeypatch):
    data = encoded(Image.new("RGB", (64, 64)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 * 64 > 2 * 1000
    with pytest.raises(DatasetError, match=r"photo.jpg: refused as a decompression bomb"):
        image_size(data, WHERE)
    with pytest.raises(DatasetError, match=r"photo.jpg: refused as a decompression bomb"):
        decode_image(data, WHERE)
