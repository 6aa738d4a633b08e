"""numpy kernels for ONNX's CNN operators beyond Conv: pooling, normalization, Dropout and Resize.

Registered into :data:`._numpy_ops.OPS` on import. Pooling works on any number of spatial axes as one
strided slice per kernel tap (``ceil_mode``, dilations, ``auto_pad`` and ``count_include_pad`` as ONNX
defines them); Resize runs ``nearest`` and ``linear`` modes axis by axis and refuses the rest at load.
"""
from __future__ import annotations

import itertools
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ._numpy_ops import Attrs, Consts, Kernel, OpError, int_list, register_op, text_attr
from ._onnx_reader import Node


# --------------------------------------------------------------------------------------------- pooling

def pool_geometry(attrs: Attrs, spatial: Sequence[int], kernel: Sequence[int]
                  ) -> Tuple[List[int], List[int], List[int], List[int], List[int]]:
    """Per spatial axis: (begin pads, end pads, strides, dilations, output sizes) of a pooling window."""
    rank = len(spatial)
    strides = list(attrs.get("strides") or [1] * rank)
    dilations = list(attrs.get("dilations") or [1] * rank)
    auto_pad = text_attr(attrs, "auto_pad", "NOTSET")
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        total = [max(0, (o - 1) * s + w - n) for o, s, w, n in zip(out, strides, span, spatial)]
        small, big = [t // 2 for t in total], [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return begin, end, strides, dilations, out
    pads = list(attrs.get("pads") or [0] * 2 * rank) if auto_pad == "NOTSET" else [0] * 2 * rank
    begin, end = pads[:rank], pads[rank:]
    out = []
    for n, b, e, s, w in zip(spatial, begin, end, strides, span):
        room = n + b + e - w
        size = (-(-room // s) if ceil_mode else room // s) + 1
        if ceil_mode and (size - 1) * s >= n + b:  # the last window must start inside the image or its begin pad
            size -= 1
        out.append(size)
    if any(o <= 0 for o in out):
        raise OpError(f"pooling window {list(kernel)} does not fit the input {list(spatial)}")
    return begin, end, strides, dilations, out


def _taps(padded: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
          out: Sequence[int], combine: Callable[..., np.ndarray]) -> np.ndarray:
    """Combine the strided slice of every kernel tap of an input padded to fit every window."""
    result: Optional[np.ndarray] = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        index = (Ellipsis,) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                    for t, d, o, s in zip(tap, dilations, out, strides))
        window = padded[index]
        result = window.copy() if result is None else combine(result, window, out=result)
    assert result is not None
    return result


def _pool(x: np.ndarray, attrs: Attrs, kernel: Sequence[int], fill: float, combine: Callable[..., np.ndarray],
          counts: bool = False) -> np.ndarray:
    """Pool ``x`` with ``combine`` over every window; with ``counts``, divide by the number of cells each
    window covers (the image, plus the explicit pads when ``count_include_pad``; never the ceil_mode
    extension)."""
    spatial = x.shape[2:]
    begin, end, strides, dilations, out = pool_geometry(attrs, spatial, kernel)
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out, strides, kernel, dilations)]
    extra = [max(0, nd - (n + b + e)) for nd, n, b, e in zip(need, spatial, begin, end)]
    explicit = [(0, 0), (0, 0)] + list(zip(begin, end))
    extension = [(0, 0), (0, 0)] + [(0, e) for e in extra]
    padded = np.pad(np.pad(x, explicit, constant_values=fill), extension, constant_values=fill)
    result = _taps(padded, kernel, strides, dilations, out, combine)
    if counts:
        inside = 1 if attrs.get("count_include_pad", 0) else 0
        mask = np.pad(np.pad(np.ones((1, 1) + spatial, x.dtype), explicit, constant_values=inside), extension)
        result = (result / _taps(mask, kernel, strides, dilations, out, np.add)).astype(x.dtype, copy=False)
    return result


def _kernel_shape(node: Node) -> List[int]:
    kernel = list(node.attributes.get("kernel_shape") or [])
    if not kernel or any(k < 1 for k in kernel):
        raise OpError(f"{node.op_type} needs a positive kernel_shape")
    return kernel


@register_op("MaxPool")
def _max_pool(node: Node, consts: Consts) -> Kernel:
    attrs, kernel = node.attributes, _kernel_shape(node)
    if len(node.outputs) > 1 and node.outputs[1]:
        raise OpError("MaxPool's Indices output is not supported")

    def max_pool(x: np.ndarray) -> np.ndarray:
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        return _pool(x, attrs, kernel, low, np.maximum)

    return max_pool


@register_op("AveragePool")
def _average_pool(node: Node, consts: Consts) -> Kernel:
    attrs, kernel = node.attributes, _kernel_shape(node)
    return lambda x: _pool(x, attrs, kernel, 0, np.add, counts=True)


