"""TFLite's integer arithmetic in numpy: fixed-point multipliers, rounding, activation ranges, (de)quantization.

These follow tensorflow/lite/kernels/internal/quantization_util.cc and common.h (the reference kernels):
a real multiplier ``m`` becomes an int32 ``multiplier`` in [2^30, 2^31) and a power-of-two ``shift``
(:func:`quantize_multiplier`), and ``x * m`` is computed as a saturating rounding doubling high multiply
followed by a rounding right shift (:func:`multiply_by_quantized_multiplier`), all vectorized over int64
arrays (per-channel multipliers broadcast along the last axis). Float <-> integer conversions round half
away from zero, as ``TfLiteRound`` does.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ._tflite_reader import Quantization

#: fused activation enum (ActivationFunctionType)
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3
_ACT_BOUNDS = {ACT_NONE: (None, None), ACT_RELU: (0.0, None), ACT_RELU_N1_TO_1: (-1.0, 1.0), ACT_RELU6: (0.0, 6.0)}


class QuantError(ValueError):
    """A quantization parameter the kernels cannot honour (zero or negative scale, unknown activation)."""


def round_half_away(x: np.ndarray) -> np.ndarray:
    """``std::round``: halves away from zero (numpy's ``rint`` rounds them to even)."""
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def quantize_multiplier(real: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """TFLite's ``QuantizeMultiplier`` for each value of ``real``: ``(int32 multiplier, shift)`` as int64 arrays
    with ``real ~= multiplier * 2^(shift - 31)``."""
    real = np.asarray(real, dtype=np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise QuantError("quantization scales must be positive and finite")
    fraction, shift = np.frexp(real)
    fixed = round_half_away(fraction * float(1 << 31)).astype(np.int64)
    carry = fixed == (1 << 31)
    fixed = np.where(carry, fixed // 2, fixed)
    shift = np.where(carry, shift + 1, shift).astype(np.int64)
    tiny = shift < -31
    fixed, shift = np.where(tiny, 0, fixed), np.where(tiny, 0, shift)
    if np.any(shift > 30):
        raise QuantError("a quantization scale ratio is too large (over 2^30)")
    return fixed, shift


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``MultiplyByQuantizedMultiplier``: ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left,
    multiplier), right)`` with ``left = max(shift, 0)``, ``right = max(-shift, 0)``; int64 in and out."""
    x = np.asarray(x, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    ab = (x << left) * multiplier
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C++ division truncates toward zero
    overflow = (x << left == -(1 << 31)) & (multiplier == -(1 << 31))
    high = np.where(overflow, (1 << 31) - 1, high)
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def integer_range(dtype: np.dtype) -> Tuple[int, int]:
    """The representable range of an integer dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def activation_range(activation: int, quant: Quantization, dtype: np.dtype) -> Tuple[int, int]:
    """``CalculateActivationRangeQuantized``: the integer clamp of a fused activation on an output tensor."""
    if activation not in _ACT_BOUNDS:
        raise QuantError(f"fused activation {activation} is not supported")
    low, high = integer_range(dtype)
    scale, zero_point = float(quant.scale[0]), int(quant.zero_point[0])
    lower, upper = _ACT_BOUNDS[activation]
    if lower is not None:
        low = max(low, zero_point + int(round_half_away(np.float64(lower / scale))))
    if upper is not None:
        high = min(high, zero_point + int(round_half_away(np.float64(upper / scale))))
    return low, high


def apply_float_activation(x: np.ndarray, activation: int) -> np.ndarray:
    """A fused activation on a float tensor (in place when it clamps)."""
    if activation not in _ACT_BOUNDS:
        raise QuantError(f"fused activation {activation} is not supported")
    lower, upper = _ACT_BOUNDS[activation]
    if lower is None and upper is None:
        return x
    return np.clip(x, lower, upper, out=x if x.flags.writeable else None)


def channel_params(quant: Quantization, axis_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Scale (float64) and zero point (int64) broadcast to ``axis_size`` channels."""
    scale = quant.scale.astype(np.float64)
    zero_point = quant.zero_point
    if scale.size not in (1, axis_size):
        raise QuantError(f"{scale.size} quantization scales for {axis_size} channels")
    return np.broadcast_to(scale, (axis_size,)), np.broadcast_to(zero_point, (axis_size,))


def dequantize(q: np.ndarray, quant: Quantization) -> np.ndarray:
    """``scale * (q - zero_point)`` as float32, per tensor or along ``quant.axis``."""
    shape = [1] * q.ndim
    if quant.per_channel:
        shape[quant.axis] = -1
    scale = quant.scale.astype(np.float32).reshape(shape) if q.ndim else quant.scale.astype(np.float32)[0]
    zero_point = quant.zero_point.reshape(shape) if q.ndim else quant.zero_point[0]
    return ((q.astype(np.int32) - zero_point.astype(np.int32)).astype(np.float32) * scale).astype(np.float32)


def quantize(x: np.ndarray, quant: Quantization, dtype: np.dtype) -> np.ndarray:
    """``round(x / scale) + zero_point`` clamped to ``dtype`` (per tensor), as TFLite's reference QUANTIZE does."""
    low, high = integer_range(dtype)
    scaled = round_half_away(np.asarray(x, np.float32) / np.float32(quant.scale[0]))
    return np.clip(scaled + int(quant.zero_point[0]), low, high).astype(dtype)


def requantize_output(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
                      bounds: Tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Scale int accumulators to the output: fixed-point multiply, add the zero point, clamp, cast."""
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(out, bounds[0], bounds[1]).astype(dtype)
