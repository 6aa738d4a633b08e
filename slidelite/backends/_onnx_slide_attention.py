"""The numpy backend's fused Slide attention for ONNX files: the converter's channel-first deployed form
(``model_zoo/slide_attention.py``) found at load and replaced by one step of :mod:`._slide_attention`.

The exported chain, for a channels-last qkv map ``F`` ``(B, H, W, 3C)`` (q pre-scaled), ``heads`` heads of
``hd`` channels and ``kk = ka^2`` neighbours: ``Transpose`` to NCHW, three ``Slice`` (q, k, v), ``Conv`` of k
and of v (groups ``C``, ``kk`` outputs per channel, ``ka x ka`` kernels, 'same' padding), ``Reshape`` to
``(B*heads, hd, kk, HW)``, the logits ``ReduceSum(q * k)`` over ``hd``, the softmax over the ``kk`` axis written
out (max, subtract, exp, sum, divide), ``ReduceSum(attn * v)`` over ``kk``, ``Reshape`` and ``Transpose`` back to
``(B, H, W, C)``. Every node of the chain must be read only inside it; anything else is left as it is.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ._numpy_ops import Consts, Kernel, OpError, int_list, register_op
from ._onnx_reader import Node
from ._slide_attention import SlideAttentionKernel, SlideAttentionWeights, prepare_weights

#: the private domain and op type of the fused node (an op no ONNX file can name with these attributes)
DOMAIN, OP_TYPE = "slidelite.fused", "SlideAttention"
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


class QkvSlideAttention:
    """The fused ONNX step: ``(B, H, W, 3C)`` channels-last qkv map -> ``(B, H, W, C)``."""

    def __init__(self, weights: SlideAttentionWeights) -> None:
        self.attention = SlideAttentionKernel(weights)
        self.channels = weights.heads * weights.head_dim

    def __call__(self, qkv: np.ndarray, *unused: Optional[np.ndarray]) -> np.ndarray:
        c = self.channels
        if qkv.ndim != 4 or qkv.shape[3] != 3 * c or qkv.dtype != np.float32:
            raise OpError(f"Slide attention expects a float32 (B, H, W, {3 * c}) map, got {qkv.dtype} {qkv.shape}")
        return self.attention(qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:])


@register_op(f"{DOMAIN}.{OP_TYPE}")
def _slide_attention(node: Node, consts: Consts) -> Kernel:
    weights = node.attributes.get("_weights")
    if not isinstance(weights, SlideAttentionWeights):
        raise OpError(f"{OP_TYPE} in domain {DOMAIN} is the numpy backend's own fused op, not a file's")
    return QkvSlideAttention(weights)


# --------------------------------------------------------------------------------------------- matching

def fuse_slide_attentions(graph) -> None:  # type: ignore[no-untyped-def]  (the fusion pass's _Graph)
    """Replace every exported Slide attention chain in ``graph`` (a :class:`._onnx_fusion._Graph`) with one fused
    node; chains that differ in any way are left as they are."""
    for transpose in [n for n in graph.nodes if n.op_type == "Transpose"]:
        match = _match(graph, transpose)
        if match is None:
            continue
        chain, weights, output = match
        position = graph.nodes.index(transpose)
        for node in chain:
            graph.nodes.remove(node)
        graph.nodes.insert(position, Node(OP_TYPE, DOMAIN, transpose.name or f"slide_attention_{position}",
                                          [transpose.inputs[0]], [output], {"_weights": weights}))


def _axes(graph, node: Node) -> List[int]:  # type: ignore[no-untyped-def]
    if "axes" in node.attributes:
        return [int(a) for a in node.attributes["axes"]]
    return int_list(graph.const(node, 1)) if len(node.inputs) > 1 and node.inputs[1] else []


def _reduces(graph, node: Optional[Node], op: str, axis: int, keep: int) -> bool:  # type: ignore[no-untyped-def]
    return node is not None and node.op_type == op and [a % 4 for a in _axes(graph, node)] == [axis] \
        and int(node.attributes.get("keepdims", 1)) == keep


def _target(graph, node: Optional[Node]) -> Optional[List[int]]:  # type: ignore[no-untyped-def]
    """A Reshape's constant 4-D target shape, else None."""
    if node is None or node.op_type != "Reshape" or len(node.inputs) < 2:
        return None
    shape = graph.const(node, 1)
    return int_list(shape) if shape is not None and np.asarray(shape).size == 4 else None


def _slice_ranges(graph, slices: Sequence[Node]) -> Optional[List[Tuple[int, int, Node]]]:  # type: ignore
    """``(start, end, node)`` of three channel (axis 1) slices with step 1, sorted by start."""
    ranges = []
    for node in slices:
        if node.op_type != "Slice" or len(node.inputs) < 4:
            return None
        starts, ends, axes = (int_list(graph.const(node, i)) for i in (1, 2, 3))
        steps = int_list(graph.const(node, 4)) if len(node.inputs) > 4 and node.inputs[4] else [1]
        if len(starts) != 1 or len(ends) != 1 or [a % 4 for a in axes] != [1] or steps != [1]:
            return None
        ranges.append((starts[0], ends[0], node))
    return sorted(ranges, key=lambda r: r[0])