register_op("GlobalMaxPool")(lambda node, consts: lambda x: np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True))


# --------------------------------------------------------------------------------------------- normalization

@register_op("BatchNormalization")
def _batch_norm(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    if attrs.get("training_mode", 0) or len([o for o in node.outputs if o]) > 1:
        raise OpError("BatchNormalization in training mode is not supported")
    eps = float(attrs.get("epsilon", 1e-5))

    def batch_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        factor = (scale / np.sqrt(var + var.dtype.type(eps))).astype(x.dtype)
        shift = (bias - mean * factor).astype(x.dtype)
        return x * factor.reshape(shape) + shift.reshape(shape)

    return batch_norm


@register_op("InstanceNormalization")
def _instance_norm(node: Node, consts: Consts) -> Kernel:
    eps = float(node.attributes.get("epsilon", 1e-5))

    def instance_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
        axes = tuple(range(2, x.ndim))
        mean = np.mean(x, axis=axes, keepdims=True)
        var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        out = (x - mean) / np.sqrt(var + x.dtype.type(eps)) * scale.reshape(shape) + bias.reshape(shape)
        return out.astype(x.dtype, copy=False)

    return instance_norm


@register_op("Dropout")
def _dropout(node: Node, consts: Consts) -> Kernel:
    has_training = len(node.inputs) > 2 and node.inputs[2]
    training = consts[2] if has_training else None
    if has_training and (training is None or bool(np.asarray(training).reshape(-1)[0])):
        raise OpError("Dropout in training mode (or with a run-time training_mode) is not supported")

    def dropout(x: np.ndarray, *unused: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        return x, np.ones(x.shape, np.bool_)

    return dropout


# --------------------------------------------------------------------------------------------- Resize

_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
_NEAREST = {"round_prefer_floor": lambda c: np.ceil(c - 0.5), "round_prefer_ceil": lambda c: np.floor(c + 0.5),
            "floor": np.floor, "ceil": np.ceil}


def _source_coordinates(out_size: int, in_size: int, scale: float, transform: str) -> np.ndarray:
    """Where each output index samples the input, in input coordinates (float64); align_corners divides
    by the unrounded resized length ``in_size * scale``, as ONNX's reference does."""
    o = np.arange(out_size, dtype=np.float64)
    if transform == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if transform == "align_corners":
        resized = in_size * scale
        return o * (in_size - 1) / (resized - 1) if resized > 1 else np.zeros(out_size)
    return o / scale


@register_op("Resize")
def _resize(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    mode = text_attr(attrs, "mode", "nearest")
    transform = text_attr(attrs, "coordinate_transformation_mode", "half_pixel")
    nearest = text_attr(attrs, "nearest_mode", "round_prefer_floor")
    policy = text_attr(attrs, "keep_aspect_ratio_policy", "stretch")
    if mode not in ("nearest", "linear") or transform not in _TRANSFORMS or nearest not in _NEAREST \
            or attrs.get("antialias", 0) or policy != "stretch":
        raise OpError(f"Resize mode={mode} coordinate_transformation_mode={transform} nearest_mode={nearest} "
                      f"antialias={attrs.get('antialias', 0)} keep_aspect_ratio_policy={policy} is not supported "
                      "(nearest/linear, stretch, no antialias)")
    axes_attr = attrs.get("axes")

    def resize(x: np.ndarray, roi: Optional[np.ndarray] = None, scales: Optional[np.ndarray] = None,
               sizes: Optional[np.ndarray] = None) -> np.ndarray:
        axes = [a % x.ndim for a in axes_attr] if axes_attr else list(range(x.ndim))
        if sizes is not None and sizes.size:
            targets = int_list(sizes)
            factors = [t / x.shape[a] for t, a in zip(targets, axes)]
        elif scales is not None and scales.size:
            factors = [float(f) for f in scales.reshape(-1)]
            targets = [int(np.floor(x.shape[a] * f)) for a, f in zip(axes, factors)]
        else:
            raise OpError("Resize needs scales or sizes")
        out = x
        for axis, target, factor in zip(axes, targets, factors):
            if target == x.shape[axis] and factor == 1.0:
                continue
            coords = _source_coordinates(target, x.shape[axis], factor, transform)
            out = _resample(out, axis, coords, mode, nearest)
        return out.astype(x.dtype, copy=False)

    return resize


def _resample(x: np.ndarray, axis: int, coords: np.ndarray, mode: str, nearest: str) -> np.ndarray:
    size = x.shape[axis]
    if mode == "nearest":
        index = np.clip(_NEAREST[nearest](coords), 0, size - 1).astype(np.int64)
        return np.take(x, index, axis=axis)
    coords = np.clip(coords, 0, size - 1)
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight = (coords - low).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    a, b = np.take(x, low, axis=axis), np.take(x, high, axis=axis)
    return a + (b - a) * weight.astype(x.dtype if x.dtype.kind == "f" else np.float32)
