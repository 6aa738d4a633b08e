"""One-operator TFLite models for the numpy backend's per-op agreement tests (tests/test_numpy_tflite.py).

Each case is a real ``.tflite`` file (written by :func:`tests.corpus.tflite_model.write_tflite`) with one
run-time input and one operator, in a float32, int8 or uint8 variant; second operands, weights, axes and
shapes are constants. Quantized variants use non-trivial scales and zero points (and per-channel weights
where TFLite allows them) so the fixed-point paths are exercised. LiteRT runs the same file as the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tests.corpus.tflite_model import OpSpec, TensorSpec, write_tflite

X_SHAPE = (1, 8, 8, 4)


@dataclass(frozen=True)
class Case:
    """A one-op model: the input the test feeds (``low``/``high`` bound float inputs) and how to build it."""

    name: str
    dtype: str  # float32, int8, uint8 (the run-time input)
    build: Callable[[str, np.random.Generator], Tuple[List[TensorSpec], List[OpSpec]]]
    input_range: Tuple[float, float] = (-3.0, 3.0)


def _q(dtype: str, scale: float, zero_point: int) -> Dict[str, object]:
    """Quantization fields for ``dtype`` (none for float32)."""
    return {} if dtype == "float32" else {"scale": [scale], "zero_point": [zero_point]}


def _zp(dtype: str, signed: int, unsigned: int) -> int:
    return signed if dtype == "int8" else unsigned


def _act(dtype: str, name: str, shape: Sequence[int], scale: float = 0.05, zp: Tuple[int, int] = (-3, 125)) -> TensorSpec:
    return TensorSpec(name, shape, dtype, **_q(dtype, scale, _zp(dtype, *zp)))


def _const(dtype: str, name: str, values: np.ndarray, scale: float = 0.04, zp: Tuple[int, int] = (2, 130)) -> TensorSpec:
    """A constant operand in ``dtype`` (float values quantized for integer variants)."""
    if dtype == "float32":
        return TensorSpec(name, values.shape, "float32", values.astype(np.float32))
    zero = _zp(dtype, *zp)
    info = np.iinfo(dtype)
    data = np.clip(np.round(values / scale) + zero, info.min, info.max).astype(dtype)
    return TensorSpec(name, values.shape, dtype, data, [scale], [zero])


def _weights(dtype: str, name: str, values: np.ndarray, axis: Optional[int]) -> TensorSpec:
    """Conv/FC weights: float32, int8 symmetric (per channel along ``axis``, or per tensor when None), uint8 with a
    zero point (per tensor)."""
    if dtype == "float32":
        return TensorSpec(name, values.shape, "float32", values.astype(np.float32))
    if dtype == "int8":
        if axis is None:
            scale = np.array([np.abs(values).max() / 127])
            data = np.round(values / scale[0])
        else:
            others = tuple(a for a in range(values.ndim) if a != axis)
            scale = np.abs(values).max(axis=others) / 127
            shape = [1] * values.ndim
            shape[axis] = -1
            data = np.round(values / scale.reshape(shape))
        return TensorSpec(name, values.shape, "int8", np.clip(data, -127, 127).astype(np.int8), list(scale),
                          [0] * len(scale), axis=axis or 0)
    scale = (values.max() - values.min()) / 255
    zero = int(round(-values.min() / scale))
    return TensorSpec(name, values.shape, "uint8", np.clip(np.round(values / scale) + zero, 0, 255).astype(np.uint8),
                      [scale], [zero])


def _bias(dtype: str, values: np.ndarray, input_scale: float, weights: TensorSpec) -> TensorSpec:
    if dtype == "float32":
        return TensorSpec("bias", values.shape, "float32", values.astype(np.float32))
    scale = input_scale * np.asarray(weights.scale, dtype=np.float64)
    data = np.round(values / np.broadcast_to(scale, values.shape)).astype(np.int32)
    return TensorSpec("bias", values.shape, "int32", data, list(scale), [0] * scale.size)


def _conv(kind: str, padding: int, stride: int, activation: int, dilation: int = 1) -> Callable:
    def build(dtype: str, rng: np.random.Generator):
        cout, k = 6, 3
        if kind == "CONV_2D":
            w_values = rng.normal(0, 0.3, (cout, k, k, X_SHAPE[3]))
            options = ("Conv2DOptions", dict(padding=padding, strideW=stride, strideH=stride,
                                             fusedActivationFunction=activation, dilationWFactor=dilation,
                                             dilationHFactor=dilation))
        else:
            cout = X_SHAPE[3] * 2
            w_values = rng.normal(0, 0.3, (1, k, k, cout))
            options = ("DepthwiseConv2DOptions", dict(padding=padding, strideW=stride, strideH=stride, depthMultiplier=2,
                                                      fusedActivationFunction=activation, dilationWFactor=dilation,
                                                      dilationHFactor=dilation))
        weights = _weights(dtype, "w", w_values, axis=0 if kind == "CONV_2D" else 3)
        bias = _bias(dtype, rng.normal(0, 0.2, cout), 0.05, weights)
        h = X_SHAPE[1]
        effective = (k - 1) * dilation + 1
        out = -(-h // stride) if padding == 0 else (h - effective) // stride + 1
        tensors = [_act(dtype, "x", X_SHAPE), weights, bias, _act(dtype, "y", (1, out, out, cout), 0.08, (5, 120))]
        return tensors, [OpSpec(kind, [0, 1, 2], [3], options[0], options[1])]

    return build


def _fully_connected(keep_dims: bool, hybrid: bool = False, activation: int = 0) -> Callable:
    def build(dtype: str, rng: np.random.Generator):
        weights = _weights("int8" if hybrid else dtype, "w", rng.normal(0, 0.3, (5, X_SHAPE[3])), axis=None)
        bias = _bias("float32" if hybrid else dtype, rng.normal(0, 0.2, 5), 0.05, weights)
        out_shape = (1, 8, 8, 5) if keep_dims else (64, 5)
        tensors = [_act(dtype, "x", X_SHAPE), weights, bias, _act(dtype, "y", out_shape, 0.07, (-4, 127))]
        return tensors, [OpSpec("FULLY_CONNECTED", [0, 1, 2], [3], "FullyConnectedOptions",
                                dict(keepNumDims=keep_dims, fusedActivationFunction=activation))]

    return build


def _batch_matmul(dtype: str, rng: np.random.Generator):
    other = _const(dtype, "b", rng.normal(0, 1, (1, 8, 6, 4)))
    tensors = [_act(dtype, "x", X_SHAPE), other, _act(dtype, "y", (1, 8, 8, 6), 0.2, (1, 128))]
    return tensors, [OpSpec("BATCH_MATMUL", [0, 1], [2], "BatchMatMulOptions", dict(adjY=True))]


def _binary(op: str, options: Optional[str] = None, activation: int = 0, positive: bool = False,
            out_scale: float = 0.1, same_params: bool = False) -> Callable:
    """``x op b`` with a constant ``b`` broadcast over the rows; ``same_params``: one scale and zero point for all
    three tensors (MAXIMUM/MINIMUM compare raw values, TFLite requires it)."""

    def build(dtype: str, rng: np.random.Generator):
        values = rng.uniform(0.5, 2.0, (1, 1, 8, 4)) if positive else rng.normal(0, 1, (1, 1, 8, 4))
        fields = dict(fusedActivationFunction=activation) if options else {}
        other = _const(dtype, "b", values, 0.05, (-3, 125)) if same_params else _const(dtype, "b", values)
        out = _act(dtype, "y", X_SHAPE) if same_params else _act(dtype, "y", X_SHAPE, out_scale, (-2, 126))
        tensors = [_act(dtype, "x", X_SHAPE), other, out]
        return tensors, [OpSpec(op, [0, 1], [2], options, fields)]

    return build


def _unary(op: str, out_q: Tuple[float, int, int] = (0.05, -3, 125), options: Optional[str] = None,
           fields: Optional[Dict[str, object]] = None) -> Callable:
    def build(dtype: str, rng: np.random.Generator):
        scale, zs, zu = out_q
        tensors = [_act(dtype, "x", X_SHAPE), _act(dtype, "y", X_SHAPE, scale, (zs, zu))]
        return tensors, [OpSpec(op, [0], [1], options, fields or {})]

    return build


def _reduce(op: str, axes: Sequence[int], keep: bool, out_shape: Sequence[int]) -> Callable:
    """A reduction over constant axes; REDUCE_MAX/MIN keep the input's quantization (TFLite compares raw values)."""

    def build(dtype: str, rng: np.random.Generator):
        out = _act(dtype, "y", out_shape) if op in ("REDUCE_MAX", "REDUCE_MIN") else \
            _act(dtype, "y", out_shape, 0.02 if op == "MEAN" else 0.5, (1, 127))
        tensors = [_act(dtype, "x", X_SHAPE), TensorSpec("axes", [len(axes)], "int32", np.array(axes, np.int32)), out]
        return tensors, [OpSpec(op, [0, 1], [2], "ReducerOptions", dict(keepDims=keep))]

    return build


