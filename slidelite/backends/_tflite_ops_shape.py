"""TFLite numpy kernels that move data: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, PAD/PADV2, CONCATENATION,
SLICE, STRIDED_SLICE, GATHER, SPLIT, SPLIT_V, PACK.

Shapes, permutations, paddings, slice bounds and split sizes must be constants (classifier graphs keep them
so); they are checked at load. On quantized tensors the data is moved as is (padding uses the zero point)
and rescaled only when the output's quantization differs from the input's.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ._tflite_kernel_base import FLOAT, Kernel, OpContext, OpError, check_elements, normalize_axis, register
from ._tflite_ops_elementwise import rescale_if_needed
from ._tflite_quant import apply_float_activation, integer_range, round_half_away


def _ints(values: np.ndarray) -> List[int]:
    return [int(v) for v in np.ravel(values)]


def _then_rescale(ctx: OpContext, move: Kernel) -> Kernel:
    rescale = rescale_if_needed(ctx, 0)
    if rescale is None:
        return move
    return lambda *args: rescale(move(*args))


@register("RESHAPE")
def reshape(ctx: OpContext) -> Kernel:
    """RESHAPE to the constant shape input, else ``new_shape``, else the output tensor's shape (-1 allowed)."""
    if ctx.has_input(1):
        target = _ints(ctx.const(1, "the new shape"))
    elif ctx.option("new_shape"):
        target = list(ctx.option("new_shape"))
    else:
        target = list(ctx.out.shape)
    if sum(d == -1 for d in target) > 1 or any(d < -1 for d in target):
        raise OpError(f"new shape {target} is not valid")
    shape = tuple(target)
    return _then_rescale(ctx, lambda x, *_: x.reshape(shape))


@register("SQUEEZE")
def squeeze(ctx: OpContext) -> Kernel:
    """SQUEEZE the listed dimensions (all size-1 dimensions when none are listed)."""
    rank = len(ctx.tensor(0).shape)
    dims = tuple(normalize_axis(d, rank) for d in ctx.option("squeeze_dims", ()))
    return _then_rescale(ctx, (lambda x: np.squeeze(x, axis=dims)) if dims else (lambda x: np.squeeze(x)))


@register("EXPAND_DIMS")
def expand_dims(ctx: OpContext) -> Kernel:
    """EXPAND_DIMS at a constant axis."""
    axis = normalize_axis(_ints(ctx.const(1, "the axis"))[0], len(ctx.tensor(0).shape) + 1)
    return _then_rescale(ctx, lambda x, *_: np.expand_dims(x, axis))


@register("TRANSPOSE")
def transpose(ctx: OpContext) -> Kernel:
    """TRANSPOSE by a constant permutation (the result is made contiguous, as the next op reads it)."""
    perm = tuple(_ints(ctx.const(1, "the permutation")))
    if sorted(perm) != list(range(len(perm))):
        raise OpError(f"permutation {list(perm)} is not valid")
    return _then_rescale(ctx, lambda x, *_: np.ascontiguousarray(np.transpose(x, perm)))


@register("PAD", "PADV2")
def pad(ctx: OpContext) -> Kernel:
    """PAD (zeros; the zero point for quantized tensors) / PADV2 (a constant pad value)."""
    paddings = ctx.const(1, "the paddings")
    rank = len(ctx.tensor(0).shape)
    if paddings.shape != (rank, 2) or np.any(paddings < 0):
        raise OpError(f"paddings of shape {list(paddings.shape)} do not fit a rank-{rank} input")
    widths = tuple((int(a), int(b)) for a, b in paddings)
    check_elements([d + a + b for d, (a, b) in zip(ctx.tensor(0).shape, widths)], "the padded tensor")
    if ctx.has_input(2):
        value = ctx.const(2, "the pad value").reshape(-1)[0]
    elif ctx.quantized(0):
        value = ctx.quant(ctx.tensor(0)).zero_point[0]
    else:
        value = 0
    return _then_rescale(ctx, lambda x, *_: np.pad(x, widths, constant_values=value))


@register("CONCATENATION")
def concatenation(ctx: OpContext) -> Kernel:
    """CONCATENATION along ``axis``; quantized inputs are rescaled to the output's parameters first."""
    rank = len(ctx.out.shape)
    axis = normalize_axis(int(ctx.option("axis", 0)), rank)
    activation = int(ctx.option("activation", 0))
    rescales = [_concat_rescale(ctx, i) for i in range(len(ctx.inputs))]
    if ctx.dtype(0) == FLOAT:
        return lambda *xs: apply_float_activation(np.concatenate(xs, axis=axis), activation)

    def run(*xs: np.ndarray) -> np.ndarray:
        return np.concatenate([x if r is None else r(x) for x, r in zip(xs, rescales)], axis=axis)

    return run


