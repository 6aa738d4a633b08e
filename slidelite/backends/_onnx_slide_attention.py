"""The numpy backend's fused Slide attention for ONNX files: the converter's channel-first deployed form
(``model_zoo/slide_attention.py``), found at load and run as two small matrix products per head instead of two
depthwise convolutions with ``ka^2`` outputs per channel.

The exported chain, for a channels-last qkv map ``F`` ``(B, H, W, 3C)`` (q pre-scaled), ``heads`` heads of
``hd`` channels and ``kk = ka^2`` neighbours: ``Transpose`` to NCHW, three ``Slice`` (q, k, v), ``Conv`` of k
and of v (groups ``C``, ``kk`` outputs per channel, ``ka x ka`` kernels), ``Reshape`` to ``(B*heads, hd, kk,
HW)``, the logits ``ReduceSum(q * k)`` over ``hd``, a softmax over the ``kk`` axis (one ``Softmax`` or written out
as max, exp, sum, divide), ``ReduceSum(attn * v)`` over ``kk``, ``Reshape`` and ``Transpose`` back to
``(B, H, W, C)``.

Both convolutions are linear in their input, so with ``k_t`` the map shifted by kernel tap ``t`` (zero padded),
``W[c, n, t]`` the kernel of channel ``c`` for neighbour ``n`` and ``b`` the biases::

    logits[p, h, n] = sum_{t, d} (q ⊙ k_t)[p, h, d] W_k[hd*h + d, n, t] + sum_d q[p, h, d] b_k[hd*h + d, n]
    out[p, h, d]    = sum_t v_t[p, h, d] M[p, h, t, d] + M[p, h, kk, d],
                      M[p, h] = attn[p, h, :] @ [W_v[hd*h + d, :, t] per (t, d) | b_v[hd*h + d, :] per d]

so per head the logits are one ``(pixels, (kk + 1) * hd) @ ((kk + 1) * hd, kk)`` product of the products
``q ⊙ k_t`` (with q itself as the last block, for the bias), and the output one ``(pixels, kk) @ (kk, (kk + 1) *
hd)`` product followed by one multiply with the shifted values and one sum over the taps. That is the same
multiply-adds as the convolutions (about ``2 kk^2`` per channel and pixel) but in BLAS, and a handful of passes
over memory instead of ``kk`` passes per convolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ._blas_threads import parallel_ranges
from ._depthwise_nhwc import pad_nhwc
from ._numpy_ops import Consts, Kernel, OpError, int_list, register_op
from ._onnx_reader import Node

#: the private domain and op type of the fused node (an op no ONNX file can name with these attributes)
DOMAIN, OP_TYPE = "slidelite.fused", "SlideAttention"
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
#: rows of the map are attended in bands whose tap products hold about this many values (they stay in cache)
BAND_VALUES = 1 << 18


@dataclass(frozen=True)
class SlideAttentionWeights:
    """What the fused kernel needs, laid out once at load.

    Attributes:
        heads: attention heads.
        head_dim: channels per head.
        ka: neighbourhood (and kernel) size.
        logits: per head, ``((kk + 1) * hd, kk)``: rows ``t * hd + d`` hold ``W_k[hd*h + d, :, t]``, rows
            ``kk * hd + d`` the key bias ``b_k[hd*h + d, :]``.
        values: per head, ``(kk, (kk + 1) * hd)``: column ``t * hd + d`` holds ``W_v[hd*h + d, :, t]``, column
            ``kk * hd + d`` the value bias.
    """

    heads: int
    head_dim: int
    ka: int
    logits: np.ndarray
    values: np.ndarray


class SlideAttentionKernel:
    """``(B, H, W, 3C)`` channels-last qkv map -> ``(B, H, W, C)`` attention output (see the module docstring)."""

    def __init__(self, weights: SlideAttentionWeights) -> None:
        self.w = weights
        self.channels = weights.heads * weights.head_dim

    def __call__(self, qkv: np.ndarray, *unused: Optional[np.ndarray]) -> np.ndarray:
        w, c = self.w, self.channels
        if qkv.ndim != 4 or qkv.shape[3] != 3 * c or qkv.dtype != np.float32:
            raise OpError(f"Slide attention expects a float32 (B, H, W, {3 * c}) map, got {qkv.dtype} {qkv.shape}")
        batch, height, width, _ = qkv.shape
        heads, hd, ka = w.heads, w.head_dim, w.ka
        kk, pad = ka * ka, ka // 2
        keys = pad_nhwc(qkv[..., c:2 * c], pad, pad, pad, pad)
        values = pad_nhwc(qkv[..., 2 * c:], pad, pad, pad, pad)
        key_taps, value_taps = self._taps(keys, height, width), self._taps(values, height, width)
        query = qkv[..., :c].reshape(batch, height, width, heads, 1, 1, hd)
        out = np.empty((batch, height, width, heads, hd), np.float32)
        band = max(1, BAND_VALUES // max(1, width * (kk + 1) * c))

        def rows(first: int, last: int) -> None:
            for top in range(first * band, min(last * band, height), band):
                bottom = min(top + band, height)
                self._band(query[:, top:bottom], key_taps[:, top:bottom], value_taps[:, top:bottom], out[:, top:bottom])

        parallel_ranges(-(-height // band), rows)
        return out.reshape(batch, height, width, c)

    def _band(self, query: np.ndarray, key_taps: np.ndarray, value_taps: np.ndarray, out: np.ndarray) -> None:
        """The attention for a band of rows: ``query`` ``(B, rows, W, heads, 1, 1, hd)``, the tap views
        ``(B, rows, W, heads, ka, ka, hd)``, into ``out`` ``(B, rows, W, heads, hd)``."""
        w = self.w
        heads, hd, ka = w.heads, w.head_dim, w.ka
        kk = ka * ka
        shape = key_taps.shape
        pixels = shape[0] * shape[1] * shape[2]
        # per pixel and head: q * k_t for every tap t, then q itself (the key bias's rows)
        products = np.empty(shape[:4] + (kk + 1, hd), np.float32)
        np.multiply(key_taps, query, out=products[..., :kk, :].reshape(shape))
        products[..., kk, :] = query[..., 0, 0, :]
        rows = products.reshape(pixels, heads, (kk + 1) * hd)
        mixed = np.empty((pixels, heads, (kk + 1) * hd), np.float32)
        for h in range(heads):
            logits = np.matmul(rows[:, h], w.logits[h])
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            np.matmul(logits, w.values[h], out=mixed[:, h])
        mixed = mixed.reshape(shape[:4] + (kk + 1, hd))
        np.einsum("nyxhijd,nyxhijd->nyxhd", value_taps, mixed[..., :kk, :].reshape(shape), out=out)
        out += mixed[..., kk, :]

    def _taps(self, padded: np.ndarray, height: int, width: int) -> np.ndarray:
        """``(B, H, W, heads, ka, ka, hd)`` view of the padded map: tap ``(i, j)`` of ``(y, x)`` reads ``(y+i, x+j)``."""
        s = padded.strides
        heads, hd, ka = self.w.heads, self.w.head_dim, self.w.ka
        return np.lib.stride_tricks.as_strided(
            padded, (padded.shape[0], height, width, heads, ka, ka, hd),
            (s[0], s[1], s[2], hd * s[3], s[1], s[2], s[3]), writeable=False)


@register_op(f"{DOMAIN}.{OP_TYPE}")
def _slide_attention(node: Node, consts: Consts) -> Kernel:
    weights = node.attributes.get("_weights")
    if not isinstance(weights, SlideAttentionWeights):
        raise OpError(f"{OP_TYPE} in domain {DOMAIN} is the numpy backend's own fused op, not a file's")
    return SlideAttentionKernel(weights)


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


def prepare_weights(heads: int, head_dim: int, k_weight: np.ndarray, k_bias: np.ndarray, v_weight: np.ndarray,
                    v_bias: np.ndarray) -> SlideAttentionWeights:
    """The per-head product matrices from the two shift convolutions' weights ``(C*kk, 1, ka, ka)`` and biases."""
    ka = k_weight.shape[2]
    kk = ka * ka
    grid = (heads, head_dim, kk, kk)  # (head, d, neighbour n, tap t)
    k_taps = k_weight.reshape(grid).transpose(0, 3, 1, 2).reshape(heads, kk * head_dim, kk)  # rows (t, d)
    k_rows = k_bias.reshape(heads, head_dim, kk)  # rows d
    v_taps = v_weight.reshape(grid).transpose(0, 2, 3, 1).reshape(heads, kk, kk * head_dim)  # columns (t, d)
    v_cols = v_bias.reshape(heads, head_dim, kk).transpose(0, 2, 1)  # columns d
    return SlideAttentionWeights(heads, head_dim, ka,
                                 np.ascontiguousarray(np.concatenate([k_taps, k_rows], axis=1), np.float32),
                                 np.ascontiguousarray(np.concatenate([v_taps, v_cols], axis=2), np.float32))
