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
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from .image import ImageSource, load_image, to_color_mode
from .metadata import InputSpec, ModelMetadata, PreprocessSpec

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
#: When the resize before the centre crop would make an image larger than this, only the source region under
#: the crop is resized (same geometry; values may differ by a few levels). Only extreme aspect ratios get
#: here (a 1 x 100000 strip would otherwise become gigabytes); it bounds their time and memory.
MAX_RESIZED_PIXELS = 1 << 22


def resized_size(width: int, height: int, metadata: ModelMetadata) -> Tuple[int, int]:
    """The (width, height) an image of the given size is resized to before the centre crop."""
    pre, inp = metadata.preprocess, metadata.input
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


def resize_and_crop(image: Image.Image, metadata: ModelMetadata) -> Image.Image:
    """Colour-convert, resize and centre-crop ``image`` to the model's input size (steps 1-3)."""
    pre, inp = metadata.preprocess, metadata.input
    img = to_color_mode(image, pre.color_mode)
    size = resized_size(img.width, img.height, metadata)
    top = int(round((size[1] - inp.height) / 2.0))
    left = int(round((size[0] - inp.width) / 2.0))
    if size[0] * size[1] > MAX_RESIZED_PIXELS:  # extreme aspect ratio: resize only the region under the crop
        sx, sy = img.width / size[0], img.height / size[1]
        box = (left * sx, top * sy, (left + inp.width) * sx, (top + inp.height) * sy)
        return img.resize((inp.width, inp.height), _RESAMPLING[pre.interpolation], box=box)
    if size != img.size:
        img = img.resize(size, _RESAMPLING[pre.interpolation])
    if (left, top, inp.width, inp.height) != (0, 0, img.width, img.height):
        img = img.crop((left, top, left + inp.width, top + inp.height))
    return img


def preprocess(image: Image.Image, metadata: ModelMetadata) -> np.ndarray:
    """Turn a decoded image into the model's input tensor: a batch of one.

    Returns:
        ``(1, C, H, W)`` or ``(1, H, W, C)`` of dtype float32, uint8 or int8 per ``metadata.input``.
    """
    img = resize_and_crop(image, metadata)
    inp = metadata.input
    pixels = np.asarray(img).reshape(inp.height, inp.width, metadata.preprocess.channels)
    gain, offset = _coefficients(metadata.preprocess, inp)
    if not inp.channels_last:
        pixels = pixels.transpose(2, 0, 1)
    out = np.empty((1, *pixels.shape), dtype=np.float32)
    np.multiply(pixels, gain, out=out[0])
    out += offset
    if inp.dtype == "float32":
        return out
    low, high = _INT_RANGES[inp.dtype]
    np.rint(out, out=out)
    np.clip(out, low, high, out=out)
    return out.astype(inp.dtype)


def prepare_input(source: ImageSource, metadata: ModelMetadata, max_pixels: Optional[int] = None) -> np.ndarray:
    """:func:`slidelite.image.load_image` followed by :func:`preprocess`."""
    return preprocess(load_image(source, max_pixels), metadata)


@lru_cache(maxsize=32)
def _coefficients(pre: PreprocessSpec, inp: InputSpec) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel ``gain``/``offset`` with ``value = pixel * gain + offset`` (quantization folded in),
    shaped to broadcast over HWC or CHW pixels."""
    mean = np.broadcast_to(np.asarray(pre.mean, dtype=np.float64), (pre.channels,))
    std = np.broadcast_to(np.asarray(pre.std, dtype=np.float64), (pre.channels,))
    gain, offset = 1.0 / (255.0 * std), -mean / std
    if inp.quantization is not None and inp.dtype != "float32":
        gain = gain / inp.quantization.scale
        offset = offset / inp.quantization.scale + inp.quantization.zero_point
    shape = (pre.channels,) if inp.channels_last else (pre.channels, 1, 1)
    return gain.astype(np.float32).reshape(shape), offset.astype(np.float32).reshape(shape)
