"""Load-time fusion of TFLite op chains into single numpy kernels (the numpy backend's graph planner uses it).

A converter lowers LayerNorm to fourteen builtin ops (MEAN, RESHAPE, SQUARED_DIFFERENCE, MEAN, ADD eps, RSQRT,
MUL, SUB, RESHAPE, MUL, RESHAPE, ADD, MUL gamma, ADD beta); :func:`fuse_layer_norms` finds that exact chain in
the planned steps (consecutive, float32, intermediates read by nothing else, reductions over the last axis) and
replaces it with one step computing the same expression, ``(x * r + (c - r * m)) * gamma + beta`` with
``m = mean(x)``, ``r = 1 / sqrt(mean((x - m)^2) + eps)``, in a handful of numpy calls instead of fourteen
kernel calls. Anything that does not match exactly is left as it is.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ._slide_attention import SlideAttentionKernel, SlideAttentionWeights, prepare_weights
from ._tflite_kernel_base import FLOAT, Kernel
from ._tflite_ops_linear import PADDING_SAME, PADDING_VALID, SiblingDepthwise
from ._tflite_reader import Operator, Subgraph

#: one planned step before slots are assigned: operator, kernel, per-input constants, output tensor indices
Pending = Tuple[Operator, Kernel, List[Optional[np.ndarray]], Tuple[int, ...]]

#: the op sequence of a lowered LayerNorm (the last two, gamma and beta, may be folded into the next op), and for each op which earlier chain values (or "x", or "C" for a
#: constant) its inputs are: values are numbered by the op that writes them
LAYER_NORM = (
    ("MEAN", ("x", "C")), ("RESHAPE", (0, "C")), ("SQUARED_DIFFERENCE", ("x", 1)), ("MEAN", (2, "C")),
    ("ADD", (3, "C")), ("RSQRT", (4,)), ("MUL", (5, 0)), ("SUB", ("C", 6)), ("RESHAPE", (5, "C")),
    ("MUL", ("x", 8)), ("RESHAPE", (7, "C")), ("ADD", (9, 10)), ("MUL", (11, "C")), ("ADD", (12, "C")),
)
#: the ops of a LayerNorm without its affine tail
LAYER_NORM_CORE = 12


def tensor_readers(pending: Iterable[Pending], output_index: int) -> Counter:
    """How many step inputs (plus the graph output) read each tensor index."""
    readers: Counter = Counter(i for op, *_ in pending for i in op.inputs if i >= 0)
    readers[output_index] += 1
    return readers


def fuse_layer_norms(graph: Subgraph, pending: List[Pending], output_index: int) -> List[Pending]:
    """``pending`` with every lowered float LayerNorm chain replaced by one :func:`layer_norm` step."""
    readers = tensor_readers(pending, output_index)
    fused: List[Pending] = []
    position = 0
    while position < len(pending):
        for length in (len(LAYER_NORM), LAYER_NORM_CORE):  # with the affine tail, else without it
            step = _match_layer_norm(graph, pending[position:position + length], readers, length)
            if step is not None:
                fused.append(step)
                position += length
                break
        else:
            fused.append(pending[position])
            position += 1
    return fused


def _match_layer_norm(graph: Subgraph, chain: Sequence[Pending], readers: Counter, length: int) -> Optional[Pending]:
    if len(chain) != length or any(op.op != name for (op, *_), (name, _) in zip(chain, LAYER_NORM)):
        return None
    x = chain[0][0].inputs[0]
    x_shape = graph.tensors[x].shape
    if graph.tensors[x].dtype != FLOAT or not x_shape:
        return None
    written = [op.outputs[0] if len(op.outputs) == 1 else -1 for op, *_ in chain]
    for (op, _, consts, _), (_, wiring) in zip(chain, LAYER_NORM):
        if len(op.inputs) < len(wiring) or op.options.get("activation", 0) or op.options.get("keep_dims", 0):
            return None
        for index, const, role in zip(op.inputs, consts, wiring):
            if role == "C" and const is None or role == "x" and index != x \
                    or isinstance(role, int) and index != written[role]:
                return None
    internal = Counter(i for op, *_ in chain for i in op.inputs)
    if any(readers[t] != internal[t] for t in written[:-1]):  # an intermediate is read outside the chain
        return None
    consts = [entry[2] for entry in chain]
    for axes in (consts[0][1], consts[3][1]):
        if not _last_axis_only(graph, x, axes):
            return None
    scalars = [consts[4][1], consts[7][0]]
    gamma, beta = (consts[12][1], consts[13][1]) if length == len(LAYER_NORM) else (None, None)
    if any(np.asarray(c).size != 1 for c in scalars) or any(v is not None and (
            v.dtype != FLOAT or v.shape not in ((), (x_shape[-1],))) for v in (gamma, beta)):
        return None
    kernel = layer_norm(float(np.ravel(scalars[0])[0]), float(np.ravel(scalars[1])[0]), gamma, beta)
    first = chain[0][0]
    op = Operator(first.index, "LAYER_NORM", first.version, (x,), (written[-1],), {})
    return op, kernel, [None], (written[-1],)


def _last_axis_only(graph: Subgraph, x: int, axes: np.ndarray) -> bool:
    """True when reducing tensor ``x`` over ``axes`` is a reduction over its last axis alone: the last axis is
    reduced and every other reduced axis has static size 1."""
    tensor = graph.tensors[x]
    rank = len(tensor.shape)
    signature = tensor.signature if len(tensor.signature) == rank else tensor.shape
    reduced = {int(a) % rank for a in np.ravel(axes)}
    return rank - 1 in reduced and all(tensor.shape[a] == 1 and signature[a] == 1 for a in reduced - {rank - 1})


def layer_norm(eps: float, offset: float, gamma: Optional[np.ndarray], beta: Optional[np.ndarray]) -> Kernel:
    """The fused LayerNorm chain over the last axis: ``(x * r + (offset - r * m)) * gamma + beta`` (without the
    affine tail when ``gamma`` and ``beta`` are None: a converter folded them into the next op)."""
    eps32, offset32 = np.float32(eps), np.float32(offset)

    def run(x: np.ndarray) -> np.ndarray:
        count = np.float32(x.shape[-1])  # np.mean is this sum and division, behind a slower Python wrapper
        mean = np.add.reduce(x, axis=-1, dtype=np.float32, keepdims=True)
        mean /= count
        centered = x - mean
        np.square(centered, out=centered)
        variance = np.add.reduce(centered, axis=-1, dtype=np.float32, keepdims=True)
        variance /= count
        variance += eps32
        rsqrt = np.float32(1) / np.sqrt(variance)
        out = x * rsqrt
        out += offset32 - rsqrt * mean
        if gamma is not None:
            out *= gamma
            out += beta
        return out

    return run


class _Cursor:
    """Walks ``pending`` from a position, taking steps of expected op types (None when the next one differs)."""

    def __init__(self, pending: Sequence[Pending], position: int) -> None:
        self.pending, self.position, self.taken = pending, position, []  # type: List[Pending]

    def take(self, name: str) -> Optional[Pending]:
        """The next step when it is a float ``name`` op without a fused activation, else None."""
        if self.position >= len(self.pending):
            return None
        entry = self.pending[self.position]
        if entry[0].op != name or entry[0].options.get("activation", 0) or len(entry[0].outputs) != 1:
            return None
        self.position += 1
        self.taken.append(entry)
        return entry


def fuse_slide_attentions(graph: Subgraph, pending: List[Pending], output_index: int) -> List[Pending]:
    """``pending`` with every lowered Slide attention replaced by one :class:`SlideAttentionCore` step, which then
    absorbs its shift convolutions where it can (:func:`absorb_shift_convolutions`).

    The lowered form, for ``n`` shifted keys ``k_g`` and values ``v_g`` of a query ``q`` (NHWC maps reshaped to
    ``(tokens, heads, head_dim)``): ``n`` times MUL(k_g, q), RESHAPE, SUM over the last axis (kept); CONCATENATION
    of the ``n`` scores on the last axis; SOFTMAX; then per ``g``: SLICE column ``g``, RESHAPE(v_g), MUL, ADD to
    the running sum; a final RESHAPE back to NHWC."""
    readers = tensor_readers(pending, output_index)
    fused: List[Pending] = []
    position = 0
    while position < len(pending):
        cursor = _Cursor(pending, position)
        step = _match_slide_attention(graph, cursor, readers)
        if step is None:
            fused.append(pending[position])
            position += 1
        else:
            fused.append(step)
            position = cursor.position
    return absorb_shift_convolutions(graph, fused, output_index)


def _match_slide_attention(graph: Subgraph, cursor: _Cursor, readers: Counter) -> Optional[Pending]:
    keys, scores, query, head_shape = [], [], None, None
    while True:
        mark = (cursor.position, len(cursor.taken))
        mul, reshape_, total = cursor.take("MUL"), cursor.take("RESHAPE"), cursor.take("SUM")
        if mul is None or reshape_ is None or total is None:
            cursor.position, cursor.taken[mark[1]:] = mark[0], []
            break
        pair = [i for i in mul[0].inputs]
        if query is None:
            query = pair[1]
        if query not in pair or pair.count(query) != 1 or any(c is not None for c in mul[2]) \
                or reshape_[0].inputs[0] != mul[0].outputs[0] or total[0].inputs[0] != reshape_[0].outputs[0]:
            return None
        shape = graph.tensors[reshape_[0].outputs[0]].shape
        head_shape = head_shape or shape
        if shape != head_shape or not total[0].options.get("keep_dims", 0) \
                or [int(a) % len(shape) for a in np.ravel(total[2][1])] != [len(shape) - 1]:
            return None
        keys.append(pair[1 - pair.index(query)])
        scores.append(total[0].outputs[0])
    concat, softmax_ = cursor.take("CONCATENATION"), cursor.take("SOFTMAX")
    count = len(keys)
    if count < 2 or concat is None or softmax_ is None or list(concat[0].inputs) != scores \
            or int(concat[0].options.get("axis", 0)) % len(head_shape) != len(head_shape) - 1 \
            or softmax_[0].inputs[0] != concat[0].outputs[0] or float(softmax_[0].options.get("beta", 1.0)) != 1.0:
        return None
    probabilities = softmax_[0].outputs[0]
    values, total_index = [], None
    for group in range(count):
        column, reshape_, product = cursor.take("SLICE"), cursor.take("RESHAPE"), cursor.take("MUL")
        if column is None or reshape_ is None or product is None or column[0].inputs[0] != probabilities \
                or not _selects_column(graph, column, group) \
                or graph.tensors[reshape_[0].outputs[0]].shape != head_shape \
                or sorted(product[0].inputs) != sorted((column[0].outputs[0], reshape_[0].outputs[0])):
            return None
        values.append(reshape_[0].inputs[0])
        if total_index is None:
            total_index = product[0].outputs[0]
            continue
        add = cursor.take("ADD")
        if add is None or sorted(add[0].inputs) != sorted((total_index, product[0].outputs[0])):
            return None
        total_index = add[0].outputs[0]
    final = cursor.take("RESHAPE")
    if final is None or final[0].inputs[0] != total_index:
        return None
    result = final[0].outputs[0]
    internal = Counter(i for op, *_ in cursor.taken for i in op.inputs)
    if any(readers[op.outputs[0]] != internal[op.outputs[0]] for op, *_ in cursor.taken[:-1]) \
            or any(graph.tensors[i].dtype != FLOAT for i in (query, *keys, *values)):
        return None
    inputs = (query, *keys, *values)
    first = cursor.taken[0][0]
    op = Operator(first.index, "SLIDE_ATTENTION", first.version, inputs, (result,), {})
    kernel = SlideAttentionCore(count, tuple(head_shape), tuple(graph.tensors[result].shape))
    return op, kernel, [None] * len(inputs), (result,)


def _selects_column(graph: Subgraph, column: Pending, group: int) -> bool:
    """True when the SLICE step takes exactly column ``group`` of the last axis (checked by running it on a probe)."""
    shape = graph.tensors[column[0].inputs[0]].shape
    probe = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    try:
        taken = np.asarray(column[1](probe, *column[2][1:]))
    except (ValueError, TypeError, IndexError):
        return False
    return taken.shape == probe[..., group:group + 1].shape and bool(np.array_equal(taken, probe[..., group:group + 1]))


class SlideAttentionCore:
    """The fused Slide attention over ``count`` shifted keys and values: scores ``<k_g, q>`` per head, softmax over
    ``g``, weighted sum of ``v_g``; inputs ``(q, k_0..k_{count-1}, v_0..v_{count-1})`` reshaped to ``head_shape``
    ``(..., heads, head_dim)``, output reshaped to ``out_shape``."""

    def __init__(self, count: int, head_shape: Tuple[int, ...], out_shape: Tuple[int, ...]) -> None:
        self.count, self.head_shape, self.out_shape = count, head_shape, out_shape

    def __call__(self, query: np.ndarray, *maps: np.ndarray) -> np.ndarray:
        count, head_shape = self.count, self.head_shape
        keys = np.stack([k.reshape(head_shape) for k in maps[:count]], axis=-2)  # (..., heads, count, dim)
        scores = np.matmul(keys, query.reshape(head_shape)[..., None])[..., 0]  # (..., heads, count)
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        values = np.stack([v.reshape(head_shape) for v in maps[count:]], axis=-2)
        return np.matmul(weights[..., None, :], values).reshape(self.out_shape)


class SlideAttentionFromMaps:
    """The Slide attention with its shift convolutions absorbed (:mod:`._slide_attention`): inputs the query (any
    shape holding the ``(B, H, W, C)`` map's values in order) and the two NHWC maps the shift convolutions read."""

    def __init__(self, weights: SlideAttentionWeights, out_shape: Tuple[int, ...]) -> None:
        self.attention = SlideAttentionKernel(weights)
        self.out_shape = out_shape

    def __call__(self, query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        return self.attention(query.reshape(keys.shape), keys, values).reshape(self.out_shape)


def absorb_shift_convolutions(graph: Subgraph, pending: List[Pending], output_index: int) -> List[Pending]:
    """``pending`` where each fused Slide attention whose keys and values are the outputs of ``ka^2`` float, 'same',
    stride-1 shift convolutions (the per-offset DEPTHWISE_CONV_2D ops, one step each or one sibling step) of two maps
    read by nothing else becomes one :class:`SlideAttentionFromMaps` step on those maps."""
    readers = tensor_readers(pending, output_index)
    producers = {index: entry for entry in pending for index in entry[3]}
    fused, absorbed = [], set()
    for entry in pending:
        replacement = _from_maps(graph, entry, producers, readers) if isinstance(entry[1], SlideAttentionCore) else None
        if replacement is None:
            fused.append(entry)
            continue
        step, convolutions = replacement
        absorbed.update(id(c) for c in convolutions)
        fused.append(step)
    return [entry for entry in fused if id(entry) not in absorbed]


def _from_maps(graph: Subgraph, entry: Pending, producers: Dict[int, Pending],
               readers: Counter) -> Optional[Tuple[Pending, List[Pending]]]:
    op, core = entry[0], entry[1]
    count = core.count
    query, keys, values = op.inputs[0], op.inputs[1:1 + count], op.inputs[1 + count:]
    branches = [_shift_weights(graph, maps, producers, readers) for maps in (keys, values)]
    if any(b is None for b in branches):
        return None
    (k_map, k_weight, k_bias, k_steps), (v_map, v_weight, v_bias, v_steps) = branches  # type: ignore[misc]
    heads, head_dim = core.head_shape[-2:]
    channels = heads * head_dim
    shape = graph.tensors[k_map].shape
    ka = k_weight.shape[2]
    if ka * ka != count or k_weight.shape != v_weight.shape or k_weight.shape[0] != channels * count \
            or graph.tensors[v_map].shape != shape or len(shape) != 4 \
            or int(np.prod(graph.tensors[query].shape)) != int(np.prod(shape)):
        return None
    weights = prepare_weights(heads, head_dim, k_weight, k_bias, v_weight, v_bias)
    fused_op = Operator(op.index, "SLIDE_ATTENTION", op.version, (query, k_map, v_map), op.outputs, {})
    kernel = SlideAttentionFromMaps(weights, core.out_shape)
    return (fused_op, kernel, [None, None, None], op.outputs), k_steps + v_steps


def _shift_weights(graph: Subgraph, maps: Sequence[int], producers: Dict[int, Pending], readers: Counter):
    """For shifted maps ``maps`` (neighbour g = ``maps[g]``): the map they all shift, the weights ``(C * count, 1,
    ka, ka)`` and biases (channel ``c``, neighbour ``g`` at ``c * count + g``), and the steps that made them; None
    unless each is a float 'same' stride-1 DEPTHWISE_CONV_2D output read only by the attention."""
    steps: List[Pending] = []
    filters, biases, source = [], [], None
    for index in maps:
        entry = producers.get(index)
        if entry is None or entry[0].op != "DEPTHWISE_CONV_2D" or readers[index] != 1:
            return None
        op, kernel, consts = entry[0], entry[1], entry[2]
        options = op.options
        if options.get("padding", PADDING_VALID) != PADDING_SAME or options.get("stride_h", 1) != 1 \
                or options.get("stride_w", 1) != 1 or options.get("dilation_h", 1) != 1 \
                or options.get("dilation_w", 1) != 1 or options.get("activation", 0) != 0 \
                or source not in (None, op.inputs[0]) or graph.tensors[op.inputs[0]].dtype != FLOAT:
            return None
        source = op.inputs[0]
        if isinstance(kernel, SiblingDepthwise):
            group = entry[3].index(index)
            filters.append(kernel.taps[..., group::kernel.count])
            biases.append(None if kernel.bias is None else kernel.bias[group::kernel.count])
        else:
            weight = consts[1] if len(consts) > 1 else None
            if weight is None or weight.dtype != FLOAT or weight.ndim != 4 or weight.shape[0] != 1:
                return None
            filters.append(weight[0])
            biases.append(consts[2] if len(consts) > 2 else None)
        if not any(entry is s for s in steps):
            steps.append(entry)
    if any(f.shape != filters[0].shape for f in filters) or filters[0].shape[0] != filters[0].shape[1] \
            or filters[0].shape[0] % 2 != 1:
        return None
    ka, channels = filters[0].shape[0], filters[0].shape[2]
    weight = np.stack(filters, axis=-1).reshape(ka, ka, channels * len(maps)).transpose(2, 0, 1)
    bias = np.stack([np.zeros(channels, np.float32) if b is None else b.reshape(-1) for b in biases], axis=-1)
    # every output of a sibling step must be one of these maps (its other outputs would be lost)
    if any(i not in maps for step in steps for i in step[3]):
        return None
    return source, np.ascontiguousarray(weight.reshape(-1, 1, ka, ka), np.float32), bias.reshape(-1), steps
