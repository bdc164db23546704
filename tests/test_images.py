"""Images are decoded as a person sees them: EXIF orientation applied, each mode scaled by its
real range (or refused), a decompression bomb or a file that is no regular file refused in one
line."""

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import decode_image, image_size, read_image_bytes
from pipeline.data.records import read_text
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


def test_a_very_large_image_is_one_warning_naming_it(monkeypatch, caplog):
    data = encoded(Image.new("RGB", (64, 64)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 3000 < 64 * 64 <= 2 * 3000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warning would fail here
        assert image_size(data, WHERE) == (64, 64)
        assert decode_image(data, WHERE).size == (64, 64)
    assert [r.getMessage() for r in caplog.records] == [
        "photo.jpg: 64x64, a very large image: each read decodes it whole (0 MiB) before it is "
        "resized"
    ]


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", [0, 257 * 64, 65535], [0, 64, 255]),  # 16-bit values held in 32 bits
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),
    ],
)
def test_32_bit_images_in_their_range_are_scaled(mode, values, expected):
    dtype = np.int32 if mode == "I" else np.float32
    data = encoded(Image.fromarray(np.array([values], dtype=dtype), mode), "TIFF")
    decoded = np.asarray(decode_image(data, WHERE))
    np.testing.assert_array_equal(decoded[0, :, 0], expected)


@pytest.mark.parametrize(
    ("mode", "values"), [("I", [0, 70000, 1 << 30]), ("F", [0.0, 2.5, 100.0]), ("F", [-1.0, 0.5])]
)
def test_32_bit_images_outside_a_known_range_are_refused_naming_the_file(mode, values):
    """They would otherwise come out all white or all black."""
    dtype = np.int32 if mode == "I" else np.float32
    data = encoded(Image.fromarray(np.array([values], dtype=dtype), mode), "TIFF")
    with pytest.raises(DatasetError, match=r"photo.jpg: 32-bit .* pixels outside 0-"):
        decode_image(data, WHERE)


def test_a_mode_with_no_rule_is_refused_naming_it():
    data = encoded(Image.new("LAB", (4, 4)), "TIFF")
    with pytest.raises(DatasetError, match=r"photo.jpg: images of mode LAB are not supported"):
        decode_image(data, WHERE)


def test_only_regular_files_are_read(tmp_path):
    """A named pipe in the image folder would block the reader forever."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match=r"x.jpg: not a regular file"):
        read_image_bytes(fifo)
    with pytest.raises(DatasetError, match=r"x.jpg: not a regular file"):
        read_text(fifo)
    with pytest.raises(DatasetError, match=r": not a regular file"):
        read_image_bytes(tmp_path)
