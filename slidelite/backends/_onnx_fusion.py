"""Graph rewrites the numpy backend's plan applies once at load (after constant folding).

In order:

1. ``Conv`` followed by an inference ``BatchNormalization`` with constant statistics: the normalization
   is folded into the convolution's weights and bias;
2. ``MatMul`` by a constant matrix followed by ``Add`` of a constant vector: the bias goes into the
   MatMul node (added in place);
3. ``Conv`` / ``Gemm`` / ``MatMul`` followed by ``Relu`` or a constant ``Clip`` (ReLU6): the activation
   is applied in place on the product (private ``_activation`` attribute);
4. layout: convolutions with constant weights (ungrouped or depthwise) run channels-last (NHWC), where a
   1x1 convolution is one GEMM, a depthwise one a multiply-add per tap over contiguous channel vectors
   and any other an im2col GEMM. NHWC tensors flow on through elementwise ops, other NHWC convolutions
   and spatial means; a ``Transpose`` back to NCHW (a numpy view) is inserted only where an op needs the
   original layout, and for graph outputs.

A chain is fused only when its intermediate tensor has no other reader and is not a graph output.
Rewritten nodes keep their op type (with private, underscore-prefixed attributes), so a refusal or a
failure still names the op the file holds.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Set

import numpy as np

from ._onnx_reader import Node
from ._onnx_slide_attention import fuse_slide_attentions

#: ops that map each element independently (any layout in, the same layout out)
ELEMENTWISE_UNARY = {"Relu", "Clip", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu", "Elu", "Selu",
                     "Gelu", "Erf", "Exp", "Abs", "Neg", "Sqrt", "Identity", "Softplus", "Mish", "Celu",
                     "Softsign", "Reciprocal"}
ELEMENTWISE_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu"}
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


class _Graph:
    """The live nodes with their consumers, constants and protected (graph output) names."""

    def __init__(self, nodes: List[Node], constants: Dict[str, np.ndarray], outputs: Sequence[str]) -> None:
        self.nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs),
                                          attributes=dict(n.attributes)) for n in nodes]
        self.constants = constants
        self.protected = set(outputs)
        self.counter = 0

    def readers(self, name: str) -> List[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def sole_reader(self, name: str) -> Optional[Node]:
        """The only node reading ``name`` (None when several, none, or it is a graph output)."""
        readers = self.readers(name)
        return readers[0] if len(readers) == 1 and name not in self.protected else None

    def const(self, node: Node, index: int) -> Optional[np.ndarray]:
        name = node.inputs[index] if len(node.inputs) > index else ""
        return self.constants.get(name) if name else None

    def add_constant(self, hint: str, value: np.ndarray) -> str:
        self.counter += 1
        name = f"{hint}__fused{self.counter}"
        self.constants[name] = value
        return name

    def absorb(self, first: Node, second: Node) -> None:
        """``first`` now produces ``second``'s output; ``second`` is removed."""
        first.outputs = list(second.outputs)
        self.nodes.remove(second)


def fuse(nodes: List[Node], constants: Dict[str, np.ndarray], outputs: Sequence[str]) -> List[Node]:
    """``nodes`` (topologically ordered, not constant) with the fusible chains rewritten; new constants
    (folded weights) are added to ``constants``."""
    graph = _Graph(nodes, constants, outputs)
    _fold_batch_norm(graph)
    _fold_matmul_bias(graph)
    _fuse_activations(graph)
    fuse_slide_attentions(graph)
    return _channels_last(graph)


def _conv_weight(graph: _Graph, node: Node) -> Optional[np.ndarray]:
    weight = graph.const(node, 1)
    has_bias = len(node.inputs) > 2 and node.inputs[2]
    if weight is None or weight.ndim != 4 or weight.dtype != np.float32 or (has_bias and graph.const(node, 2) is None):
        return None
    return weight


def _fold_batch_norm(graph: _Graph) -> None:
    for conv in [n for n in graph.nodes if n.op_type == "Conv"]:
        weight = _conv_weight(graph, conv)
        bn = graph.sole_reader(conv.outputs[0]) if weight is not None else None
        if bn is None or bn.op_type != "BatchNormalization" or bn.inputs[0] != conv.outputs[0] \
                or bn.attributes.get("training_mode", 0) or len([o for o in bn.outputs if o]) != 1:
            continue
        params = [graph.const(bn, i) for i in range(1, 5)]
        if any(p is None for p in params):
            continue
        scale, shift, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        factor = scale / np.sqrt(var + float(bn.attributes.get("epsilon", 1e-5)))
        bias = graph.const(conv, 2)
        old_bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        new_weight = (weight * factor.reshape(-1, 1, 1, 1)).astype(np.float32)
        new_bias = ((old_bias - mean) * factor + shift).astype(np.float32)
        conv.inputs = [conv.inputs[0], graph.add_constant(conv.inputs[1], new_weight),
                       graph.add_constant(conv.inputs[1] + "_bias", new_bias)]
        graph.absorb(conv, bn)


def _fold_matmul_bias(graph: _Graph) -> None:
    for matmul in [n for n in graph.nodes if n.op_type == "MatMul"]:
        weight = graph.const(matmul, 1)
        add = graph.sole_reader(matmul.outputs[0]) if weight is not None and weight.ndim == 2 else None
        if add is None or add.op_type != "Add" or len(add.inputs) != 2:
            continue
        other = add.inputs[1] if add.inputs[0] == matmul.outputs[0] else add.inputs[0]
        bias = graph.constants.get(other)
        if bias is None or bias.dtype != weight.dtype or bias.shape not in ((weight.shape[1],), (1, weight.shape[1])):
            continue
        matmul.attributes["_bias"] = bias.reshape(-1)
        graph.absorb(matmul, add)