def _pool(op: str, padding: int, activation: int = 0) -> Callable:
    def build(dtype: str, rng: np.random.Generator):
        out = 4 if padding == 0 else 3
        tensors = [_act(dtype, "x", X_SHAPE), _act(dtype, "y", (1, out, out, 4))]
        return tensors, [OpSpec(op, [0], [1], "Pool2DOptions", dict(padding=padding, strideW=2, strideH=2, filterWidth=3,
                                                                      filterHeight=3, fusedActivationFunction=activation))]

    return build


def _with_const(op: str, name: str, values: np.ndarray, out_shape: Sequence[int], options: Optional[str] = None,
                fields: Optional[Dict[str, object]] = None, extra: Sequence[np.ndarray] = ()) -> Callable:
    """An op whose other inputs are int32 constants (shapes, permutations, paddings, indices...)."""

    def build(dtype: str, rng: np.random.Generator):
        consts = [TensorSpec(f"c{i}", np.shape(v), "int32", np.asarray(v, np.int32)) for i, v in enumerate([values, *extra])]
        tensors = [_act(dtype, "x", X_SHAPE), *consts, _act(dtype, "y", out_shape)]
        n = len(consts)
        return tensors, [OpSpec(op, list(range(n + 1)), [n + 1], options, fields or {})]

    return build


