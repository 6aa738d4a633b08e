"""The ``weight-only`` int8 recipe (int8 weight storage, float32 compute; ``slidelite.convert.weight_rounding``
and ``slidelite.convert.int8_weights``): GPTQ codes on the int8 grid and better than plain rounding, bias
correction, the ONNX storage (int8 + Cast + per-channel Mul, float16 for small layers) reproducing the
rounded float graph in onnxruntime, and the converter end to end for ONNX and TFLite on slide_swin_micro."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from slidelite.classifier import Classifier
from slidelite.convert import ConversionJob, convert
from slidelite.convert.errors import ConversionError
from slidelite.convert.int8_weights import per_channel_int8, rounded_copy, store_int8_weights
from slidelite.convert.onnx_export import export_onnx, onnx_logits
from slidelite.convert.quantize import get_recipe, quantize_onnx
from slidelite.convert.samples import write_sample_photos
from slidelite.convert.weight_rounding import QMAX, gptq_int8, round_weights_int8
from slidelite.model_file import open_model_file, read_metadata
from slidelite.zoo import create_model

pytestmark = pytest.mark.convert


def _cnn() -> torch.nn.Module:
    """Stem conv, depthwise conv (no bias), pointwise conv, linear head: every layer kind the recipe handles."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 16, 3, padding="same", groups=16, bias=False), torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 32, 1), torch.nn.ReLU6(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(32, 10)).eval()


def _inputs(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, 3, 16, 16)).astype(np.float32)


def test_gptq_codes_are_int8_with_each_row_at_full_range_and_beat_plain_rounding() -> None:
    rng = np.random.default_rng(0)
    # correlated inputs (64 channels mixed from 16 sources), as a layer's input channels are: where GPTQ's
    # error feedback pays
    x = rng.normal(size=(64, 16)) @ rng.normal(size=(16, 2000)) + 0.05 * rng.normal(size=(64, 2000))
    weight = torch.as_tensor(rng.normal(size=(1, 8, 64)))
    quantized = gptq_int8(weight, torch.as_tensor(x @ x.T)[None])
    scale = weight.abs().amax(dim=2, keepdim=True) / QMAX
    codes = (quantized / scale).numpy()
    assert np.allclose(codes, np.rint(codes), atol=1e-6) and np.abs(np.rint(codes)).max() <= QMAX
    assert (np.abs(np.rint(codes)).max(axis=2) == QMAX).all()  # each row keeps its largest weight at +-127
    plain = torch.round(weight / scale) * scale
    gptq_error = np.linalg.norm((weight - quantized)[0].numpy() @ x)
    plain_error = np.linalg.norm((weight - plain)[0].numpy() @ x)
    assert gptq_error < 0.8 * plain_error, (gptq_error, plain_error)


def test_rounding_puts_weights_on_their_grid_corrects_biases_and_keeps_small_layers() -> None:
    model = _cnn()
    calibration = _inputs(16, 1)
    reference = model(torch.as_tensor(calibration)).detach().numpy()
    rounded = rounded_copy(model, calibration)  # SMALL_LAYER_ELEMENTS: every layer here is small: unchanged
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rounded.state_dict().values()))
    changes = round_weights_int8(model, calibration, min_elements=0)
    assert set(changes) == {"0", "2", "4", "8"} and all(0 < c < 0.05 for c in changes.values()), changes
    assert model[2].bias is not None  # bias correction created the depthwise conv's bias
    for layer in (model[0], model[2], model[4], model[8]):
        weight = layer.weight.detach().numpy()
        codes, scale = per_channel_int8(weight, 0)
        assert np.allclose(codes * scale, weight, rtol=0, atol=1e-6 * np.abs(weight).max())
    out = model(torch.as_tensor(calibration)).detach().numpy()
    cosine = (out * reference).sum() / (np.linalg.norm(out) * np.linalg.norm(reference))
    assert cosine > 0.999, cosine


