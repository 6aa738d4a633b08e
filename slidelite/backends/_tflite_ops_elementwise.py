"""TFLite numpy kernels computed element by element: binary arithmetic, activations, reductions, softmax,
QUANTIZE / DEQUANTIZE.

Float kernels are numpy expressions on float32. Integer kernels follow TFLite: ADD/SUB rescale both inputs
with fixed-point multipliers after a 20-bit left shift and rescale the sum (reference ``add.h``), MUL rescales
the product of the zero-point-corrected inputs; every unary int8/uint8 op is a 256-entry lookup table of
the float function on the dequantized values, rounded to the output scale (LiteRT builds the same tables
for LOGISTIC, TANH, GELU...); the other binary ops and SOFTMAX compute on dequantized values and round the
result once to the output scale; MEAN/SUM rescale integer sums as TFLite's ``QuantizedMeanOrSum``. Floating-point
warnings (overflow to inf, NaN) are silenced by the backend around the whole graph, as LiteRT computes on.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ._numpy_ops import erf
from ._tflite_kernel_base import FLOAT, QUANTIZED, Kernel, OpContext, OpError, axes_tuple, check_elements, register
from ._tflite_quant import (activation_range, apply_float_activation, dequantize, integer_range,
                            multiply_by_quantized_multiplier, quantize, quantize_multiplier)
from ._tflite_reader import Quantization

_SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))


def _gelu(x: np.ndarray, approximate: bool) -> np.ndarray:
    if approximate:
        return np.float32(0.5) * x * (np.float32(1) + np.tanh(_SQRT_2_OVER_PI * (x + np.float32(0.044715) * x ** 3)))
    out = erf(x * np.float32(0.7071067811865476))  # a new buffer: the rest runs in place on it
    out += np.float32(1)
    out *= x
    out *= np.float32(0.5)  # exact, so the same value as (0.5 * x) * (1 + erf)
    return out


#: unary ops: float function of a float32 array
UNARY: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "RELU": lambda x: np.maximum(x, np.float32(0)),
    "RELU6": lambda x: np.clip(x, np.float32(0), np.float32(6)),
    "RELU_N1_TO_1": lambda x: np.clip(x, np.float32(-1), np.float32(1)),
    "RELU_0_TO_1": lambda x: np.clip(x, np.float32(0), np.float32(1)),
    "LOGISTIC": lambda x: np.float32(1) / (np.float32(1) + np.exp(-x)),
    "TANH": np.tanh,
    "HARD_SWISH": lambda x: x * np.clip(x + np.float32(3), np.float32(0), np.float32(6)) / np.float32(6),
    "EXP": np.exp,
    "SQRT": np.sqrt,
    "RSQRT": lambda x: np.float32(1) / np.sqrt(x),
    "ABS": np.abs,
    "NEG": np.negative,
    "SQUARE": np.square,
    "FLOOR": np.floor,
}

#: unary ops TFLite runs on raw integers without rescaling (or not at all) when quantized: refused here
FLOAT_ONLY = frozenset({"NEG", "SQUARE", "FLOOR"})

#: binary ops: float function of two broadcast float32 arrays
BINARY: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide,
    "SQUARED_DIFFERENCE": lambda a, b: np.square(a - b), "POW": np.power,
    "MAXIMUM": np.maximum, "MINIMUM": np.minimum,
}


@register(*UNARY, "GELU", "LEAKY_RELU")
def unary(ctx: OpContext) -> Kernel:
    """A unary op: float32 numpy, or an int8/uint8 lookup table."""
    name = ctx.op.op
    if name == "GELU":
        approximate = bool(ctx.option("approximate", 0))
        function: Callable[[np.ndarray], np.ndarray] = lambda x: _gelu(x, approximate)  # noqa: E731
    elif name == "LEAKY_RELU":
        alpha = np.float32(ctx.option("alpha", 0.0))
        function = lambda x: np.where(x >= 0, x, alpha * x)  # noqa: E731
    else:
        function = UNARY[name]
    if ctx.quantized(0):
        if name in FLOAT_ONLY:
            raise OpError(f"quantized {name} is not supported")
        return _lookup_table(ctx, function)
    ctx.require_dtypes((FLOAT,))
    return lambda x: function(x).astype(np.float32, copy=False)


def _lookup_table(ctx: OpContext, function: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    dtype, out_dtype = ctx.dtype(0), ctx.out_dtype()
    if out_dtype not in QUANTIZED:
        raise OpError(f"output must be int8/uint8 like the input, not {ctx.out.type_name}")
    low, high = integer_range(dtype)
    values = np.arange(low, high + 1).astype(dtype)
    table = quantize(function(dequantize(values, ctx.quant(ctx.tensor(0)))), ctx.quant(ctx.out), out_dtype)

    def run(x: np.ndarray) -> np.ndarray:
        return table[x.astype(np.int32) - low]

    return run


@register(*BINARY)
def binary(ctx: OpContext) -> Kernel:
    """A broadcasting binary op with an optional fused activation."""
    name = ctx.op.op
    activation = int(ctx.option("activation", 0))
    shapes = [ctx.tensor(i).shape for i in (0, 1)]
    try:
        check_elements(np.broadcast_shapes(*shapes), "the result")
    except ValueError:
        raise OpError(f"shapes {list(shapes[0])} and {list(shapes[1])} do not broadcast") from None
    if ctx.quantized(0):
        if not ctx.quantized(1):
            raise OpError("both inputs of a quantized op must be quantized")
        if name in ("ADD", "SUB"):
            return _add_int(ctx, negate=name == "SUB")
        if name == "MUL":
            return _mul_int(ctx)
        if name in ("MAXIMUM", "MINIMUM"):  # TFLite compares the raw values (one scale and zero point for all)
            return lambda a, b: BINARY[name](a, b)
        if name == "POW":
            raise OpError("quantized POW is not supported (TFLite has no integer POW either)")
        return _binary_via_float(ctx, BINARY[name])
    ctx.require_dtypes((FLOAT,), (0, 1))
    function = BINARY[name]
    if activation == 0:
        return function  # float32 in, float32 out
    return lambda a, b: apply_float_activation(np.asarray(function(a, b), dtype=np.float32), activation)


def _output_params(ctx: OpContext) -> Tuple[Quantization, np.dtype, Tuple[int, int]]:
    """The output's quantization, dtype and fused-activation clamp (int8/uint8 only)."""
    out_q = ctx.quant(ctx.out)
    dtype = ctx.out_dtype()
    if dtype not in QUANTIZED:
        raise OpError(f"output must be int8/uint8, not {ctx.out.type_name}")
    return out_q, dtype, activation_range(int(ctx.option("activation", 0)), out_q, dtype)