def _concatenation(dtype: str, rng: np.random.Generator):
    """uint8: every operand has its own scale and zero point (rescaled); int8: TFLite requires them equal."""
    other = _const(dtype, "b", rng.normal(0, 1, (1, 8, 8, 2)), *((0.03, (4, 120)) if dtype == "uint8" else (0.05, (-3, 0))))
    out_q = (0.06, (-1, 127)) if dtype == "uint8" else (0.05, (-3, 0))
    tensors = [_act(dtype, "x", X_SHAPE), other, _act(dtype, "y", (1, 8, 8, 6), *out_q)]
    return tensors, [OpSpec("CONCATENATION", [0, 1], [2], "ConcatenationOptions", dict(axis=-1))]


def _split(dtype: str, rng: np.random.Generator):
    tensors = [TensorSpec("axis", [], "int32", np.array(2, np.int32)), _act(dtype, "x", X_SHAPE),
               _act(dtype, "y0", (1, 8, 4, 4)), _act(dtype, "y1", (1, 8, 4, 4))]
    return tensors, [OpSpec("SPLIT", [0, 1], [2, 3], "SplitOptions", dict(numSplits=2))]


def _split_v(dtype: str, rng: np.random.Generator):
    tensors = [_act(dtype, "x", X_SHAPE), TensorSpec("sizes", [2], "int32", np.array([1, -1], np.int32)),
               TensorSpec("axis", [], "int32", np.array(-1, np.int32)), _act(dtype, "y0", (1, 8, 8, 1)),
               _act(dtype, "y1", (1, 8, 8, 3))]
    return tensors, [OpSpec("SPLIT_V", [0, 1, 2], [3, 4], "SplitVOptions", dict(numSplits=2))]


def _pack(dtype: str, rng: np.random.Generator):
    other = _const(dtype, "b", rng.normal(0, 1, X_SHAPE), 0.05, (-3, 125))
    tensors = [_act(dtype, "x", X_SHAPE), other, _act(dtype, "y", (1, 2, 8, 8, 4))]
    return tensors, [OpSpec("PACK", [0, 1], [2], "PackOptions", dict(valuesCount=2, axis=1))]


def _gather(dtype: str, rng: np.random.Generator):
    tensors = [_act(dtype, "x", X_SHAPE), TensorSpec("i", [3], "int32", np.array([3, 0, 3], np.int32)),
               _act(dtype, "y", (1, 8, 8, 3))]
    return tensors, [OpSpec("GATHER", [0, 1], [2], "GatherOptions", dict(axis=3))]


def _quantize(dtype: str, rng: np.random.Generator):
    """float32 input: float -> int8; int8/uint8 input: requantize to the other 8-bit type with a new scale."""
    if dtype == "float32":
        tensors = [TensorSpec("x", X_SHAPE), TensorSpec("y", X_SHAPE, "int8", scale=[0.03], zero_point=[-7])]
    else:
        target = "uint8" if dtype == "int8" else "int8"
        tensors = [_act(dtype, "x", X_SHAPE), TensorSpec("y", X_SHAPE, target, scale=[0.07], zero_point=[_zp(target, 3, 131)])]
    return tensors, [OpSpec("QUANTIZE", [0], [1])]


