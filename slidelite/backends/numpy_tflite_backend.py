"""The pure-numpy backend for ``.tflite`` files (``--backend numpy`` on a TFLite model).

The file is decoded by :mod:`._tflite_reader` (no TFLite runtime, no ``flatbuffers`` package) and run by
the NHWC kernels of :mod:`._tflite_ops_linear`, :mod:`._tflite_ops_elementwise` and :mod:`._tflite_ops_shape`,
float32 and int8/uint8 with TFLite's integer arithmetic. Every operator gets its kernel at load, so an op,
dtype or option the kernels do not implement is refused then, in one line naming the operator.

Loading plans the graph once: operators run in file order (TFLite's execution order) and each must read
only tensors already written; operators whose inputs are all constant (DEQUANTIZE of int8/float16 weights,
shape arithmetic) are evaluated at load, so the kernels that consume them see constants and prepare them
(weights laid out for BLAS, fixed-point multipliers); the last reader of every intermediate tensor is
recorded so :meth:`NumpyTFLiteBackend.run` drops it as soon as it is dead. Op chains are then fused
(:data:`FUSIONS`: sibling depthwise convolutions here, lowered LayerNorm and Slide attention in
:mod:`._tflite_fusion`) and every step is compiled to one closure over the run's value list, so ``run`` is a
flat loop of calls. ``run`` is a pure function of its input (``thread_safe``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Collection, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._blas_threads import set_blas_threads
from ..errors import ModelError
from . import _tflite_ops_elementwise, _tflite_ops_linear, _tflite_ops_shape  # noqa: F401 - register the kernels
from ._tflite_fusion import fuse_layer_norms, fuse_slide_attentions
from ._tflite_kernel_base import OPS, Kernel, OpContext, OpError
from ._tflite_ops_linear import sibling_depthwise
from ._tflite_quant import QuantError
from ._tflite_reader import Operator, Subgraph, Tensor, load_tflite_model
from .base import Backend, Shape

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile

INSTALL_HINT = 'install LiteRT: pip install "slidelite[litert]"'
#: the load-time op-chain fusions, all on by default: sibling depthwise convolutions on one input, lowered LayerNorm
#: chains, lowered Slide attention blocks (see :mod:`._tflite_fusion`)
FUSIONS = ("sibling_depthwise", "layer_norm", "slide_attention")
#: what a kernel may raise on bad data (reported as one line naming the operator)
KERNEL_ERRORS = (OpError, QuantError, ValueError, TypeError, IndexError, OverflowError, MemoryError)


class Step(NamedTuple):
    """One operator of the plan: its kernel, where its inputs come from, where its outputs go, what dies after."""

    op: Operator
    kernel: Kernel
    inputs: Tuple[Optional[int], ...]  # run-time slot per input, None for a constant or omitted input
    consts: Tuple[Optional[np.ndarray], ...]
    outputs: Tuple[int, ...]
    frees: Tuple[int, ...]


class NumpyTFLiteBackend(Backend):
    """Runs ``.tflite`` image classifiers (float32, int8/uint8, hybrid int8) with numpy only; ``run`` is thread-safe."""

    name = "numpy"
    thread_safe = True

    def __init__(self, model_file: "ModelFile", threads: int, fuse: Collection[str] = FUSIONS) -> None:
        """Load and plan ``model_file`` with the op-chain fusions named in ``fuse`` (:data:`FUSIONS`; the tests
        compare each against the plan without it, where every operator is a step of its own)."""
        super().__init__(model_file, threads)
        set_blas_threads(threads)  # OpenBLAS on one thread; large products split over `threads` (see _blas_threads)
        self.version = np.__version__
        self._label = str(model_file.path)
        unknown = set(fuse) - set(FUSIONS)
        if unknown:
            raise ValueError(f"unknown fusions {sorted(unknown)}; known: {', '.join(FUSIONS)}")
        self._fuse = frozenset(fuse)
        model = load_tflite_model(model_file.path)
        if not model.subgraphs:
            raise ModelError(f"{self._label}: the TFLite model has no subgraph to run")
        graph = model.subgraphs[0]
        first_input, first_output = self.first_input_and_output(graph.inputs, graph.outputs)
        if len(graph.inputs) != 1:
            raise ModelError(f"{self._label}: the numpy backend runs models with one input (this one has "
                             f"{len(graph.inputs)}); {INSTALL_HINT}")
        source = graph.tensors[first_input]
        if source.dtype is None or source.data is not None:
            raise ModelError(f"{self._label}: input '{source.name}' is {source.type_name}, not an image tensor")
        self.input_name = source.name
        self.input_shape = _shape(source)
        self.input_dtype = source.dtype.name
        self.output_shape = _shape(graph.tensors[first_output])
        self._plan(graph, first_input, first_output)

    def _plan(self, graph: Subgraph, input_index: int, output_index: int) -> None:
        """Build the kernels in order, fold constant operators, assign slots, record where tensors die."""
        with np.errstate(all="ignore"):  # kernels build tables and fold constants: no warning on stderr
            self._plan_steps(graph, input_index, output_index)

    def _plan_steps(self, graph: Subgraph, input_index: int, output_index: int) -> None:
        constants: Dict[int, np.ndarray] = {t.index: t.data for t in graph.tensors if t.data is not None}
        slots: Dict[int, int] = {input_index: 0}
        pending: List[Tuple[Operator, Kernel, List[Optional[np.ndarray]], Tuple[int, ...]]] = []
        for op in graph.operators:
            for index in op.inputs:
                if index >= 0 and index not in constants and index not in slots:
                    raise ModelError(f"{self._label}: operator {op.index} ({op.op}) reads tensor "
                                     f"'{graph.tensors[index].name}' before anything writes it (a broken file)")
            consts = [constants.get(i) if i >= 0 else None for i in op.inputs]
            kernel = self._kernel(graph, op, consts)
            if all(c is not None or i < 0 for c, i in zip(consts, op.inputs)):
                for index, value in zip(op.outputs, self._results(op, kernel, consts)):
                    constants[index] = value
                continue
            for index in op.outputs:
                if index in constants or index in slots:
                    raise ModelError(f"{self._label}: operator {op.index} ({op.op}) writes tensor "
                                     f"'{graph.tensors[index].name}' a second time (a broken file)")
                slots[index] = len(slots)
            pending.append((op, kernel, consts, op.outputs))
        if "sibling_depthwise" in self._fuse:
            pending = self._fuse_sibling_depthwise(graph, pending)
        if "layer_norm" in self._fuse:
            pending = fuse_layer_norms(graph, pending, output_index)
        if "slide_attention" in self._fuse:
            pending = fuse_slide_attentions(graph, pending, output_index)
        if output_index not in slots:
            raise ModelError(f"{self._label}: the output '{graph.tensors[output_index].name}' does not depend on the "
                             "input")
        self._output_slot = slots[output_index]
        last_use: Dict[int, int] = {}
        for position, (op, _, _, outputs) in enumerate(pending):
            for index in (*outputs, *op.inputs):
                if index in slots:
                    last_use[slots[index]] = position
        dead_after: Dict[int, List[int]] = {}
        for slot, position in last_use.items():
            if slot != self._output_slot:
                dead_after.setdefault(position, []).append(slot)
        self._steps = [
            Step(op, kernel, tuple(slots.get(i) if i >= 0 and consts[k] is None else None
                                   for k, i in enumerate(op.inputs)),
                 tuple(consts), tuple(slots[i] for i in outputs), tuple(dead_after.get(position, ())))
            for position, (op, kernel, consts, outputs) in enumerate(pending)
        ]
        self._num_slots = len(slots)
        self._calls = [_compile(step) for step in self._steps]

    @staticmethod
    def _fuse_sibling_depthwise(graph: Subgraph, pending: List[Tuple[Operator, Kernel, List[Optional[np.ndarray]],
                                                                     Tuple[int, ...]]]) -> list:
        """Consecutive float DEPTHWISE_CONV_2D ops on the same input become one step (:func:`sibling_depthwise`)."""
        fused: list = []
        position = 0
        while position < len(pending):
            end = position + 1
            op = pending[position][0]
            while end < len(pending) and op.op == pending[end][0].op == "DEPTHWISE_CONV_2D" \
                    and pending[end][0].inputs[0] == op.inputs[0]:
                end += 1
            group = pending[position:end]
            contexts = [_context(graph, entry[0], entry[2]) for entry in group]
            kernel = sibling_depthwise(contexts) if len(group) > 1 else None
            if kernel is None:
                fused.extend(group)
            else:
                fused.append((op, kernel, group[0][2], tuple(i for entry in group for i in entry[3])))
            position = end
        return fused

    def _kernel(self, graph: Subgraph, op: Operator, consts: List[Optional[np.ndarray]]) -> Kernel:
        factory = OPS.get(op.op)
        if factory is None:
            raise ModelError(f"{self._label} uses TFLite op {op.op} (operator {op.index}), which the numpy backend "
                             f"does not implement; {INSTALL_HINT}")
        try:
            return factory(_context(graph, op, consts))
        except (OpError, QuantError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise ModelError(f"{self._label}: operator {op.index} ({op.op}): {exc}; {INSTALL_HINT}") from None

    def _results(self, op: Operator, kernel: Kernel, args: Sequence[Optional[np.ndarray]]) -> Tuple[np.ndarray, ...]:
        """Run one kernel at load (constant folding); its results as a tuple, one per declared output."""
        try:
            result = kernel(*args)
        except KERNEL_ERRORS as exc:
            raise self._failure(op, exc) from None
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise ModelError(f"{self._label}: operator {op.index} ({op.op}) declares {len(op.outputs)} outputs, "
                             f"the kernel gives {len(results)}")
        return results

    def _failure(self, op: Operator, exc: BaseException) -> ModelError:
        reason = "out of memory" if isinstance(exc, MemoryError) else exc
        return ModelError(f"{self._label}: inference failed at operator {op.index} ({op.op}): {reason}")

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run the graph on ``tensor`` (batch first) and return the first output."""
        if self._steps is None:
            raise ModelError(f"{self._label}: the numpy backend is closed")
        self.check_input(tensor)
        values: List[Optional[np.ndarray]] = [None] * self._num_slots
        values[0] = tensor
        position = 0
        try:
            with np.errstate(all="ignore"):  # inf/NaN propagate as in LiteRT, with no warning on stderr
                for position, call in enumerate(self._calls):
                    call(values)
        except KERNEL_ERRORS as exc:
            raise self._failure(self._steps[position].op, exc) from None
        return np.asarray(values[self._output_slot])

    def close(self) -> None:
        """Drop the plan and its weights; :meth:`run` refuses afterwards."""
        self._steps = None  # type: ignore[assignment]
        self._calls = []


