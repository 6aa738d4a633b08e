"""An ONNX graph prepared once for numpy execution: checked, ordered, constant-folded, fused, slotted.

:class:`OnnxPlan` is the engine behind the numpy backend (which runs one image input) and the ONNX node
conformance test (which runs graphs with several inputs and outputs). At load it

* refuses, in one line naming the node and op, every opset, op, attribute and element type the kernels
  of :mod:`._numpy_ops` (and the modules that register more ops there) do not implement;
* orders the nodes topologically and evaluates every node whose inputs are all constant;
* rewrites the rest with the fusions of :mod:`._onnx_fusion` (Conv+BatchNormalization+activation,
  MatMul+Add, ...);
* records the last use of every intermediate tensor, so :meth:`OnnxPlan.run` drops it as soon as it is
  dead.

``run`` is a pure function of its inputs: one plan can run in several threads at once.
"""
from __future__ import annotations

import heapq
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import ModelError
from . import _numpy_conv_nhwc, _numpy_index_ops, _numpy_math_ops  # noqa: F401  (they register their ops)
from . import _numpy_nn_ops, _numpy_quant_ops  # noqa: F401
from ._numpy_ops import OPS, Kernel, OpError, op_key
from ._onnx_fusion import fuse
from ._onnx_reader import Graph, Model, Node, ValueInfo

#: ai.onnx opsets whose semantics the kernels implement (13: axes as inputs, Softmax on one axis).
MIN_OPSET, MAX_OPSET = 13, 23
#: contrib domains whose registered ops the kernels implement (onnxruntime's quantization ops)
CONTRIB_DOMAINS = ("com.microsoft",)
INSTALL_HINT = 'install onnxruntime: pip install "slidelite[onnx]"'


_KERNEL_ERRORS = (OpError, ValueError, TypeError, IndexError, AttributeError, OverflowError, MemoryError)


class Step(NamedTuple):
    """One node of the execution plan.

    Attributes:
        node: the ONNX node.
        kernel: its prepared kernel.
        inputs: per input, its slot: a run-time tensor's, a constant's, or the always-None slot (omitted).
        outputs: the slots the kernel's results go to (None: an omitted optional output).
        frees: the slots that are dead after this step.
    """

    node: Node
    kernel: Kernel
    inputs: Tuple[int, ...]
    outputs: Tuple[Optional[int], ...]
    frees: Tuple[int, ...]


