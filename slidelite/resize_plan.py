"""The geometry of preprocessing (resize, then centre crop) and the fast way to compute it: a per-size plan
that reads only the source pixels under the crop.

The exact path (``preprocessing="exact"``, timm's eval transform) resizes the whole image and then crops.
A :class:`ResizePlan` gives the same geometry from far less work (``preprocessing="fast"``, the default):

1. **region**: only the source pixels the crop depends on (the crop box mapped back onto the source, widened
   by the filter's reach) are cut out, colour-converted and resampled, band by band; the rest of the frame is
   never read;
2. **reduce**: when the crop box is more than :data:`REDUCING_GAP` times the output size, Pillow's
   ``Image.reduce`` (mean of ``f x f`` blocks, integer arithmetic) first shrinks the region by the integer
   factor ``f = floor(scale / REDUCING_GAP)``, as ``Image.resize(..., reducing_gap=...)`` does;
3. **resize**: Pillow's antialiased resize of the crop box (in region coordinates) straight to the model's
   input size; no intermediate full-size image is made.

When the resize is a no-op (the image already has the resized size, e.g. it is the model's size) the plan
only crops, so its output is identical to the exact path's. Otherwise values differ by a few levels
(measured in ``docs/benchmarks.md``, "Camera path"). Plans are cached per (image size, model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional, Tuple

from PIL import Image

from .metadata import InputSpec, PreprocessSpec

Box = Tuple[int, int, int, int]

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
#: Half-width of each filter in output pixels (Pillow's ``_filters_support``); nearest reads one pixel.
_SUPPORT = {"nearest": 0.5, "bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0, "box": 0.5, "hamming": 1.0}
#: Shrink by an integer factor first when the crop box is more than this many times the output size. 2.0 is
#: what ``Image.thumbnail`` uses; the difference it makes to the tensor and to the classifier is measured by
#: ``benchmarks/camera_path.py``.
REDUCING_GAP = 2.0
#: A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) only while it stays at least this many
#: times the size it is resized to: the plan's own antialiased resize then still does part of the shrinking.
#: Measured by ``benchmarks/camera_path.py``.
DRAFT_HEADROOM = 2.0
#: Source rows loaded, colour-converted and reduced at a time (see :meth:`ResizePlan.shrink`).
BAND_ROWS = 256
#: Extra source pixels on each side of the filter's reach (rounding in Pillow's tap placement).
_MARGIN = 2


def resized_size(width: int, height: int, inp: InputSpec, pre: PreprocessSpec) -> Tuple[int, int]:
    """The (width, height) an image of the given size is resized to before the centre crop."""
    scale_h = math.floor(inp.height / pre.crop_pct)
    scale_w = math.floor(inp.width / pre.crop_pct)
    if pre.resize_mode == "squash":
        return scale_w, scale_h
    if scale_h == scale_w:
        short, long = min(width, height), max(width, height)
        new_long = int(scale_h * long / short)
        return (scale_h, new_long) if width <= height else (new_long, scale_h)
    ratio = min(height / scale_h, width / scale_w)
    return round(width / ratio), round(height / ratio)


def crop_offsets(size: Tuple[int, int], inp: InputSpec) -> Tuple[int, int]:
    """(left, top) of the centre crop in an image of ``size`` (torchvision ``CenterCrop`` rounding)."""
    return int(round((size[0] - inp.width) / 2.0)), int(round((size[1] - inp.height) / 2.0))


@dataclass(frozen=True)
class ResizePlan:
    """How one source size becomes the model's input size.

    Attributes:
        region: the source pixels the output depends on, ``(left, upper, right, lower)``.
        size: the output (width, height).
        box: the crop box in the coordinates of the (reduced) region; None when the region is the crop.
        reduce: the integer ``(x, y)`` factors of ``Image.reduce`` applied to the region first.
        resample: the Pillow filter.
    """

    region: Box
    size: Tuple[int, int]
    box: Optional[Tuple[float, float, float, float]]
    reduce: Tuple[int, int]
    resample: Image.Resampling

    def shrink(self, load: Callable[[Box], Image.Image]) -> Image.Image:
        """The plan's region, reduced by its factors, from ``load(box)``: the source pixels in ``box`` as an image in
        the model's colour mode. With a reduce the region is loaded and reduced in bands of about
        :data:`BAND_ROWS` rows (a whole number of reduce blocks each, so the result is the same as reducing it
        whole): a band stays in the CPU's cache and its memory is reused, where a 12-megapixel frame's region,
        copied whole, would cost more than twice the time."""
        if self.reduce == (1, 1):
            return load(self.region)
        left, upper, right, lower = self.region
        step = max(1, BAND_ROWS // self.reduce[1]) * self.reduce[1]
        shrunk: Optional[Image.Image] = None
        for top in range(upper, lower, step):
            band = load((left, top, right, min(lower, top + step))).reduce(self.reduce)
            if shrunk is None:
                shrunk = Image.new(band.mode, (band.width, -(-(lower - upper) // self.reduce[1])))
            shrunk.paste(band, (0, (top - upper) // self.reduce[1]))
        assert shrunk is not None  # a region has at least one row
        return shrunk

    def apply(self, shrunk: Image.Image) -> Image.Image:
        """Resample the :meth:`shrink` result to the output size."""
        if self.box is None:
            return shrunk
        return shrunk.resize(self.size, self.resample, box=self.box)


@lru_cache(maxsize=64)
def plan_resize(width: int, height: int, inp: InputSpec, pre: PreprocessSpec) -> ResizePlan:
    """The :class:`ResizePlan` of a ``width`` x ``height`` image for a model's input and preprocessing."""
    resized = resized_size(width, height, inp, pre)
    left, top = crop_offsets(resized, inp)
    out = (inp.width, inp.height)
    resample = RESAMPLING[pre.interpolation]
    if resized == (width, height):
        return ResizePlan((left, top, left + inp.width, top + inp.height), out, None, (1, 1), resample)
    scale_x, scale_y = width / resized[0], height / resized[1]
    support = _SUPPORT[pre.interpolation]
    x0, x1, fx = _axis(left * scale_x, (left + inp.width) * scale_x, scale_x, width, support, pre.interpolation)
    y0, y1, fy = _axis(top * scale_y, (top + inp.height) * scale_y, scale_y, height, support, pre.interpolation)
    box = ((left * scale_x - x0) / fx, (top * scale_y - y0) / fy,
           ((left + inp.width) * scale_x - x0) / fx, ((top + inp.height) * scale_y - y0) / fy)
    return ResizePlan((x0, y0, x1, y1), out, box, (fx, fy), resample)


def _axis(start: float, stop: float, scale: float, length: int, support: float,
          interpolation: str) -> Tuple[int, int, int]:
    """Along one axis: the region ``[first, last)`` that the crop ``[start, stop)`` reads, and the reduce factor.

    The filter reaches ``support * max(scale / factor, 1)`` reduced pixels past the box; the region ends on a
    whole number of reduce blocks unless it reaches the image's edge.
    """
    factor = 1 if interpolation == "nearest" else max(1, int(scale / REDUCING_GAP))
    reach = factor * (support * max(scale / factor, 1.0) + _MARGIN)
    first = max(0, math.floor(start - reach))
    last = min(length, math.ceil(stop + reach))
    last = min(length, first + -(-(last - first) // factor) * factor)
    return first, last, factor


def draft_size(width: int, height: int, inp: InputSpec, pre: PreprocessSpec) -> Tuple[int, int]:
    """The smallest (width, height) a ``width`` x ``height`` JPEG may be decoded at (see :data:`DRAFT_HEADROOM`)."""
    resized = resized_size(width, height, inp, pre)
    return math.ceil(resized[0] * DRAFT_HEADROOM), math.ceil(resized[1] * DRAFT_HEADROOM)