def _compile(step: Step) -> Callable[[List[Optional[np.ndarray]]], None]:
    """``step`` as one closure over the run's value list: fetch the inputs (constants bound), call the kernel, store
    its outputs, drop the dead values. The common argument patterns get a closure without a generic argument loop."""
    kernel, outputs, frees = step.kernel, step.outputs, step.frees
    pattern = tuple(slot is not None for slot in step.inputs)
    if pattern == (True,):
        (a,) = step.inputs
        invoke: Callable[[List], object] = lambda v: kernel(v[a])  # noqa: E731
    elif pattern == (True, True):
        a, b = step.inputs
        invoke = lambda v: kernel(v[a], v[b])  # noqa: E731
    elif pattern == (True, False):
        a, constant = step.inputs[0], step.consts[1]
        invoke = lambda v: kernel(v[a], constant)  # noqa: E731
    else:
        sources = tuple(zip(step.inputs, step.consts))
        invoke = lambda v: kernel(*[c if s is None else v[s] for s, c in sources])  # noqa: E731
    if len(outputs) == 1 and not frees:
        (out,) = outputs

        def call_one(values: List[Optional[np.ndarray]]) -> None:
            result = invoke(values)
            values[out] = result[0] if type(result) is tuple else result  # type: ignore[index]

        return call_one

    def call(values: List[Optional[np.ndarray]]) -> None:
        result = invoke(values)
        if type(result) is tuple:
            for slot, value in zip(outputs, result):  # type: ignore[arg-type]
                values[slot] = value
        else:
            values[outputs[0]] = result  # type: ignore[assignment]
        for slot in frees:
            values[slot] = None

    return call


def _context(graph: Subgraph, op: Operator, consts: List[Optional[np.ndarray]]) -> OpContext:
    """What a kernel factory sees of ``op``."""
    inputs: List[Optional[Tensor]] = [graph.tensors[i] if i >= 0 else None for i in op.inputs]
    return OpContext(op, inputs, [graph.tensors[i] for i in op.outputs], consts)


def _shape(tensor: Tensor) -> Shape:
    """The static shape, with None where the shape signature says the dimension is dynamic (-1)."""
    signature = tensor.signature if len(tensor.signature) == len(tensor.shape) else ()
    return tuple(None if signature and signature[i] < 0 else d for i, d in enumerate(tensor.shape))
