"""The numpy backend's int8 kernels equal onnxruntime's bit for bit on one-node graphs: round half to even
(inputs placed exactly on .5 ties), saturation (values far outside the range), per-tensor and per-channel
zero points, and the onnxruntime contrib ops its quantizer can emit."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from slidelite.backends._onnx_plan import OnnxPlan
from slidelite.backends._onnx_reader import load_onnx_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(3)
TIES = (np.arange(-300, 300) + 0.5).astype(np.float32) * np.float32(0.25)  # x / 0.25 lands on every .5 tie


def _u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape).astype(np.uint8)


def _i8(*shape: int) -> np.ndarray:
    return RNG.integers(-128, 128, shape).astype(np.int8)


def _f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


CASES: Dict[str, tuple] = {  # name -> (node, {runtime input: value}, {initializer: value}, domain opset)
    "quantize_uint8_ties": (helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]), {"x": TIES},
                            {"s": _f32(0.25), "z": np.array(3, np.uint8)}),
    "quantize_int8_per_channel": (helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1),
                                  {"x": RNG.standard_normal((2, 3, 5)).astype(np.float32) * 40},
                                  {"s": _f32(0.1, 0.5, 0.25), "z": np.array([-3, 0, 7], np.int8)}),
    "dequantize_per_channel": (helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=0),
                               {"x": _i8(3, 4)}, {"s": _f32(0.1, 0.02, 3.0), "z": np.array([1, -2, 0], np.int8)}),
    "dynamic_quantize_ties": (helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"]),
                              {"x": np.concatenate([TIES, _f32(-63.75, 63.75)])}, {}),
    "dynamic_quantize_positive": (helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"]),
                                  {"x": RNG.uniform(0.5, 3, (4, 7)).astype(np.float32)}, {}),
    "matmul_integer_zero_points": (helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]),
                                   {"a": _u8(2, 5, 64)}, {"b": _i8(64, 6), "az": np.array(130, np.uint8),
                                                          "bz": np.array([0, 1, -2, 3, 0, 5], np.int8)}),
    "conv_integer": (helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1]),
                     {"x": _u8(1, 3, 6, 5)}, {"w": _i8(4, 3, 3, 3), "xz": np.array(128, np.uint8)}),
    "qlinear_conv_saturating": (
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], strides=[2, 2]),
        {"x": _u8(1, 3, 7, 7)}, {"xs": _f32(0.05), "xz": np.array(120, np.uint8), "w": _i8(4, 3, 3, 3),
                                 "ws": _f32(0.01, 0.02, 0.5, 0.003), "wz": np.zeros(4, np.int8), "ys": _f32(0.07),
                                 "yz": np.array(100, np.uint8), "b": np.array([5, -900, 30, 0], np.int32)}),
    "qlinear_matmul_saturating": (
        helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
        {"a": _i8(3, 16)}, {"as": _f32(0.02), "az": np.array(-4, np.int8), "b": _i8(16, 5), "bs": _f32(0.03),
                            "bz": np.array(2, np.int8), "ys": _f32(0.05), "yz": np.array(-9, np.int8)}),
    "dynamic_quantize_matmul": (
        helper.make_node("DynamicQuantizeMatMul", ["a", "b", "bs", "bz", "bias"], ["y"], domain="com.microsoft"),
        {"a": RNG.standard_normal((2, 7, 32)).astype(np.float32)},
        {"b": _i8(32, 8), "bs": RNG.uniform(0.001, 0.01, 8).astype(np.float32), "bz": np.zeros(8, np.int8),
         "bias": RNG.standard_normal(8).astype(np.float32)}),
    "matmul_integer_to_float": (
        helper.make_node("MatMulIntegerToFloat", ["a", "b", "as", "bs", "az"], ["y"], domain="com.microsoft"),
        {"a": _u8(4, 32)}, {"b": _i8(32, 8), "as": _f32(0.02), "bs": RNG.uniform(0.001, 0.01, 8).astype(np.float32),
                            "az": np.array(128, np.uint8)}),
}


def _model(path: Path, node, feeds: Dict[str, np.ndarray], inits: Dict[str, np.ndarray]) -> Path:
    dtypes = {k: helper.np_dtype_to_tensor_dtype(v.dtype) for k, v in feeds.items()}
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(k, dtypes[k], list(v.shape))
                                            for k, v in feeds.items()],
                              [helper.make_empty_tensor_value_info(o) for o in node.output],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_int8_ops_equal_onnxruntime_bit_for_bit(tmp_path: Path, case: str) -> None:
    node, feeds, inits = CASES[case]
    path = _model(tmp_path / f"{case}.onnx", node, feeds, inits)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want: List[np.ndarray] = session.run(None, feeds)
    got = OnnxPlan(load_onnx_model(path), case).run(*feeds.values())
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if w.dtype.kind == "f" and node.domain == "com.microsoft":
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)  # float32 scale products, summed in any order
        else:
            np.testing.assert_array_equal(g, w)