class OnnxPlan:
    """An ONNX model's main graph, ready to run with numpy on its run-time inputs (graph inputs that are
    not initializers, in file order); returns every graph output."""

    def __init__(self, model: Model, label: str) -> None:
        self.label = label
        check_model(model, label)
        graph = model.graph
        self.inputs: List[ValueInfo] = [v for v in graph.inputs if v.name not in graph.initializers]
        self.outputs: List[ValueInfo] = list(graph.outputs)
        for value in self.inputs + [v for v in self.outputs if v.elem_type]:  # an output may leave its type out
            if value.dtype is None:
                node = next((n for n in graph.nodes if value.name in n.inputs or value.name in n.outputs), None)
                where = f"node '{node.name}' ({node.op_type}) uses" if node else "the graph has"
                raise ModelError(f"{label}: {where} '{value.name}' of ONNX element type {value.elem_type}, which "
                                 f"the numpy backend cannot hold; {INSTALL_HINT}")
        self._plan(graph)

    def _plan(self, graph: Graph) -> None:
        constants: Dict[str, np.ndarray] = dict(graph.initializers)
        slots: Dict[str, int] = {value.name: i for i, value in enumerate(self.inputs)}
        live: List[Node] = []
        for node in topological(graph, self.label, set(constants) | set(slots)):
            consts = [constants.get(name) if name else None for name in node.inputs]
            if node.op_type != "Constant" and any(c is None and name for c, name in zip(consts, node.inputs)):
                live.append(node)
                continue
            kernel = self._kernel(node, consts)
            for name, value in zip(node.outputs, as_tuple(self._call(node, kernel, consts))):
                if name:
                    constants[name] = value
        pending: List[Tuple[Node, Kernel, List[Optional[np.ndarray]]]] = []
        for node in fuse(live, constants, [v.name for v in self.outputs]):
            consts = [constants.get(name) if name else None for name in node.inputs]
            pending.append((node, self._kernel(node, consts), consts))
            for name in node.outputs:
                if name:
                    slots.setdefault(name, len(slots))
        self._constant_outputs = {v.name: constants[v.name] for v in self.outputs if v.name in constants}
        self._output_slots = [slots.get(v.name) for v in self.outputs]
        missing = [v.name for v, slot in zip(self.outputs, self._output_slots)
                   if slot is None and v.name not in self._constant_outputs]
        if missing:
            raise ModelError(f"{self.label}: no node produces the graph output '{missing[0]}' (a broken model file)")
        keep = {slot for slot in self._output_slots if slot is not None}
        last_use: Dict[int, int] = {}  # slot -> index of the last step reading (or else writing) it
        for index, (node, _, _) in enumerate(pending):
            for name in list(node.outputs) + list(node.inputs):
                if name in slots:
                    last_use[slots[name]] = index
        dead_after: Dict[int, List[int]] = {}
        for slot, index in last_use.items():
            if slot not in keep:
                dead_after.setdefault(index, []).append(slot)
        # constants (and None for omitted inputs) sit in slots past the run-time ones, in a template copied
        # per run, so a step's arguments are one indexing pass
        self._template: List[Optional[np.ndarray]] = [None] * (len(slots) + 1)
        constant_slots: Dict[str, int] = {}

        def input_slot(name: str, const: Optional[np.ndarray]) -> int:
            if not name:
                return len(slots)  # always None
            if name in slots:
                return slots[name]
            if name not in constant_slots:
                constant_slots[name] = len(self._template)
                self._template.append(const)
            return constant_slots[name]

        self._steps = [
            Step(node, kernel, tuple(input_slot(name, const) for name, const in zip(node.inputs, consts)),
                 tuple(slots.get(name) if name else None for name in node.outputs), tuple(dead_after.get(index, ())))
            for index, (node, kernel, consts) in enumerate(pending)
        ]

    def _kernel(self, node: Node, consts: Sequence[Optional[np.ndarray]]) -> Kernel:
        try:
            return OPS[op_key(node)](node, consts)
        except (OpError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ModelError(f"{self.label}: node '{node.name}' ({node.op_type}): {exc}; {INSTALL_HINT}") from None

    def _call(self, node: Node, kernel: Kernel, args: Sequence[Optional[np.ndarray]]) -> object:
        try:
            with np.errstate(all="ignore"):
                return kernel(*args)
        except _KERNEL_ERRORS as exc:
            raise self._failure(node, exc) from None

    def _failure(self, node: Node, exc: BaseException) -> ModelError:
        reason = "out of memory" if isinstance(exc, MemoryError) else exc
        return ModelError(f"{self.label}: inference failed at node '{node.name}' ({node.op_type}): {reason}")

    def run(self, *feeds: np.ndarray) -> List[np.ndarray]:
        """Run the graph on one array per run-time input; returns every graph output, in graph order."""
        values = self._template.copy()
        values[:len(feeds)] = feeds
        with np.errstate(all="ignore"):
            for step in self._steps:
                args = [values[slot] for slot in step.inputs]
                try:
                    result = step.kernel(*args)
                except _KERNEL_ERRORS as exc:
                    raise self._failure(step.node, exc) from None
                if type(result) is tuple:
                    for slot, value in zip(step.outputs, result):
                        if slot is not None:
                            values[slot] = value
                elif step.outputs[0] is not None:
                    values[step.outputs[0]] = result
                for slot in step.frees:
                    values[slot] = None
        return [np.asarray(self._constant_outputs[v.name] if slot is None else values[slot])
                for v, slot in zip(self.outputs, self._output_slots)]

    @property
    def op_types(self) -> List[str]:
        """The op types the plan runs per call, after folding and fusion (for tests and benchmarks)."""
        return [step.node.op_type for step in self._steps]


def check_model(model: Model, label: str) -> None:
    """Refuse opsets and ops the kernels do not implement, naming them (one line)."""
    opset = model.opset_imports.get("ai.onnx")
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"{label} uses ONNX opset {opset}, the numpy backend runs opsets "
                         f"{MIN_OPSET}-{MAX_OPSET}; {INSTALL_HINT}")
    for node in model.graph.nodes:
        if op_key(node) not in OPS:
            op = op_key(node)
            raise ModelError(f"{label}: node '{node.name}' uses ONNX op '{op}' which the numpy backend does not "
                             f"implement; {INSTALL_HINT}")


def as_tuple(result: object) -> Tuple[np.ndarray, ...]:
    """A kernel's result as a tuple of outputs."""
    return result if isinstance(result, tuple) else (result,)  # type: ignore[return-value]


def topological(graph: Graph, label: str, available: set) -> List[Node]:
    """Nodes in an order where every input is produced before use (Kahn's algorithm, file order kept).

    Raises:
        ModelError: a node reads a tensor nothing produces, or the graph has a cycle.
    """
    producers = {out: i for i, node in enumerate(graph.nodes) for out in node.outputs if out}
    waiting = [0] * len(graph.nodes)
    consumers: Dict[int, List[int]] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if not name or name in available:
                continue
            if name not in producers:
                raise ModelError(f"{label}: node '{node.name}' ({node.op_type}) reads '{name}', which nothing "
                                 f"produces (a broken model file)")
            waiting[i] += 1
            consumers.setdefault(producers[name], []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    order: List[Node] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(graph.nodes[i])
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(graph.nodes):
        raise ModelError(f"{label}: the graph has a cycle (a broken model file)")
    return order