def _add_int(ctx: OpContext, negate: bool) -> Kernel:
    """TFLite's integer ADD/SUB: inputs shifted left 20 bits, rescaled to twice the larger input scale, summed,
    rescaled to the output."""
    q1, q2 = ctx.quant(ctx.tensor(0)), ctx.quant(ctx.tensor(1))
    out_q, dtype, (low, high) = _output_params(ctx)
    s1, s2, so = float(q1.scale[0]), float(q2.scale[0]), float(out_q.scale[0])
    twice_max = 2 * max(s1, s2)
    m1, sh1 = quantize_multiplier(np.array([s1 / twice_max]))
    m2, sh2 = quantize_multiplier(np.array([s2 / twice_max]))
    mo, sho = quantize_multiplier(np.array([twice_max / ((1 << 20) * so)]))
    if negate:
        m2 = -m2
    z1, z2, zo = int(q1.zero_point[0]), int(q2.zero_point[0]), int(out_q.zero_point[0])

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x1 = multiply_by_quantized_multiplier((a.astype(np.int64) - z1) << 20, m1, sh1)
        x2 = multiply_by_quantized_multiplier((b.astype(np.int64) - z2) << 20, m2, sh2)
        return np.clip(multiply_by_quantized_multiplier(x1 + x2, mo, sho) + zo, low, high).astype(dtype)

    return run