def _activation(graph: _Graph, node: Node) -> Optional[tuple]:
    """``("clip", lo, hi)`` for Relu / constant Clip nodes, else None."""
    if node.op_type == "Relu":
        return ("clip", 0.0, None)
    if node.op_type == "Clip":
        lo, hi = graph.const(node, 1), graph.const(node, 2)
        given = [len(node.inputs) > i and bool(node.inputs[i]) for i in (1, 2)]
        if (given[0] and lo is None) or (given[1] and hi is None):
            return None
        return ("clip", None if lo is None else float(lo), None if hi is None else float(hi))
    return None


def _fuse_activations(graph: _Graph) -> None:
    for producer in [n for n in graph.nodes if n.op_type in ("Conv", "Gemm", "MatMul")]:
        if producer.op_type == "Conv" and _conv_weight(graph, producer) is None:
            continue
        reader = graph.sole_reader(producer.outputs[0])
        act = _activation(graph, reader) if reader is not None and reader.inputs[0] == producer.outputs[0] else None
        if act is not None and "_activation" not in producer.attributes:
            producer.attributes["_activation"] = act
            graph.absorb(producer, reader)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- layout

def _nhwc_conv(graph: _Graph, node: Node) -> bool:
    weight = _conv_weight(graph, node) if node.op_type == "Conv" else None
    if weight is None:
        return False
    groups = int(node.attributes.get("group", 1))
    return groups == 1 or (weight.shape[1] == 1 and groups == weight.shape[0])


def _nhwc_constant(value: np.ndarray) -> Optional[np.ndarray]:
    """A constant operand broadcast against an NCHW tensor, re-laid out for the NHWC one (None: rank > 4)."""
    if value.ndim > 4:
        return None
    if value.ndim == 0 or value.size == 1:
        return value
    return np.ascontiguousarray(value.reshape((1,) * (4 - value.ndim) + value.shape).transpose(TO_NHWC))


def _channels_last(graph: _Graph) -> List[Node]:
    nhwc: Dict[str, str] = {}  # original (NCHW) name -> name of its NHWC tensor
    materialized: Set[str] = set()  # NCHW names that exist (produced by the original node or a transpose)
    out: List[Node] = []

    def transpose(source: str, target: str, perm: List[int]) -> None:
        out.append(Node("Transpose", "", f"{target}__layout", [source], [target], {"perm": perm}))

    def as_nchw(name: str) -> str:
        if name in nhwc and name not in materialized:
            transpose(nhwc[name], name, TO_NCHW)
            materialized.add(name)
        return name

    def as_nhwc(name: str) -> str:
        if name not in nhwc:
            nhwc[name] = f"{name}__nhwc"
            transpose(name, nhwc[name], TO_NHWC)
        return nhwc[name]

    def produce_nhwc(node: Node) -> None:
        name = node.outputs[0]
        nhwc[name] = f"{name}__nhwc"
        node.outputs = [nhwc[name]] + node.outputs[1:]

    for node in graph.nodes:
        runtime = [i for i, name in enumerate(node.inputs) if name and name not in graph.constants]
        if _nhwc_conv(graph, node):
            node.inputs[0] = as_nhwc(node.inputs[0])
            node.attributes["_layout"] = "NHWC"
            produce_nhwc(node)
        elif runtime and all(node.inputs[i] in nhwc for i in runtime) and _keeps_layout(graph, node):
            for i in runtime:
                node.inputs[i] = nhwc[node.inputs[i]]
            for i, name in enumerate(node.inputs):
                if name in graph.constants and node.op_type in ELEMENTWISE_BINARY:
                    node.inputs[i] = graph.add_constant(name, _nhwc_constant(graph.constants[name]))  # type: ignore[arg-type]
            if node.op_type in ("ReduceMean", "GlobalAveragePool"):
                node.op_type, node.inputs = "ReduceMean", node.inputs[:1]
                keep = bool(node.attributes.get("keepdims", 1))
                node.attributes = {"axes": [1, 2], "keepdims": int(keep)}
                if keep:
                    produce_nhwc(node)
            else:
                produce_nhwc(node)
        else:
            node.inputs = [as_nchw(name) if name in nhwc else name for name in node.inputs]
            materialized.update(node.outputs)
        out.append(node)
    for name in graph.protected:
        if name in nhwc:
            as_nchw(name)
    return out


def _keeps_layout(graph: _Graph, node: Node) -> bool:
    """Whether ``node`` can run on NHWC inputs and give the NHWC form of its NCHW result."""
    if node.op_type in ELEMENTWISE_UNARY:
        return len([o for o in node.outputs if o]) == 1 and all(
            not name or name in graph.constants for name in node.inputs[1:])
    if node.op_type in ELEMENTWISE_BINARY:
        return all(_nhwc_constant(graph.constants[name]) is not None
                   for name in node.inputs if name in graph.constants)
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type == "ReduceMean":
        axes = node.attributes.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1] in graph.constants:
            axes = [int(a) for a in graph.constants[node.inputs[1]].reshape(-1)]
        return axes is not None and sorted(a % 4 for a in axes) == [2, 3]
    return False
