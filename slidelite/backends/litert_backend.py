"""The LiteRT backend (``pip install "slidelite[litert]"``: Google's ``ai-edge-litert``, the successor of
``tflite-runtime``), and the interpreter logic shared with :mod:`slidelite.backends.tflite_backend`.

The interpreter is created once with the default op resolver, so XNNPACK runs every op it supports on
``threads`` threads (the same ``num_threads`` also drives the built-in kernels). Native log lines that the
engine prints while loading (``Created TensorFlow Lite XNNPACK delegate for CPU``) are held back so the
command line keeps its one-line-per-result output; they are shown only inside the error message when
loading fails.

Integer inputs: :mod:`slidelite.preprocess` quantizes with the metadata's ``input.quantization``; a float
tensor given to an integer model is quantized here with the tensor's own parameters. Static-batch models
(TFLite files are batch 1) run a larger batch image by image. A TFLite interpreter is not thread-safe:
:attr:`thread_safe` is False, so the classifier serializes calls.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import ModelError
from ..model_file import tflite_subgraph_count
from .base import Backend, Shape

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile

_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-32768, 32767)}


class LiteRTBackend(Backend):
    """Runs ``.tflite`` models with ``ai_edge_litert.interpreter.Interpreter`` (XNNPACK, ``threads`` threads)."""

    name = "litert"
    thread_safe = False

    def __init__(self, model_file: "ModelFile", threads: int) -> None:
        super().__init__(model_file, threads)
        if not tflite_subgraph_count(model_file.path):  # the interpreter dereferences subgraph 0 (SIGSEGV)
            raise ModelError(f"{model_file.path}: the TFLite model has no subgraph to run; convert it again")
        interpreter_class, self.version = self._engine()
        with held_native_stderr() as held:
            try:
                self._interpreter = interpreter_class(model_path=str(model_file.path), num_threads=threads)
                self._refuse_known_failures()
                self._interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                detail = _first_line(exc, held())
                raise ModelError(f"{model_file.path}: {self.name} cannot load the model ({detail})") from None
        first_input, first_output = self.first_input_and_output(self._interpreter.get_input_details(), self._interpreter.get_output_details())
        self._input_index = first_input["index"]
        self._output_index = first_output["index"]
        scale, zero_point = first_input["quantization"]
        self.input_name = first_input["name"]
        self.output_name: str = first_output["name"]
        self.input_dtype = np.dtype(first_input["dtype"]).name
        #: (scale, zero_point) of an integer input, else None
        self.input_quantization: Optional[Tuple[float, int]] = (
            (float(scale), int(zero_point)) if self.input_dtype in _INT_RANGES and scale > 0 else None)
        self.input_shape = _shape(first_input)
        self.output_shape = _shape(first_output)

    @staticmethod
    def _engine() -> Tuple[Any, str]:
        """The engine's ``Interpreter`` class and version (imported here, never at module import)."""
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, str(getattr(ai_edge_litert, "__version__", "unknown"))

    def _refuse_known_failures(self) -> None:
        """Raise :class:`ModelError` for a model this engine version is known to abort on or compute wrongly (none for LiteRT)."""

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on ``tensor`` (batch first) and return the first output, batch kept."""
        if self._interpreter is None:
            raise ModelError(f"{self.model_file.path}: the {self.name} backend is closed")
        tensor = self._as_input_dtype(np.asarray(tensor))
        if self.input_shape and tensor.shape[0] != self.input_shape[0] and self.input_shape[0] == 1:
            return np.concatenate([self._invoke(tensor[i:i + 1]) for i in range(tensor.shape[0])], axis=0)
        return self._invoke(tensor)

    def _invoke(self, tensor: np.ndarray) -> np.ndarray:
        try:
            self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(tensor))
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.model_file.path}: inference failed ({_first_line(exc, '')})") from None
        return self._interpreter.get_tensor(self._output_index).copy()

    def _as_input_dtype(self, tensor: np.ndarray) -> np.ndarray:
        """Quantize a float tensor for an integer input with the input tensor's (scale, zero_point)."""
        if tensor.dtype.name == self.input_dtype:
            return tensor
        if self.input_quantization is not None and tensor.dtype.kind == "f":
            scale, zero_point = self.input_quantization
            low, high = _INT_RANGES[self.input_dtype]
            return np.clip(np.rint(tensor / scale) + zero_point, low, high).astype(self.input_dtype)
        return tensor.astype(self.input_dtype)

    def close(self) -> None:
        """Drop the interpreter (its memory is freed with the last reference)."""
        self._interpreter = None


def _shape(detail: dict) -> Shape:
    """A tensor's shape with None for dynamic dimensions (``shape_signature`` -1)."""
    signature = detail.get("shape_signature")
    dims: List[int] = list(signature if signature is not None and len(signature) else detail["shape"])
    return tuple(int(d) if d >= 0 else None for d in dims)


@contextlib.contextmanager
def held_native_stderr() -> Iterator[Any]:
    """Redirect the process's stderr file descriptor into a temp file for the block; yields a function
    returning what was written so far (engines log from C++, below Python's ``sys.stderr``)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to hold back
        yield lambda: ""
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)

        def read() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _first_line(exc: BaseException, native_log: str) -> str:
    """The exception's first line, followed by the engine's last native ``ERROR`` line when there is one."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    errors = [line.strip() for line in native_log.splitlines() if line.startswith("ERROR")]
    return f"{first}: {errors[-1]}" if errors and errors[-1] not in first else first
