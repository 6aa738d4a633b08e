"""Every ONNX file the converter writes runs on the numpy backend: fp32 and each int8 recipe of
``slidelite.convert.quantize.RECIPES`` (dynamic MatMulInteger, static QDQ of the MatMuls, static QDQ of
everything), on Slide-Swin (random init, re-parameterized) and the real ImageNet EfficientNet-Lite0, with a
dynamic batch. The weight-only recipe's file is the shipped default model (tests/test_numpy_backend.py).

Reference: onnxruntime. For the static QDQ files with its graph optimizations off, so it runs the same
Quantize/Dequantize nodes the file holds (optimized, it fuses QDQ groups into integer kernels that round
differently); for the dynamic files with its default optimizations, which fuse DynamicQuantizeLinear +
MatMulInteger + scale into one kernel that applies ``a_scale * b_scale`` the way the numpy backend does
(unfused, the order of the float32 scale products differs in the last bit, which moves later dynamic
quantization codes by one step). Inputs are scikit-image's real photos, preprocessed by the runtime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from slidelite.backends import create_backend
from slidelite.model_file import open_model_file, read_metadata
from slidelite.preprocess import prepare_input
from tests.test_numpy_backend import PHOTOS

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytestmark = pytest.mark.convert


def convert_all(model: str, folder: Path) -> Dict[str, Path]:
    """``model`` exported the converter's way, plus one file per int8 recipe that quantizes an ONNX file."""
    import torch

    from slidelite.convert import ConversionJob, prepare
    from slidelite.convert.calibration import ImageFolderReader
    from slidelite.convert.onnx_export import embed_metadata, export_onnx, simplify_onnx
    from slidelite.convert.quantize import RECIPES, quantize_onnx
    from slidelite.convert.samples import write_sample_photos

    torch.manual_seed(0)
    write_sample_photos(folder / "photos", crops=1)
    job = ConversionJob(model=model, checkpoint=None, output=folder / "unused.onnx", calib=folder / "photos",
                        progress=False)
    loaded, metadata, images = prepare(job)
    fp32 = export_onnx(loaded.module, folder / "fp32.onnx", loaded.input_shape(1), dynamic_batch=True)
    simplify_onnx(fp32)
    embed_metadata(fp32, metadata)
    files = {"fp32": fp32}
    for recipe in RECIPES.values():
        if not recipe.int8_storage:
            reader = ImageFolderReader(images, metadata.input.name) if recipe.static else None
            files[recipe.name] = quantize_onnx(fp32, folder / f"{recipe.name}.onnx", recipe, reader)
            embed_metadata(files[recipe.name], metadata)
    return files


def reference(path: Path, recipe: str, batch: np.ndarray) -> np.ndarray:
    """onnxruntime's output (see the module docstring for the optimization level per recipe)."""
    options = ort.SessionOptions()
    if recipe.startswith("static"):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def photos_for(path: Path) -> np.ndarray:
    metadata = read_metadata(open_model_file(path))
    return np.stack([prepare_input(photo, metadata)[0] for photo in PHOTOS.values()])


@pytest.fixture(scope="module")
def micro_files(tmp_path_factory) -> Dict[str, Path]:
    return convert_all("slide_swin_micro", tmp_path_factory.mktemp("micro_recipes"))


@pytest.fixture(scope="module")
def effnet_files(tmp_path_factory) -> Dict[str, Path]:
    return convert_all("efficientnet_lite0_imagenet", tmp_path_factory.mktemp("effnet_recipes"))


def test_recipes_use_the_int8_ops(micro_files: Dict[str, Path]) -> None:
    """The files really hold the integer ops (so the parity tests below exercise them)."""
    onnx = pytest.importorskip("onnx")
    ops = {name: {n.op_type for n in onnx.load(str(p)).graph.node} for name, p in micro_files.items()}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops["dynamic-matmul"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["static-qdq-matmul"] & ops["static-qdq-all"]


RECIPE_NAMES = ["fp32", "dynamic-matmul", "dynamic-matmul-8bit", "static-qdq-matmul", "static-qdq-all"]


def assert_agrees(got: np.ndarray, want: np.ndarray, recipe: str) -> None:
    """fp32: float closeness. int8 files quantize activations, so a last-bit float difference upstream
    (LayerNorm, conv) can move one activation across a rounding boundary, one quantization step, which the
    later layers carry; they are held to the same top-1 and cosine >= 0.998 per image (the integer ops
    themselves are exact: tests/test_numpy_onnx_node_tests.py, test_int8_ops_equal_onnxruntime_bit_for_bit)."""
    assert got.shape == want.shape
    assert np.array_equal(got.argmax(1), want.argmax(1))
    if recipe == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4)
    else:
        cosine = np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cosine.min() >= 0.998


@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_slide_swin_micro_recipes_match_onnxruntime(micro_files: Dict[str, Path], recipe: str) -> None:
    """Whole batch at once (dynamic batch) and image by image."""
    path = micro_files[recipe]
    batch = photos_for(path)
    backend = create_backend(open_model_file(path), "numpy", threads=1)
    assert_agrees(backend.run(batch), reference(path, recipe, batch), recipe)
    singles = np.concatenate([backend.run(x[None]) for x in batch])
    assert_agrees(singles, reference(path, recipe, batch), recipe)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_efficientnet_lite0_recipes_match_onnxruntime(effnet_files: Dict[str, Path], recipe: str) -> None:
    """The real ImageNet weights, whole batch."""
    path = effnet_files[recipe]
    batch = photos_for(path)
    got = create_backend(open_model_file(path), "numpy", threads=1).run(batch)
    assert_agrees(got, reference(path, recipe, batch), recipe)
