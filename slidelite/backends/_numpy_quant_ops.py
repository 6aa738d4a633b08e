"""numpy kernels for ONNX's int8 operators and the onnxruntime contrib ops its quantizer emits.

Integer semantics are exact: quantization rounds half to even (``np.rint``) and saturates to the
target type; integer products are summed in float64 BLAS (exact: every partial sum of 8-bit products
stays far below 2**53) and returned as int32, so ``MatMulInteger``/``ConvInteger`` equal the integer
definition bit for bit while running at BLAS speed. Requantization (``QLinearConv``/``QLinearMatMul``)
multiplies the int32 accumulator by ``a_scale * b_scale / y_scale`` in float32, as onnxruntime does.
Block quantization, int4/float8 types and other unsupported forms are refused at load.

Registered into :data:`._numpy_ops.OPS` on import.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._blas_threads import blas_matmul
from ._numpy_ops import Consts, Conv2d, Kernel, OpError, register_op
from ._onnx_reader import Node

#: QuantizeLinear ``output_dtype`` codes (TensorProto) the kernels produce
_QUANT_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}


def saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round half to even and clip to ``dtype``'s range."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _per_axis(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-tensor (scalar) or per-axis (1-D) quantization parameter, broadcastable against rank ``ndim``."""
    if param.ndim == 0 or param.size == 1 and param.ndim == 1:
        return param.reshape(())
    if param.ndim != 1:
        raise OpError(f"blocked quantization parameters of shape {param.shape} are not supported")
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return param.reshape(shape)


def _check_unblocked(node: Node) -> None:
    if node.attributes.get("block_size", 0):
        raise OpError(f"{node.op_type} with block_size (blocked quantization) is not supported")


def _zero_point_dtype(node: Node, consts: Consts) -> Optional[np.dtype]:
    """The output dtype a QuantizeLinear node declares (zero point's type, else ``output_dtype``)."""
    zero = consts[2] if len(consts) > 2 else None
    if zero is not None:
        return zero.dtype
    code = node.attributes.get("output_dtype", 0)
    if code and code not in _QUANT_TYPES:
        raise OpError(f"QuantizeLinear output_dtype {code} is not supported (int8, uint8, int16, uint16)")
    return np.dtype(_QUANT_TYPES[code]) if code else None


@register_op("QuantizeLinear")
def _quantize_linear(node: Node, consts: Consts) -> Kernel:
    _check_unblocked(node)
    axis = node.attributes.get("axis", 1)
    declared = _zero_point_dtype(node, consts)
    if declared is not None and declared.kind not in "iu":
        raise OpError(f"QuantizeLinear to {declared} is not supported")

    def quantize_linear(x: np.ndarray, scale: np.ndarray, zero: Optional[np.ndarray] = None) -> np.ndarray:
        dtype = zero.dtype if zero is not None else (declared or np.dtype(np.uint8))
        if dtype.kind not in "iu" or dtype.itemsize > 2:
            raise OpError(f"QuantizeLinear to {dtype} is not supported")
        scaled = np.rint(x.astype(np.float32) / _per_axis(scale, x.ndim, axis).astype(np.float32))
        if zero is not None:
            scaled += _per_axis(zero, x.ndim, axis)
        return saturate(scaled, dtype)

    return quantize_linear


@register_op("DequantizeLinear")
def _dequantize_linear(node: Node, consts: Consts) -> Kernel:
    _check_unblocked(node)
    axis = node.attributes.get("axis", 1)

    def dequantize_linear(x: np.ndarray, scale: np.ndarray, zero: Optional[np.ndarray] = None) -> np.ndarray:
        if x.dtype.kind not in "iu":
            raise OpError(f"DequantizeLinear of {x.dtype} is not supported")
        values = x.astype(np.int32)
        if zero is not None:
            values = values - _per_axis(zero, x.ndim, axis).astype(np.int32)
        return (values.astype(np.float32) * _per_axis(scale, x.ndim, axis)).astype(scale.dtype)

    return dequantize_linear


