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
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ._tflite_kernel_base import FLOAT, Kernel
from ._tflite_reader import Operator, Subgraph

#: one planned step before slots are assigned: operator, kernel, per-input constants, output tensor indices
Pending = Tuple[Operator, Kernel, List[Optional[np.ndarray]], Tuple[int, ...]]

#: the op sequence of a lowered LayerNorm, and for each op which earlier chain values (or "x", or "C" for a
#: constant) its inputs are: values are numbered by the op that writes them
LAYER_NORM = (
    ("MEAN", ("x", "C")), ("RESHAPE", (0, "C")), ("SQUARED_DIFFERENCE", ("x", 1)), ("MEAN", (2, "C")),
    ("ADD", (3, "C")), ("RSQRT", (4,)), ("MUL", (5, 0)), ("SUB", ("C", 6)), ("RESHAPE", (5, "C")),
    ("MUL", ("x", 8)), ("RESHAPE", (7, "C")), ("ADD", (9, 10)), ("MUL", (11, "C")), ("ADD", (12, "C")),
)


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
        chain = pending[position:position + len(LAYER_NORM)]
        step = _match_layer_norm(graph, chain, readers)
        if step is None:
            fused.append(pending[position])
            position += 1
        else:
            fused.append(step)
            position += len(LAYER_NORM)
    return fused


def _match_layer_norm(graph: Subgraph, chain: Sequence[Pending], readers: Counter) -> Optional[Pending]:
    if len(chain) != len(LAYER_NORM) or any(op.op != name for (op, *_), (name, _) in zip(chain, LAYER_NORM)):
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
    gamma, beta = consts[12][1], consts[13][1]
    if any(np.asarray(c).size != 1 for c in scalars) or any(
            np.asarray(v).dtype != FLOAT or np.asarray(v).shape not in ((), (x_shape[-1],)) for v in (gamma, beta)):
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


def layer_norm(eps: float, offset: float, gamma: np.ndarray, beta: np.ndarray) -> Kernel:
    """The fused LayerNorm chain over the last axis: ``(x * r + (offset - r * m)) * gamma + beta``."""
    eps32, offset32 = np.float32(eps), np.float32(offset)
    gamma32, beta32 = np.asarray(gamma, np.float32), np.asarray(beta, np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        mean = np.mean(x, axis=-1, keepdims=True, dtype=np.float32)
        centered = x - mean
        np.square(centered, out=centered)
        variance = np.mean(centered, axis=-1, keepdims=True, dtype=np.float32)
        variance += eps32
        rsqrt = np.float32(1) / np.sqrt(variance)
        out = x * rsqrt
        out += offset32 - rsqrt * mean
        out *= gamma32
        out += beta32
        return out

    return run
