"""Boxes with captions drawn on an image: what `frcnn show`, `frcnn detect --draw` and the
evaluation samples produce."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.evaluation.outcomes import (
    BACKGROUND,
    DUPLICATE,
    IGNORED,
    POOR_LOCALISATION,
    TRUE_POSITIVE,
    WRONG_CLASS,
)

GT = (0, 200, 220)
DETECTION = (255, 60, 60)
PROPOSAL = (255, 200, 0)
POSITIVE_ANCHOR = (0, 160, 255)
NEGATIVE_ANCHOR = (120, 120, 120)


def draw_boxes(
    image: Image.Image,
    boxes: np.ndarray,
    colour: tuple[int, int, int],
    captions: Sequence[str] | None = None,
    width: int = 2,
) -> Image.Image:
    """Draw [N, 4] boxes (x1, y1, x2, y2) onto `image` in place and return it. A caption
    sits on a label in the box's colour above the box (inside it at the image's top edge)."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    for n, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = box.tolist()
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if captions is not None and captions[n]:
            left, top, right, bottom = draw.textbbox((x1, y1), captions[n], font=font)
            lift = bottom - top + 3 if y1 >= bottom - top + 3 else -width
            draw.rectangle([left, top - lift - 1, right + 3, bottom - lift + 1], fill=colour)
            draw.text((x1 + 1, y1 - lift), captions[n], fill=ink, font=font)
    return image


OUTCOME_COLOURS = {
    TRUE_POSITIVE: (40, 200, 40),
    DUPLICATE: (255, 150, 0),
    WRONG_CLASS: (220, 0, 220),
    POOR_LOCALISATION: (250, 230, 0),
    BACKGROUND: (255, 40, 40),
    IGNORED: (160, 160, 160),
}
MISSED = (0, 120, 255)
MISSED_LABEL = "missed object"


def enlarged(image: Image.Image, scale: float) -> Image.Image:
    """`image` resized by `scale`, so that boxes and captions on a small image stay legible."""
    if scale == 1:
        return image.copy()
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.BILINEAR)


def auto_scale(image: Image.Image, shorter_side: int = 576) -> int:
    """The whole factor that brings the shorter side of `image` to at least `shorter_side`."""
    return max(1, -(-shorter_side // min(image.width, image.height)))


def with_legend(
    image: Image.Image, entries: Sequence[tuple[str, tuple[int, int, int]]]
) -> Image.Image:
    """`image` above a strip naming what each box colour means."""
    font = ImageFont.load_default(size=13)
    probe = ImageDraw.Draw(image)
    widths = [28 + int(probe.textlength(label, font=font)) + 16 for label, _ in entries]
    rows, x = 1, 8
    for w in widths:  # wrap the entries onto as many rows as the width needs
        if x + w > image.width and x > 8:
            rows, x = rows + 1, 8
        x += w
    out = Image.new("RGB", (image.width, image.height + 22 * rows + 6), "white")
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    x, y = 8, image.height + 6
    for (label, colour), w in zip(entries, widths, strict=True):
        if x + w > image.width and x > 8:
            x, y = 8, y + 22
        draw.rectangle([x, y + 3, x + 20, y + 15], outline=colour, width=3)
        draw.text((x + 28, y + 2), label, fill=(0, 0, 0), font=font)
        x += w
    return out


def draw_outcomes(
    picture: Image.Image,
    boxes: np.ndarray,
    captions: Sequence[str],
    outcomes: Sequence[str],
    missed_boxes: np.ndarray,
    missed_captions: Sequence[str],
    scale: float,
) -> Image.Image:
    """Detections coloured by outcome and the missed objects, on `picture` enlarged by
    `scale`, with a legend of the colours that appear."""
    out = enlarged(picture, scale)
    draw_boxes(out, np.asarray(missed_boxes) * scale, MISSED, missed_captions)
    boxes = np.asarray(boxes).reshape(-1, 4) * scale
    for outcome, colour in OUTCOME_COLOURS.items():
        chosen = [n for n, o in enumerate(outcomes) if o == outcome]
        draw_boxes(out, boxes[chosen], colour, [captions[n] for n in chosen])
    shown = [(o, c) for o, c in OUTCOME_COLOURS.items() if o in outcomes]
    if len(missed_boxes):
        shown.append((MISSED_LABEL, MISSED))
    return with_legend(out, shown or [("no detections, nothing missed", (255, 255, 255))])