def _dequantize(dtype: str, rng: np.random.Generator):
    return [_act(dtype, "x", X_SHAPE), TensorSpec("y", X_SHAPE)], [OpSpec("DEQUANTIZE", [0], [1])]


F, I8, U8 = "float32", "int8", "uint8"
ALL, SIGNED = (F, I8, U8), (F, I8)
SAME, VALID, RELU, RELU6 = 0, 1, 1, 3

#: (case, dtypes it runs in)
CASES: List[Tuple[Case, Tuple[str, ...]]] = []


def _add(name: str, build: Callable, dtypes: Tuple[str, ...], input_range: Tuple[float, float] = (-3.0, 3.0)) -> None:
    for dtype in dtypes:
        CASES.append((Case(name, dtype, build, input_range), dtypes))


_add("conv_same_s2_relu6", _conv("CONV_2D", SAME, 2, RELU6), ALL)
_add("conv_valid_dilated", _conv("CONV_2D", VALID, 1, 0, dilation=2), ALL)
_add("depthwise_same_relu", _conv("DEPTHWISE_CONV_2D", SAME, 1, RELU), ALL)
_add("depthwise_valid_s2", _conv("DEPTHWISE_CONV_2D", VALID, 2, 0), ALL)
_add("fully_connected_keep_dims", _fully_connected(True), ALL)
_add("fully_connected_flat_relu", _fully_connected(False, activation=RELU), ALL)
_add("fully_connected_hybrid_int8_weights", _fully_connected(True, hybrid=True), (F,))
_add("batch_matmul_adj_y", _batch_matmul, SIGNED)
_add("add_relu", _binary("ADD", "AddOptions", RELU), ALL)
_add("sub", _binary("SUB", "SubOptions"), ALL)
_add("mul_relu6", _binary("MUL", "MulOptions", RELU6), ALL)
_add("div", _binary("DIV", "DivOptions", positive=True), ALL)
_add("squared_difference", _binary("SQUARED_DIFFERENCE", out_scale=0.1), SIGNED)
_add("pow", _binary("POW", positive=True), (F,), (0.1, 2.0))
_add("maximum", _binary("MAXIMUM", same_params=True), ALL)
_add("minimum", _binary("MINIMUM", same_params=True), ALL)
_add("mean_hw_keep", _reduce("MEAN", [1, 2], True, (1, 1, 1, 4)), ALL)
_add("mean_channels", _reduce("MEAN", [-1], False, (1, 8, 8)), ALL)
_add("sum_hw", _reduce("SUM", [1, 2], False, (1, 4)), SIGNED)
_add("softmax", _unary("SOFTMAX", (1 / 256, -128, 0), "SoftmaxOptions", dict(beta=1.0)), ALL)
_add("relu", _unary("RELU"), ALL)
_add("relu6", _unary("RELU6", (0.03, -128, 0)), ALL)
_add("logistic", _unary("LOGISTIC", (1 / 256, -128, 0)), ALL)
_add("tanh", _unary("TANH", (1 / 128, 0, 128)), ALL)
_add("hard_swish", _unary("HARD_SWISH", (0.03, -20, 108)), ALL)
_add("gelu_exact", _unary("GELU", (0.03, -20, 108), "GeluOptions", dict(approximate=False)), SIGNED)
_add("gelu_tanh", _unary("GELU", (0.03, -20, 108), "GeluOptions", dict(approximate=True)), SIGNED)
_add("sqrt", _unary("SQRT", (0.01, -128, 0)), (F,), (0.01, 4.0))
_add("rsqrt", _unary("RSQRT", (0.05, -128, 0)), SIGNED, (0.05, 4.0))
_add("relu_n1_to_1", _unary("RELU_N1_TO_1"), SIGNED)
_add("relu_0_to_1", _unary("RELU_0_TO_1", (0.005, -128, 0)), SIGNED)
_add("leaky_relu", _unary("LEAKY_RELU", options="LeakyReluOptions", fields=dict(alpha=0.2)), SIGNED)
_add("exp", _unary("EXP"), (F,), (-3.0, 2.0))
_add("abs", _unary("ABS"), SIGNED)
_add("neg", _unary("NEG"), (F,))
_add("square", _unary("SQUARE"), (F,))
_add("floor", _unary("FLOOR"), (F,))
_add("log_softmax", _unary("LOG_SOFTMAX", (16 / 256, 127, 255)), SIGNED)
_add("reduce_max", _reduce("REDUCE_MAX", [1, 2], True, (1, 1, 1, 4)), SIGNED)
_add("reduce_min", _reduce("REDUCE_MIN", [-1], False, (1, 8, 8)), SIGNED)
_add("reduce_prod", _reduce("REDUCE_PROD", [3], False, (1, 8, 8)), (F,), (0.5, 1.5))
_add("average_pool_same", _pool("AVERAGE_POOL_2D", SAME), ALL)
_add("average_pool_valid_relu", _pool("AVERAGE_POOL_2D", VALID, RELU), ALL)
_add("max_pool_same", _pool("MAX_POOL_2D", SAME), ALL)
_add("reshape", _with_const("RESHAPE", "shape", np.array([1, 64, 4]), (1, 64, 4)), ALL)
_add("squeeze_after_reshape", _with_const("RESHAPE", "shape", np.array([1, 1, 256]), (1, 1, 256)), ALL)
_add("transpose", _with_const("TRANSPOSE", "perm", np.array([0, 3, 1, 2]), (1, 4, 8, 8)), ALL)
_add("pad", _with_const("PAD", "paddings", np.array([[0, 0], [1, 2], [0, 1], [0, 0]]), (1, 11, 9, 4)), ALL)
_add("strided_slice", _with_const("STRIDED_SLICE", "begin", np.array([0, 1, -1, 0]), (1, 3, 4, 4), "StridedSliceOptions",
                                  dict(endMask=8, beginMask=0), extra=(np.array([1, 7, -9, 4]), np.array([1, 2, -2, 1]))),
     ALL)
