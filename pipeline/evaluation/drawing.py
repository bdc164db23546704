"""Boxes with captions drawn on an image: what `frcnn show`, `frcnn detect --draw` and the
evaluation samples produce."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

GT = (40, 220, 40)
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
    """Draw [N, 4] boxes (x1, y1, x2, y2) onto `image` in place and return it."""
    draw = ImageDraw.Draw(image)
    for n, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = box.tolist()
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if captions is not None and captions[n]:
            left, top, right, bottom = draw.textbbox((x1, y1), captions[n])
            lift = bottom - top + 2
            draw.rectangle([left, top - lift, right + 2, bottom - lift], fill=colour)
            draw.text((x1 + 1, y1 - lift), captions[n], fill=(0, 0, 0))
    return image