def _shift_conv(graph, node: Optional[Node], channels: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:  # type: ignore
    """The weight ``(C*kk, 1, ka, ka)`` and bias of a 'same'-padded stride-1 shift convolution, else None."""
    if node is None or node.op_type != "Conv":
        return None
    weight = graph.const(node, 1)
    attrs = node.attributes
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or weight.shape[1] != 1 \
            or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 != 1 \
            or weight.shape[0] != channels * weight.shape[2] ** 2 or int(attrs.get("group", 1)) != channels:
        return None
    pad = weight.shape[2] // 2
    if list(attrs.get("strides", [1, 1])) != [1, 1] or list(attrs.get("dilations", [1, 1])) != [1, 1] \
            or list(attrs.get("pads", [0, 0, 0, 0])) != [pad] * 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    has_bias = len(node.inputs) > 2 and node.inputs[2]
    bias = graph.const(node, 2) if has_bias else np.zeros(weight.shape[0], np.float32)
    return (weight, bias.astype(np.float32).reshape(-1)) if bias is not None else None


def _match(graph, transpose: Node) -> Optional[Tuple[List[Node], SlideAttentionWeights, str]]:  # type: ignore
    if list(transpose.attributes.get("perm", [])) != TO_NCHW or transpose.outputs[0] in graph.protected:
        return None
    ranges = _slice_ranges(graph, graph.readers(transpose.outputs[0]))
    if ranges is None or len(ranges) != 3:
        return None
    (q0, q1, q_slice), (k0, k1, k_slice), (v0, _, v_slice) = ranges
    channels = q1
    if q0 != 0 or k0 != channels or k1 != 2 * channels or v0 != 2 * channels or channels <= 0:
        return None
    q_reshape = graph.sole_reader(q_slice.outputs[0])
    q_shape = _target(graph, q_reshape)
    if q_shape is None or q_shape[2] != 1 or q_shape[1] <= 0 or channels % q_shape[1]:
        return None
    head_dim = q_shape[1]
    branches = []
    for slice_ in (k_slice, v_slice):
        conv = graph.sole_reader(slice_.outputs[0])
        params = _shift_conv(graph, conv, channels)
        reshape = graph.sole_reader(conv.outputs[0]) if params is not None else None  # type: ignore[union-attr]
        shape = _target(graph, reshape)
        if params is None or shape is None or shape[1:3] != [head_dim, params[0].shape[0] // channels]:
            return None
        branches.append((conv, params, reshape))
    (k_conv, (k_weight, k_bias), k_reshape), (v_conv, (v_weight, v_bias), v_reshape) = branches
    if k_weight.shape != v_weight.shape:
        return None
    logits = graph.sole_reader(k_reshape.outputs[0])
    if logits is None or logits.op_type != "Mul" or sorted(logits.inputs) != sorted(
            [q_reshape.outputs[0], k_reshape.outputs[0]]) or graph.sole_reader(q_reshape.outputs[0]) is not logits:
        return None
    scores = graph.sole_reader(logits.outputs[0])
    softmax = _softmax_chain(graph, scores) if _reduces(graph, scores, "ReduceSum", 1, 1) else None
    if softmax is None:
        return None
    weighted = graph.sole_reader(softmax[-1].outputs[0])
    if weighted is None or weighted.op_type != "Mul" or sorted(weighted.inputs) != sorted(
            [softmax[-1].outputs[0], v_reshape.outputs[0]]) or graph.sole_reader(v_reshape.outputs[0]) is not weighted:
        return None
    total = graph.sole_reader(weighted.outputs[0])
    back = graph.sole_reader(total.outputs[0]) if _reduces(graph, total, "ReduceSum", 2, 0) else None
    back_shape = _target(graph, back)
    last = graph.sole_reader(back.outputs[0]) if back_shape is not None and back_shape[1] == channels else None
    if last is None or last.op_type != "Transpose" or list(last.attributes.get("perm", [])) != TO_NHWC:
        return None
    chain = [transpose, q_slice, k_slice, v_slice, q_reshape, k_conv, v_conv, k_reshape, v_reshape, logits, scores,
             *softmax, weighted, total, back, last]
    weights = prepare_weights(channels // head_dim, head_dim, k_weight, k_bias, v_weight, v_bias)
    return chain, weights, last.outputs[0]


def _softmax_chain(graph, scores: Node) -> Optional[List[Node]]:  # type: ignore[no-untyped-def]
    """The written-out softmax over axis 2 reading ``scores``: ReduceMax, Sub, Exp, ReduceSum, Div (Div last)."""
    readers = graph.readers(scores.outputs[0])
    if len(readers) != 2 or scores.outputs[0] in graph.protected:
        return None
    peak = next((n for n in readers if n.op_type == "ReduceMax"), None)
    sub = next((n for n in readers if n.op_type == "Sub"), None)
    if not _reduces(graph, peak, "ReduceMax", 2, 1) or sub is None or sub.inputs != [scores.outputs[0], peak.outputs[0]] \
            or graph.sole_reader(peak.outputs[0]) is not sub:  # type: ignore[union-attr]
        return None
    exp = graph.sole_reader(sub.outputs[0])
    if exp is None or exp.op_type != "Exp":
        return None
    readers = graph.readers(exp.outputs[0])
    norm = next((n for n in readers if n.op_type == "ReduceSum"), None)
    div = next((n for n in readers if n.op_type == "Div"), None)
    if len(readers) != 2 or exp.outputs[0] in graph.protected or not _reduces(graph, norm, "ReduceSum", 2, 1) \
            or div is None or div.inputs != [exp.outputs[0], norm.outputs[0]] \
            or graph.sole_reader(norm.outputs[0]) is not div:  # type: ignore[union-attr]
        return None
    return [peak, sub, exp, norm, div]  # type: ignore[list-item]
