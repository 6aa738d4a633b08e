"""TFLite numpy kernels with weights and windows (NHWC): CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
BATCH_MATMUL, AVERAGE_POOL_2D, MAX_POOL_2D.

Float kernels lay the weights out once for BLAS (conv: im2col rows times a ``(KH*KW*Cin, Cout)`` matrix;
1x1 convolutions and FULLY_CONNECTED are one product; depthwise: one einsum over all filter taps).
Integer kernels follow TFLite's reference kernels: accumulate ``(x - input_zero_point) * (w - w_zero_point)``
exactly (products of 8-bit values summed in float64, exact below 2^53, so BLAS does the integer product), add
the int32 bias, rescale with the per-channel fixed-point multiplier, add the output zero point, clamp to the
fused activation's range. The hybrid FULLY_CONNECTED (float activations, int8 weights) quantizes each input
row on the fly as LiteRT's default CPU path (XNNPACK's ``qd8`` kernels) does.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._blas_threads import Epilogue, blas_matmul
from ._depthwise_nhwc import DepthwiseNhwc, pad_nhwc
from ._tflite_kernel_base import FLOAT, QUANTIZED, Kernel, OpContext, OpError, check_elements, positive, register
from ._tflite_quant import (activation_range, apply_float_activation, channel_params,
                            quantize_multiplier, requantize_output)

PADDING_SAME, PADDING_VALID = 0, 1


class Geometry(NamedTuple):
    """Output size and padding of a 2-D window op on an ``(h, w)`` input."""

    out_h: int
    out_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int


class Window(NamedTuple):
    """A 2-D window: filter size, strides, dilations, padding scheme."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    padding: int

    def geometry(self, h: int, w: int) -> Geometry:
        """Output size and padding for an ``h x w`` input (TFLite's ComputePaddingHeightWidth)."""
        out_h, top, bottom = _axis(h, self.kh, self.sh, self.dh, self.padding)
        out_w, left, right = _axis(w, self.kw, self.sw, self.dw, self.padding)
        return Geometry(out_h, out_w, top, bottom, left, right)


#: a window op's filter may have at most this many taps (global pooling of a 224x224 map has 50176)
MAX_TAPS = 1 << 16


