"""slidelite.image: real photos written in every format and mode, numpy arrays, and every bad input."""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from slidelite.errors import ImageError
from slidelite.image import array_pixels, image_from_array, load_image, to_color_mode
from slidelite.metadata import InputSpec, PreprocessSpec
from slidelite.resize_plan import draft_size

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = {
    "chelsea": data.chelsea(),
    "coffee": data.coffee(),
    "astronaut": data.astronaut(),
    "rocket": data.rocket(),
    "motorcycle": data.stereo_motorcycle()[0],
}


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(to_color_mode(img, "RGB"), dtype=np.float64)


def luma(arr: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, computed independently of Pillow."""
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return color.astype(np.float64) * a + 255.0 * (1.0 - a)


@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("fmt,suffix,tolerance", [
    ("PNG", ".png", 0.0), ("BMP", ".bmp", 0.0), ("TIFF", ".tif", 0.0), ("JPEG", ".jpg", 6.0), ("WEBP", ".webp", 6.0),
])
def test_photo_formats_decode_to_the_photo(tmp_path, name, fmt, suffix, tolerance):
    photo = PHOTOS[name]
    path = tmp_path / f"{name}{suffix}"
    Image.fromarray(photo).save(path, fmt)
    img = load_image(path)
    assert img.size == (photo.shape[1], photo.shape[0])
    assert np.abs(rgb(img) - photo).mean() <= tolerance


def test_path_bytes_stream_and_pathlike_give_the_same_pixels(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(PHOTOS["chelsea"]).save(path)
    expected = np.asarray(load_image(str(path)))
    for source in (path, path.read_bytes(), bytearray(path.read_bytes()), io.BytesIO(path.read_bytes())):
        assert np.array_equal(np.asarray(load_image(source)), expected)


def test_grayscale_png_and_conversion_to_l_and_rgb(tmp_path):
    gray = np.rint(luma(PHOTOS["astronaut"].astype(np.float64))).astype(np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    img = load_image(path)
    assert img.mode == "L"
    assert np.array_equal(np.asarray(to_color_mode(img, "L")), gray)
    assert np.array_equal(np.asarray(to_color_mode(img, "RGB")), np.repeat(gray[..., None], 3, axis=2))


def test_rgb_to_l_is_601_luma():
    photo = PHOTOS["coffee"]
    got = np.asarray(to_color_mode(Image.fromarray(photo), "L"), dtype=np.float64)
    assert np.abs(got - luma(photo.astype(np.float64))).max() <= 1.0


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    gray = luma(PHOTOS["rocket"].astype(np.float64)) / 255.0
    wide = np.rint(gray * 65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    img = load_image(path)
    assert img.mode.startswith("I")
    got = np.asarray(to_color_mode(img, "L"), dtype=np.float64)
    assert np.abs(got - wide / 257.0).max() <= 0.5 + 1e-9
    assert got.max() >= 250  # a clipping conversion would saturate almost everything at 255 instead
    assert (got == 255).mean() < 0.05


@pytest.mark.parametrize("mode", ["I", "I;16"])
def test_wide_integer_pil_modes(mode):
    wide = (np.arange(256 * 64, dtype=np.int64).reshape(64, 256) * 4) % 65536
    img = Image.fromarray(wide.astype(np.int32 if mode == "I" else np.uint16), mode=None)
    assert img.mode == mode
    assert np.abs(np.asarray(to_color_mode(img, "L"), dtype=np.float64) - wide / 257.0).max() <= 0.5 + 1e-9


def test_float_pil_mode_is_read_as_unit_range():
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    got = np.asarray(to_color_mode(Image.fromarray(values), "L"), dtype=np.float64)
    assert np.abs(got - values * 255).max() <= 0.5 + 1e-4


def test_cmyk_jpeg(tmp_path):
    photo = PHOTOS["chelsea"]
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(path, quality=95)
    img = load_image(path)
    assert img.mode == "CMYK"
    assert np.abs(rgb(img) - photo).mean() < 4.0


def test_la_is_composited_on_white(tmp_path):
    gray = np.rint(luma(PHOTOS["astronaut"].astype(np.float64))).astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha])).save(path)
    img = load_image(path)
    assert img.mode == "LA"
    expected = on_white(gray[..., None], alpha)[..., 0]
    assert np.abs(np.asarray(to_color_mode(img, "L"), dtype=np.float64) - expected).max() <= 1.0


def test_rgba_is_composited_on_white(tmp_path):
    photo = PHOTOS["coffee"]
    alpha = np.tile(np.linspace(0, 255, photo.shape[0]).astype(np.uint8)[:, None], (1, photo.shape[1]))
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([photo, alpha])).save(path)
    img = load_image(path)
    assert img.mode == "RGBA"
    assert np.abs(rgb(img) - on_white(photo, alpha)).max() <= 1.0
    transparent = alpha == 0
    assert (rgb(img)[transparent] == 255).all()


def test_palette_with_transparency(tmp_path):
    pal = Image.fromarray(PHOTOS["rocket"]).quantize(64)
    index = np.asarray(pal)
    hidden = int(np.bincount(index.ravel()).argmax())  # the most common palette entry becomes transparent
    path = tmp_path / "p.png"
    pal.save(path, transparency=hidden)
    img = load_image(path)
    assert img.mode == "P" and "transparency" in img.info
    got = rgb(img)
    assert (got[index == hidden] == 255).all()
    opaque = np.asarray(pal.convert("RGB"), dtype=np.float64)
    assert np.array_equal(got[index != hidden], opaque[index != hidden])


def test_animated_gif_uses_the_first_frame(tmp_path):
    first = PHOTOS["chelsea"]
    second = 255 - first
    path = tmp_path / "anim.gif"
    Image.fromarray(first).save(path, save_all=True, append_images=[Image.fromarray(second)], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    got = rgb(load_image(path))
    assert np.abs(got - first).mean() < 12
    assert np.abs(got - second).mean() > 60


EXPECTED_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def save_oriented(path: Path, photo: np.ndarray, orientation: int, **options) -> Path:
    """Write ``photo`` with the EXIF Orientation tag set to ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(photo).save(path, exif=exif, **options)
    return path


@pytest.mark.parametrize("orientation", sorted(EXPECTED_ORIENTATION))
def test_exif_orientation_is_applied(tmp_path, orientation):
    photo = PHOTOS["chelsea"]
    path = save_oriented(tmp_path / "oriented.png", photo, orientation)
    assert np.array_equal(np.asarray(load_image(path)), EXPECTED_ORIENTATION[orientation](photo))


def test_exif_rotated_jpeg(tmp_path):
    photo = PHOTOS["motorcycle"]
    path = save_oriented(tmp_path / "phone.jpg", photo, 6, quality=95)
    img = load_image(path)
    assert img.size == (photo.shape[0], photo.shape[1])
    assert np.abs(rgb(img) - np.rot90(photo, -1)).mean() < 3.0


def test_exif_orientation_of_a_pil_image_is_applied_too(tmp_path):
    photo = PHOTOS["chelsea"]
    path = save_oriented(tmp_path / "oriented.png", photo, 8)
    assert np.array_equal(np.asarray(load_image(Image.open(path))), np.rot90(photo, 1))


@pytest.mark.parametrize("bogus", [0, 9, 255])
def test_bogus_exif_orientation_is_ignored(tmp_path, bogus):
    photo = PHOTOS["chelsea"]
    path = save_oriented(tmp_path / "bogus.png", photo, bogus)
    assert np.array_equal(np.asarray(load_image(path)), photo)


def test_one_pixel_image(tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    assert np.array_equal(np.asarray(load_image(path)), [[[10, 20, 30]]])


@pytest.mark.parametrize("shape,dtype,scale", [
    ((40, 50), np.uint8, 1), ((40, 50, 1), np.uint8, 1), ((40, 50, 3), np.uint8, 1), ((40, 50, 4), np.uint8, 1),
    ((40, 50, 2), np.uint8, 1), ((40, 50, 3), np.uint16, 257), ((40, 50, 3), np.float32, 1 / 255),
    ((40, 50, 3), np.float64, 1 / 255), ((40, 50, 3), np.int64, 1),
])
def test_numpy_arrays(shape, dtype, scale):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    img = load_image((pixels * np.float64(scale)).astype(dtype))
    assert img.size == (50, 40)
    assert np.array_equal(np.asarray(img).reshape(pixels.shape), pixels)


def test_bool_array():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4] = True
    assert np.array_equal(np.asarray(load_image(mask)), mask * 255)


@pytest.mark.parametrize("array,problem", [
    (np.zeros((4, 4, 5), np.uint8), "not an image"),
    (np.zeros((4,), np.uint8), "not an image"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.full((4, 4, 3), 255.0), "must be in [0, 1]"),
    (np.full((4, 4, 3), np.nan), "NaN"),
    (np.full((4, 4, 3), -5, dtype=np.int32), "unsupported array dtype"),
])
def test_bad_arrays(array, problem):
    with pytest.raises(ImageError, match="<array>: .*" + problem.replace("[", r"\[").replace("]", r"\]")):
        load_image(array)


# ---- bad files: each a clear one-line ImageError naming the file ------------------------------------------

def assert_one_line(exc_info, path, words):
    message = str(exc_info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert words in message


def test_missing_file(tmp_path):
    path = tmp_path / "missing.jpg"
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, "missing file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, "zero-byte file")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_text("this is not a picture of a cat\n")
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, "not an image file (cannot identify image format)")


def test_directory(tmp_path):
    with pytest.raises(ImageError) as exc:
        load_image(tmp_path)
    assert_one_line(exc, tmp_path, "is a directory")


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, "not a regular file")


