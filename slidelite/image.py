"""Image input: decode a file, stream, PIL image or numpy array into a PIL image, and convert it to
the model's colour mode.

Decisions (documented in ``docs/model-format.md``):

* EXIF orientation is applied (files and PIL images); unknown or corrupt orientation data is ignored.
* Animated images (GIF, APNG, WebP, multi-page TIFF) use their first frame.
* Pillow's decompression-bomb guard holds: an image with more than ``max_pixels`` pixels (default:
  ``PIL.Image.MAX_IMAGE_PIXELS``) is refused before its pixels are decoded. The check is done here on
  the header size, so a per-call limit never touches Pillow's global setting. Pillow's own hard limit
  (twice ``MAX_IMAGE_PIXELS``) still applies first; raise that global in your application if you need
  larger images.
* Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).
* Transparency is composited onto a white background (what image viewers and documents show), not
  dropped: the colour under fully transparent pixels is undefined and often black or garbage.
* 16-bit and 32-bit integer images are scaled to 8 bits (``round(v / 257)``), never clipped;
  float images (PIL mode ``F`` and float arrays) are read as values in [0, 1].
"""
from __future__ import annotations

import io
import os
import struct
from typing import IO, Any, Callable, Optional, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._paths import PERMISSION_DENIED, file_problem
from .errors import ImageError

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]
#: ``(width, height)`` of an oriented image -> the smallest ``(width, height)`` it may be decoded at
DraftSize = Callable[[int, int], Tuple[int, int]]

COLOR_MODES = ("RGB", "L")
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_FLOAT_TOLERANCE = 1e-3
# what Pillow's decoders raise on damaged data (plugins parse headers with struct.unpack_from)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_DRAFT_SCALES = (8, 4, 2)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
#: array dtypes converted pixel by pixel with no check of the values: a region of them can be cut out first
_CUTTABLE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.bool_))


def source_name(source: Any) -> str:
    """A short human-readable name of an image source, used in messages and results."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


def load_image(source: ImageSource, max_pixels: Optional[int] = None,
               draft_to: Optional[DraftSize] = None) -> Image.Image:
    """Decode ``source`` into a loaded PIL image with EXIF orientation applied.

    Args:
        source: a path (``str``/``PathLike``), encoded bytes, a binary file object, a PIL image, or a
            numpy array (HxW, HxWx1/2/3/4; uint8, uint16, bool or float in [0, 1]).
        max_pixels: refuse encoded images with more pixels; None uses ``PIL.Image.MAX_IMAGE_PIXELS``.
        draft_to: for a JPEG, the smallest size (given its full oriented size) it may be decoded at: the
            decoder then scales by 1/8, 1/4 or 1/2 (the smallest that keeps both sides at least that large
            and divides them exactly, so the geometry is unchanged). Other formats ignore it.

    Returns:
        A PIL image in whatever mode the source has (see :func:`to_color_mode`).

    Raises:
        ImageError: one line naming the input and the problem.
    """
    name = source_name(source)
    if isinstance(source, Image.Image):
        if not source.width or not source.height:
            raise ImageError(f"{name}: empty image ({source.width}x{source.height} pixels)")
        return _apply_orientation(_load_pixels(source, name))
    if isinstance(source, np.ndarray):
        return image_from_array(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError(f"{name}: zero-byte image data")
        return _decode(io.BytesIO(bytes(source)), name, max_pixels, draft_to)
    if isinstance(source, (str, os.PathLike)):
        problem, _ = file_problem(name)
        if problem:
            raise ImageError(f"{name}: {problem}")
        try:
            with open(name, "rb") as handle:
                return _decode(handle, name, max_pixels, draft_to)
        except PermissionError:
            raise ImageError(f"{name}: {PERMISSION_DENIED}") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if hasattr(source, "read"):
        return _decode(source, name, max_pixels, draft_to)
    raise ImageError(f"{name}: unsupported image source of type {type(source).__name__}")


def _decode(stream: IO[bytes], name: str, max_pixels: Optional[int], draft_to: Optional[DraftSize]) -> Image.Image:
    """Open, size-check, decode the first frame and orient an encoded image."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        img = Image.open(stream)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (cannot identify image format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large, possible decompression bomb ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: corrupt image header ({exc})") from None
    width, height = img.size
    if limit is not None and width * height > limit:
        raise ImageError(
            f"{name}: image too large ({width}x{height} = {width * height} pixels > limit {limit}), "
            "possible decompression bomb"
        )
    if draft_to is not None and img.format == "JPEG":
        _draft(img, draft_to)
    img = _load_pixels(img, name)
    try:
        animated = getattr(img, "is_animated", False)  # reads the next frame's header
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: corrupt animation frame ({exc})") from None
    if animated:
        img = img.copy()  # detach the first frame from the still-open file
    return _apply_orientation(img)


def _load_pixels(img: Image.Image, name: str) -> Image.Image:
    """Decode the pixels of a lazily opened image, turning decoder failures into :class:`ImageError`."""
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        problem = "truncated image data" if "truncated" in str(exc) or isinstance(exc, EOFError) else (
            f"corrupt image data ({exc})"
        )
        raise ImageError(f"{name}: {problem}") from None
    return img