def _axis(size: int, k: int, stride: int, dilation: int, padding: int) -> Tuple[int, int, int]:
    effective = (k - 1) * dilation + 1
    if effective > 2 * size + 64:
        raise OpError(f"a {effective}-wide window on an input of size {size} is not supported")
    if padding == PADDING_SAME:
        out = -(-size // stride)
        total = max((out - 1) * stride + effective - size, 0)
        return out, total // 2, total - total // 2
    if padding != PADDING_VALID:
        raise OpError(f"padding {padding} is not SAME or VALID")
    out = (size - effective) // stride + 1
    if out <= 0:
        raise OpError(f"the {effective}-wide window does not fit the input of size {size}")
    return out, 0, 0


def _window(ctx: OpContext, kh: int, kw: int) -> Window:
    if kh * kw > MAX_TAPS:
        raise OpError(f"a {kh}x{kw} window has more than {MAX_TAPS} taps")
    return Window(positive(kh, "filter height"), positive(kw, "filter width"),
                  positive(ctx.option("stride_h", 1), "stride_h"), positive(ctx.option("stride_w", 1), "stride_w"),
                  positive(ctx.option("dilation_h", 1), "dilation_h"), positive(ctx.option("dilation_w", 1), "dilation_w"),
                  int(ctx.option("padding", PADDING_VALID)))


def _pad(x: np.ndarray, g: Geometry, value: float) -> np.ndarray:
    """The NHWC input with ``value`` around it."""
    check_elements((x.shape[0], x.shape[1] + g.pad_top + g.pad_bottom, x.shape[2] + g.pad_left + g.pad_right,
                    x.shape[3]), "the padded input")
    return pad_nhwc(x, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right, value)


def _taps(xp: np.ndarray, win: Window, g: Geometry):
    """Each filter tap's strided view of the padded input: ``(i, j, view (n, out_h, out_w, c))``."""
    for i in range(win.kh):
        for j in range(win.kw):
            top, left = i * win.dh, j * win.dw
            yield i, j, xp[:, top:top + (g.out_h - 1) * win.sh + 1:win.sh, left:left + (g.out_w - 1) * win.sw + 1:win.sw]


def _im2col(xp: np.ndarray, win: Window, g: Geometry) -> np.ndarray:
    """``(n * out_h * out_w, kh * kw * c)`` patch rows of the padded input."""
    n, _, _, c = xp.shape
    check_elements((n * g.out_h * g.out_w, win.kh * win.kw * c), "the im2col matrix")
    if win.kh == win.kw == 1:
        view = xp[:, :(g.out_h - 1) * win.sh + 1:win.sh, :(g.out_w - 1) * win.sw + 1:win.sw]
        return view.reshape(n * g.out_h * g.out_w, c)
    s = xp.strides
    patches = np.lib.stride_tricks.as_strided(
        xp, (n, g.out_h, g.out_w, win.kh, win.kw, c),
        (s[0], s[1] * win.sh, s[2] * win.sw, s[1] * win.dh, s[2] * win.dw, s[3]), writeable=False)
    return patches.reshape(n * g.out_h * g.out_w, win.kh * win.kw * c)


class Requant(NamedTuple):
    """How integer accumulators become output values: per-channel multiplier/shift, zero point, clamp, dtype."""

    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int
    bounds: Tuple[int, int]
    dtype: np.dtype

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        return requantize_output(acc, self.multiplier, self.shift, self.zero_point, self.bounds, self.dtype)


def _requant(ctx: OpContext, weight_scale: np.ndarray) -> Requant:
    """Output rescaling for ``input_scale * weight_scale[c] / output_scale`` (computed in double, as TFLite)."""
    in_q, out_q = ctx.quant(ctx.tensor(0)), ctx.quant(ctx.out)
    dtype = ctx.out_dtype()
    if dtype not in QUANTIZED:
        raise OpError(f"a quantized input needs an int8/uint8 output, not {ctx.out.type_name}")
    real = float(in_q.scale[0]) * weight_scale / float(out_q.scale[0])
    multiplier, shift = quantize_multiplier(real)
    return Requant(multiplier, shift, int(out_q.zero_point[0]),
                   activation_range(int(ctx.option("activation", 0)), out_q, dtype), dtype)


def _int_weights(ctx: OpContext, index: int, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """Constant quantized weights minus their zero points (float64, exact) and the per-channel weight scales."""
    w = ctx.const(index, "the weights")
    if w.dtype not in QUANTIZED:
        raise OpError(f"weights are {ctx.tensor(index).type_name} but the input is quantized")
    q = ctx.quant(ctx.tensor(index))
    scale, zero_point = channel_params(q, channels)
    if q.per_channel and q.axis != 0 and w.ndim > 1 and q.axis != w.ndim - 1:
        raise OpError(f"per-channel weights along axis {q.axis} are not supported")
    shape = [1] * w.ndim
    if q.per_channel:
        shape[q.axis] = -1
    centered = w.astype(np.float64) - zero_point[: (channels if q.per_channel else 1)].reshape(shape)
    return centered, scale


def _int_bias(ctx: OpContext, index: int, channels: int) -> np.ndarray:
    if not ctx.has_input(index):
        return np.zeros(channels, np.int64)
    bias = ctx.const(index, "the bias")
    if bias.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise OpError(f"bias of a quantized op must be int32, not {ctx.tensor(index).type_name}")
    return bias.astype(np.int64).reshape(-1)


def _float_bias(ctx: OpContext, index: int, channels: int) -> Optional[np.ndarray]:
    if not ctx.has_input(index):
        return None
    bias = ctx.const(index, "the bias")
    if bias.dtype != FLOAT or bias.size != channels:
        raise OpError(f"bias must be float32 with {channels} values")
    return bias.astype(np.float32).reshape(-1)


def _exact_matmul_dtype(k: int, x_bound: int, w: np.ndarray) -> np.dtype:
    """float32 when every partial sum of ``k`` products stays exact in float32 (< 2^24), else float64."""
    bound = k * x_bound * (float(np.abs(w).max()) if w.size else 0.0)
    return np.dtype(np.float32) if bound < 2 ** 24 else np.dtype(np.float64)


def _zero_point_bound(zero_point: int, dtype: np.dtype) -> int:
    info = np.iinfo(dtype)
    return max(abs(int(info.min) - zero_point), abs(int(info.max) - zero_point))


@register("CONV_2D")
def conv_2d(ctx: OpContext) -> Kernel:
    """CONV_2D: weights ``(Cout, KH, KW, Cin)``, optional bias, SAME/VALID padding, strides, dilations."""
    w = ctx.const(1, "the filter")
    if w.ndim != 4 or ctx.tensor(0).shape and len(ctx.tensor(0).shape) != 4:
        raise OpError("CONV_2D needs a 4-D NHWC input and a 4-D filter")
    cout, kh, kw, cin = w.shape
    in_channels = ctx.tensor(0).shape[3] if ctx.tensor(0).shape else cin
    if in_channels != cin:
        raise OpError(f"grouped convolution ({in_channels} input channels, filter depth {cin}) is not supported")
    win = _window(ctx, kh, kw)
    if ctx.quantized(0):
        return _conv_int(ctx, win, cout, kh * kw * cin)
    ctx.require_dtypes((FLOAT,))
    if w.dtype != FLOAT:
        raise OpError(f"hybrid CONV_2D (float input, {ctx.tensor(1).type_name} filter) is not supported")
    matrix = np.ascontiguousarray(w.reshape(cout, -1).T, dtype=np.float32)
    epilogue = _float_epilogue(_float_bias(ctx, 2, cout), int(ctx.option("activation", 0)))

    def run(x: np.ndarray, *_: object) -> np.ndarray:
        g = win.geometry(x.shape[1], x.shape[2])
        out = blas_matmul(_im2col(_pad(x, g, 0.0), win, g), matrix, epilogue)
        return out.reshape(x.shape[0], g.out_h, g.out_w, cout)

    return run


def _conv_int(ctx: OpContext, win: Window, cout: int, k: int) -> Kernel:
    centered, scale = _int_weights(ctx, 1, cout)
    requant = _requant(ctx, scale)
    bias = _int_bias(ctx, 2, cout)
    in_zero = int(ctx.quant(ctx.tensor(0)).zero_point[0])
    compute = _exact_matmul_dtype(k, _zero_point_bound(in_zero, ctx.dtype(0)), centered)
    matrix = np.ascontiguousarray(centered.reshape(cout, -1).T, dtype=compute)

    def run(x: np.ndarray, *_: object) -> np.ndarray:
        g = win.geometry(x.shape[1], x.shape[2])
        shifted = x.astype(compute) - compute.type(in_zero)
        acc = np.rint(_im2col(_pad(shifted, g, 0.0), win, g) @ matrix).astype(np.int64) + bias
        return requant(acc).reshape(x.shape[0], g.out_h, g.out_w, cout)

    return run


@register("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: OpContext) -> Kernel:
    """DEPTHWISE_CONV_2D: filter ``(1, KH, KW, Cin * depth_multiplier)``."""
    w = ctx.const(1, "the filter")
    if w.ndim != 4 or w.shape[0] != 1:
        raise OpError("DEPTHWISE_CONV_2D needs a (1, KH, KW, C) filter")
    _, kh, kw, cout = w.shape
    cin = ctx.tensor(0).shape[3] if len(ctx.tensor(0).shape) == 4 else cout
    if cin <= 0 or cout % cin:
        raise OpError(f"{cout} output channels are not a multiple of {cin} input channels")
    multiplier = cout // cin
    win = _window(ctx, kh, kw)
    if ctx.quantized(0):
        centered, scale = _int_weights(ctx, 1, cout)
        kernel = _depthwise_kernel(centered[0].astype(np.int32), win)
        requant = _requant(ctx, scale)
        bias = _int_bias(ctx, 2, cout)
        in_zero = int(ctx.quant(ctx.tensor(0)).zero_point[0])

        def run_int(x: np.ndarray, *_: object) -> np.ndarray:
            shifted = x.astype(np.int32) - np.int32(in_zero)
            return requant(_depthwise(shifted, kernel, win, multiplier).astype(np.int64) + bias)

        return run_int
    ctx.require_dtypes((FLOAT,))
    if w.dtype != FLOAT:
        raise OpError(f"hybrid DEPTHWISE_CONV_2D (float input, {ctx.tensor(1).type_name} filter) is not supported")
    kernel_f = _depthwise_kernel(w[0].astype(np.float32), win)
    bias_f = _float_bias(ctx, 2, cout)
    activation = int(ctx.option("activation", 0))

    def run(x: np.ndarray, *_: object) -> np.ndarray:
        return _depthwise(x, kernel_f, win, multiplier, bias_f, activation)

    return run


class SiblingDepthwise:
    """Float DEPTHWISE_CONV_2D ops on one input run as one depthwise convolution with depth multiplier ``count``
    (:func:`sibling_depthwise`); its outputs are strided views, one per op. The attributes describe it for later
    fusions: ``taps`` ``(kh, kw, C * count)`` (channel ``c`` of op ``g`` at ``c * count + g``), ``bias`` or None,
    the ``window`` and the fused ``activation``."""

    def __init__(self, taps: np.ndarray, bias: Optional[np.ndarray], window: Window, activation: int,
                 count: int) -> None:
        self.taps, self.bias, self.window, self.activation, self.count = taps, bias, window, activation, count
        self._kernel = _depthwise_kernel(taps, window)

    def __call__(self, x: np.ndarray, *_: object) -> Tuple[np.ndarray, ...]:
        out = _depthwise(x, self._kernel, self.window, self.count, self.bias, self.activation)
        return tuple(out[..., group::self.count] for group in range(self.count))  # strided views, no copies


def sibling_depthwise(ctxs: Sequence[OpContext]) -> Optional[SiblingDepthwise]:
    """One kernel for float DEPTHWISE_CONV_2D ops that read the same input with the same options and filter size (the
    Slide attention's shift convolutions come in nines): their filters and biases interleaved as one depthwise
    convolution with depth multiplier ``len(ctxs)``, each op's output a strided view of it. None when the ops do not
    qualify."""
    first = ctxs[0]
    filters = [c.consts[1] if len(c.consts) > 1 else None for c in ctxs]
    if len(ctxs) < 2 or first.dtype(0) != FLOAT or any(
            w is None or w.dtype != FLOAT or w.shape != filters[0].shape or c.op.options != first.op.options
            or c.op.inputs[0] != first.op.inputs[0] for c, w in zip(ctxs, filters)):
        return None
    _, kh, kw, channels = filters[0].shape
    if len(first.tensor(0).shape) != 4 or first.tensor(0).shape[3] != channels:
        return None
    count = len(ctxs)
    taps = np.ascontiguousarray(np.stack([w[0] for w in filters], axis=-1).reshape(kh, kw, channels * count),
                                dtype=np.float32)  # channel c of op g at c * count + g
    biases = [_float_bias(c, 2, channels) for c in ctxs]
    bias = None if all(b is None for b in biases) else np.stack(
        [np.zeros(channels, np.float32) if b is None else b for b in biases], axis=-1).reshape(-1)
    return SiblingDepthwise(taps, bias, _window(first, kh, kw), int(first.option("activation", 0)), count)


def _depthwise(x: np.ndarray, kernel: DepthwiseNhwc, win: Window, multiplier: int,
               bias: Optional[np.ndarray] = None, activation: int = 0) -> np.ndarray:
    """Per-channel convolution (:mod:`._depthwise_nhwc`; input channels repeated ``multiplier`` times), then
    ``bias`` and the fused float ``activation``."""
    g = win.geometry(x.shape[1], x.shape[2])
    xp = _pad(x, g, 0)
    if multiplier > 1:
        xp = np.repeat(xp, multiplier, axis=3)
    check_elements((x.shape[0], g.out_h, g.out_w, kernel.channels), "the output")
    return _bias_activation(kernel(xp, g.out_h, g.out_w), bias, activation)


def _depthwise_kernel(taps: np.ndarray, win: Window) -> DepthwiseNhwc:
    return DepthwiseNhwc(taps, (win.sh, win.sw), (win.dh, win.dw))


def _float_epilogue(bias: Optional[np.ndarray], activation: int) -> Optional[Epilogue]:
    """``out += bias`` and the fused float activation, in place, as a :func:`blas_matmul` epilogue (None: neither)."""
    if bias is None and activation == 0:
        return None
    return lambda out: _bias_activation(out, bias, activation)


def _bias_activation(out: np.ndarray, bias: Optional[np.ndarray], activation: int) -> np.ndarray:
    """``out += bias`` and the fused float activation, in place (no-ops for None and ACT_NONE)."""
    if bias is not None:
        out += bias
    return apply_float_activation(out, activation)


@register("FULLY_CONNECTED")
def fully_connected(ctx: OpContext) -> Kernel:
    """FULLY_CONNECTED: weights ``(Cout, K)``; float, integer, or hybrid (float input, int8 weights)."""
    if int(ctx.option("weights_format", 0)) != 0:
        raise OpError("shuffled FULLY_CONNECTED weights are not supported")
    w_tensor = ctx.tensor(1)
    if len(w_tensor.shape) != 2:
        raise OpError("FULLY_CONNECTED weights must be 2-D")
    cout, k = w_tensor.shape
    keep_dims = bool(ctx.option("keep_num_dims", 0))
    shape_of: Callable[[np.ndarray], Tuple[int, ...]] = (
        (lambda x: x.shape[:-1] + (cout,)) if keep_dims else (lambda x: (x.size // k, cout)))
    if ctx.quantized(0):
        centered, scale = _int_weights(ctx, 1, cout)
        requant = _requant(ctx, scale)
        bias = _int_bias(ctx, 2, cout)
        in_zero = int(ctx.quant(ctx.tensor(0)).zero_point[0])
        compute = _exact_matmul_dtype(k, _zero_point_bound(in_zero, ctx.dtype(0)), centered)
        matrix = np.ascontiguousarray(centered.T, dtype=compute)

        def run_int(x: np.ndarray, *_: object) -> np.ndarray:
            rows = x.reshape(-1, k).astype(compute) - compute.type(in_zero)
            return requant(np.rint(rows @ matrix).astype(np.int64) + bias).reshape(shape_of(x))

        return run_int
    ctx.require_dtypes((FLOAT,))
    bias = _float_bias(ctx, 2, cout)
    activation = int(ctx.option("activation", 0))
    if w_tensor.dtype in QUANTIZED:
        product = _hybrid_product(ctx, cout, k)
    elif ctx.consts[1] is not None:
        matrix = np.ascontiguousarray(ctx.consts[1].T, dtype=np.float32)
        epilogue = _float_epilogue(bias, activation)
        return lambda x, *_: blas_matmul(x.reshape(-1, k), matrix, epilogue).reshape(shape_of(x))
    else:
        ctx.require_dtypes((FLOAT,), (1,))
        product = lambda rows, w: rows @ w.T  # noqa: E731

    def run(x: np.ndarray, w: Optional[np.ndarray] = None, *_: object) -> np.ndarray:
        out = product(x.reshape(-1, k), w)
        if bias is not None:
            out += bias
        return apply_float_activation(out, activation).reshape(shape_of(x))

    return run


def _hybrid_product(ctx: OpContext, cout: int, k: int) -> Callable[[np.ndarray, object], np.ndarray]:
    """Float rows times int8 weights as XNNPACK's qd8 kernels compute it: each row quantized asymmetrically to
    int8 over its own [min(0, min), max(0, max)] range (scale 255/range, nudged zero point, round to nearest even),
    the exact integer product, then ``acc / row_scale * weight_scale`` in float32."""
    if ctx.dtype(1) != np.dtype(np.int8):
        raise OpError("hybrid FULLY_CONNECTED needs int8 weights")
    centered, scale = _int_weights(ctx, 1, cout)
    if np.any(ctx.quant(ctx.tensor(1)).zero_point != 0):
        raise OpError("hybrid FULLY_CONNECTED needs symmetric weights (zero point 0)")
    matrix = np.ascontiguousarray(centered.T, dtype=_exact_matmul_dtype(k, 255, centered))
    weight_scale = scale.astype(np.float32)

    def product(rows: np.ndarray, _w: object) -> np.ndarray:
        low, high = _row_extremes(rows)
        low, high = np.minimum(low, np.float32(0)), np.maximum(high, np.float32(0))
        span = high - low
        inv = np.where(span == 0, np.float32(1), np.float32(255) / np.where(span == 0, np.float32(1), span))
        inv = inv.astype(np.float32)
        low_scaled, high_scaled = low * inv, high * inv
        zero = np.where((np.float32(-128) + low_scaled) + (np.float32(127) + high_scaled) > 0,
                        np.float32(-128) - low_scaled, np.float32(127) - high_scaled)
        zero = np.rint(np.clip(zero, -128, 127))
        q = rows * inv
        np.rint(q, out=q)
        np.clip(q, -128 - zero, 127 - zero, out=q)  # q - zero_point, as the integer product uses
        acc = (q.astype(matrix.dtype, copy=False) @ matrix).astype(np.float32, copy=False)
        acc *= np.float32(1) / inv
        acc *= weight_scale
        return acc

    return product


#: rows up to this long get their min and max from a transposed copy (numpy reduces short contiguous rows slowly)
SHORT_ROWS = 64


def _row_extremes(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each row's minimum and maximum as ``(rows, 1)`` columns."""
    if rows.shape[1] > SHORT_ROWS:
        return rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)
    columns = np.ascontiguousarray(rows.T)
    return columns.min(axis=0)[:, None], columns.max(axis=0)[:, None]


@register("BATCH_MATMUL")
def batch_matmul(ctx: OpContext) -> Kernel:
    """BATCH_MATMUL with ``adj_x`` / ``adj_y`` and broadcast batch dimensions; float or int8/uint8."""
    adj_x, adj_y = bool(ctx.option("adj_x", 0)), bool(ctx.option("adj_y", 0))

    def operands(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return (np.swapaxes(a, -1, -2) if adj_x else a), (np.swapaxes(b, -1, -2) if adj_y else b)

    if ctx.quantized(0):
        if not ctx.quantized(1) or ctx.quant(ctx.tensor(1)).per_channel:
            raise OpError("quantized BATCH_MATMUL needs two per-tensor quantized operands")
        zero_a = float(ctx.quant(ctx.tensor(0)).zero_point[0])
        zero_b = float(ctx.quant(ctx.tensor(1)).zero_point[0])
        requant = _requant(ctx, ctx.quant(ctx.tensor(1)).scale.astype(np.float64))

        def run_int(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            left, right = operands(a.astype(np.float64) - zero_a, b.astype(np.float64) - zero_b)
            return requant(np.rint(np.matmul(left, right)).astype(np.int64))

        return run_int
    ctx.require_dtypes((FLOAT,), (0, 1))

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        left, right = operands(a, b)
        return np.matmul(left, right)

    return run


@register("MAX_POOL_2D", "AVERAGE_POOL_2D")
def pool_2d(ctx: OpContext) -> Kernel:
    """MAX_POOL_2D / AVERAGE_POOL_2D (average over the valid, unpadded cells, as TFLite); float or int8/uint8."""
    if int(ctx.option("filter_height", 0)) * int(ctx.option("filter_width", 0)) > MAX_TAPS:
        raise OpError(f"a pooling window has more than {MAX_TAPS} taps")
    win = Window(positive(ctx.option("filter_height", 0), "filter_height"),
                 positive(ctx.option("filter_width", 0), "filter_width"),
                 positive(ctx.option("stride_h", 0), "stride_h"), positive(ctx.option("stride_w", 0), "stride_w"),
                 1, 1, int(ctx.option("padding", PADDING_VALID)))
    is_max = ctx.op.op == "MAX_POOL_2D"
    activation = int(ctx.option("activation", 0))
    dtype = ctx.dtype(0)
    if dtype in QUANTIZED and ctx.quantized(0):
        bounds = activation_range(activation, ctx.quant(ctx.out), dtype)
    elif dtype == FLOAT:
        bounds = None
    else:
        raise OpError(f"input is {ctx.tensor(0).type_name}")

    def run(x: np.ndarray) -> np.ndarray:
        g = win.geometry(x.shape[1], x.shape[2])
        if is_max:
            low = -np.inf if bounds is None else np.iinfo(dtype).min
            out = None
            for _, _, view in _taps(_pad(x, g, low), win, g):
                out = view.copy() if out is None else np.maximum(out, view, out=out)
            result = out
        else:
            total, count = _window_sums(x, win, g, np.float32 if bounds is None else np.int32)
            result = total / count if bounds is None else _rounded_division(total, count)
        if bounds is None:
            return apply_float_activation(result.astype(np.float32), activation)
        return np.clip(result, bounds[0], bounds[1]).astype(dtype)

    return run


def _window_sums(x: np.ndarray, win: Window, g: Geometry, dtype: type) -> Tuple[np.ndarray, np.ndarray]:
    """Sum over each window of the zero-padded input, and the number of unpadded cells in it."""
    total = np.zeros((x.shape[0], g.out_h, g.out_w, x.shape[3]), dtype)
    ones = np.ones((1, x.shape[1], x.shape[2], 1), dtype)
    count = np.zeros((1, g.out_h, g.out_w, 1), dtype)
    for (_, _, view), (_, _, cells) in zip(_taps(_pad(x.astype(dtype), g, 0), win, g), _taps(_pad(ones, g, 0), win, g)):
        total += view
        count += cells
    return total, count


def _rounded_division(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``(acc +/- count / 2) / count`` truncated toward zero (TFLite's integer average pool)."""
    half = count // 2
    numerator = np.where(total > 0, total + half, total - half)
    return np.trunc(numerator / count).astype(np.int64)