def _mul_int(ctx: OpContext) -> Kernel:
    q1, q2 = ctx.quant(ctx.tensor(0)), ctx.quant(ctx.tensor(1))
    out_q, dtype, (low, high) = _output_params(ctx)
    m, sh = quantize_multiplier(np.array([float(q1.scale[0]) * float(q2.scale[0]) / float(out_q.scale[0])]))
    z1, z2, zo = int(q1.zero_point[0]), int(q2.zero_point[0]), int(out_q.zero_point[0])

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        product = (a.astype(np.int64) - z1) * (b.astype(np.int64) - z2)
        return np.clip(multiply_by_quantized_multiplier(product, m, sh) + zo, low, high).astype(dtype)

    return run


def _binary_via_float(ctx: OpContext, function: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Kernel:
    q1, q2 = ctx.quant(ctx.tensor(0)), ctx.quant(ctx.tensor(1))
    out_q, dtype, (low, high) = _output_params(ctx)

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        result = function(dequantize(a, q1), dequantize(b, q2))
        return np.clip(quantize(result, out_q, dtype), low, high).astype(dtype)

    return run


@register("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")
def reduce(ctx: OpContext) -> Kernel:
    """Reductions over constant axes, ``keep_dims`` honoured."""
    rank = len(ctx.tensor(0).shape)
    axes = axes_tuple(ctx.const(1, "the reduction axes"), rank)
    keep = bool(ctx.option("keep_dims", 0))
    function = {"MEAN": np.mean, "SUM": np.sum, "REDUCE_MAX": np.max, "REDUCE_MIN": np.min,
                "REDUCE_PROD": np.prod}[ctx.op.op]
    if ctx.quantized(0):
        in_q = ctx.quant(ctx.tensor(0))
        out_q, dtype, _ = _output_params(ctx)
        if ctx.op.op in ("REDUCE_MAX", "REDUCE_MIN"):  # TFLite compares raw values (one scale and zero point)
            return lambda x, *_: function(x, axis=axes, keepdims=keep)
        if ctx.op.op == "REDUCE_PROD":
            raise OpError("quantized REDUCE_PROD is not supported")
        count = int(np.prod([ctx.tensor(0).shape[a] for a in axes], dtype=np.int64))
        multiplier, shift = _mean_or_sum_multiplier(float(in_q.scale[0]) / float(out_q.scale[0]), count,
                                                    ctx.op.op == "MEAN")
        z_in, z_out = int(in_q.zero_point[0]), int(out_q.zero_point[0])
        low, high = integer_range(dtype)

        def run_int(x: np.ndarray, *_: object) -> np.ndarray:
            total = x.astype(np.int64).sum(axis=axes, keepdims=keep) - z_in * count
            return np.clip(multiply_by_quantized_multiplier(total, multiplier, shift) + z_out, low, high).astype(dtype)

        return run_int
    ctx.require_dtypes((FLOAT,))
    return lambda x, *_: np.asarray(function(x, axis=axes, keepdims=keep), dtype=np.float32)


def _mean_or_sum_multiplier(real: float, count: int, mean: bool):
    """TFLite's QuantizedMeanOrSum rescaling: ``scale_in / scale_out`` as a fixed-point multiplier; for a mean,
    ``1 / count`` folded into it (the multiplier shifted left by up to ``floor(log2(count))`` bits, clamped to 32
    and to ``31 + shift``, then divided by ``count`` with truncation)."""
    multiplier, shift = quantize_multiplier(np.array([real]))
    if mean and count > 0:
        bits = min(count.bit_length() - 1, 32, 31 + int(shift[0]))
        multiplier = (multiplier << bits) // count
        shift = shift - bits
    return multiplier, shift


@register("SOFTMAX", "LOG_SOFTMAX")
def softmax(ctx: OpContext) -> Kernel:
    """SOFTMAX (``beta``) / LOG_SOFTMAX over the last axis."""
    beta = np.float32(ctx.option("beta", 1.0)) if ctx.op.op == "SOFTMAX" else np.float32(1)
    log = ctx.op.op == "LOG_SOFTMAX"

    def compute(x: np.ndarray) -> np.ndarray:
        shifted = (x - x.max(axis=-1, keepdims=True)) * beta
        if log:
            return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        e = np.exp(shifted)
        return e / e.sum(axis=-1, keepdims=True)

    if ctx.quantized(0):
        in_q = ctx.quant(ctx.tensor(0))
        out_q, dtype, _ = _output_params(ctx)
        return lambda x: quantize(compute(dequantize(x, in_q)), out_q, dtype)
    ctx.require_dtypes((FLOAT,))
    return lambda x: compute(x).astype(np.float32, copy=False)


@register("DEQUANTIZE")
def dequantize_op(ctx: OpContext) -> Kernel:
    """DEQUANTIZE: int8/uint8/int16 (per tensor or per channel) or float16 to float32."""
    dtype = ctx.dtype(0)
    if dtype == np.dtype(np.float16):
        return lambda x: x.astype(np.float32)
    if dtype not in (*QUANTIZED, np.dtype(np.int16)):
        raise OpError(f"DEQUANTIZE of {ctx.tensor(0).type_name} is not supported")
    quant = ctx.quant(ctx.tensor(0))
    return lambda x: dequantize(x, quant)


@register("QUANTIZE")
def quantize_op(ctx: OpContext) -> Kernel:
    """QUANTIZE: float32 to int8/uint8, or int8 <-> uint8 requantization (TFLite's ``Requantize``)."""
    out_q = ctx.quant(ctx.out)
    dtype = ctx.out_dtype()
    if dtype not in QUANTIZED or out_q.per_channel:
        raise OpError(f"QUANTIZE to {ctx.out.type_name} (per channel: {out_q.per_channel}) is not supported")
    if ctx.dtype(0) == FLOAT:
        return lambda x: quantize(x, out_q, dtype)
    if not ctx.quantized(0):
        raise OpError(f"QUANTIZE from {ctx.tensor(0).type_name} is not supported")
    in_q = ctx.quant(ctx.tensor(0))
    return lambda x: _requantize(x, in_q, out_q, dtype)


def _requantize(x: np.ndarray, in_q: Quantization, out_q: Quantization, dtype: np.dtype) -> np.ndarray:
    """``MultiplyByQuantizedMultiplier(x - zp_in, scale_in / scale_out) + zp_out``, clamped (identity when equal)."""
    z_in, z_out = int(in_q.zero_point[0]), int(out_q.zero_point[0])
    low, high = integer_range(dtype)
    if in_q.scale[0] == out_q.scale[0]:
        return np.clip(np.asarray(x, np.int64) - z_in + z_out, low, high).astype(dtype)
    m, sh = quantize_multiplier(np.array([float(in_q.scale[0]) / float(out_q.scale[0])]))
    return np.clip(multiply_by_quantized_multiplier(np.asarray(x, np.int64) - z_in, m, sh) + z_out,
                   low, high).astype(dtype)


def rescale_if_needed(ctx: OpContext, index: int) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """For data-movement ops on quantized tensors: a function mapping input ``index``'s values to the output's
    quantization, or None when both use the same parameters (or are float)."""
    if not ctx.quantized(index):
        return None
    in_q, out_q = ctx.quant(ctx.tensor(index)), ctx.quant(ctx.out)
    if in_q.scale[0] == out_q.scale[0] and in_q.zero_point[0] == out_q.zero_point[0] \
            and ctx.dtype(index) == ctx.out_dtype():
        return None
    dtype = ctx.out_dtype()
    return lambda x: _requantize(x, in_q, out_q, dtype)