def dynamic_quantize(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DynamicQuantizeLinear: uint8 codes, float32 scale and uint8 zero point covering ``[min(x, 0), max(x, 0)]``."""
    low = np.float32(min(float(x.min(initial=0.0)), 0.0))
    high = np.float32(max(float(x.max(initial=0.0)), 0.0))
    scale = np.float32((high - low) / np.float32(255))
    if scale == 0:
        return np.zeros(x.shape, np.uint8), np.array(0, np.float32), np.array(0, np.uint8)
    zero = np.uint8(np.clip(np.rint(-low / scale), 0, 255))
    codes = saturate(np.rint(x.astype(np.float32) / scale) + np.float32(zero), np.dtype(np.uint8))
    return codes, np.array(scale, np.float32), np.array(zero, np.uint8)


register_op("DynamicQuantizeLinear")(lambda node, consts: dynamic_quantize)


def _centred(values: np.ndarray, zero: Optional[np.ndarray], axis_from_end: Optional[int]) -> np.ndarray:
    """``values - zero`` in float64 (exact for 8/16-bit integers); a 1-D zero point applies along an axis."""
    out = values.astype(np.float64)
    if zero is None:
        return out
    zero = zero.astype(np.float64)
    if zero.ndim == 1 and zero.size > 1 and axis_from_end == 2:  # per-row zero point of A: shape (M,) -> (M, 1)
        zero = zero.reshape(-1, 1)
    return out - zero


class IntegerMatMul:
    """``(A - a_zero) @ (B - b_zero)`` as int32, B prepared once when constant."""

    def __init__(self, b: Optional[np.ndarray], b_zero: Optional[np.ndarray]) -> None:
        self.b = None if b is None else _centred(b, b_zero, None)

    def __call__(self, a: np.ndarray, b: np.ndarray, a_zero: Optional[np.ndarray] = None,
                 b_zero: Optional[np.ndarray] = None) -> np.ndarray:
        for value in (a, b):
            if value.dtype.kind not in "iu" or value.dtype.itemsize != 1:
                raise OpError(f"integer matmul of {value.dtype} is not supported (int8/uint8)")
        right = self.b if self.b is not None else _centred(b, b_zero, None)
        return blas_matmul(_centred(a, a_zero, 2), right).astype(np.int32)


def _const(consts: Consts, index: int) -> Optional[np.ndarray]:
    return consts[index] if len(consts) > index else None


def _is_const_or_absent(node: Node, consts: Consts, index: int) -> bool:
    return len(node.inputs) <= index or not node.inputs[index] or consts[index] is not None


@register_op("MatMulInteger")
def _matmul_integer(node: Node, consts: Consts) -> Kernel:
    if consts[1] is not None and _is_const_or_absent(node, consts, 3):
        return IntegerMatMul(consts[1], _const(consts, 3))
    return IntegerMatMul(None, None)


class IntegerConv:
    """ConvInteger: the int32 convolution of ``x - x_zero`` with ``w - w_zero`` (float64, exact)."""

    def __init__(self, node: Node, weight: Optional[np.ndarray], w_zero: Optional[np.ndarray]) -> None:
        self.attrs = node.attributes
        self.conv = None if weight is None else Conv2d(self.attrs, _weights(weight, w_zero), None)

    def accumulate(self, x: np.ndarray, x_zero: Optional[np.ndarray], w: np.ndarray,
                   w_zero: Optional[np.ndarray]) -> np.ndarray:
        """The exact accumulator, as float64."""
        conv = self.conv or Conv2d(self.attrs, _weights(w, w_zero), None)
        shift = 0.0 if x_zero is None else x_zero.astype(np.float64).reshape(())
        return conv(x.astype(np.float64) - shift)

    def __call__(self, x: np.ndarray, w: np.ndarray, x_zero: Optional[np.ndarray] = None,
                 w_zero: Optional[np.ndarray] = None) -> np.ndarray:
        return self.accumulate(x, x_zero, w, w_zero).astype(np.int32)


def _weights(weight: np.ndarray, zero: Optional[np.ndarray]) -> np.ndarray:
    """Conv weights minus their (per-tensor or per-output-channel) zero point, float64."""
    out = weight.astype(np.float64)
    if zero is not None:
        out -= zero.astype(np.float64).reshape((-1,) + (1,) * (weight.ndim - 1)) if zero.size > 1 else zero.reshape(())
    return out


@register_op("ConvInteger")
def _conv_integer(node: Node, consts: Consts) -> Kernel:
    weight_ready = consts[1] is not None and _is_const_or_absent(node, consts, 3)
    return IntegerConv(node, consts[1] if weight_ready else None, _const(consts, 3) if weight_ready else None)


def _requantize(acc: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray, y_scale: np.ndarray,
                y_zero: np.ndarray, channel_shape: Tuple[int, ...]) -> np.ndarray:
    """int32 accumulator -> y's integer type: ``rint(acc * a_scale * b_scale / y_scale) + y_zero``, saturated."""
    b = b_scale.astype(np.float32)
    multiplier = (a_scale.astype(np.float32) * (b.reshape(channel_shape) if b.size > 1 else b.reshape(()))
                  / y_scale.astype(np.float32))
    scaled = np.rint(acc.astype(np.float32) * multiplier) + y_zero.astype(np.float32)
    return saturate(scaled, y_zero.dtype)


@register_op("QLinearConv")
def _qlinear_conv(node: Node, consts: Consts) -> Kernel:
    weight_ready = consts[3] is not None and consts[5] is not None
    integer = IntegerConv(node, consts[3] if weight_ready else None, consts[5] if weight_ready else None)

    def qlinear_conv(x: np.ndarray, x_scale: np.ndarray, x_zero: np.ndarray, w: np.ndarray, w_scale: np.ndarray,
                     w_zero: np.ndarray, y_scale: np.ndarray, y_zero: np.ndarray,
                     bias: Optional[np.ndarray] = None) -> np.ndarray:
        acc = integer.accumulate(x, x_zero, w, w_zero)
        if bias is not None:
            acc += bias.astype(np.float64).reshape(1, -1, 1, 1)
        return _requantize(acc, x_scale, w_scale, y_scale, y_zero, (1, -1, 1, 1))

    return qlinear_conv


@register_op("QLinearMatMul")
def _qlinear_matmul(node: Node, consts: Consts) -> Kernel:
    integer = _matmul_integer(Node("MatMulInteger", "", node.name, [node.inputs[0], node.inputs[3], node.inputs[2],
                                                                   node.inputs[5]], node.outputs),
                              [consts[0], consts[3], consts[2], consts[5]])

    def qlinear_matmul(a: np.ndarray, a_scale: np.ndarray, a_zero: np.ndarray, b: np.ndarray, b_scale: np.ndarray,
                       b_zero: np.ndarray, y_scale: np.ndarray, y_zero: np.ndarray) -> np.ndarray:
        acc = integer(a, b, a_zero, b_zero)
        return _requantize(acc, a_scale, b_scale, y_scale, y_zero, (1, -1))

    return qlinear_matmul


# --------------------------------------------------------------------------------------------- com.microsoft

@register_op("com.microsoft.MatMulIntegerToFloat")
def _matmul_integer_to_float(node: Node, consts: Consts) -> Kernel:
    integer = _matmul_integer(node, [consts[0], consts[1], _const(consts, 4), _const(consts, 5)])

    def matmul_integer_to_float(a: np.ndarray, b: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray,
                                a_zero: Optional[np.ndarray] = None, b_zero: Optional[np.ndarray] = None,
                                bias: Optional[np.ndarray] = None) -> np.ndarray:
        out = integer(a, b, a_zero, b_zero).astype(np.float32) * (a_scale * b_scale).astype(np.float32)
        return out + bias if bias is not None else out

    return matmul_integer_to_float


@register_op("com.microsoft.DynamicQuantizeMatMul")
def _dynamic_quantize_matmul(node: Node, consts: Consts) -> Kernel:
    integer = _matmul_integer(node, [None, consts[1], None, _const(consts, 3)])

    def dynamic_quantize_matmul(a: np.ndarray, b: np.ndarray, b_scale: np.ndarray, b_zero: Optional[np.ndarray] = None,
                                bias: Optional[np.ndarray] = None) -> np.ndarray:
        codes, a_scale, a_zero = dynamic_quantize(a)
        out = integer(codes, b, a_zero, b_zero).astype(np.float32) * (a_scale * b_scale).astype(np.float32)
        return out + bias if bias is not None else out

    return dynamic_quantize_matmul
