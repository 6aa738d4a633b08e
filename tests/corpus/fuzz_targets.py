"""Fuzz targets and seeds shared by ``tests/test_fuzz.py`` (hypothesis, bounded) and ``benchmarks/fuzz_long.py``.

A target feeds one input to a slidelite entry point and returns normally when the input was handled:
accepted, or refused with the documented error class. Any other exception propagates -- that is a finding:

* image -> tensor (:func:`image_to_tensor`): only :class:`~slidelite.errors.SlideliteError` may escape;
* the metadata parser (:func:`metadata_document`, :func:`metadata_text`): only
  :class:`~slidelite.errors.MetadataError`;
* the ONNX protobuf reader (:func:`onnx_buffer`): only ``ProtobufError``; the TFLite flatbuffer reader
  (:func:`tflite_buffer`): only ``FlatbufferError``; through a file (:func:`model_file`, which also loads and
  runs a TFLite file on the numpy backend): only :class:`~slidelite.errors.ModelError`.

Seeds are real: a scikit-image photo encoded in every format, the fixture ONNX classifier in several variants,
the fixture TFLite classifier and a quantized one-convolution TFLite model. :func:`mutate` is the byte-level mutator of both runs.
"""
from __future__ import annotations

import copy
import io
import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from slidelite.backends import create_backend
from slidelite.backends._flatbuffer import FlatbufferError
from slidelite.backends._onnx_reader import ProtobufError, model_metadata_props, parse_model
from slidelite.backends._tflite_reader import parse_tflite
from slidelite.errors import MetadataError, ModelError, SlideliteError
from slidelite.metadata import ModelMetadata, metadata_from_dict, parse_metadata
from slidelite.model_file import open_model_file
from slidelite.preprocess import prepare_input
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx

#: Variants of the fixture metadata the image target preprocesses for (layouts, modes, dtypes, resizes).
METADATA_VARIANTS: Tuple[Dict[str, Any], ...] = (
    {},
    dict(color_mode="L", interpolation="bilinear"),
    dict(layout="NHWC", dtype="uint8", resize_mode="squash", crop_pct=1.0),
    dict(dtype="int8", size=17, interpolation="nearest", crop_pct=0.5),
)
#: numpy dtypes of the random-array inputs (big-endian and complex included).
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", ">u2", "uint32", "int32", "int64", "uint64", "float16",
          "float32", ">f4", "float64", "complex64")
#: PIL modes of the random-image inputs.
PIL_MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa",
             "La", "I;16", "I;16B", "I;16L")
#: Fixture ONNX variants used as seeds of the model-file mutations.
MODEL_VARIANTS: Tuple[Dict[str, Any], ...] = (
    {}, dict(layout="NHWC", dtype="uint8"), dict(output_dtype="uint8", output_kind="probabilities"),
)


@lru_cache(maxsize=1)
def metadata_variants() -> Tuple[ModelMetadata, ...]:
    """Parsed :data:`METADATA_VARIANTS`."""
    return tuple(metadata_from_dict(fixture_metadata(**variant)) for variant in METADATA_VARIANTS)


def valid_document() -> Dict[str, Any]:
    """A fresh copy of a valid metadata document (the fixture model's, with quantization fields)."""
    return copy.deepcopy(fixture_metadata(dtype="uint8", output_dtype="uint8"))


