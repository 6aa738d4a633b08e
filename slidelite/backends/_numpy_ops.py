"""The numpy backend's op registry and its core kernels: the ops of slidelite's own exports (Conv, Gemm,
MatMul, LayerNormalization, Gelu, Softmax, shape arithmetic...).

Each operator is a *factory* registered with :func:`register_op`: it receives the node (attributes, input
and output names) and the constant value of each input (None for inputs only known at run time) and
returns a *kernel*, a pure function of the node's inputs (``None`` for omitted optional inputs) that
returns one array or a tuple. Factories do the per-model work once at load (weight layout for Conv/Gemm,
attribute parsing) and refuse what they cannot run with :class:`OpError`; kernels never modify their
inputs, so one loaded graph can run in several threads at once. More ops register themselves from
:mod:`._numpy_math_ops`, :mod:`._numpy_index_ops`, :mod:`._numpy_nn_ops`, :mod:`._numpy_quant_ops` and
:mod:`._numpy_conv_nhwc` (docs/install.md lists the whole set).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._blas_threads import Epilogue, blas_matmul, parallel_ranges
from ._kernel_registry import registrar
from ._onnx_reader import Node

Attrs = Dict[str, Any]
Consts = Sequence[Optional[np.ndarray]]
Result = Union[np.ndarray, Tuple[np.ndarray, ...]]
Kernel = Callable[..., Result]
Factory = Callable[[Node, Consts], Kernel]

#: op key (:func:`op_key`) -> factory; the numpy backend refuses every other op.
OPS: Dict[str, Factory] = {}

# TensorProto.DataType codes of Cast's ``to`` attribute
CAST_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


class OpError(ValueError):
    """A node's attributes or inputs are outside what the kernel supports (message names the problem)."""


def op_key(node: Node) -> str:
    """The registry key of a node's op: ``op_type`` in the default domain, else ``domain.op_type``."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


#: decorator: ``@register_op("Add", ...)`` registers a factory under one or more op types
register_op = registrar(OPS)


def register_simple(name: str, fn: Callable[..., np.ndarray]) -> None:
    """Register an op whose kernel ignores attributes."""
    OPS[name] = lambda node, consts: fn


def int_list(values: Optional[np.ndarray]) -> List[int]:
    return [] if values is None else [int(v) for v in np.asarray(values).reshape(-1)]


def text_attr(attrs: Attrs, key: str, default: str) -> str:
    value = attrs.get(key, default)
    return value.decode("utf-8") if isinstance(value, bytes) else value


def apply_activation(out: np.ndarray, activation: Optional[tuple]) -> np.ndarray:
    """Apply a fused activation (``("clip", lo, hi)``, from :mod:`._onnx_fusion`) to ``out`` in place."""
    if activation is not None:
        _, lo, hi = activation
        if hi is None:
            np.maximum(out, out.dtype.type(lo), out=out)
        elif lo is None:
            np.minimum(out, out.dtype.type(hi), out=out)
        else:
            np.clip(out, out.dtype.type(lo), out.dtype.type(hi), out=out)
    return out


#: elements per block of the cache-blocked kernels: several passes over a 256 KB block stay in the L2 cache
BLOCK = 65536


def blocked(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """An elementwise multi-pass kernel run block by block (same result, ~2x faster on large tensors); the
    blocks are shared among the requested threads."""

    def run(x: np.ndarray) -> np.ndarray:
        if x.size <= BLOCK:
            return fn(x)
        flat = np.ascontiguousarray(x).reshape(-1)
        first = fn(flat[:BLOCK])
        out = np.empty(flat.shape, first.dtype)
        out[:BLOCK] = first

        def blocks(lo: int, hi: int) -> None:
            for start in range(lo * BLOCK, min(hi * BLOCK, flat.size), BLOCK):
                out[start:start + BLOCK] = fn(flat[start:start + BLOCK])

        parallel_ranges(-(-flat.size // BLOCK) - 1, lambda lo, hi: blocks(lo + 1, hi + 1))
        return out.reshape(x.shape)

    return run


def blocked_rows(fn: Callable[..., np.ndarray], x: np.ndarray, inner: int, *args: Any) -> np.ndarray:
    """Run a row-wise kernel (rows of ``inner`` trailing elements) on blocks of rows, as :func:`blocked`."""
    rows = x.size // max(inner, 1)
    step = max(BLOCK // max(inner, 1), 1)
    if rows <= step:
        return fn(x, *args)
    flat = np.ascontiguousarray(x).reshape((rows,) + x.shape[x.ndim - _trailing(x.shape, inner):])
    out = np.empty(flat.shape, x.dtype)

    def blocks(lo: int, hi: int) -> None:
        for start in range(lo * step, min(hi * step, rows), step):
            out[start:start + step] = fn(flat[start:start + step], *args)

    parallel_ranges(-(-rows // step), blocks)
    return out.reshape(x.shape)


def _trailing(shape: Tuple[int, ...], inner: int) -> int:
    """How many trailing axes of ``shape`` multiply to ``inner``."""
    count, size = 0, 1
    while size < inner and count < len(shape):
        count += 1
        size *= shape[-count]
    return count


# --------------------------------------------------------------------------------------------- elementwise

def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX integer Div truncates toward zero (numpy's ``//`` floors)."""
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):
        return _int_div(a, b)
    return np.divide(a, b)