def _concat_rescale(ctx: OpContext, index: int) -> Optional[Kernel]:
    """TFLite's ConcatenationWithScaling: ``round(x * s + b) + zp_out`` in float32 with ``s = scale_in / scale_out``
    and ``b = -zp_in * s`` (None when the parameters are equal)."""
    if rescale_if_needed(ctx, index) is None:
        return None
    in_q, out_q, dtype = ctx.quant(ctx.tensor(index)), ctx.quant(ctx.out), ctx.out_dtype()
    scale = np.float32(in_q.scale[0]) * (np.float32(1) / np.float32(out_q.scale[0]))
    bias = np.float32(-in_q.zero_point[0]) * scale
    low, high = integer_range(dtype)
    zero = int(out_q.zero_point[0])
    return lambda x: np.clip(round_half_away(x.astype(np.float32) * scale + bias) + zero, low, high).astype(dtype)


@register("SLICE")
def slice_op(ctx: OpContext) -> Kernel:
    """SLICE with constant begin and size (-1: to the end)."""
    begin, size = _ints(ctx.const(1, "the begin")), _ints(ctx.const(2, "the size"))
    shape = ctx.tensor(0).shape
    if len(begin) != len(shape) or len(size) != len(shape):
        raise OpError("begin and size must have one value per dimension")
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))
    return _then_rescale(ctx, lambda x, *_: x[index])


@register("STRIDED_SLICE")
def strided_slice(ctx: OpContext) -> Kernel:
    """STRIDED_SLICE with constant begin/end/strides and TFLite's begin/end/shrink-axis masks and ``offset``."""
    if ctx.option("ellipsis_mask", 0) or ctx.option("new_axis_mask", 0):
        raise OpError("ellipsis_mask and new_axis_mask are not supported")
    begin, end = _ints(ctx.const(1, "the begin")), _ints(ctx.const(2, "the end"))
    strides = _ints(ctx.const(3, "the strides")) if ctx.has_input(3) else [1] * len(begin)
    shape = ctx.tensor(0).shape
    if not len(begin) == len(end) == len(strides) <= len(shape) or 0 in strides:
        raise OpError("begin, end and strides must have one non-zero value per sliced dimension")
    index: List[object] = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides)):
        index.append(_strided_axis(ctx, axis, b, e, s, shape[axis]))
    key = tuple(index)
    return _then_rescale(ctx, lambda x, *_: x[key])


def _strided_axis(ctx: OpContext, axis: int, begin: int, end: int, stride: int, dim: int) -> object:
    bit = 1 << axis
    if ctx.option("offset", 0):
        end += begin
    start = _clamp_index(begin, dim, stride) if not ctx.option("begin_mask", 0) & bit else (0 if stride > 0 else dim - 1)
    if ctx.option("shrink_axis_mask", 0) & bit:
        return start
    if ctx.option("end_mask", 0) & bit:
        stop: Optional[int] = dim if stride > 0 else None
    else:
        stop = _clamp_index(end, dim, stride)
        stop = None if stop < 0 else stop
    return slice(start, stop, stride)


def _clamp_index(value: int, dim: int, stride: int) -> int:
    if value < 0:
        value += dim
    return min(max(value, 0), dim) if stride > 0 else min(max(value, -1), dim - 1)


@register("GATHER")
def gather(ctx: OpContext) -> Kernel:
    """GATHER along ``axis`` (``batch_dims`` 0)."""
    if ctx.option("batch_dims", 0):
        raise OpError("GATHER with batch_dims is not supported")
    axis = normalize_axis(int(ctx.option("axis", 0)), len(ctx.tensor(0).shape))

    def run(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        if indices.size and (indices.min() < -x.shape[axis] or indices.max() >= x.shape[axis]):
            raise OpError(f"GATHER index out of range for dimension {x.shape[axis]}")
        return np.take(x, indices.astype(np.int64), axis=axis)

    return _then_rescale(ctx, run)


@register("SPLIT", "SPLIT_V")
def split(ctx: OpContext) -> Kernel:
    """SPLIT (axis, input; equal parts) / SPLIT_V (input, sizes, axis)."""
    if ctx.op.op == "SPLIT":
        data_index, axis_value = 1, ctx.const(0, "the axis")
    else:
        data_index, axis_value = 0, ctx.const(2, "the axis")
    shape = ctx.tensor(data_index).shape
    axis = normalize_axis(_ints(axis_value)[0], len(shape))
    count = len(ctx.outputs)
    if ctx.op.op == "SPLIT":
        if count <= 0 or shape[axis] % count:
            raise OpError(f"dimension {shape[axis]} does not split into {count} equal parts")
        sizes = [shape[axis] // count] * count
    else:
        sizes = _ints(ctx.const(1, "the split sizes"))
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
        if len(sizes) != count or sum(sizes) != shape[axis] or min(sizes) < 0:
            raise OpError(f"split sizes {sizes} do not fit dimension {shape[axis]}")
    bounds = np.cumsum(sizes)[:-1].tolist()

    def run(*args: np.ndarray) -> Tuple[np.ndarray, ...]:
        return tuple(np.split(args[data_index], bounds, axis=axis))

    return run


@register("PACK")
def pack(ctx: OpContext) -> Kernel:
    """PACK (stack) the inputs along a new ``axis``."""
    axis = normalize_axis(int(ctx.option("axis", 0)), len(ctx.out.shape))
    return lambda *xs: np.stack(xs, axis=axis)
