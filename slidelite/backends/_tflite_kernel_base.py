"""What every TFLite numpy kernel factory receives and shares: :class:`OpContext`, :class:`OpError`, the registry.

A factory ``make(ctx) -> Kernel`` runs once at load: it validates dtypes, options and quantization
parameters, prepares constants (weights laid out for BLAS, fixed-point multipliers, lookup tables) and
returns the kernel, a function of the operator's run-time input arrays (constants already bound, omitted
optional inputs passed as None) that returns one array or a tuple of arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._kernel_registry import registrar
from ._tflite_reader import Operator, Quantization, Tensor

Kernel = Callable[..., Any]
Factory = Callable[["OpContext"], Kernel]
#: builtin op name -> kernel factory (filled by the kernel modules at import)
OPS: Dict[str, Factory] = {}

FLOAT = np.dtype(np.float32)
#: no kernel makes an array larger than this (elements): a hostile file cannot make the backend allocate without bound
MAX_ELEMENTS = 1 << 27
QUANTIZED = (np.dtype(np.int8), np.dtype(np.uint8))


class OpError(ValueError):
    """The operator uses a dtype, option or parameter the numpy kernels do not implement (one line)."""


#: decorator: ``@register("ADD", ...)`` registers a factory under each builtin op name
register = registrar(OPS)


@dataclass
class OpContext:
    """One operator as its factory sees it.

    Attributes:
        op: the operator.
        inputs: its input tensors (None for an omitted optional input).
        outputs: its output tensors.
        consts: per input, the constant value (a file constant or a value folded at load), else None.
    """

    op: Operator
    inputs: List[Optional[Tensor]]
    outputs: List[Tensor]
    consts: List[Optional[np.ndarray]]

    def option(self, name: str, default: Any = None) -> Any:
        """A builtin option (``default`` when the file has no options table of that kind)."""
        return self.op.options.get(name, default)

    def tensor(self, index: int) -> Tensor:
        """Input ``index``; :class:`OpError` when it is omitted."""
        if index >= len(self.inputs) or self.inputs[index] is None:
            raise OpError(f"input {index} is missing")
        return self.inputs[index]  # type: ignore[return-value]

    def has_input(self, index: int) -> bool:
        """True when input ``index`` is present."""
        return index < len(self.inputs) and self.inputs[index] is not None

    def const(self, index: int, what: str) -> np.ndarray:
        """The constant value of input ``index`` (``what`` names it in the error when it is not constant)."""
        value = self.consts[index] if index < len(self.consts) else None
        if value is None:
            raise OpError(f"{what} must be a constant tensor")
        return value

    def dtype(self, index: int = 0) -> np.dtype:
        """The dtype of input ``index``."""
        dtype = self.tensor(index).dtype
        if dtype is None:
            raise OpError(f"input {index} has type {self.tensor(index).type_name}")
        return dtype

    @property
    def out(self) -> Tensor:
        """The first output tensor."""
        if not self.outputs:
            raise OpError("the operator has no output")
        return self.outputs[0]

    def out_dtype(self) -> np.dtype:
        """The dtype of the first output."""
        dtype = self.out.dtype
        if dtype is None:
            raise OpError(f"output type {self.out.type_name} is not supported")
        return dtype

    def quantized(self, index: int = 0) -> bool:
        """True when input ``index`` is int8/uint8 with quantization parameters (an integer kernel is needed)."""
        tensor = self.tensor(index)
        return tensor.dtype in QUANTIZED and tensor.quantization is not None

    def quant(self, tensor: Tensor) -> Quantization:
        """``tensor``'s quantization parameters; :class:`OpError` when it has none."""
        q = tensor.quantization
        if q is None:
            raise OpError(f"tensor '{tensor.name}' ({tensor.type_name}) has no quantization parameters")
        if not np.all(np.isfinite(q.scale)) or np.any(q.scale <= 0):
            raise OpError(f"tensor '{tensor.name}' has a scale that is not a positive number")
        dtype = tensor.dtype
        if dtype is not None and dtype.kind in "iu" and dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            if np.any(q.zero_point < info.min) or np.any(q.zero_point > info.max):
                raise OpError(f"tensor '{tensor.name}' has a zero point outside the {tensor.type_name} range")
        return q

    def require_dtypes(self, allowed: Sequence[np.dtype], indices: Sequence[int] = (0,)) -> None:
        """Refuse inputs whose dtype is not in ``allowed``."""
        for index in indices:
            if self.has_input(index) and self.dtype(index) not in allowed:
                names = "/".join(np.dtype(d).name for d in allowed)
                raise OpError(f"input {index} is {self.tensor(index).type_name}, the numpy kernel runs {names}")


def check_elements(shape: Sequence[int], what: str) -> Tuple[int, ...]:
    """``shape`` as a tuple, or :class:`OpError` when an array of that shape would exceed :data:`MAX_ELEMENTS`."""
    shape = tuple(int(d) for d in shape)
    if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
        raise OpError(f"{what} would have shape {list(shape)}, larger than the numpy backend allows")
    return shape


def positive(value: int, what: str) -> int:
    """``value`` if it is a positive integer, else :class:`OpError`."""
    if int(value) <= 0:
        raise OpError(f"{what} must be positive, got {value}")
    return int(value)


def normalize_axis(axis: int, rank: int) -> int:
    """A possibly negative axis as an index in ``range(rank)``."""
    if not -rank <= axis < max(rank, 1):
        raise OpError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def axes_tuple(values: np.ndarray, rank: int) -> Tuple[int, ...]:
    """Reduction axes (possibly negative) as sorted unique indices."""
    return tuple(sorted({normalize_axis(int(a), rank) for a in np.ravel(values)}))