_add("strided_slice_shrink", _with_const("STRIDED_SLICE", "begin", np.array([0, 2, 0, 1]), (1, 8, 3), "StridedSliceOptions",
                                         dict(shrinkAxisMask=2, endMask=5), extra=(np.array([1, 3, 8, 4]), np.array([1, 1, 1, 1]))),
     ALL)
_add("slice", _with_const("SLICE", "begin", np.array([0, 2, 1, 0]), (1, 5, 7, 2), extra=(np.array([-1, 5, -1, 2]),)), ALL)
_add("padv2", _with_const("PADV2", "paddings", np.array([[0, 0], [2, 0], [1, 1], [0, 0]]), (1, 10, 10, 4)), (F,))
_add("expand_dims", _with_const("EXPAND_DIMS", "axis", np.array(1), (1, 1, 8, 8, 4)), ALL)
_add("concatenation", _concatenation, ALL)
_add("split_v", _split_v, SIGNED)
_add("pack", _pack, SIGNED)
_add("gather", _gather, ALL)
_add("split", _split, ALL)
_add("quantize", _quantize, ALL)
_add("dequantize", _dequantize, (I8, U8))


def case_ids() -> List[str]:
    """``name-dtype`` of every case."""
    return [f"{case.name}-{case.dtype}" for case, _ in CASES]


def write_case(case: Case, folder: Path, seed: int = 0) -> Path:
    """Write the case's model into ``folder``."""
    tensors, ops = case.build(case.dtype, np.random.default_rng(seed))
    if case.name == "squeeze_after_reshape":  # a second op: SQUEEZE the reshaped tensor
        tensors.append(_act(case.dtype, "z", (256,)))
        ops.append(OpSpec("SQUEEZE", [len(tensors) - 2], [len(tensors) - 1], "SqueezeOptions", dict(squeezeDims=[0, 1])))
    input_index = next(i for i, t in enumerate(tensors) if t.name == "x")
    first_output = {"split": 2, "split_v": 3}.get(case.name, len(tensors) - 1)
    return write_tflite(folder / f"{case.name}-{case.dtype}.tflite", tensors, ops, [input_index], [first_output])


def case_input(case: Case, seed: int = 1) -> np.ndarray:
    """A random input for the case (full integer range for int8/uint8)."""
    rng = np.random.default_rng(seed)
    if case.dtype == "float32":
        return rng.uniform(*case.input_range, X_SHAPE).astype(np.float32)
    info = np.iinfo(case.dtype)
    low, high = info.min, info.max
    if case.input_range[0] >= 0:  # only positive real values (SQRT, RSQRT): the input's scale and zero point
        zero = _zp(case.dtype, -3, 125)
        low, high = zero + int(np.ceil(case.input_range[0] / 0.05)), min(high, zero + int(case.input_range[1] / 0.05))
    return rng.integers(low, high + 1, X_SHAPE).astype(case.dtype)
