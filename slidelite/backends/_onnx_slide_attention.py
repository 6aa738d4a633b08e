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

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._numpy_ops import Consts, Kernel, OpError, int_list, register_op
from ._onnx_reader import Node
from ._slide_attention import SlideAttentionKernel, SlideAttentionWeights, prepare_weights

#: the private domain and op type of the fused node (an op no ONNX file can name with these attributes)
DOMAIN, OP_TYPE = "slidelite.fused", "SlideAttention"
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


class QkvSlideAttention:
    """The fused channel-first form: ``(B, H, W, 3C)`` channels-last qkv map -> ``(B, H, W, C)``."""

    def __init__(self, weights: SlideAttentionWeights) -> None:
        self.attention = SlideAttentionKernel(weights)
        self.channels = weights.heads * weights.head_dim

    def __call__(self, qkv: np.ndarray, *unused: Optional[np.ndarray]) -> np.ndarray:
        c = self.channels
        if qkv.ndim != 4 or qkv.shape[3] != 3 * c or qkv.dtype != np.float32:
            raise OpError(f"Slide attention expects a float32 (B, H, W, {3 * c}) map, got {qkv.dtype} {qkv.shape}")
        return self.attention(qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:])


class MapsSlideAttention:
    """The fused per-offset form: NCHW query, key and value maps (the layout pass hands them over as views of
    channels-last arrays) -> the NCHW output, a view of the kernel's channels-last result."""

    def __init__(self, weights: SlideAttentionWeights) -> None:
        self.attention = SlideAttentionKernel(weights)
        self.channels = weights.heads * weights.head_dim

    def __call__(self, query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        maps = (query, keys, values)
        if any(m.ndim != 4 or m.shape[1] != self.channels or m.dtype != np.float32 or m.shape != query.shape
               for m in maps):
            raise OpError(f"Slide attention expects three float32 (B, {self.channels}, H, W) maps, got "
                          f"{', '.join(str(m.shape) for m in maps)}")
        out = self.attention(*(m.transpose(TO_NHWC) for m in maps))
        return out.transpose(TO_NCHW)


@register_op(f"{DOMAIN}.{OP_TYPE}")
def _slide_attention(node: Node, consts: Consts) -> Kernel:
    weights = node.attributes.get("_weights")
    if not isinstance(weights, SlideAttentionWeights):
        raise OpError(f"{OP_TYPE} in domain {DOMAIN} is the numpy backend's own fused op, not a file's")
    return QkvSlideAttention(weights) if node.attributes.get("_inputs") == "qkv" else MapsSlideAttention(weights)


# --------------------------------------------------------------------------------------------- matching

def fuse_slide_attentions(graph) -> None:  # type: ignore[no-untyped-def]  (the fusion pass's _Graph)
    """Replace every exported Slide attention chain in ``graph`` (a :class:`._onnx_fusion._Graph`) with one fused
    node; chains that differ in any way are left as they are."""
    for anchor_type, matcher, inputs in (("Transpose", _match, "qkv"), ("Concat", _match_per_offset, "maps")):
        for anchor in [n for n in graph.nodes if n.op_type == anchor_type]:
            match = matcher(graph, anchor) if anchor in graph.nodes else None
            if match is None:
                continue
            chain, weights, sources, output = match
            position = min(graph.nodes.index(node) for node in chain)
            for node in chain:
                graph.nodes.remove(node)
            graph.nodes.insert(position, Node(OP_TYPE, DOMAIN, anchor.name or f"slide_attention_{position}",
                                              sources, [output], {"_weights": weights, "_inputs": inputs}))


def _axes(graph, node: Node) -> List[int]:  # type: ignore[no-untyped-def]
    if "axes" in node.attributes:
        return [int(a) for a in node.attributes["axes"]]
    return int_list(graph.const(node, 1)) if len(node.inputs) > 1 and node.inputs[1] else []


def _reduces(graph, node: Optional[Node], op: str, axis: int, keep: int) -> bool:  # type: ignore[no-untyped-def]
    return node is not None and node.op_type == op and [a % 4 for a in _axes(graph, node)] == [axis] \
        and int(node.attributes.get("keepdims", 1)) == keep


def _target(graph, node: Optional[Node], rank: int = 4) -> Optional[List[int]]:  # type: ignore[no-untyped-def]
    """A Reshape's constant target shape of ``rank`` dims, else None."""
    if node is None or node.op_type != "Reshape" or len(node.inputs) < 2:
        return None
    shape = graph.const(node, 1)
    return int_list(shape) if shape is not None and np.asarray(shape).size == rank else None


def _slice_ranges(graph, slices: Sequence[Node]) -> Optional[List[Tuple[int, int, Node]]]:  # type: ignore
    """``(start, end, node)`` of channel (axis 1) slices with step 1, sorted by start; None if any is not one."""
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


def _shift_conv(graph, node: Optional[Node], channels: int,  # type: ignore[no-untyped-def]
                multiplier: Optional[int] = None) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The weight ``(C*m, 1, ka, ka)`` and bias of a 'same'-padded stride-1 depthwise shift convolution with ``m =
    multiplier`` outputs per channel (default ``ka^2``: all offsets in one conv), else None."""
    if node is None or node.op_type != "Conv":
        return None
    weight = graph.const(node, 1)
    attrs = node.attributes
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or weight.shape[1] != 1 \
            or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 != 1 \
            or weight.shape[0] != channels * (weight.shape[2] ** 2 if multiplier is None else multiplier) \
            or int(attrs.get("group", 1)) != channels:
        return None
    pad = weight.shape[2] // 2
    if list(attrs.get("strides", [1, 1])) != [1, 1] or list(attrs.get("dilations", [1, 1])) != [1, 1] \
            or list(attrs.get("pads", [0, 0, 0, 0])) != [pad] * 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    has_bias = len(node.inputs) > 2 and node.inputs[2]
    bias = graph.const(node, 2) if has_bias else np.zeros(weight.shape[0], np.float32)
    return (weight, bias.astype(np.float32).reshape(-1)) if bias is not None else None


def _match(graph, transpose: Node) -> Optional[Tuple[List[Node], SlideAttentionWeights, List[str], str]]:  # type: ignore
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
    softmax = _softmax_chain(graph, scores, 2) if _reduces(graph, scores, "ReduceSum", 1, 1) else None
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
    return chain, weights, [transpose.inputs[0]], last.outputs[0]


def _producers(graph) -> Dict[str, Node]:  # type: ignore[no-untyped-def]
    return {name: node for node in graph.nodes for name in node.outputs if name}


def _head_ones(graph, node: Optional[Node], shape: Tuple[int, ...], groups: int) -> bool:  # type: ignore
    """A bias-free 1x1 Conv with ``groups`` groups and an all-ones ``shape`` weight (a sum over, or a copy to, the
    channels of each head)."""
    if node is None or node.op_type != "Conv" or int(node.attributes.get("group", 1)) != groups \
            or (len(node.inputs) > 2 and node.inputs[2]):
        return False
    weight = graph.const(node, 1)
    return weight is not None and weight.shape == shape and bool(np.all(weight == 1)) \
        and list(node.attributes.get("strides", [1, 1])) == [1, 1]


def _match_per_offset(graph, concat: Node) -> Optional[Tuple[List[Node], SlideAttentionWeights, List[str], str]]:  # type: ignore
    """The all-convolution deployed form (``model_zoo/slide_attention.py``): per offset ``j`` of ``kk``, a depthwise
    Conv of k times q summed per head by a grouped 1x1 Conv of ones; the ``kk`` logit maps concatenated on
    channels, reshaped to ``(B, kk, heads*H*W)``, a written-out softmax over axis 1, reshaped to ``(B, kk*heads, H,
    W)``; per offset a channel Slice copied to the head's channels by a grouped 1x1 Conv of ones, times a depthwise
    Conv of v; the products added up."""
    kk = len(concat.inputs)
    ka = int(round(kk ** 0.5))
    if kk < 2 or ka * ka != kk or ka % 2 != 1 or int(concat.attributes.get("axis", 0)) not in (1, -3):
        return None
    made = _producers(graph)
    query = keys = None
    k_convs, chain = [], [concat]
    heads = head_dim = 0
    for name in concat.inputs:
        head_sum = made.get(name)
        if head_sum is None or graph.sole_reader(name) is not concat:
            return None
        weight = graph.const(head_sum, 1)
        if weight is None or weight.ndim != 4 or not heads:
            heads, head_dim = (weight.shape[0], weight.shape[1]) if weight is not None and weight.ndim == 4 else (0, 0)
        if not heads or not _head_ones(graph, head_sum, (heads, head_dim, 1, 1), heads):
            return None
        product = made.get(head_sum.inputs[0])
        if product is None or product.op_type != "Mul" or graph.sole_reader(product.outputs[0]) is not head_sum:
            return None
        shifted = [made.get(i) for i in product.inputs]
        conv = next((n for n in shifted if _shift_conv(graph, n, heads * head_dim, 1) is not None), None)
        if conv is None or graph.sole_reader(conv.outputs[0]) is not product:
            return None
        other = product.inputs[1 - product.inputs.index(conv.outputs[0])]
        if (query or other) != other or (keys or conv.inputs[0]) != conv.inputs[0]:
            return None
        query, keys = other, conv.inputs[0]
        k_convs.append(conv)
        chain += [head_sum, product, conv]
    channels = heads * head_dim
    flat = graph.sole_reader(concat.outputs[0])
    flat_shape = _target(graph, flat, 3)
    softmax = _softmax_chain(graph, flat, 1) if flat_shape is not None and flat_shape[1] == kk else None
    spread = graph.sole_reader(softmax[-1].outputs[0]) if softmax is not None else None
    spread_shape = _target(graph, spread)
    if spread_shape is None or spread_shape[1] != kk * heads or spread.outputs[0] in graph.protected:  # type: ignore
        return None
    chain += [flat, *softmax, spread]  # type: ignore[list-item]
    ranges = _slice_ranges(graph, graph.readers(spread.outputs[0]))  # type: ignore[union-attr]
    if ranges is None or [(a, b) for a, b, _ in ranges] != [(j * heads, (j + 1) * heads) for j in range(kk)]:
        return None
    values, v_convs, weighted = None, [], []
    for _, _, slice_ in ranges:
        copy = graph.sole_reader(slice_.outputs[0])
        product = graph.sole_reader(copy.outputs[0]) if _head_ones(graph, copy, (channels, 1, 1, 1), heads) else None
        if product is None or product.op_type != "Mul":
            return None
        conv = made.get(product.inputs[1 - product.inputs.index(copy.outputs[0])]) \
            if copy.outputs[0] in product.inputs else None  # type: ignore[union-attr]
        if _shift_conv(graph, conv, channels, 1) is None or graph.sole_reader(conv.outputs[0]) is not product \
                or (values or conv.inputs[0]) != conv.inputs[0]:  # type: ignore[union-attr]
            return None
        values = conv.inputs[0]  # type: ignore[union-attr]
        v_convs.append(conv)
        weighted.append(product)
        chain += [slice_, copy, product, conv]  # type: ignore[list-item]
    adds, output = _sum_tree(graph, weighted)
    if output is None or query is None or keys is None or values is None:
        return None
    weights = prepare_weights(heads, head_dim, *_stacked(graph, k_convs), *_stacked(graph, v_convs))
    return chain + adds, weights, [query, keys, values], output


def _sum_tree(graph, terms: List[Node]) -> Tuple[List[Node], Optional[str]]:  # type: ignore[no-untyped-def]
    """The Add nodes that sum exactly the outputs of ``terms`` (each read once, by the tree), and the total's name."""
    pending = {term.outputs[0] for term in terms}
    adds: List[Node] = []
    while len(pending) > 1:
        step = next((graph.sole_reader(name) for name in sorted(pending)
                     if (r := graph.sole_reader(name)) is not None and r.op_type == "Add"
                     and len(r.inputs) == 2 and set(r.inputs) <= pending and r.inputs[0] != r.inputs[1]), None)
        if step is None:
            return adds, None
        pending -= set(step.inputs)
        pending.add(step.outputs[0])
        adds.append(step)
    return adds, next(iter(pending))


def _stacked(graph, convs: List[Node]) -> Tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Per-offset depthwise convs ``(C, 1, ka, ka)`` stacked as one ``(C*kk, 1, ka, ka)`` weight (channel ``c``,
    offset ``j`` at ``c*kk + j``) and its bias."""
    params = [_shift_conv(graph, conv, graph.const(conv, 1).shape[0], 1) for conv in convs]
    weight = np.stack([w for w, _ in params], axis=1)  # (C, kk, 1, ka, ka)
    bias = np.stack([b for _, b in params], axis=1)  # (C, kk)
    return weight.reshape(-1, 1, *weight.shape[3:]), bias.reshape(-1)


def _softmax_chain(graph, scores: Node, axis: int) -> Optional[List[Node]]:  # type: ignore[no-untyped-def]
    """The written-out softmax over ``axis`` reading ``scores``: ReduceMax, Sub, Exp, ReduceSum, Div (Div last)."""
    readers = graph.readers(scores.outputs[0])
    if len(readers) != 2 or scores.outputs[0] in graph.protected:
        return None
    peak = next((n for n in readers if n.op_type == "ReduceMax"), None)
    sub = next((n for n in readers if n.op_type == "Sub"), None)
    if not _reduces(graph, peak, "ReduceMax", axis, 1) or sub is None or sub.inputs != [scores.outputs[0], peak.outputs[0]] \
            or graph.sole_reader(peak.outputs[0]) is not sub:  # type: ignore[union-attr]
        return None
    exp = graph.sole_reader(sub.outputs[0])
    if exp is None or exp.op_type != "Exp":
        return None
    readers = graph.readers(exp.outputs[0])
    norm = next((n for n in readers if n.op_type == "ReduceSum"), None)
    div = next((n for n in readers if n.op_type == "Div"), None)
    if len(readers) != 2 or exp.outputs[0] in graph.protected or not _reduces(graph, norm, "ReduceSum", axis, 1) \
            or div is None or div.inputs != [exp.outputs[0], norm.outputs[0]] \
            or graph.sole_reader(norm.outputs[0]) is not div:  # type: ignore[union-attr]
        return None
    return [peak, sub, exp, norm, div]  # type: ignore[list-item]
