"""Metadata-driven preprocessing: a decoded image becomes the model's input tensor.

This is the ONE implementation, used by the runtime and by the converter's calibration reader. It
follows timm's evaluation transform (``transforms_imagenet_eval``) exactly:

1. colour mode (:func:`slidelite.image.to_color_mode`);
2. resize with PIL (antialiased, as torchvision's ``Resize`` does on PIL images) to
   ``scale = floor(size / crop_pct)``: ``shorter_side`` scales the shorter side to ``scale`` keeping
   the aspect ratio (torchvision ``Resize(int)``: the longer side is truncated with ``int()``; for a
   non-square input timm's ``ResizeKeepRatio`` rounds both sides), ``squash`` resizes both sides to
   their ``scale`` ignoring the aspect ratio;
3. centre crop to (height, width), offsets ``int(round((size - crop) / 2))`` (torchvision
   ``CenterCrop``);
4. ``x = (pixel / 255 - mean) / std`` per channel;
5. layout NCHW or NHWC, batch of one;
6. integer inputs: ``q = round(x / scale) + zero_point``, clipped to the dtype's range.

``fast=True`` (the :class:`slidelite.Classifier` default, ``ClassifierOptions.preprocessing="fast"``) does
steps 1-3 with the same geometry from only the pixels under the crop (:mod:`slidelite.resize_plan`);
its output is identical when no resize is needed and within a few levels otherwise.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from . import resize_plan
from .image import ImageSource, array_pixels, image_from_array, load_image, to_color_mode
from .metadata import InputSpec, ModelMetadata, PreprocessSpec
from .resize_plan import RESAMPLING, crop_offsets, draft_size, plan_resize

_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
#: When the resize before the centre crop would make an image larger than this, only the source region under
#: the crop is resized (same geometry; values may differ by a few levels). Only extreme aspect ratios get
#: here (a 1 x 100000 strip would otherwise become gigabytes); it bounds their time and memory.
MAX_RESIZED_PIXELS = 1 << 22


def resized_size(width: int, height: int, metadata: ModelMetadata) -> Tuple[int, int]:
    """The (width, height) an image of the given size is resized to before the centre crop."""
    return resize_plan.resized_size(width, height, metadata.input, metadata.preprocess)


def resize_and_crop(image: Image.Image, metadata: ModelMetadata, fast: bool = False) -> Image.Image:
    """Colour-convert, resize and centre-crop ``image`` to the model's input size (steps 1-3).

    ``fast`` follows a :class:`slidelite.resize_plan.ResizePlan` (identical output when no resize is needed).
    """
    pre, inp = metadata.preprocess, metadata.input
    if fast:
        plan = plan_resize(image.width, image.height, inp, pre)
        if image.mode == pre.color_mode:
            return plan.apply(plan.shrink_image(image))
        region = to_color_mode(_cropped(image, plan.region), pre.color_mode)  # convert only the pixels needed
        return plan.apply(plan.shrink_image(region, (0, 0, *region.size)))
    img = to_color_mode(image, pre.color_mode)
    size = resized_size(img.width, img.height, metadata)
    left, top = crop_offsets(size, inp)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:  # extreme aspect ratio: resize only the region under the crop
        sx, sy = img.width / size[0], img.height / size[1]
        box = (left * sx, top * sy, (left + inp.width) * sx, (top + inp.height) * sy)
        return img.resize((inp.width, inp.height), RESAMPLING[pre.interpolation], box=box)
    if size != img.size:
        img = img.resize(size, RESAMPLING[pre.interpolation])
    if (left, top, inp.width, inp.height) != (0, 0, img.width, img.height):
        img = img.crop((left, top, left + inp.width, top + inp.height))
    return img


def preprocess(image: Image.Image, metadata: ModelMetadata, fast: bool = False) -> np.ndarray:
    """Turn a decoded image into the model's input tensor: a batch of one (``fast``: see :func:`resize_and_crop`).

    Returns:
        ``(1, C, H, W)`` or ``(1, H, W, C)`` of dtype float32, uint8 or int8 per ``metadata.input``.
    """
    return to_tensor(resize_and_crop(image, metadata, fast), metadata)


def to_tensor(img: Image.Image, metadata: ModelMetadata) -> np.ndarray:
    """Steps 4-6: normalize an image already at the model's size and colour mode into a batch of one.

    Each value is ``float32(pixel) * gain + offset`` in float32 (skipped where the gain is 1 and the offset
    0, which changes nothing), computed on flat rows so that numpy's vector loops do it.
    """
    inp, channels = metadata.input, metadata.preprocess.channels
    pixels = np.asarray(img).reshape(inp.height, inp.width, channels)
    if not inp.channels_last:
        pixels = pixels.transpose(2, 0, 1)
    out = np.empty((1, *pixels.shape), dtype=np.float32)
    np.copyto(out[0], pixels)
    gain, offset = _coefficients(metadata.preprocess, inp)
    if gain is not None:
        rows = out.reshape(inp.height, -1) if inp.channels_last else out.reshape(channels, -1)
        rows *= gain
        rows += offset
    if inp.dtype == "float32":
        return out
    low, high = _INT_RANGES[inp.dtype]
    np.rint(out, out=out)
    np.clip(out, low, high, out=out)
    return out.astype(inp.dtype)


def prepare_input(source: ImageSource, metadata: ModelMetadata, max_pixels: Optional[int] = None,
                  fast: bool = False) -> np.ndarray:
    """Decode ``source`` (:func:`slidelite.image.load_image`) and :func:`preprocess` it.

    ``fast`` follows the source size's :class:`slidelite.resize_plan.ResizePlan`: of a numpy frame only the plan's
    region is read (a uint8 frame already in the model's colour mode has its rows averaged in numpy, see
    :meth:`~slidelite.resize_plan.ResizePlan.shrink_array`; others become an image of the region first), and a JPEG
    is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) while that keeps it at least
    :data:`~slidelite.resize_plan.DRAFT_HEADROOM` times as large as the size it is resized to.
    """
    if not fast:
        return preprocess(load_image(source, max_pixels), metadata)
    inp, pre = metadata.input, metadata.preprocess
    if isinstance(source, np.ndarray):
        pixels = array_pixels(source)
        plan = plan_resize(pixels.shape[1], pixels.shape[0], inp, pre)
        in_color_mode = pixels.ndim == 2 if pre.color_mode == "L" else pixels.ndim == 3 and pixels.shape[2] == 3
        if pixels.dtype == np.uint8 and in_color_mode:
            return to_tensor(plan.apply(plan.shrink_array(pixels)), metadata)
        region = to_color_mode(image_from_array(pixels, region=plan.region), pre.color_mode)
        return to_tensor(plan.apply(plan.shrink_image(region, (0, 0, *region.size))), metadata)
    image = load_image(source, max_pixels, draft_to=lambda w, h: draft_size(w, h, inp, pre))
    return preprocess(image, metadata, fast=True)


def _cropped(image: Image.Image, box: Tuple[int, int, int, int]) -> Image.Image:
    """``image.crop(box)``, or the image itself when the box is all of it (no copy)."""
    return image if box == (0, 0, *image.size) else image.crop(box)


@lru_cache(maxsize=32)
def _coefficients(pre: PreprocessSpec, inp: InputSpec) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Per-channel ``gain``/``offset`` with ``value = pixel * gain + offset`` (quantization folded in), shaped
    for the rows of :func:`to_tensor` (HWC: one value per element of an image row; CHW: one per channel);
    ``(None, None)`` when every gain is 1 and every offset 0."""
    mean = np.broadcast_to(np.asarray(pre.mean, dtype=np.float64), (pre.channels,))
    std = np.broadcast_to(np.asarray(pre.std, dtype=np.float64), (pre.channels,))
    gain, offset = 1.0 / (255.0 * std), -mean / std
    if inp.quantization is not None and inp.dtype != "float32":
        gain = gain / inp.quantization.scale
        offset = offset / inp.quantization.scale + inp.quantization.zero_point
    gain, offset = gain.astype(np.float32), offset.astype(np.float32)
    if (gain == 1).all() and (offset == 0).all():
        return None, None
    if inp.channels_last:
        return np.tile(gain, inp.width), np.tile(offset, inp.width)
    return gain.reshape(-1, 1), offset.reshape(-1, 1)
