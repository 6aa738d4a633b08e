"""Draw the classification on a frame: a dark band at the top with the best label, its score and the fps.

Pillow only (no OpenCV), so the overlay works for the MJPEG preview on a Pi without OpenCV too.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from slidelite.results import ClassificationResult

BAND_COLOR = (0, 0, 0)
TEXT_COLOR = (255, 255, 255)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    """Pillow's bundled font at ``size`` pixels (the fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def overlay_text(result: ClassificationResult, fps: float) -> str:
    """``tabby, tabby cat  81%  |  24.3 fps`` (or ``no category`` when every category was filtered out)."""
    top = result.top
    label = f"{top.label}  {top.score:.0%}" if top else "no category"
    return f"{label}  |  {fps:.1f} fps"


def draw_overlay(image: np.ndarray, result: ClassificationResult, fps: float) -> np.ndarray:
    """A copy of ``image`` (RGB HxWx3 uint8) with :func:`overlay_text` in a band along the top edge."""
    canvas = Image.fromarray(image)
    font = _font(max(12, canvas.height // 24))
    text = overlay_text(result, fps)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(4, (bottom - top) // 3)
    draw.rectangle((0, 0, canvas.width, bottom + 2 * margin), fill=BAND_COLOR)
    draw.text((margin - left, margin), text, font=font, fill=TEXT_COLOR)
    return np.asarray(canvas)
