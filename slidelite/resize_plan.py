"""The geometry of preprocessing (resize, then centre crop) and the fast way to compute it: a per-size plan
that reads only the source pixels under the crop.

The exact path (``preprocessing="exact"``, timm's eval transform) resizes the whole image and then crops.
A :class:`ResizePlan` gives the same geometry from far less work (``preprocessing="fast"``, the default):

1. **region**: only the source pixels the crop depends on (the crop box mapped back onto the source, widened
   by the filter's reach) are read; the rest of the frame is never touched;
2. **reduce**: when the crop box is more than :data:`REDUCING_GAP` times the output size, the region is first
   shrunk by the integer factor ``f = floor(scale / REDUCING_GAP)`` (mean of ``f x f`` blocks, integer
   arithmetic), as ``Image.resize(..., reducing_gap=...)`` does: a PIL image by Pillow's ``Image.reduce``, a
   uint8 frame by :func:`reduce_rows` (numpy, straight from the frame's memory) and then Pillow along the rows;
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
from typing import Optional, Tuple

import numpy as np
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
#: ``benchmarks/camera_path.py``. Smaller gaps (larger factors, less work for the final resize: 1.6 took a
#: third off a 1080p frame) blurred more than the exact path: up to 14 levels apart, and the default model's
#: top-1 changed on a 1280x720 and a 3840x2160 frame of the 16 test photos.
REDUCING_GAP = 2.0
#: A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) only while it stays at least this many
#: times the size it is resized to: the plan's own antialiased resize then still does part of the shrinking.
#: Measured by ``benchmarks/camera_path.py``.
DRAFT_HEADROOM = 2.0
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

    def shrink_array(self, pixels: np.ndarray) -> Image.Image:
        """The plan's region of a uint8 image array (HxW or HxWx3, already in the model's colour mode), reduced by
        the plan's factors: rows by :func:`reduce_rows` (numpy, one pass over the region, no copy of it first),
        then columns by Pillow. Bit-identical to :meth:`shrink_image` on the same pixels."""
        left, upper, right, lower = self.region
        region = pixels[upper:lower, left:right]
        if self.reduce[1] > 1:
            region = reduce_rows(region, self.reduce[1])
        return self._reduce_columns(Image.fromarray(np.ascontiguousarray(region)))

    def shrink_image(self, image: Image.Image, region: Optional[Box] = None) -> Image.Image:
        """The plan's region of ``image`` (in the model's colour mode; ``region``: where the plan's region lies in
        it, when it is not the whole source) reduced by the plan's factors with Pillow's ``Image.reduce``, rows
        first and then columns, rounding as :meth:`shrink_array` does."""
        box = self.region if region is None else region
        if self.reduce[1] > 1:
            image = image.reduce((1, self.reduce[1]), box=box)
        elif box != (0, 0, *image.size):
            image = image.crop(box)
        return self._reduce_columns(image)

    def _reduce_columns(self, image: Image.Image) -> Image.Image:
        return image.reduce((self.reduce[0], 1)) if self.reduce[0] > 1 else image

    def apply(self, shrunk: Image.Image) -> Image.Image:
        """Resample the :meth:`shrink_array` or :meth:`shrink_image` result to the output size."""
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


def reduce_rows(pixels: np.ndarray, factor: int) -> np.ndarray:
    """The mean of every ``factor`` (>= 2) rows of a uint8 image array (HxW or HxWxC; a last, shorter group is the
    mean of its own rows), rounded as Pillow's ``Image.reduce((1, factor))`` rounds, so the two agree bit for bit
    (for factors below 256; within one level above).

    Whole rows are added in uint16 (numpy's vector loops over contiguous memory): one pass reads the source and
    nothing is made at full resolution; Pillow, which stores RGB as 4 bytes a pixel, would need a copy first.
    """
    if pixels.ndim == 3 and pixels.strides[2] < 0:  # an RGB view of a BGR frame (OpenCV's): add its BGR rows as
        return reduce_rows(pixels[..., ::-1], factor)[..., ::-1]  # they lie in memory, reverse the small result
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    groups, rest = divmod(height, factor)
    wide = np.uint16 if factor <= 256 else np.uint32  # the sum of ``factor`` bytes fits
    out = np.empty((groups + (rest > 0), rows.shape[1]), np.uint8)
    if groups:
        blocks = rows[:groups * factor].reshape(groups, factor, -1)
        sums = np.add(blocks[:, 0], blocks[:, 1], dtype=wide)
        for k in range(2, factor):
            np.add(sums, blocks[:, k], out=sums)
        _pillow_mean(sums, factor, out[:groups])
    if rest:
        _pillow_mean(rows[groups * factor:].sum(axis=0, dtype=wide, keepdims=True), rest, out[groups:])
    return out.reshape((out.shape[0], *pixels.shape[1:]))


def _pillow_mean(sums: np.ndarray, count: int, out: np.ndarray) -> None:
    """``out = sums / count`` rounded as Pillow's reduce does (``(sum + count // 2) * floor(2**24 / count) >> 24``):
    half up for a power of two, else ``(sum + count // 2 - 1) // count``, the same for 8-bit sums of fewer than 256
    values; ``sums`` is overwritten."""
    if count & (count - 1) == 0:
        sums += count // 2
        sums >>= count.bit_length() - 1
    else:
        sums += count // 2 - 1
        sums //= count
    np.copyto(out, sums, casting="unsafe")