for _name, _fn in {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div, "Neg": np.negative,
                   "Identity": lambda x: x,
                   "Relu": lambda x: np.maximum(x, x.dtype.type(0)), "Equal": np.equal,
                   "Where": np.where}.items():
    register_simple(_name, _fn)


@register_op("Mod")
def _mod(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    return np.fmod if attrs.get("fmod", 0) else np.mod


@register_op("Clip")
def _clip(node: Node, consts: Consts) -> Kernel:
    def clip(x: np.ndarray, lo: Optional[np.ndarray] = None, hi: Optional[np.ndarray] = None) -> np.ndarray:
        if lo is None and hi is None:
            return x
        out = np.maximum(x, lo.astype(x.dtype, copy=False)) if lo is not None else x.copy()
        return out if hi is None else np.minimum(out, hi.astype(x.dtype, copy=False), out=out)

    return clip


# Rational approximation of erf on [-4, 4] (the float32 approximation of Eigen/XLA; |error| < 5e-7)
_ERF_P = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                   -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02])
_ERF_Q = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                   -1.42647390514189e-02])


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in ``x``'s float dtype (numpy has no erf)."""
    z = np.clip(x, -4.0, 4.0)
    z2 = z * z
    p, q = _horner(z2, _ERF_P.astype(z.dtype)), _horner(z2, _ERF_Q.astype(z.dtype))
    p *= z
    p /= q
    return p


def _horner(z: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """The polynomial with ``coefficients`` (highest power first, in ``z``'s dtype: a float64 scalar would
    make every pass compute in float64) at ``z``, in place on one new buffer."""
    out = z * coefficients[0]
    out += coefficients[1]
    for c in coefficients[2:]:
        out *= z
        out += c
    return out


# Abramowitz & Stegun 7.1.26: erfc(u) = t * poly(t) * exp(-u*u), t = 1 / (1 + p*u), u >= 0, |error| < 1.5e-7
_ERFC_P = 0.3275911
_SQRT_HALF = 0.7071067811865476
_ERFC_POLY = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # highest power first


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """Exact (erf) Gelu, ``x * Phi(x)``, elementwise in ``x``'s float dtype (float32: |error| < 1e-6).

    ``Phi(x) = 1 - erfc(|x| / sqrt(2)) / 2`` for ``x >= 0`` and ``erfc(|x| / sqrt(2)) / 2`` below, with erfc
    from Abramowitz & Stegun 7.1.26: about 20 passes, against about 30 for the rational erf (and a clip).
    """
    dtype = x.dtype.type
    t = np.abs(x)
    t *= dtype(_ERFC_P * _SQRT_HALF)
    t += dtype(1.0)
    np.reciprocal(t, out=t)
    half_erfc = t * dtype(0.5 * _ERFC_POLY[0])
    for a in _ERFC_POLY[1:]:
        half_erfc += dtype(0.5 * a)
        half_erfc *= t
    growth = x * x  # exp(x*x/2); dividing by it (inf for large |x| gives 0) saves a negation pass
    growth *= dtype(0.5)
    np.exp(growth, out=growth)
    half_erfc /= growth
    signed = np.copysign(half_erfc, x, out=half_erfc)
    phi = np.subtract(x >= 0, signed, out=signed)  # 1 - erfc/2, or erfc/2 itself: no cancellation in the tail
    phi *= x
    return phi


register_simple("Erf", blocked(erf))


@register_op("Gelu")
def _gelu(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    if text_attr(attrs, "approximate", "none") == "tanh":
        def gelu_tanh(x: np.ndarray) -> np.ndarray:
            inner = np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x))
            return np.float32(0.5) * x * (inner + np.float32(1.0))

        return blocked(gelu_tanh)

    return blocked(gelu_erf)


