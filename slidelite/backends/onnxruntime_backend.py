"""The onnxruntime backend (``pip install "slidelite[onnx]"``).

The session is created once, on the CPU execution provider, with all graph optimizations, ``threads``
intra-op threads, one inter-op thread, and thread spinning disabled: a camera calls the model a few
times a second, and spinning threads would burn the idle time between frames.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Tuple

import numpy as np

from ..errors import ModelError
from .base import Backend, Shape

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}
_ORT_ERRORS = ("Fail", "InvalidArgument", "NoSuchFile", "InvalidProtobuf", "InvalidGraph", "RuntimeException",
               "NotImplemented", "EPFail")


class OnnxRuntimeBackend(Backend):
    """Runs ``.onnx`` models with onnxruntime. ``run`` is thread-safe (onnxruntime guarantees it)."""

    name = "onnxruntime"
    thread_safe = True

    def __init__(self, model_file: "ModelFile", threads: int) -> None:
        super().__init__(model_file, threads)
        import onnxruntime as ort

        self.version = ort.__version__
        self._errors = _engine_errors()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: warnings would break the one-line output contract
        try:
            self._session = ort.InferenceSession(
                str(model_file.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except self._errors as exc:
            raise ModelError(f"{model_file.path}: onnxruntime cannot load the model ({_first_line(exc)})") from None
        first_input, first_output = self.first_input_and_output(self._session.get_inputs(), self._session.get_outputs())
        self.input_name = first_input.name
        self.input_shape = _shape(first_input.shape)
        self.input_dtype = _ORT_TYPES.get(first_input.type, first_input.type)
        self.output_shape = _shape(first_output.shape)
        self._output_names = [first_output.name]

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run the session on ``tensor`` and return the first output."""
        try:
            return self._session.run(self._output_names, {self.input_name: tensor})[0]
        except self._errors as exc:
            raise ModelError(f"{self.model_file.path}: inference failed ({_first_line(exc)})") from None

    def close(self) -> None:
        """Drop the session (onnxruntime frees it when the last reference goes)."""
        self._session = None


def _engine_errors() -> Tuple[type, ...]:
    """onnxruntime's exception classes (they derive from ``Exception`` directly), plus the builtin ones."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = tuple(getattr(state, name) for name in _ORT_ERRORS if hasattr(state, name))
    return found + (RuntimeError, ValueError)


def _shape(dims: Sequence[Any]) -> Shape:
    """onnxruntime shape (ints, symbolic names or None) -> tuple with None for dynamic dimensions."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
