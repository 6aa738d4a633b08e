"""The pure-numpy backend (``--backend numpy``): runs slidelite's ONNX models wherever numpy runs.

It needs nothing but numpy: the ONNX file is decoded by :mod:`._onnx_reader` (no ``onnx`` package),
prepared once by :class:`._onnx_plan.OnnxPlan` (checks, constant folding, fusion, buffer lifetimes) and
executed by the kernels registered in :mod:`._numpy_ops` (and the modules it names), so slidelite works
on platforms without an onnxruntime or LiteRT wheel (32-bit Raspberry Pi OS on any Python, Pyodide). It
runs the converter's fp32, weight-only and int8 exports and the common float CNN/ViT ops (docs/install.md
lists the op set); any other op, attribute or element type is refused at load, naming the node and op. ``run`` is a pure function of its input (``thread_safe``).
``threads`` sets the thread count of numpy's BLAS (:mod:`._blas_threads`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelError
from ._blas_threads import set_blas_threads
from ._onnx_plan import INSTALL_HINT, OnnxPlan
from ._onnx_reader import ValueInfo, load_onnx_model
from .base import Backend, Shape

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile


class NumpyBackend(Backend):
    """Runs ``.onnx`` models with numpy only. ``run`` is thread-safe."""

    name = "numpy"
    thread_safe = True

    def __init__(self, model_file: "ModelFile", threads: int) -> None:
        super().__init__(model_file, threads)
        self.version = np.__version__
        self._label = str(model_file.path)
        set_blas_threads(threads)
        self._plan = OnnxPlan(load_onnx_model(model_file.path), self._label)
        if len(self._plan.inputs) != 1 or not self._plan.outputs:
            raise ModelError(f"{self._label}: the numpy backend runs models with one input and at least one output "
                             f"(this one has {len(self._plan.inputs)} inputs); {INSTALL_HINT}")
        first_input, first_output = self._plan.inputs[0], self._plan.outputs[0]
        self.input_name = first_input.name
        self.input_shape = _shape(first_input)
        self.input_dtype = first_input.dtype.name
        self.output_shape = _shape(first_output)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run the graph on ``tensor`` (batch first) and return the first output."""
        self._check_input(tensor)
        return self._plan.run(tensor)[0]

    def _check_input(self, tensor: np.ndarray) -> None:
        expected = self.input_shape
        if tensor.dtype != np.dtype(self.input_dtype) or tensor.ndim != len(expected) or any(
                e is not None and e != a for e, a in zip(expected, tensor.shape)):
            want = "[" + ", ".join("?" if d is None else str(d) for d in expected) + "]"
            raise ModelError(f"{self._label}: input must be {self.input_dtype} {want}, got {tensor.dtype} "
                             f"{list(tensor.shape)}")

    def close(self) -> None:
        """Drop the plan and the weights."""
        self._plan = None  # type: ignore[assignment]


def _shape(info: ValueInfo) -> Shape:
    """Value shape with None for symbolic or unknown dimensions."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in (info.shape or ()))
