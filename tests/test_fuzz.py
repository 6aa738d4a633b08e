"""Property-based fuzzing (hypothesis) of the paths that read untrusted bytes.

* image -> tensor: random bytes, mutated real PNG/JPEG/GIF/WebP/BMP/TIFF files, numpy arrays of any dtype
  and shape, PIL images of any mode and size -- only ``SlideliteError`` may escape, and an accepted input
  gives a tensor of the model's shape and dtype;
* the metadata parser: random JSON values, mutations of a valid document, mutated JSON text -- only
  ``MetadataError`` escapes, and an accepted document round-trips;
* the ONNX protobuf reader: mutated real ONNX files -- only ``ProtobufError`` from the buffer reader;
* the TFLite flatbuffer reader: mutated real TFLite files -- only ``FlatbufferError``;
* through a file: the structure checks, and a mutated TFLite file loaded and run on the numpy backend --
  only ``ModelError``.

The CI run is bounded (a fixed example count per test, derandomized so CI is reproducible) and every
example has a deadline, so a hang fails instead of stalling; ``benchmarks/fuzz_long.py`` runs the same
targets for 100k+ executions (numbers in docs/security.md).
"""
from __future__ import annotations

import faulthandler
import json
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tests.corpus import fuzz_targets as targets

# Pillow warns about the damaged TIFF tags it skips; warnings are not failures here (the CLI silences them)
pytestmark = pytest.mark.filterwarnings("ignore:::PIL")
BOUNDED = settings(max_examples=500, deadline=timedelta(seconds=10), derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WATCHDOG_S = 600  # a test still running after this long is hung: dump the stacks and exit

metadata_variants = st.sampled_from(targets.metadata_variants())
json_scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400) \
    | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=5)
                           | st.dictionaries(st.text(max_size=12), children, max_size=5), max_leaves=30)


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def seed_models(tmp_path_factory) -> dict:
    return targets.seed_models(tmp_path_factory.mktemp("seeds"))


# ------------------------------------------------------------------------------------------- image -> tensor


@BOUNDED
@given(data=st.binary(max_size=2048), metadata=metadata_variants)
def test_random_bytes_are_refused_cleanly(data: bytes, metadata) -> None:
    targets.image_to_tensor(data, metadata)


@BOUNDED
@given(seed=st.sampled_from(sorted(targets.seed_images())), rnd=st.randoms(use_true_random=False),
       metadata=metadata_variants)
def test_mutated_image_files(seed: str, rnd: random.Random, metadata) -> None:
    targets.image_to_tensor(targets.mutate(targets.seed_images()[seed], rnd), metadata)


def test_unmutated_seeds_are_accepted() -> None:
    """The mutation seeds are valid images (so the mutations start from real files)."""
    for name, data in targets.seed_images().items():
        assert targets.image_to_tensor(data, targets.metadata_variants()[0]), name


@BOUNDED
@given(array=hnp.arrays(dtype=st.sampled_from(targets.DTYPES),
                        shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=12)),
       metadata=metadata_variants)
def test_arrays_of_any_dtype_and_shape(array: np.ndarray, metadata) -> None:
    targets.image_to_tensor(array, metadata)


@BOUNDED
@given(mode=st.sampled_from(targets.PIL_MODES), width=st.integers(0, 40), height=st.integers(0, 40),
       rnd=st.randoms(use_true_random=False), metadata=metadata_variants)
def test_pil_images_of_any_mode_and_size(mode: str, width: int, height: int, rnd: random.Random, metadata) -> None:
    image = Image.new(mode, (width, height))
    raw = image.tobytes()
    if raw:
        image.frombytes(rnd.randbytes(len(raw)))
    targets.image_to_tensor(image, metadata)


# ------------------------------------------------------------------------------------------- metadata


@BOUNDED
@given(value=json_values)
def test_random_json_values_as_metadata(value) -> None:
    targets.metadata_document(value)
    targets.metadata_text(json.dumps(value))


@BOUNDED
@given(rnd=st.randoms(use_true_random=False), values=st.lists(json_values, min_size=1, max_size=4),
       rounds=st.integers(1, 4))
def test_mutated_valid_metadata_documents(rnd: random.Random, values: list, rounds: int) -> None:
    document = targets.valid_document()
    for _ in range(rounds):
        document = targets.mutate_document(document, rnd, values)
    targets.metadata_document(document)


@BOUNDED
@given(rnd=st.randoms(use_true_random=False))
def test_mutated_metadata_text(rnd: random.Random) -> None:
    text = json.dumps(targets.valid_document()).encode()
    targets.metadata_text(targets.mutate(text, rnd))


def test_the_valid_document_is_accepted() -> None:
    assert targets.metadata_document(targets.valid_document())


# ------------------------------------------------------------------------------------------- model files


@BOUNDED
@given(rnd=st.randoms(use_true_random=False), seed=st.sampled_from(["onnx0", "onnx1", "onnx2"]))
def test_mutated_onnx_buffers(seed_models: dict, rnd: random.Random, seed: str) -> None:
    targets.onnx_buffer(targets.mutate(seed_models[seed], rnd))


@BOUNDED
@given(rnd=st.randoms(use_true_random=False), seed=st.sampled_from(["tflite", "tflite_q"]))
def test_mutated_tflite_buffers(seed_models: dict, rnd: random.Random, seed: str) -> None:
    targets.tflite_buffer(targets.mutate(seed_models[seed], rnd))


@BOUNDED
@given(rnd=st.randoms(use_true_random=False), seed=st.sampled_from(["onnx0", "onnx1", "onnx2", "tflite", "tflite_q"]))
def test_mutated_model_files(seed_models: dict, tmp_path_factory, rnd: random.Random, seed: str) -> None:
    path = tmp_path_factory.getbasetemp() / f"fuzzed.{'tflite' if seed.startswith('tflite') else 'onnx'}"
    path.write_bytes(targets.mutate(seed_models[seed], rnd))
    targets.model_file(path)


def test_unmutated_models_are_accepted(seed_models: dict, tmp_path: Path) -> None:
    for name, data in seed_models.items():
        tflite = name.startswith("tflite")
        path = tmp_path / f"{name}.{'tflite' if tflite else 'onnx'}"
        path.write_bytes(data)
        assert targets.model_file(path), name
        assert targets.tflite_buffer(data) if tflite else targets.onnx_buffer(data)