@pytest.mark.parametrize("fmt,suffix,keep", [("JPEG", ".jpg", 0.5), ("PNG", ".png", 0.5), ("PNG", ".png", 0.98)])
def test_truncated_files(tmp_path, fmt, suffix, keep):
    buffer = io.BytesIO()
    Image.fromarray(PHOTOS["coffee"]).save(buffer, fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * keep)])
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, "truncated image data")


def test_truncated_file_opened_by_the_caller(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(PHOTOS["rocket"]).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:4000])
    with pytest.raises(ImageError, match="^<PIL image>: truncated image data$"):
        load_image(Image.open(path))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (valid CRC) followed by a tiny IDAT: a bomb's header."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    struct.pack_into(">II", png, 16, width, height)
    struct.pack_into(">I", png, 29, zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_decompression_bomb_beyond_pillows_hard_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_claiming(100_000, 100_000))
    with pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, "decompression bomb")


def test_decompression_bomb_over_pillows_limit_is_refused_before_decoding(tmp_path):
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)
    path = tmp_path / "big.png"
    path.write_bytes(png_header_claiming(side, side))
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageError) as exc:
        load_image(path)
    assert_one_line(exc, path, f"> limit {Image.MAX_IMAGE_PIXELS}), possible decompression bomb")


def test_custom_pixel_limit_does_not_touch_the_global(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(PHOTOS["chelsea"]).save(path)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as exc:
        load_image(path, max_pixels=451 * 300 - 1)
    assert_one_line(exc, path, "image too large (451x300 = 135300 pixels > limit 135299)")
    assert load_image(path, max_pixels=451 * 300).size == (451, 300)
    assert Image.MAX_IMAGE_PIXELS == before


UNREADABLE = """
import os, sys
from slidelite.errors import ImageError
from slidelite.image import load_image
os.setgid(65534)  # drop root after the imports (the interpreter lives under /root, unreadable to nobody)
os.setuid(65534)
try:
    load_image(sys.argv[1])
except ImageError as exc:
    print(exc)
"""


def test_unreadable_file():
    """A file without read permission. Root reads anything, so as root the check runs in a subprocess
    that drops to the ``nobody`` user (uid 65534) before reading."""
    folder = Path(tempfile.mkdtemp(prefix="slidelite-perm-"))  # /tmp is world-traversable, pytest's tmp_path is not
    folder.chmod(0o711)
    path = folder / "secret.jpg"
    Image.fromarray(PHOTOS["chelsea"]).save(path)
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(ImageError) as exc:
            load_image(path)
        assert_one_line(exc, path, "permission denied")
        return
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    result = subprocess.run([sys.executable, "-c", UNREADABLE, str(path)], env=env, cwd="/",
                            capture_output=True, text=True, timeout=120)
    shutil.rmtree(folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: permission denied (check the file's permissions)"


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="unsupported image source of type int"):
        load_image(42)  # type: ignore[arg-type]


def test_to_color_mode_rejects_unknown_target_and_lab():
    with pytest.raises(ValueError):
        to_color_mode(Image.new("RGB", (2, 2)), "CMYK")
    with pytest.raises(ImageError, match="LAB"):
        to_color_mode(Image.new("LAB", (2, 2)), "RGB")


# ------------------------------------------------------------------------------- JPEG draft decoding

def default_model_draft(width: int, height: int):
    """The smallest decode size the default model's fast path allows (224 px, crop 1.0: 2 x the resized size)."""
    inp, pre = InputSpec("x", 224, 224), PreprocessSpec(crop_pct=1.0, interpolation="bilinear")
    return draft_size(width, height, inp, pre)


def photo_jpeg(path: Path, size, orientation: int = 1) -> Path:
    frame = np.asarray(Image.fromarray(PHOTOS["coffee"]).resize(size, Image.Resampling.BILINEAR))
    return save_oriented(path, frame, orientation, quality=90)


@pytest.mark.parametrize("size,decoded", [
    ((1920, 1080), (960, 540)),    # 1/4 would give 480x270 < 2 x 398x224: 1/2
    ((4032, 3024), (1008, 756)),   # 1/8 would give 504x378 < 2 x 298x224: 1/4
    ((1921, 1080), (1921, 1080)),  # no scale divides both sides: decoded whole
    ((451, 300), (451, 300)),      # too small to scale down
])
def test_jpeg_draft_scale_never_goes_below_twice_the_resized_size(tmp_path, size, decoded):
    img = load_image(photo_jpeg(tmp_path / "frame.jpg", size), draft_to=default_model_draft)
    assert img.size == decoded
    need = default_model_draft(*size)
    assert img.size == size or (img.width >= need[0] and img.height >= need[1])


def test_jpeg_draft_follows_the_exif_orientation(tmp_path):
    # a wide model (256x64, squash: needs 512x128 decoded) and a portrait-stored JPEG shown landscape: 1/8 fits
    # the shown size; measured on the stored size it would not (128 < 512), and 1/2 would be chosen
    inp, pre = InputSpec("x", 64, 256), PreprocessSpec(resize_mode="squash", crop_pct=1.0)
    path = photo_jpeg(tmp_path / "phone.jpg", (1024, 4096), orientation=6)
    img = load_image(path, draft_to=lambda w, h: draft_size(w, h, inp, pre))
    assert img.size == (512, 128)
    assert np.abs(rgb(img) - rgb(load_image(path).resize(img.size, Image.Resampling.BOX))).mean() < 3.0


def test_draft_is_ignored_for_other_formats_and_without_a_request(tmp_path):
    frame = np.asarray(Image.fromarray(PHOTOS["coffee"]).resize((1920, 1080)))
    Image.fromarray(frame).save(tmp_path / "frame.png")
    assert load_image(tmp_path / "frame.png", draft_to=default_model_draft).size == (1920, 1080)
    assert load_image(photo_jpeg(tmp_path / "frame.jpg", (1920, 1080))).size == (1920, 1080)


# ----------------------------------------------------------------------------------- array regions

@pytest.mark.parametrize("dtype", ["uint8", "uint16", "bool", "float64"])
def test_array_region_is_the_crop_of_the_whole_array(dtype):
    photo = PHOTOS["rocket"]
    arr = {"uint8": photo, "uint16": photo.astype(np.uint16) * 257, "bool": photo > 128,
           "float64": photo / 255.0}[dtype]
    region = (100, 40, 420, 300)
    assert array_pixels(arr).shape[:2] == (427, 640)
    got = image_from_array(arr, region=region)
    assert np.array_equal(np.asarray(got), np.asarray(image_from_array(arr).crop(region)))


def test_array_region_still_checks_every_value():
    arr = PHOTOS["rocket"] / 255.0
    arr[0, 0, 0] = np.nan  # outside the region
    with pytest.raises(ImageError, match="NaN"):
        image_from_array(arr, region=(100, 40, 420, 300))
    with pytest.raises(ImageError, match="NaN"):
        array_pixels(arr)
    with pytest.raises(ImageError, match="not an image"):
        array_pixels(np.zeros((4, 4, 5), np.uint8))