@register_op("Cast")
def _cast(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    to = attrs.get("to")
    if to not in CAST_TYPES:
        raise OpError(f"Cast to ONNX type {to} is not supported")
    dtype = CAST_TYPES[to]
    return lambda x: x.astype(dtype)


# --------------------------------------------------------------------------------------------- reductions, norms

def reduce_axes(attrs: Attrs, axes_input: Optional[np.ndarray]) -> Optional[Tuple[int, ...]]:
    """Axes from the attribute (older opsets) or the input (newer ones); None = all axes."""
    axes = attrs.get("axes")
    if axes is None and axes_input is not None:
        axes = int_list(axes_input)
    return None if axes is None else tuple(axes)


register_simple("GlobalAveragePool", lambda x: np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True))


@register_op("Softmax")
def _softmax(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis = attrs.get("axis", -1)

    def softmax_rows(x: np.ndarray) -> np.ndarray:
        out = x - np.max(x, axis=axis, keepdims=True)
        np.exp(out, out=out)
        out /= np.sum(out, axis=axis, keepdims=True)
        return out

    def softmax(x: np.ndarray) -> np.ndarray:
        if axis % x.ndim != x.ndim - 1:
            return softmax_rows(x)
        return blocked_rows(softmax_rows, x, x.shape[-1])

    return softmax


@register_op("LayerNormalization")
def _layer_norm(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis, eps = attrs.get("axis", -1), attrs.get("epsilon", 1e-5)

    def layer_norm(x: np.ndarray, scale: np.ndarray, bias: Optional[np.ndarray] = None, start: int = axis) -> Result:
        axes = tuple(range(start % x.ndim, x.ndim))
        mean = np.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        inv_std = 1.0 / np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True) + x.dtype.type(eps))
        y = centred * inv_std
        y *= scale
        if bias is not None:
            y += bias
        return y, mean, inv_std

    if len([o for o in node.outputs if o]) > 1:
        return layer_norm

    def normalized(x: np.ndarray, scale: np.ndarray, bias: Optional[np.ndarray] = None) -> np.ndarray:
        inner = int(np.prod(x.shape[axis % x.ndim:]))
        return blocked_rows(lambda rows: normalize_rows(rows, inner, scale, bias, eps), x, inner)

    return normalized


def normalize_rows(x: np.ndarray, inner: int, scale: np.ndarray, bias: Optional[np.ndarray], eps: float) -> np.ndarray:
    """Layer normalization of ``x`` over its trailing ``inner`` elements, then ``* scale + bias``: the variance
    is one dot product per row (``einsum``), no squared copy; the other passes are in place on one buffer."""
    rows = x.reshape(-1, inner)
    out = rows - np.mean(rows, axis=1, keepdims=True)
    inv_std = np.einsum("ij,ij->i", out, out)[:, None]
    inv_std *= x.dtype.type(1.0 / inner)
    inv_std += x.dtype.type(eps)
    np.sqrt(inv_std, out=inv_std)
    out /= inv_std
    out = out.reshape(x.shape)
    out *= scale
    if bias is not None:
        out += bias
    return out


# --------------------------------------------------------------------------------------------- linear algebra

def bias_activation(bias: Optional[np.ndarray], activation: Optional[tuple]) -> Optional[Epilogue]:
    """``out += bias`` (broadcast along the last axis) and the fused activation, in place, as an epilogue for
    :func:`blas_matmul` (None when there is neither)."""
    if bias is None and activation is None:
        return None

    def epilogue(out: np.ndarray) -> None:
        if bias is not None:
            out += bias
        apply_activation(out, activation)

    return epilogue


@register_op("MatMul")
def _matmul(node: Node, consts: Consts) -> Kernel:
    epilogue = bias_activation(node.attributes.get("_bias"), node.attributes.get("_activation"))
    if epilogue is None:
        return blas_matmul
    return lambda a, b: blas_matmul(a, b, epilogue)