def test_onnx_storage_is_int8_and_float16_and_reproduces_the_rounded_graph(tmp_path: Path) -> None:
    model = _cnn()
    calibration = _inputs(16, 2)
    round_weights_int8(model, calibration, min_elements=0)
    source = export_onnx(model, tmp_path / "rounded.onnx", (1, 3, 16, 16))
    counts = store_int8_weights(source, tmp_path / "int8.onnx", min_elements=400)
    assert counts == {"int8": 2, "float16": 2}  # the 16x1x3x3 (144) and 10x32 (320) weights stay float16
    stored = onnx.load(str(tmp_path / "int8.onnx")).graph
    types = {init.name: init.data_type for init in stored.initializer}
    assert sum(t == TensorProto.INT8 for t in types.values()) == 2
    assert sum(t == TensorProto.FLOAT16 for t in types.values()) == 2
    assert {n.op_type for n in stored.node} >= {"Cast", "Mul"}
    sizes = {t: sum(len(init.raw_data) for init in stored.initializer if init.data_type == t)
             for t in (TensorProto.INT8, TensorProto.FLOAT16)}
    assert sizes == {TensorProto.INT8: 432 + 512, TensorProto.FLOAT16: 2 * (144 + 320)}  # bytes per weight: 1, 2
    expected = onnx_logits(source, calibration)
    got = onnx_logits(tmp_path / "int8.onnx", calibration)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_quantize_onnx_refuses_the_weight_only_recipe(tmp_path: Path) -> None:
    source = export_onnx(_cnn(), tmp_path / "fp32.onnx", (1, 3, 16, 16))
    with pytest.raises(ConversionError, match="rounds the torch weights"):
        quantize_onnx(source, tmp_path / "int8.onnx", get_recipe("weight-only"))


def _stored_weight_types(path: Path) -> set:
    """The element types of the constant tensors of an ONNX or TFLite file (``int8``, ``float16``, ...)."""
    if path.suffix == ".onnx":
        return {TensorProto.DataType.Name(i.data_type).lower() for i in onnx.load(str(path)).graph.initializer}
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return {names[t.type] for g in model.subgraphs for t in g.tensors if model.buffers[t.buffer].data is not None}


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Tuple[Path, Path]:
    """A random-init slide_swin_micro checkpoint (torch seed 0) and a folder of real photos and crops."""
    folder = tmp_path_factory.mktemp("micro")
    write_sample_photos(folder / "photos", crops=2)
    torch.manual_seed(0)
    torch.save(create_model("slide_swin_micro").state_dict(), folder / "micro.pth")
    return folder / "micro.pth", folder / "photos"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_converter_weight_only_recipe_end_to_end(fmt: str, micro: Tuple[Path, Path], tmp_path: Path) -> None:
    """slide_swin_micro (random init, seed 0): its four 65k-weight MLP matrices and two 49k qkv matrices are
    stored int8, the rest float16; the int8 gate passes; the runtime classifies like the fp32 file."""
    weights, photos = micro
    files = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        job = ConversionJob(output=tmp_path / f"{name}.{fmt}", model="slide_swin_micro", checkpoint=weights,
                            format=fmt, int8=int8, int8_recipe="weight-only" if int8 else None, calib=photos,
                            progress=False, latency_runs=0, min_agreement=0.95)
        files[name] = convert(job).output
    metadata = read_metadata(open_model_file(files["int8"]))
    assert metadata.precision == "int8-weights" and metadata.metrics["int8_recipe"] == "weight-only"
    assert metadata.metrics["int8_vs_torch_top1_agreement"] >= 0.95
    assert files["int8"].stat().st_size < 0.7 * files["fp32"].stat().st_size
    assert _stored_weight_types(files["int8"]) >= {"int8", "float16"}
    images = sorted(photos.glob("*.png"))
    with Classifier.from_file(files["fp32"], max_results=1) as fp32, \
            Classifier.from_file(files["int8"], max_results=1) as int8:
        same = sum(fp32.classify(p).top.index == int8.classify(p).top.index for p in images)
    assert same >= 0.9 * len(images), (same, len(images))