def _draft(img: Image.Image, draft_to: DraftSize) -> None:
    """Let the JPEG decoder scale down by the largest factor that divides both sides and keeps them large enough."""
    width, height = img.size
    swapped = _orientation(img) in _SWAPPING_ORIENTATIONS
    need = draft_to(height, width) if swapped else draft_to(width, height)
    need_width, need_height = (need[1], need[0]) if swapped else need
    for scale in _DRAFT_SCALES:
        if (width % scale == 0 and height % scale == 0 and width // scale >= need_width
                and height // scale >= need_height):
            img.draft(None, (width // scale, height // scale))
            return


def _orientation(img: Image.Image) -> Optional[int]:
    """The EXIF orientation tag (1 when absent); None when the EXIF data is bogus or unreadable."""
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - corrupt EXIF blocks can raise anything; they must not fail the image
        return None
    return orientation if isinstance(orientation, int) else None


def _apply_orientation(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; bogus or unreadable EXIF data is ignored."""
    method = _TRANSPOSE.get(_orientation(img))
    return img.transpose(method) if method is not None else img


def image_from_array(array: np.ndarray, name: str = "<array>",
                     region: Optional[Tuple[int, int, int, int]] = None) -> Image.Image:
    """Wrap a numpy image (HxW, HxWx1/2/3/4; uint8, uint16, bool, other ints in 0..255, float in [0, 1]).

    ``region`` ``(left, upper, right, lower)``: only those pixels; uint8, uint16 and bool arrays are cut
    before anything is copied or converted (other dtypes are checked whole, then cropped).
    """
    arr = _image_array(array, name)
    if region is not None and arr.dtype in _CUTTABLE_DTYPES:
        arr, region = arr[region[1]:region[3], region[0]:region[2]], None
    img = Image.fromarray(np.ascontiguousarray(_array_to_uint8(arr, name)))
    return img if region is None else img.crop(region)


def array_pixels(array: np.ndarray, name: str = "<array>") -> np.ndarray:
    """A numpy image ready to be cut into regions (:func:`image_from_array` with ``region``): HxW or HxWxC after its
    shape is checked; uint8, uint16 and bool arrays as they are (they convert pixel by pixel, region by region),
    other dtypes checked and converted to uint8 whole.

    Raises:
        ImageError: the array's shape, dtype or values are not an image's.
    """
    arr = _image_array(array, name)
    return arr if arr.dtype in _CUTTABLE_DTYPES else _array_to_uint8(arr, name)


def _image_array(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as HxW or HxWxC (C in 2..4), after checking its shape."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{name}: array of shape {arr.shape} is not an image (expected HxW or HxWxC, C in 1..4)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: empty image array of shape {arr.shape}")
    return arr


def _array_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale an image array of any supported dtype to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return _scale_16bit(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return _float_to_uint8(arr, name)
    if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8)
    raise ImageError(
        f"{name}: unsupported array dtype {arr.dtype} (use uint8, uint16, or float in [0, 1])"
    )


def _float_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise ImageError(f"{name}: float image contains NaN or infinity")
    low, high = float(arr.min()), float(arr.max())
    if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
        raise ImageError(f"{name}: float image values must be in [0, 1], got [{low:g}, {high:g}] (divide by 255?)")
    return np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def _scale_16bit(arr: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 by rounding ``v / 257`` (exact for the 8-bit values 257*k)."""
    return ((np.clip(arr, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_color_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert ``img`` (any PIL mode) to ``'RGB'`` or ``'L'``.

    Alpha (including palette/colour-key transparency) is composited onto white; 16/32-bit integer
    images are scaled to 8 bits; ``F`` images are read as [0, 1]; ``RGB -> L`` uses ITU-R 601-2 luma
    (Pillow's and torchvision's ``Grayscale``).

    Raises:
        ValueError: ``mode`` is not RGB or L.
        ImageError: the image's mode cannot be converted (e.g. LAB).
    """
    if mode not in COLOR_MODES:
        raise ValueError(f"colour mode must be one of {COLOR_MODES}, got {mode!r}")
    if img.mode == mode:
        return img
    if img.mode == "LAB":
        raise ImageError("cannot convert colour mode LAB: convert the image to RGB first")
    try:
        if img.mode in _WIDE_INT_MODES:
            img = Image.fromarray(_scale_16bit(np.asarray(img)))
        elif img.mode == "F":
            img = Image.fromarray(_float_to_uint8(np.asarray(img), "<image>"))
        elif img.mode in _ALPHA_MODES or "transparency" in img.info:
            img = _composite_on_white(img)
        return img.convert(mode)
    except ValueError as exc:
        raise ImageError(f"cannot convert colour mode {img.mode} to {mode} ({exc})") from None


def _composite_on_white(img: Image.Image) -> Image.Image:
    """Flatten any transparency onto an opaque white background (returns RGB)."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
