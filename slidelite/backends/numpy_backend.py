"""The pure-numpy backend (``--backend numpy``): runs slidelite's fp32 ONNX models wherever numpy runs.

It needs nothing but numpy: the ONNX file is decoded by :mod:`._onnx_reader` (no ``onnx`` package) and
executed by the kernels of :mod:`._numpy_ops`, so slidelite works on platforms without an onnxruntime
or LiteRT wheel (32-bit Raspberry Pi OS on any Python, Pyodide). It runs exactly the op set of the
converter's fp32 exports (docs/install.md lists it); any other op is refused at load, naming the op.

Loading does the per-model work once: nodes are ordered topologically, every node whose inputs are all
constant is evaluated (shape arithmetic, ``Constant`` nodes), Conv/Gemm weights are laid out for BLAS,
and the last use of every intermediate tensor is recorded so :meth:`NumpyBackend.run` drops it as soon
as it is dead. ``run`` is a pure function of its input (``thread_safe``). numpy's BLAS decides its own
thread count (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` before Python starts); ``threads`` is
recorded but cannot be applied portably.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import ModelError
from ._numpy_ops import OPS, Kernel, OpError
from ._onnx_reader import Graph, Model, Node, ValueInfo, load_onnx_model
from .base import Backend, Shape

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile

#: ai.onnx opsets whose semantics the kernels implement (13: axes as inputs, Softmax on one axis).
MIN_OPSET, MAX_OPSET = 13, 23
INSTALL_HINT = 'install onnxruntime: pip install "slidelite[onnx]"'


class Step(NamedTuple):
    """One node of the execution plan.

    Attributes:
        node: the ONNX node.
        kernel: its prepared kernel.
        inputs: per input, the slot of a run-time tensor, or None (constant or omitted: see ``consts``).
        consts: per input, the constant value (None for run-time tensors and omitted inputs).
        outputs: the slots the kernel's results go to (None: an omitted optional output).
        frees: the slots that are dead after this step.
    """

    node: Node
    kernel: Kernel
    inputs: Tuple[Optional[int], ...]
    consts: Tuple[Optional[np.ndarray], ...]
    outputs: Tuple[Optional[int], ...]
    frees: Tuple[int, ...]


class NumpyBackend(Backend):
    """Runs fp32 ``.onnx`` models with numpy only. ``run`` is thread-safe."""

    name = "numpy"
    thread_safe = True

    def __init__(self, model_file: "ModelFile", threads: int) -> None:
        super().__init__(model_file, threads)
        self.version = np.__version__
        self._label = str(model_file.path)
        model = load_onnx_model(model_file.path)
        self._check_ops(model)
        graph = model.graph
        runtime_inputs = [v for v in graph.inputs if v.name not in graph.initializers]
        if len(runtime_inputs) != 1 or not graph.outputs:
            raise ModelError(f"{self._label}: the numpy backend runs models with one input and at least one output "
                             f"(this one has {len(runtime_inputs)} inputs); {INSTALL_HINT}")
        first_input, first_output = runtime_inputs[0], graph.outputs[0]
        if first_input.dtype is None:
            raise ModelError(f"{self._label}: input '{first_input.name}' has an element type numpy cannot hold")
        self.input_name = first_input.name
        self.input_shape = _shape(first_input)
        self.input_dtype = first_input.dtype.name
        self.output_shape = _shape(first_output)
        self._plan(graph, first_output.name)

    def _check_ops(self, model: Model) -> None:
        """Refuse opsets and ops the kernels do not implement, naming them."""
        opset = model.opset_imports.get("ai.onnx")
        if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
            raise ModelError(f"{self._label} uses ONNX opset {opset}, the numpy backend runs opsets "
                             f"{MIN_OPSET}-{MAX_OPSET}; {INSTALL_HINT}")
        for node in model.graph.nodes:
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
                op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                raise ModelError(f"{self._label} uses ONNX op '{op}' which the numpy backend does not implement; "
                                 f"{INSTALL_HINT}")

    def _plan(self, graph: Graph, output_name: str) -> None:
        """Order the nodes, fold constants, assign slots and record where each tensor dies."""
        constants: Dict[str, np.ndarray] = dict(graph.initializers)
        slots: Dict[str, int] = {self.input_name: 0}
        pending: List[Tuple[Node, Kernel, List[Optional[np.ndarray]]]] = []
        for node in _topological(graph, self._label, set(constants) | {self.input_name}):
            consts = [constants.get(name) if name else None for name in node.inputs]
            kernel = self._kernel(node, consts)
            if all(c is not None or not name for c, name in zip(consts, node.inputs)):
                for name, value in zip(node.outputs, _as_tuple(self._call(node, kernel, consts))):
                    if name:
                        constants[name] = value
                continue
            for name in node.outputs:
                if name:
                    slots.setdefault(name, len(slots))
            pending.append((node, kernel, consts))
        if output_name in constants:
            raise ModelError(f"{self._label}: the output '{output_name}' does not depend on the input")
        self._output_slot = slots[output_name]
        last_use: Dict[int, int] = {}  # slot -> index of the last step reading (or else writing) it
        for index, (node, _, _) in enumerate(pending):
            for name in list(node.outputs) + list(node.inputs):
                if name in slots:
                    last_use[slots[name]] = index
        dead_after: Dict[int, List[int]] = {}
        for slot, index in last_use.items():
            if slot != self._output_slot:
                dead_after.setdefault(index, []).append(slot)
        self._steps = [
            Step(node, kernel, tuple(slots.get(name) if name else None for name in node.inputs), tuple(consts),
                 tuple(slots.get(name) if name else None for name in node.outputs), tuple(dead_after.get(index, ())))
            for index, (node, kernel, consts) in enumerate(pending)
        ]
        self._num_slots = len(slots)

    def _kernel(self, node: Node, consts: Sequence[Optional[np.ndarray]]) -> Kernel:
        try:
            return OPS[node.op_type](node, consts)
        except (OpError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ModelError(f"{self._label}: node '{node.name}' ({node.op_type}): {exc}; {INSTALL_HINT}") from None

    def _call(self, node: Node, kernel: Kernel, args: Sequence[Optional[np.ndarray]]) -> object:
        try:
            return kernel(*args)
        except (OpError, ValueError, TypeError, IndexError, AttributeError, OverflowError, MemoryError) as exc:
            reason = "out of memory" if isinstance(exc, MemoryError) else exc
            raise ModelError(f"{self._label}: inference failed at node '{node.name}' ({node.op_type}): {reason}") from None

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run the graph on ``tensor`` (batch first) and return the first output."""
        self._check_input(tensor)
        values: List[Optional[np.ndarray]] = [None] * self._num_slots
        values[0] = tensor
        for step in self._steps:
            args = [const if slot is None else values[slot] for slot, const in zip(step.inputs, step.consts)]
            for slot, value in zip(step.outputs, _as_tuple(self._call(step.node, step.kernel, args))):
                if slot is not None:
                    values[slot] = value
            for slot in step.frees:
                values[slot] = None
        return np.asarray(values[self._output_slot])

    def _check_input(self, tensor: np.ndarray) -> None:
        expected = self.input_shape
        if tensor.dtype != np.dtype(self.input_dtype) or tensor.ndim != len(expected) or any(
                e is not None and e != a for e, a in zip(expected, tensor.shape)):
            want = "[" + ", ".join("?" if d is None else str(d) for d in expected) + "]"
            raise ModelError(f"{self._label}: input must be {self.input_dtype} {want}, got {tensor.dtype} "
                             f"{list(tensor.shape)}")

    def close(self) -> None:
        """Drop the plan and the weights."""
        self._steps = []


def _shape(info: ValueInfo) -> Shape:
    """Value shape with None for symbolic or unknown dimensions."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in (info.shape or ()))


def _as_tuple(result: object) -> Tuple[np.ndarray, ...]:
    return result if isinstance(result, tuple) else (result,)  # type: ignore[return-value]


def _topological(graph: Graph, label: str, available: set) -> List[Node]:
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