@lru_cache(maxsize=1)
def seed_images() -> Dict[str, bytes]:
    """A small real photo encoded as PNG, JPEG, GIF, WebP, BMP, TIFF, 16-bit PNG, CMYK JPEG and animated GIF."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.chelsea()).resize((24, 16))

    def encode(image: Any, fmt: str, **params: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **params)
        return buffer.getvalue()

    frames = [photo.convert("P"), Image.new("P", photo.size, 7)]
    return {
        "png": encode(photo, "PNG"), "jpeg": encode(photo, "JPEG", quality=80), "gif": encode(photo, "GIF"),
        "webp": encode(photo, "WEBP"), "bmp": encode(photo, "BMP"), "tiff": encode(photo, "TIFF"),
        "png16": encode(photo.convert("I;16"), "PNG"), "cmyk": encode(photo.convert("CMYK"), "JPEG"),
        "animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
    }


def seed_models(folder: Path) -> Dict[str, bytes]:
    """The fixture ONNX classifier in :data:`MODEL_VARIANTS`, the fixture TFLite classifier and an int8 TFLite
    convolution (per-channel weights, fused ReLU6), as bytes."""
    from tests._tflite_op_cases import CASES, write_case
    from tests.corpus.tflite_model import make_tflite_classifier

    folder.mkdir(parents=True, exist_ok=True)
    seeds = {f"onnx{i}": make_fixture_onnx(folder / f"seed{i}.onnx", **variant).read_bytes()
             for i, variant in enumerate(MODEL_VARIANTS)}
    seeds["tflite"] = make_tflite_classifier(folder / "seed.tflite").read_bytes()
    conv = next(case for case, _ in CASES if case.name == "conv_same_s2_relu6" and case.dtype == "int8")
    seeds["tflite_q"] = write_case(conv, folder).read_bytes()
    return seeds


def mutate(data: bytes, rnd: random.Random, max_mutations: int = 8) -> bytes:
    """Apply 1..``max_mutations`` random edits (bit flips, byte overwrites with interesting values, inserted
    or deleted runs, a duplicated slice, truncation); half of the positions fall in the first 64 bytes,
    where headers, lengths and dimensions live."""
    out = bytearray(data)
    for _ in range(rnd.randint(1, max_mutations)):
        if not out:
            out.extend(rnd.randbytes(rnd.randint(1, 16)))
            continue
        limit = min(len(out), 64) if rnd.random() < 0.5 else len(out)
        at = rnd.randrange(limit)
        kind = rnd.randrange(6)
        if kind == 0:
            out[at] ^= 1 << rnd.randrange(8)
        elif kind == 1:
            out[at] = rnd.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rnd.randrange(256)))
        elif kind == 2:
            out[at:at] = rnd.randbytes(rnd.randint(1, 8))
        elif kind == 3:
            del out[at:at + rnd.randint(1, 8)]
        elif kind == 4:
            end = min(len(out), at + rnd.randint(1, 32))
            out[end:end] = out[at:end]
        else:
            del out[rnd.randrange(len(out)):]
    return bytes(out)


def mutate_document(document: Any, rnd: random.Random, values: List[Any]) -> Any:
    """Replace, delete or insert at a random place of a JSON document (in place when possible); returns it."""
    paths = list(_paths(document))
    parent, key = paths[rnd.randrange(len(paths))]
    value = copy.deepcopy(rnd.choice(values))  # a copy: the same object inserted twice could form a cycle
    if parent is None:
        return value
    action = rnd.randrange(3)
    if action == 0:
        parent[key] = value
    elif action == 1:
        del parent[key]
    elif isinstance(parent, dict):
        parent[f"k{rnd.randrange(100)}"] = value
    else:
        parent.insert(key, value)
    return document


def _paths(node: Any, parent: Any = None, key: Any = None):
    yield parent, key
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for child_key, child in list(children):
        yield from _paths(child, node, child_key)


# ------------------------------------------------------------------------------------------- targets


def image_to_tensor(source: Any, metadata: ModelMetadata) -> bool:
    """Preprocess ``source`` (bytes, PIL image, array, ...) for ``metadata`` on the exact and on the fast path (the
    Classifier's default: crop regions, reduce, JPEG draft decoding); True when the exact path accepted it."""
    accepted = []
    for fast in (False, True):
        try:
            tensor = prepare_input(source, metadata, fast=fast)
        except SlideliteError:
            accepted.append(False)
            continue
        inp = metadata.input
        channels = metadata.preprocess.channels
        expected = (1, inp.height, inp.width, channels) if inp.channels_last else (1, channels, inp.height, inp.width)
        assert tensor.shape == expected and tensor.dtype == np.dtype(inp.dtype), (tensor.shape, tensor.dtype)
        accepted.append(True)
    return accepted[0]


def metadata_document(document: Any) -> bool:
    """Validate a decoded document; an accepted one must survive a JSON round trip unchanged."""
    try:
        parsed = metadata_from_dict(document)
    except MetadataError:
        return False
    text = parsed.to_json()
    assert parse_metadata(text).to_json() == text  # compared as text: NaN in free-form metrics is not == itself
    return True


def metadata_text(text: "str | bytes") -> bool:
    """Parse a metadata JSON text (str or bytes)."""
    try:
        parse_metadata(text)
    except MetadataError:
        return False
    return True


def onnx_buffer(data: bytes) -> bool:
    """Decode a buffer with the protobuf reader: the metadata-only walk and the full model."""
    try:
        model_metadata_props(data)
        parse_model(data)
    except ProtobufError:
        return False
    return True


def tflite_buffer(data: bytes) -> bool:
    """Decode a buffer with the TFLite flatbuffer reader."""
    try:
        parse_tflite(data)
    except FlatbufferError:
        return False
    return True


#: a fuzzed TFLite model is run on zeros when its input has at most this many elements
MAX_FUZZ_INPUT = 1 << 16


def model_file(path: Path) -> bool:
    """Open a model file (format detection, structural checks, metadata); decode an ONNX file fully; load a TFLite
    file into the numpy backend and run it once on zeros."""
    from slidelite.backends._onnx_reader import load_onnx_model

    try:
        opened = open_model_file(path)
        if opened.format == "onnx":
            load_onnx_model(path)
        else:
            backend = create_backend(opened, "numpy")
            shape = [1 if d is None else d for d in backend.input_shape]
            if np.prod(shape, dtype=np.float64) <= MAX_FUZZ_INPUT:
                backend.run(np.zeros(shape, backend.input_dtype))
    except ModelError:
        return False
    return True
