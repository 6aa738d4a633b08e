"""numpy kernels for ONNX's elementwise math, comparison, logic and reduction operators.

Registered into :data:`._numpy_ops.OPS` on import (the numpy backend imports this module). Float ops
keep their input's dtype (numpy ufuncs do); every factory parses its attributes at load and refuses the
ones it cannot honour with :class:`._numpy_ops.OpError`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ._numpy_ops import Consts, Kernel, OpError, reduce_axes, register_op, register_simple
from ._onnx_reader import Node


def _typed(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a float formula so its result keeps the input's dtype (Python float constants would upcast)."""
    return lambda x: np.asarray(fn(x), dtype=x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), without overflow warnings for large |x|."""
    out = np.exp(-np.abs(x))
    positive = x >= 0
    return np.where(positive, 1 / (1 + out), out / (1 + out)).astype(x.dtype, copy=False)


def _softplus(x: np.ndarray) -> np.ndarray:
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


_UNARY = {
    "Sigmoid": _sigmoid, "Tanh": np.tanh, "Exp": np.exp, "Sqrt": np.sqrt, "Log": np.log, "Abs": np.abs,
    "Reciprocal": _typed(lambda x: 1 / x), "Floor": np.floor, "Ceil": np.ceil, "Round": np.rint, "Sign": np.sign,
    "Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan,
    "Sinh": np.sinh, "Cosh": np.cosh, "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh,
    "Not": np.logical_not, "IsNaN": np.isnan, "Softplus": _softplus, "Softsign": _typed(lambda x: x / (1 + np.abs(x))),
    "HardSwish": _typed(lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "Mish": _typed(lambda x: x * np.tanh(_softplus(x))),
}
_BINARY = {
    "Pow": lambda a, b: np.power(a, b.astype(a.dtype) if a.dtype.kind == "f" else b).astype(a.dtype, copy=False),
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor, "Less": np.less, "Greater": np.greater,
    "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal, "PRelu": lambda x, s: np.where(x < 0, x * s, x),
    "BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor,
}
for _name, _fn in {**_UNARY, **_BINARY, "BitwiseNot": np.invert}.items():
    register_simple(_name, _fn)


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: bool = False) -> Kernel:
    def kernel(*xs: np.ndarray) -> np.ndarray:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return (out / np.asarray(len(xs), out.dtype)).astype(out.dtype, copy=False) if mean else out

    return kernel


register_simple("Max", _variadic(np.maximum))  # np.maximum/np.minimum propagate NaN, as ONNX Max/Min do
register_simple("Min", _variadic(np.minimum))
register_simple("Sum", _variadic(np.add))
register_simple("Mean", _variadic(np.add, mean=True))


def _float_attr(node: Node, key: str, default: float) -> float:
    return float(node.attributes.get(key, default))


@register_op("LeakyRelu")
def _leaky_relu(node: Node, consts: Consts) -> Kernel:
    alpha = _float_attr(node, "alpha", 0.01)
    return lambda x: np.where(x < 0, x * x.dtype.type(alpha), x)


@register_op("Elu", "Celu")
def _elu(node: Node, consts: Consts) -> Kernel:
    alpha = _float_attr(node, "alpha", 1.0)
    scale = alpha if node.op_type == "Celu" else 1.0  # Celu: alpha * (exp(x / alpha) - 1)

    def elu(x: np.ndarray) -> np.ndarray:
        negative = x.dtype.type(alpha) * np.expm1(np.minimum(x, 0) / x.dtype.type(scale))
        return np.where(x < 0, negative, x).astype(x.dtype, copy=False)

    return elu


@register_op("Selu")
def _selu(node: Node, consts: Consts) -> Kernel:
    alpha = _float_attr(node, "alpha", 1.67326319217681884765625)
    gamma = _float_attr(node, "gamma", 1.05070102214813232421875)

    def selu(x: np.ndarray) -> np.ndarray:
        out = np.where(x <= 0, alpha * np.expm1(np.minimum(x, 0)), x) * gamma
        return out.astype(x.dtype, copy=False)

    return selu


@register_op("ThresholdedRelu")
def _thresholded_relu(node: Node, consts: Consts) -> Kernel:
    alpha = _float_attr(node, "alpha", 1.0)
    return lambda x: np.where(x > alpha, x, x.dtype.type(0))


@register_op("HardSigmoid")
def _hard_sigmoid(node: Node, consts: Consts) -> Kernel:
    alpha, beta = _float_attr(node, "alpha", 0.2), _float_attr(node, "beta", 0.5)

    def hard_sigmoid(x: np.ndarray) -> np.ndarray:
        out = x * x.dtype.type(alpha)
        out += x.dtype.type(beta)
        return np.clip(out, 0, 1, out=out)

    return hard_sigmoid


@register_op("Shrink")
def _shrink(node: Node, consts: Consts) -> Kernel:
    bias, lambd = _float_attr(node, "bias", 0.0), _float_attr(node, "lambd", 0.5)

    def shrink(x: np.ndarray) -> np.ndarray:
        out = np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))
        return out.astype(x.dtype, copy=False)

    return shrink


@register_op("IsInf")
def _is_inf(node: Node, consts: Consts) -> Kernel:
    positive, negative = node.attributes.get("detect_positive", 1), node.attributes.get("detect_negative", 1)
    return lambda x: np.isinf(x) & (((x > 0) & bool(positive)) | ((x < 0) & bool(negative)))


@register_op("BitShift")
def _bit_shift(node: Node, consts: Consts) -> Kernel:
    direction = node.attributes.get("direction", b"")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("LEFT", "RIGHT"):
        raise OpError(f"BitShift direction '{direction}' is not LEFT or RIGHT")
    return np.left_shift if direction == "LEFT" else np.right_shift


@register_op("CastLike")
def _cast_like(node: Node, consts: Consts) -> Kernel:
    return lambda x, like: x.astype(like.dtype)


@register_op("LogSoftmax")
def _log_softmax(node: Node, consts: Consts) -> Kernel:
    axis = node.attributes.get("axis", -1)

    def log_softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))

    return log_softmax


@register_op("Hardmax")
def _hardmax(node: Node, consts: Consts) -> Kernel:
    axis = node.attributes.get("axis", -1)

    def hardmax(x: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x)
        np.put_along_axis(out, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
        return out

    return hardmax


# --------------------------------------------------------------------------------------------- reductions

_REDUCERS = {
    "ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max, "ReduceMin": np.min, "ReduceProd": np.prod,
    "ReduceL1": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "ReduceL2": lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims)),
    "ReduceSumSquare": lambda x, axis, keepdims: np.sum(np.square(x), axis=axis, keepdims=keepdims),
    "ReduceLogSum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "ReduceLogSumExp": lambda x, axis, keepdims: _log_sum_exp(x, axis, keepdims),
}


def _log_sum_exp(x: np.ndarray, axis: Optional[tuple], keepdims: bool) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True) if x.size else np.zeros((1,) * x.ndim, x.dtype)
    peak = np.where(np.isfinite(peak), peak, 0)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


def _identity(dtype: np.dtype, op_type: str) -> object:
    """The identity of max (the lowest value) or min (the highest) in ``dtype``."""
    if dtype.kind == "f":
        return -np.inf if op_type == "ReduceMax" else np.inf
    if dtype.kind == "b":
        return op_type != "ReduceMax"
    info = np.iinfo(dtype)
    return info.min if op_type == "ReduceMax" else info.max


@register_op(*_REDUCERS)
def _reduce(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    keepdims = bool(attrs.get("keepdims", 1))
    noop = bool(attrs.get("noop_with_empty_axes", 0))
    reducer = _REDUCERS[node.op_type]

    def reduce(x: np.ndarray, axes: Optional[np.ndarray] = None) -> np.ndarray:
        chosen = reduce_axes(attrs, axes)
        if not chosen and noop:
            return x
        if node.op_type in ("ReduceMax", "ReduceMin"):  # an empty reduction gives the identity (-inf / inf)
            out = reducer(x, axis=chosen or None, keepdims=keepdims, initial=_identity(x.dtype, node.op_type))
        else:
            out = reducer(x, axis=chosen or None, keepdims=keepdims)
        return np.asarray(out, dtype=x.dtype)

    return reduce


@register_op("ArgMax", "ArgMin")
def _arg_extreme(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis, keepdims, last = attrs.get("axis", 0), bool(attrs.get("keepdims", 1)), bool(attrs.get("select_last_index", 0))
    find = np.argmax if node.op_type == "ArgMax" else np.argmin

    def arg_extreme(x: np.ndarray) -> np.ndarray:
        if last:
            flipped = np.flip(x, axis=axis)
            index = x.shape[axis] - 1 - find(flipped, axis=axis)
        else:
            index = find(x, axis=axis)
        index = index.astype(np.int64)
        return np.expand_dims(index, axis) if keepdims else index

    return arg_extreme


@register_op("CumSum")
def _cumsum(node: Node, consts: Consts) -> Kernel:
    exclusive, reverse = bool(node.attributes.get("exclusive", 0)), bool(node.attributes.get("reverse", 0))

    def cumsum(x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        a = int(np.asarray(axis).reshape(-1)[0])
        data = np.flip(x, a) if reverse else x
        out = np.cumsum(data, axis=a, dtype=x.dtype)
        if exclusive:
            out = np.concatenate([np.zeros_like(np.take(out, [0], axis=a)), np.take(out, range(out.shape[a] - 1), axis=a)],
                                 axis=a)
        return np.flip(out, a) if reverse else out

    return cumsum


@register_op("Einsum")
def _einsum(node: Node, consts: Consts) -> Kernel:
    equation = node.attributes.get("equation", b"")
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    if not equation or "..." in equation:
        raise OpError(f"Einsum equation '{equation}' is not supported (no ellipsis)")
    return lambda *xs: np.einsum(equation, *xs)
