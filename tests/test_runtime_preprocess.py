"""slidelite.preprocess against an independent implementation of timm's eval transform, on real photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from slidelite import Classifier
from slidelite.errors import ImageError, UsageError
from slidelite.metadata import metadata_from_dict
from slidelite.model_file import open_model_file, read_metadata
from slidelite.preprocess import prepare_input, preprocess, resized_size
from slidelite.resize_plan import plan_resize, reduce_rows
from tests._runtime_fixtures import fixture_metadata, reference_preprocess

PHOTOS = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut(),
          "rocket": data.rocket(), "motorcycle": data.stereo_motorcycle()[0]}
RAW_PIXELS = dict(mean=[0.0], std=[1 / 255])  # x = pixel: makes crops and resizes readable in the tensor


def meta(**variant):
    doc = fixture_metadata(**{k: v for k, v in variant.items() if k not in ("mean", "std", "height", "width")})
    for key in ("mean", "std"):
        if key in variant:
            doc["preprocess"][key] = variant[key]
    for key in ("height", "width"):
        if key in variant:
            doc["input"][key] = variant[key]
    return metadata_from_dict(doc)


@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("size,crop_pct", [(32, 0.875), (224, 0.875), (224, 1.0), (96, 0.9)])
def test_matches_an_independent_timm_style_reference(name, size, crop_pct):
    image = Image.fromarray(PHOTOS[name])
    got = preprocess(image, meta(size=size, crop_pct=crop_pct))
    assert got.shape == (1, 3, size, size) and got.dtype == np.float32 and got.flags.c_contiguous
    expected = reference_preprocess(image, size=size, crop_pct=crop_pct).transpose(2, 0, 1)
    np.testing.assert_allclose(got[0], expected, atol=2e-5, rtol=0)


def test_nhwc_is_nchw_transposed():
    image = Image.fromarray(PHOTOS["coffee"])
    nchw = preprocess(image, meta())
    nhwc = preprocess(image, meta(layout="NHWC"))
    assert nhwc.shape == (1, 32, 32, 3)
    assert np.array_equal(nhwc, nchw.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("size,expected", [
    ((451, 300), (384, 256)),   # torchvision Resize(int): longer side int(256 * 451 / 300) = int(384.85)
    ((300, 451), (256, 384)),
    ((512, 512), (256, 256)),
    ((20, 10), (512, 256)),     # small images are upscaled
    ((256, 1000), (256, 1000)),  # already the right shorter side
])
def test_shorter_side_resize_sizes(size, expected):
    assert resized_size(*size, meta(size=224)) == expected


def test_squash_resizes_both_sides():
    assert resized_size(451, 300, meta(size=224, resize_mode="squash")) == (256, 256)


def test_non_square_target_uses_timm_resize_keep_ratio():
    # scale (224, 160) for crop_pct 1; ratio = min(300 / 224, 451 / 160); both sides rounded
    md = meta(height=224, width=160, crop_pct=1.0)
    ratio = min(300 / 224, 451 / 160)
    assert resized_size(451, 300, md) == (round(451 / ratio), round(300 / ratio)) == (337, 224)
    assert preprocess(Image.fromarray(PHOTOS["chelsea"]), md).shape == (1, 3, 224, 160)


def test_centre_crop_offsets_round_half_to_even_like_torchvision():
    # Ramps with 256 on the shorter side (= floor(224 / 0.875): no resize); the value is the column (row)
    # index, so the tensor shows the crop offset: round(38.5) = 38 and round(16.5) = 16, where rounding
    # half up would give 39 and 17.
    ramp = np.tile(np.arange(301) % 256, (256, 1)).astype(np.uint8)
    md = meta(color_mode="L", size=224, crop_pct=0.875, **RAW_PIXELS)
    out = preprocess(Image.fromarray(ramp), md)
    assert out.shape == (1, 1, 224, 224)
    np.testing.assert_allclose(out[0, 0, 0], np.arange(38, 38 + 224) % 256, atol=1e-4)
    tall = np.tile((np.arange(257) % 256)[:, None], (1, 256)).astype(np.uint8)
    np.testing.assert_allclose(preprocess(Image.fromarray(tall), md)[0, 0, :, 0], np.arange(16, 16 + 224) % 256,
                               atol=1e-4)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"])
def test_interpolation_is_the_metadata_one(interpolation):
    image = Image.fromarray(PHOTOS["rocket"])
    md = meta(size=64, interpolation=interpolation, resize_mode="squash", crop_pct=1.0, **RAW_PIXELS)
    filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
    expected = np.asarray(image.resize((64, 64), filters[interpolation]), dtype=np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess(image, md)[0], expected, atol=1e-4)


def test_grayscale_model_gets_luma():
    photo = PHOTOS["astronaut"]
    md = meta(color_mode="L", size=64, resize_mode="squash", crop_pct=1.0, **RAW_PIXELS)
    got = preprocess(Image.fromarray(photo), md)
    assert got.shape == (1, 1, 64, 64)
    luma = Image.fromarray(photo).convert("L").resize((64, 64), Image.Resampling.BICUBIC)
    np.testing.assert_allclose(got[0, 0], np.asarray(luma, dtype=np.float32), atol=1e-4)


def test_raw_pixel_uint8_model_receives_the_pixels_exactly():
    photo = PHOTOS["coffee"]
    doc = fixture_metadata(dtype="uint8", size=64, resize_mode="squash", crop_pct=1.0)
    doc["preprocess"].update(mean=[0.0, 0.0, 0.0], std=[1 / 255] * 3)
    doc["input"]["quantization"] = {"scale": 1.0, "zero_point": 0}
    got = preprocess(Image.fromarray(photo), metadata_from_dict(doc))
    expected = np.asarray(Image.fromarray(photo).resize((64, 64), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert got.dtype == np.uint8
    assert np.array_equal(got[0], expected)


@pytest.mark.parametrize("dtype,low,high", [("uint8", 0, 255), ("int8", -128, 127)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_quantized_inputs(dtype, low, high, layout):
    image = Image.fromarray(PHOTOS["chelsea"])
    md = meta(dtype=dtype, layout=layout)
    got = preprocess(image, md)
    assert got.dtype == np.dtype(dtype)
    real = reference_preprocess(image)
    if layout == "NCHW":
        real = real.transpose(2, 0, 1)
    q = md.input.quantization
    expected = np.clip(np.rint(real / q.scale) + q.zero_point, low, high)
    diff = np.abs(got[0].astype(np.int64) - expected)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # off-by-one only on exact .5 ties in float32


def test_quantized_input_is_clipped():
    md = meta(dtype="int8", input_quant=(0.001, 0))  # range [-0.128, 0.127]: nearly everything saturates
    got = preprocess(Image.fromarray(PHOTOS["rocket"]), md)
    assert got.min() == -128 and got.max() == 127


def test_prepare_input_decodes_then_preprocesses(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(PHOTOS["chelsea"]).save(path)
    assert np.array_equal(prepare_input(path, meta()), preprocess(Image.fromarray(PHOTOS["chelsea"]), meta()))
    assert np.array_equal(prepare_input(PHOTOS["chelsea"], meta()), prepare_input(str(path), meta()))
    with pytest.raises(ImageError, match="too large"):
        prepare_input(path, meta(), max_pixels=100)


def test_rgba_and_palette_inputs_become_rgb_tensors():
    rgba = Image.fromarray(np.dstack([PHOTOS["coffee"], np.full(PHOTOS["coffee"].shape[:2], 255, np.uint8)]))
    assert np.array_equal(preprocess(rgba, meta()), preprocess(Image.fromarray(PHOTOS["coffee"]), meta()))
    assert preprocess(Image.fromarray(PHOTOS["coffee"]).quantize(32), meta()).shape == (1, 3, 32, 32)


# ------------------------------------------------------------------------- fast path (resize plans)

SHIPPED = Path(__file__).resolve().parents[1] / "slidelite" / "models"


def shipped_metadata(name: str):
    return read_metadata(open_model_file(SHIPPED / name))


def todays_tensor(img: Image.Image, md) -> np.ndarray:
    """The tensor of an image already at the model's size, computed the way the runtime always has:
    ``float32(pixel) * gain + offset`` in float32, per channel, then the layout."""
    pre, inp = md.preprocess, md.input
    mean = np.broadcast_to(np.asarray(pre.mean, np.float64), (pre.channels,))
    std = np.broadcast_to(np.asarray(pre.std, np.float64), (pre.channels,))
    gain, offset = 1.0 / (255.0 * std), -mean / std
    if inp.dtype != "float32":
        gain, offset = gain / inp.quantization.scale, offset / inp.quantization.scale + inp.quantization.zero_point
    pixels = np.asarray(img.convert(pre.color_mode), np.float32).reshape(inp.height, inp.width, pre.channels)
    out = pixels * gain.astype(np.float32) + offset.astype(np.float32)
    if inp.dtype != "float32":
        low, high = (0, 255) if inp.dtype == "uint8" else (-128, 127)
        out = np.clip(np.rint(out), low, high).astype(inp.dtype)
    return (out if inp.channels_last else out.transpose(2, 0, 1))[None]


MODEL_SIZED = [  # (model file, photo): RGB and grey models, NHWC and NCHW, both shipped models
    ("efficientnet_lite0.tflite", "astronaut"), ("efficientnet_lite0.onnx", "coffee"),
    ("slide_swin_micro_fmnist.onnx", "camera"), ("slide_swin_micro_fmnist.tflite", "chelsea")]


@pytest.mark.parametrize("model,name", MODEL_SIZED)
@pytest.mark.parametrize("kind", ["PIL", "array"])
def test_fast_path_is_bit_exact_for_images_at_the_model_size(model, name, kind):
    md = shipped_metadata(model)
    photo = Image.fromarray(getattr(data, name)())
    sized = photo.convert(md.preprocess.color_mode).resize((md.input.width, md.input.height))
    source = sized if kind == "PIL" else np.asarray(sized)
    fast = prepare_input(source, md, fast=True)
    assert fast.dtype == np.float32 and np.array_equal(fast, prepare_input(source, md))
    assert np.array_equal(fast, todays_tensor(sized, md))


@pytest.mark.parametrize("variant", [dict(layout="NCHW"), dict(layout="NHWC"), dict(color_mode="L"),
                                     dict(dtype="uint8", layout="NHWC"), dict(dtype="int8")])
def test_fast_path_is_bit_exact_when_only_a_crop_is_needed(variant):
    md = meta(size=64, crop_pct=1.0, **variant)
    photo = Image.fromarray(PHOTOS["rocket"]).resize((96, 64))  # shorter side already 64: crop only
    for source in (photo, np.asarray(photo)):
        fast = prepare_input(source, md, fast=True)
        assert np.array_equal(fast, prepare_input(source, md))
    assert np.array_equal(prepare_input(photo.crop((16, 0, 80, 64)), md), todays_tensor(photo.crop((16, 0, 80, 64)), md))


@pytest.mark.parametrize("size", [(1920, 1080), (4032, 3024), (1000, 4000)])
def test_fast_path_gives_the_same_tensor_for_arrays_and_pil_images(size):
    md = shipped_metadata("efficientnet_lite0.tflite")
    assert plan_resize(*size, md.input, md.preprocess).reduce != (1, 1)
    for name in ("chelsea", "rocket"):
        frame = np.asarray(ImageOps.fit(Image.fromarray(PHOTOS[name]), size, Image.Resampling.BICUBIC))
        assert np.array_equal(prepare_input(frame, md, fast=True), prepare_input(Image.fromarray(frame), md, fast=True))


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 7, 8, 13, 16, 19])
@pytest.mark.parametrize("shape", [(3, 33, 3), (5, 20)])
def test_reduce_rows_equals_pillow_bit_for_bit(factor, shape):
    rng = np.random.default_rng(factor)
    for height in (factor * shape[0], factor * shape[0] + 1, factor * shape[0] + factor - 1):  # with a short last group
        pixels = rng.integers(0, 256, (height, *shape[1:]), dtype=np.uint8)
        pixels[:factor] = 255  # the largest sums
        want = np.asarray(Image.fromarray(pixels).reduce((1, factor)))
        assert np.array_equal(reduce_rows(pixels, factor), want)
        wide = np.zeros((height, shape[1] + 10, *shape[2:]), np.uint8)
        wide[:, 5:-5] = pixels
        assert np.array_equal(reduce_rows(wide[:, 5:-5], factor), want)  # a strided region of a frame
        if pixels.ndim == 3:  # an RGB view of a BGR frame, as the camera sources deliver it
            assert np.array_equal(reduce_rows(np.ascontiguousarray(pixels[..., ::-1])[..., ::-1], factor), want)


@pytest.mark.parametrize("size", [(1920, 1080), (4032, 3024), (900, 3000), (3000, 900)])
def test_shrink_array_is_pillows_reduce_rows_then_columns(size):
    md = shipped_metadata("efficientnet_lite0.tflite")
    frame = np.asarray(ImageOps.fit(Image.fromarray(PHOTOS["astronaut"]), size))
    plan = plan_resize(*size, md.input, md.preprocess)
    (fx, fy), box = plan.reduce, plan.region
    assert fx > 1 and fy > 1
    want = Image.fromarray(frame).crop(box).reduce((1, fy)).reduce((fx, 1))
    assert np.array_equal(np.asarray(plan.shrink_array(frame)), np.asarray(want))
    assert np.array_equal(np.asarray(plan.shrink_image(Image.fromarray(frame))), np.asarray(want))


def test_fast_path_reads_strided_views_like_their_copies():
    md = shipped_metadata("efficientnet_lite0.tflite")
    bgr = np.ascontiguousarray(np.asarray(ImageOps.fit(Image.fromarray(PHOTOS["coffee"]), (1280, 720)))[..., ::-1])
    view = bgr[..., ::-1]  # an RGB view of a BGR frame, as the camera sources deliver it
    assert not view.flags.c_contiguous
    assert np.array_equal(prepare_input(view, md, fast=True), prepare_input(np.ascontiguousarray(view), md, fast=True))


@pytest.fixture(scope="module")
def default_classifiers():
    with Classifier.default(preprocessing="fast") as fast, Classifier.default(preprocessing="exact") as exact:
        yield fast, exact


#: every scikit-image photo (``benchmarks/camera_path.py`` measures the same ones); grey ones as RGB
ALL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
              "immunohistochemistry", "camera", "moon", "coins", "clock", "brick", "grass", "gravel", "cell")


def rgb_photo(name: str) -> Image.Image:
    pixels = getattr(data, name)()
    return Image.fromarray(np.asarray(pixels[0] if isinstance(pixels, tuple) else pixels)).convert("RGB")


@pytest.mark.parametrize("name", ALL_PHOTOS)
@pytest.mark.parametrize("size", [None, (640, 480), (1280, 720), (1920, 1080), (4032, 3024)])
def test_fast_path_on_large_photos_differs_little_and_keeps_the_top1(default_classifiers, name, size):
    fast, exact = default_classifiers
    photo = rgb_photo(name)
    frame = np.asarray(photo if size is None else ImageOps.fit(photo, size, Image.Resampling.BICUBIC))
    got, want = fast.prepare(frame).tensor, exact.prepare(frame).tensor
    diff = np.abs(got.astype(np.float64) - want) * np.asarray(fast.metadata.preprocess.std) * 255  # pixel levels
    assert diff.max() <= 10 and diff.mean() <= 0.75, (diff.max(), diff.mean())
    assert fast.classify(frame).top.index == exact.classify(frame).top.index


def test_fast_jpeg_draft_differs_little_and_keeps_the_top1(default_classifiers, tmp_path):
    fast, exact = default_classifiers
    path = tmp_path / "frame.jpg"
    Image.fromarray(PHOTOS["coffee"]).resize((1920, 1280), Image.Resampling.BICUBIC).save(path, quality=95)
    assert fast.classify(path).top.index == exact.classify(path).top.index
    got, want = fast.prepare(path).tensor, exact.prepare(path).tensor
    diff = np.abs(got.astype(np.float64) - want) * np.asarray(fast.metadata.preprocess.std) * 255  # pixel levels
    assert diff.max() <= 8 and diff.mean() <= 0.5, (diff.max(), diff.mean())


def test_unknown_preprocessing_option_is_a_usage_error():
    with pytest.raises(UsageError, match="preprocessing must be one of fast, exact"):
        Classifier.default(preprocessing="quick")
