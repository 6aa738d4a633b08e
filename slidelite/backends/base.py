"""The interface every inference backend implements.

A backend wraps one engine (onnxruntime, LiteRT, tflite-runtime, the numpy reference) around one model
file. It is created once per model (``Backend(model_file, threads)``) and then runs the model's first
input -> first output, batch dimension kept. Shapes use ``None`` for dynamic dimensions; dtypes are numpy
dtype names (``'float32'``, ``'uint8'``, ``'int8'``).
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

from ..errors import ModelError

if TYPE_CHECKING:  # pragma: no cover - type hints only: importing the registry must stay cheap
    import numpy as np

    from ..model_file import ModelFile

Shape = Tuple[Optional[int], ...]


class Backend(abc.ABC):
    """One loaded model in one inference engine.

    Attributes:
        name: the registry name (``'onnxruntime'``, ``'litert'``, ``'tflite'``, ``'numpy'``).
        version: the engine's version string.
        model_file: the :class:`~slidelite.model_file.ModelFile` that was loaded.
        threads: the number of intra-op threads requested.
        input_name: the name of the (first) input tensor.
        input_shape: its shape, ``None`` for dynamic dimensions.
        input_dtype: its numpy dtype name.
        output_shape: the shape of the (first) output tensor, ``None`` for dynamic dimensions.
        thread_safe: True when :meth:`run` may be called from several threads at once.
    """

    name: str = ""
    version: str = ""
    thread_safe: bool = False

    def __init__(self, model_file: "ModelFile", threads: int) -> None:
        self.model_file = model_file
        self.threads = threads
        self.input_name: str = ""
        self.input_shape: Shape = ()
        self.input_dtype: str = "float32"
        self.output_shape: Shape = ()

    def first_input_and_output(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> Tuple[Any, Any]:
        """The engine's descriptions of the first input and first output; :class:`ModelError` when either is
        missing (an image classifier needs both)."""
        if not inputs or not outputs:
            raise ModelError(f"{self.model_file.path}: the model has no input or no output tensor; an image "
                             "classifier needs both")
        return inputs[0], outputs[0]

    def check_input(self, tensor: "np.ndarray") -> None:
        """Raise :class:`ModelError` unless ``tensor`` has the input's dtype, rank and static dimensions."""
        expected = self.input_shape
        if tensor.dtype.name != self.input_dtype or tensor.ndim != len(expected) or any(
                e is not None and e != a for e, a in zip(expected, tensor.shape)):
            want = "[" + ", ".join("?" if d is None else str(d) for d in expected) + "]"
            raise ModelError(f"{self.model_file.path}: input must be {self.input_dtype} {want}, got {tensor.dtype} "
                             f"{list(tensor.shape)}")

    @property
    def dynamic_batch(self) -> bool:
        """True when the input's batch dimension is dynamic (a batch of any size can be run at once)."""
        return bool(self.input_shape) and self.input_shape[0] is None

    @abc.abstractmethod
    def run(self, tensor: "np.ndarray") -> "np.ndarray":
        """Run the model on ``tensor`` (batch first) and return the raw first output, batch kept."""

    def close(self) -> None:
        """Release the engine's resources; the backend cannot run afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.model_file.path)!r}, threads={self.threads})"