@register_op("Gemm")
def _gemm(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    b_const = consts[1] if len(consts) > 1 else None
    c_const = consts[2] if len(consts) > 2 else None
    if b_const is not None:  # weights: transpose and scale once, contiguous for BLAS
        b_const = np.ascontiguousarray(b_const.T if trans_b else b_const)
        b_const = b_const * b_const.dtype.type(alpha) if alpha != 1.0 else b_const
    if c_const is not None and beta != 1.0:
        c_const = c_const * c_const.dtype.type(beta)

    activation = attrs.get("_activation")
    # a constant row bias and the activation run on each block of rows as it is computed
    row_bias = c_const is None or c_const.ndim == 0 or c_const.size == c_const.shape[-1]
    epilogue = bias_activation(None if c_const is None else c_const.reshape(-1), activation) if row_bias else None

    def gemm(a: np.ndarray, b: np.ndarray, c: Optional[np.ndarray] = None) -> np.ndarray:
        a = a.T if trans_a else a
        if b_const is not None and (c is None or c_const is not None) and row_bias:
            return blas_matmul(a, b_const, epilogue)
        if b_const is not None:
            out = blas_matmul(a, b_const)
        else:
            out = blas_matmul(a, b.T if trans_b else b)
            out = out * out.dtype.type(alpha) if alpha != 1.0 else out
        if c is not None:
            out += c_const if c_const is not None else c * c.dtype.type(beta)
        return apply_activation(out, activation)

    return gemm


def conv_pads(attrs: Attrs, in_hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> Tuple[int, int, int, int]:
    """(top, left, bottom, right) padding from ``pads`` or ``auto_pad``."""
    auto_pad = text_attr(attrs, "auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        pads = attrs.get("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        return pads[0], pads[1], pads[2], pads[3]
    total = [max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
             for size, k, s, d in zip(in_hw, kernel, strides, dilations)]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    first, last = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    return first[0], first[1], last[0], last[1]


class Conv2d:
    """A 2-D convolution with constant weights, prepared once for the fastest numpy formulation.

    * 1x1 kernels: one batched matmul (``W @ x`` over flattened pixels);
    * depthwise with channel multiplier 1: a multiply-add per kernel tap over
      the flattened padded image, where each tap is a contiguous shifted window (strided convs are
      split into ``stride**2`` phase images first, so every tap is still a contiguous shift);
    * everything else (also depthwise with a channel multiplier > 1): im2col (strided views stacked once
      per call) and one matmul per group.
    """

    def __init__(self, attrs: Attrs, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
        if weight.ndim != 4:
            raise OpError(f"only 2-D Conv is supported (weight has {weight.ndim} dims)")
        self.attrs = attrs
        self.out_channels, self.group_in, kh, kw = weight.shape
        self.groups = int(attrs.get("group", 1))
        if self.groups <= 0 or self.out_channels % self.groups:
            raise OpError(f"Conv group={self.groups} does not divide {self.out_channels} output channels")
        self.kernel = (kh, kw)
        self.strides = tuple(attrs.get("strides", [1, 1]))
        self.dilations = tuple(attrs.get("dilations", [1, 1]))
        self.bias = None if bias is None else bias.reshape(1, -1, 1, 1).astype(weight.dtype)
        self.activation = attrs.get("_activation")
        # channel multiplier 1: a multiply-add per tap; with more outputs per channel (the Slide attention's
        # shift convolutions: 9), im2col and a batched (m, taps) @ (taps, pixels) matmul per channel is cheaper
        self.depthwise = self.group_in == 1 and 1 < self.groups == self.out_channels
        if self.depthwise:  # per tap (1, C, m, 1): out[:, c, j] += w[c*m + j] * x[:, c]
            multiplier = self.out_channels // self.groups
            taps = weight.reshape(self.groups, multiplier, kh * kw).transpose(2, 0, 1)
            self.taps = np.ascontiguousarray(taps[:, None, :, :, None])
        else:  # (groups, O/g, Cg*kh*kw): the column order of im2col below
            self.matrix = np.ascontiguousarray(weight.reshape(self.groups, self.out_channels // self.groups, -1))

    def __call__(self, x: np.ndarray, *unused: Optional[np.ndarray]) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.group_in * self.groups:
            raise OpError(f"Conv expects (N, {self.group_in * self.groups}, H, W) input, got {tuple(x.shape)}")
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = conv_pads(self.attrs, x.shape[2:], self.kernel, self.strides, self.dilations)
        h, w = x.shape[2] + top + bottom, x.shape[3] + left + right
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            raise OpError(f"Conv input {h}x{w} (padded) is smaller than its {kh}x{kw} kernel")
        if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and not (top or left or bottom or right):
            out = blas_matmul(self.matrix, x.reshape(x.shape[0], self.groups, self.group_in, -1))
            out = out.reshape(x.shape[0], self.out_channels, oh, ow)
        else:
            # one spare row per phase keeps the last tap's flat window inside the buffer
            x = np.pad(x, ((0, 0), (0, 0), (top, bottom + sh), (left, right)))
            windows, phase_w = self._windows(x, oh)
            flat = self._depthwise(windows) if self.depthwise else self._im2col(windows)
            # the columns past ``ow`` are the padding's: a view crops them (the next op copies if it must)
            out = flat.reshape(x.shape[0], self.out_channels, oh, phase_w)[..., :ow]
        if self.bias is not None:
            out += self.bias
        return apply_activation(out, self.activation)

    def _windows(self, x: np.ndarray, oh: int) -> Tuple[List[np.ndarray], int]:
        """Per kernel tap, the (N, C, 1, oh * phase_w) window of the flattened padded image it reads: a
        contiguous shift (strided convs are split into ``stride**2`` phase images first)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        n, c = x.shape[:2]
        phase_h, phase_w = -(-x.shape[2] // sh), -(-x.shape[3] // sw)
        phases: Dict[Tuple[int, int], np.ndarray] = {}
        length = oh * phase_w
        windows = []
        for ky, kx in ((ky, kx) for ky in range(kh) for kx in range(kw)):
            y0, x0 = ky * dh, kx * dw
            key = (y0 % sh, x0 % sw)
            if key not in phases:
                view = x[:, :, key[0]::sh, key[1]::sw]
                if view.shape[2:] != (phase_h, phase_w) or not view.flags.c_contiguous:
                    phase = np.zeros((n, c, phase_h, phase_w), x.dtype)
                    phase[:, :, :view.shape[2], :view.shape[3]] = view
                    view = phase
                phases[key] = view.reshape(n, c, 1, phase_h * phase_w)
            shift = (y0 // sh) * phase_w + x0 // sw
            windows.append(phases[key][..., shift:shift + length])
        return windows, phase_w

    def _depthwise(self, windows: List[np.ndarray]) -> np.ndarray:
        out = np.multiply(windows[0], self.taps[0])
        scratch = np.empty_like(out)
        for window, tap in zip(windows[1:], self.taps[1:]):
            np.multiply(window, tap, out=scratch)
            out += scratch
        return out

    def _im2col(self, windows: List[np.ndarray]) -> np.ndarray:
        n, c, _, length = windows[0].shape
        cols = np.concatenate(windows, axis=2).reshape(n, self.groups, self.group_in * len(windows), length)
        return blas_matmul(self.matrix, cols)


@register_op("Conv")
def _conv(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    weight = consts[1]
    has_bias = len(node.inputs) > 2 and node.inputs[2] != ""
    bias = consts[2] if has_bias else None
    if weight is not None and (bias is not None or not has_bias):
        return Conv2d(attrs, weight, bias)

    def conv(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
        return Conv2d(attrs, w, b)(x)

    return conv


# --------------------------------------------------------------------------------------------- shapes, layout

@register_op("Reshape")
def _reshape(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    allow_zero = bool(attrs.get("allowzero", 0))

    def reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        dims = int_list(shape)
        if not allow_zero:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return x.reshape(dims)

    if len(consts) > 1 and consts[1] is not None and (allow_zero or 0 not in int_list(consts[1])):
        fixed = tuple(int_list(consts[1]))  # a constant target shape: parsed once
        return lambda x, shape: x.reshape(fixed)
    return reshape


@register_op("Expand")
def _expand(node: Node, consts: Consts) -> Kernel:
    def expand(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int_list(shape))))

    return expand


@register_op("Flatten")
def _flatten(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis = attrs.get("axis", 1)

    def flatten(x: np.ndarray) -> np.ndarray:
        cut = axis % x.ndim if axis < 0 else axis
        return x.reshape(int(np.prod(x.shape[:cut], dtype=np.int64)), -1)

    return flatten


@register_op("Transpose")
def _transpose(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    perm = attrs.get("perm")
    return lambda x: np.transpose(x, perm)


@register_op("Unsqueeze")
def _unsqueeze(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    def unsqueeze(x: np.ndarray, axes: Optional[np.ndarray] = None) -> np.ndarray:
        chosen = reduce_axes(attrs, axes) or ()
        rank = x.ndim + len(chosen)
        return np.expand_dims(x, tuple(sorted(a % rank for a in chosen)))

    return unsqueeze


@register_op("Concat")
def _concat(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis = attrs.get("axis", 0)
    return lambda *xs: np.concatenate([x for x in xs if x is not None], axis=axis)


@register_op("Slice")
def _slice(node: Node, consts: Consts) -> Kernel:
    def index(ndim: int, starts: np.ndarray, ends: np.ndarray, axes: Optional[np.ndarray],
              steps: Optional[np.ndarray]) -> Tuple[Any, ...]:
        begin, stop = int_list(starts), int_list(ends)
        chosen = int_list(axes) if axes is not None else list(range(len(begin)))
        step = int_list(steps) if steps is not None else [1] * len(begin)
        where: List[Any] = [slice(None)] * ndim
        for a, b, e, s in zip(chosen, begin, stop, step):
            if s == 0:
                raise OpError("Slice step 0")
            where[a % ndim] = slice(b, e, s)
        return tuple(where)

    def slice_(x: np.ndarray, *params: Optional[np.ndarray]) -> np.ndarray:
        return x[index(x.ndim, *params, *(None,) * (4 - len(params)))]

    if all(c is not None or not name for c, name in zip(consts[1:], node.inputs[1:])):
        cache: Dict[int, Tuple[Any, ...]] = {}  # constant parameters: the index per input rank, built once

        def constant_slice(x: np.ndarray, *unused: Optional[np.ndarray]) -> np.ndarray:
            where = cache.get(x.ndim)
            if where is None:
                where = cache.setdefault(x.ndim, index(x.ndim, *consts[1:], *(None,) * (5 - len(consts))))
            return x[where]

        return constant_slice
    return slice_


@register_op("Gather")
def _gather(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis = attrs.get("axis", 0)
    return lambda x, indices: np.take(x, indices.astype(np.int64, copy=False), axis=axis)


@register_op("GatherND")
def _gather_nd(node: Node, consts: Consts) -> Kernel:
    if node.attributes.get("batch_dims", 0) != 0:
        raise OpError("GatherND with batch_dims > 0 is not supported")

    def gather_nd(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return x[tuple(np.moveaxis(indices.astype(np.int64, copy=False), -1, 0))]

    return gather_nd


@register_op("Pad")
def _pad(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    mode = text_attr(attrs, "mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise OpError(f"Pad mode '{mode}' is not supported")

    def pad(x: np.ndarray, pads: Optional[np.ndarray] = None, value: Optional[np.ndarray] = None,
            axes: Optional[np.ndarray] = None) -> np.ndarray:
        amounts = attrs.get("pads") or int_list(pads)
        chosen = int_list(axes) if axes is not None else list(range(x.ndim))
        width = [(0, 0)] * x.ndim
        for i, a in enumerate(chosen):
            width[a % x.ndim] = (amounts[i], amounts[i + len(chosen)])
        if any(lo < 0 or hi < 0 for lo, hi in width):
            raise OpError("negative Pad amounts (cropping) are not supported")
        if mode != "constant":
            return np.pad(x, width, mode=mode)
        fill = attrs.get("value", 0.0) if value is None or value.size == 0 else value.reshape(-1)[0]
        return np.pad(x, width, mode="constant", constant_values=fill)

    return pad


# --------------------------------------------------------------------------------------------- shape tensors

@register_op("Shape")
def _shape(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    start, end = attrs.get("start", 0), attrs.get("end")
    return lambda x: np.array(x.shape[start:end], dtype=np.int64)


@register_op("Constant")
def _constant(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    if "value" in attrs:
        value = np.asarray(attrs["value"])
    elif "value_float" in attrs or "value_floats" in attrs:
        value = np.asarray(attrs.get("value_float", attrs.get("value_floats")), dtype=np.float32)
    elif "value_int" in attrs or "value_ints" in attrs:
        value = np.asarray(attrs.get("value_int", attrs.get("value_ints")), dtype=np.int64)
    else:
        raise OpError(f"Constant with attributes {sorted(attrs)} is not supported")
    return lambda: value


@register_op("ConstantOfShape")
def _constant_of_shape(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    value = np.asarray(attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    if value.size != 1:
        raise OpError("ConstantOfShape value must hold one element")
    return lambda shape: np.full(int_list(shape), value[0], dtype=value.dtype)
