"""numpy kernels for ONNX's shape, indexing and selection operators beyond the converter's own exports
(Squeeze, Split, Range, Tile, Size, Trilu, GatherElements, NonZero, TopK, OneHot, DepthToSpace...).

Registered into :data:`._numpy_ops.OPS` on import (the numpy backend imports this module).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._numpy_ops import CAST_TYPES, Consts, Kernel, OpError, int_list, reduce_axes, register_op, text_attr
from ._onnx_reader import Node


@register_op("Squeeze")
def _squeeze(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes

    def squeeze(x: np.ndarray, axes: Optional[np.ndarray] = None) -> np.ndarray:
        chosen = reduce_axes(attrs, axes)
        if not chosen:
            return np.squeeze(x)
        return np.squeeze(x, axis=tuple(a % x.ndim for a in chosen))

    return squeeze


@register_op("Split")
def _split(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis, outputs = attrs.get("axis", 0), len(node.outputs)
    num_outputs = attrs.get("num_outputs")

    def split(x: np.ndarray, sizes: Optional[np.ndarray] = None) -> Tuple[np.ndarray, ...]:
        length = x.shape[axis]
        chosen = attrs.get("split") or (int_list(sizes) if sizes is not None else None)
        if chosen is None:
            parts = num_outputs or outputs
            step = -(-length // parts) if num_outputs else length // parts
            if not num_outputs and length % parts:
                raise OpError(f"Split of {length} into {parts} equal parts")
            chosen = [min(step, length - i * step) for i in range(parts)]
        if sum(chosen) != length or len(chosen) != outputs:
            raise OpError(f"Split sizes {chosen} do not cover {length} in {outputs} outputs")
        return tuple(np.split(x, np.cumsum(chosen)[:-1], axis=axis))

    return split


@register_op("Range")
def _range(node: Node, consts: Consts) -> Kernel:
    def range_(start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
        first, last, step = (np.asarray(v).reshape(()) for v in (start, limit, delta))
        if step == 0:
            raise OpError("Range with delta 0")
        count = max(int(np.ceil((last - first) / step)), 0)
        return (first + np.arange(count, dtype=start.dtype) * step).astype(start.dtype)

    return range_


@register_op("Tile")
def _tile(node: Node, consts: Consts) -> Kernel:
    return lambda x, repeats: np.tile(x, int_list(repeats))


@register_op("Size")
def _size(node: Node, consts: Consts) -> Kernel:
    return lambda x: np.array(x.size, dtype=np.int64)


@register_op("NonZero")
def _non_zero(node: Node, consts: Consts) -> Kernel:
    return lambda x: np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@register_op("Trilu")
def _trilu(node: Node, consts: Consts) -> Kernel:
    upper = bool(node.attributes.get("upper", 1))

    def trilu(x: np.ndarray, k: Optional[np.ndarray] = None) -> np.ndarray:
        offset = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
        return np.triu(x, offset) if upper else np.tril(x, offset)

    return trilu


def _indices(indices: np.ndarray, size: int) -> np.ndarray:
    """int64 indices with negative ones counted from the end; out-of-range ones refused."""
    index = indices.astype(np.int64, copy=False)
    if index.size and (index.min() < -size or index.max() >= size):
        raise OpError(f"index out of range for an axis of size {size}")
    return np.where(index < 0, index + size, index)


@register_op("GatherElements")
def _gather_elements(node: Node, consts: Consts) -> Kernel:
    axis = node.attributes.get("axis", 0)
    return lambda x, indices: np.take_along_axis(x, _indices(indices, x.shape[axis]), axis=axis)


@register_op("TopK")
def _top_k(node: Node, consts: Consts) -> Kernel:
    attrs = node.attributes
    axis, largest, ordered = attrs.get("axis", -1), bool(attrs.get("largest", 1)), bool(attrs.get("sorted", 1))
    if not ordered:
        raise OpError("TopK with sorted=0 is not supported")

    def top_k(x: np.ndarray, k: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        count = int(np.asarray(k).reshape(-1)[0])
        # stable sort: among equal values the lower index comes first, as ONNX prescribes
        order = np.argsort(-x if largest else x, axis=axis, kind="stable")
        index = np.take(order, range(count), axis=axis).astype(np.int64)
        return np.take_along_axis(x, index, axis=axis), index

    return top_k


@register_op("OneHot")
def _one_hot(node: Node, consts: Consts) -> Kernel:
    axis = node.attributes.get("axis", -1)

    def one_hot(indices: np.ndarray, depth: np.ndarray, values: np.ndarray) -> np.ndarray:
        size = int(np.asarray(depth).reshape(-1)[0])
        index = indices.astype(np.int64)
        index = np.where(index < 0, index + size, index)
        hot = np.arange(size).reshape((size,) + (1,) * index.ndim) == index[None]
        hot = np.moveaxis(hot, 0, axis % (index.ndim + 1))
        return np.where(hot, values[1], values[0]).astype(values.dtype)

    return one_hot


@register_op("DepthToSpace", "SpaceToDepth")
def _depth_space(node: Node, consts: Consts) -> Kernel:
    block = int(node.attributes.get("blocksize", 0))
    mode = text_attr(node.attributes, "mode", "DCR")
    if block < 1 or mode not in ("DCR", "CRD"):
        raise OpError(f"{node.op_type} blocksize {block} mode {mode} is not supported")

    def depth_to_space(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        if mode == "DCR":
            tmp = x.reshape(n, block, block, c // block ** 2, h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            tmp = x.reshape(n, c // block ** 2, block, block, h, w).transpose(0, 1, 4, 2, 5, 3)
        return tmp.reshape(n, c // block ** 2, h * block, w * block)

    def space_to_depth(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        tmp = x.reshape(n, c, h // block, block, w // block, block).transpose(0, 3, 5, 1, 2, 4)
        return tmp.reshape(n, c * block ** 2, h // block, w // block)

    return depth_to_space if node.op_type == "DepthToSpace" else space_to_depth


@register_op("EyeLike")
def _eye_like(node: Node, consts: Consts) -> Kernel:
    k, to = int(node.attributes.get("k", 0)), node.attributes.get("dtype")
    if to is not None and to not in CAST_TYPES:
        raise OpError(f"EyeLike dtype {to} is not supported")
    return lambda x: np.eye(x.shape[0], x.shape[1], k=k, dtype=CAST_TYPES[to] if to is not None else x.dtype)
