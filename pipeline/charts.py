"""Line and bar charts as PNG-ready images, drawn with Pillow alone: loss curves, PR curves and
AP by object size that open anywhere, with no plotting library and no network. Same data, same
pixels: the figures are pipeline outputs, hashed by DVC like any other."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 170, 34, 44  # margins: axis labels left and below, legend right
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
INK, GRID = (30, 30, 30), (225, 225, 225)


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering
    [low, high]."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))
    return f"{value:.3g}"


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _frame(
    title: str,
    x_label: str,
    y_label: str,
    x_ticks: list[float],
    y_ticks: list[float],
    x_tick_labels: bool = True,
) -> tuple[Image.Image, ImageDraw.ImageDraw, Callable[[float, float], tuple[float, float]]]:
    """A white figure with title, grid, ticks and axis labels; returns the function mapping
    data (x, y) to pixels."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    small, large = _font(11), _font(14)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    (xa, xb), (ya, yb) = (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1])

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (x0 + (x - xa) / (xb - xa) * (x1 - x0), y0 - (y - ya) / (yb - ya) * (y0 - y1))

    for x in x_ticks:
        px, _ = to_pixel(x, ya)
        draw.line([(px, y1), (px, y0)], fill=GRID)
        if x_tick_labels:
            draw.text((px, y0 + 4), _label(x), fill=INK, font=small, anchor="mt")
    for y in y_ticks:
        _, py = to_pixel(xa, y)
        draw.line([(x0, py), (x1, py)], fill=GRID)
        draw.text((x0 - 4, py), _label(y), fill=INK, font=small, anchor="rm")
    draw.rectangle([x0, y1, x1, y0], outline=INK)
    draw.text(((x0 + x1) / 2, 8), title, fill=INK, font=large, anchor="mt")
    draw.text(((x0 + x1) / 2, HEIGHT - 6), x_label, fill=INK, font=small, anchor="mb")
    label = Image.new("RGB", (int(draw.textlength(y_label, font=small)) + 4, 14), "white")
    ImageDraw.Draw(label).text((2, 0), y_label, fill=INK, font=small)
    rotated = label.rotate(90, expand=True)
    image.paste(rotated, (4, int((y0 + y1) / 2 - rotated.height / 2)))
    return image, draw, to_pixel


def _legend(draw: ImageDraw.ImageDraw, labels: Sequence[str]) -> None:
    font = _font(11)
    for n, label in enumerate(labels):
        y = TOP + 6 + 16 * n
        x = WIDTH - RIGHT + 12
        draw.line([(x, y + 6), (x + 18, y + 6)], fill=PALETTE[n % len(PALETTE)], width=3)
        draw.text((x + 24, y), label, fill=INK, font=font)


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
) -> Image.Image:
    """The series as lines on shared axes, with a legend."""
    xs = [x for s in series for x in s.x] or [0.0, 1.0]
    ys = [y for s in series for y in s.y if math.isfinite(y)] or [0.0, 1.0]
    low, high = y_range if y_range is not None else (min(0.0, min(ys)), max(ys))
    image, draw, to_pixel = _frame(
        title, x_label, y_label, nice_ticks(min(xs), max(xs)), nice_ticks(low, high)
    )
    for n, s in enumerate(series):
        points = [to_pixel(x, y) for x, y in zip(s.x, s.y, strict=True) if math.isfinite(y)]
        colour = PALETTE[n % len(PALETTE)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        elif points:
            (px, py), r = points[0], 3
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
    _legend(draw, [s.label for s in series])
    return image


def bar_chart(values: Mapping[str, float], title: str, y_label: str) -> Image.Image:
    """One bar per key, its value written above it; the y axis from 0 to at least 1."""
    y_ticks = nice_ticks(0.0, max([1.0, *values.values()]))
    names = list(values)
    image, draw, to_pixel = _frame(
        title, "", y_label, [0.0, float(len(names))], y_ticks, x_tick_labels=False
    )
    font = _font(11)
    for n, name in enumerate(names):
        left, base = to_pixel(n + 0.2, 0.0)
        right, top = to_pixel(n + 0.8, max(values[name], 0.0))
        draw.rectangle([left, top, right, base], fill=PALETTE[n % len(PALETTE)])
        draw.text(((left + right) / 2, top - 2), f"{values[name]:.3f}", fill=INK, font=font,
                  anchor="mb")  # fmt: skip
        draw.text(((left + right) / 2, base + 16), name, fill=INK, font=font, anchor="mt")
    return image


def stacked(images: Sequence[Image.Image]) -> Image.Image:
    """Figures one above the other, in one image."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        out.paste(image, (0, top))
        top += image.height
    return out


def save_png(image: Image.Image, path: Path) -> None:
    """PNG without timestamps or other metadata: the same figure gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False)
