"""The tflite-runtime backend (``pip install "slidelite[tflite]"``), for boards where ``ai-edge-litert`` has
no wheel. ``tflite-runtime`` exposes the same ``Interpreter`` API, so everything but the engine import is
shared with :class:`~slidelite.backends.litert_backend.LiteRTBackend`.

Note: ``tflite-runtime`` 2.14 (its last release) is compiled against NumPy 1.x and needs ``numpy<2``. Its
int8 ADD/SUB kernels abort the whole process (``QuantizeMultiplierSmallerThanOneExp``) when the output
scale is more than 2^19 times smaller than the input scale, which the current TFLite quantizer produces for
near-constant tensors; such models are refused with a message instead (LiteRT runs them).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from ..errors import ModelError
from .litert_backend import LiteRTBackend

_INT8_TYPES = ("int8", "uint8")


class TFLiteRuntimeBackend(LiteRTBackend):
    """Runs ``.tflite`` models with ``tflite_runtime.interpreter.Interpreter`` (XNNPACK, ``threads`` threads)."""

    name = "tflite"

    @staticmethod
    def _engine() -> Tuple[Any, str]:
        """``tflite_runtime``'s ``Interpreter`` class and version."""
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, str(getattr(tflite_runtime, "__version__", "unknown"))

    def _refuse_known_aborts(self) -> None:
        """Refuse int8 ADD/SUB ops whose requantization multiplier 2*max(in)/(2^20*out) is >= 1 (abort in 2.14)."""
        tensors: Dict[int, Any] = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        for op in self._interpreter._get_ops_details():  # the public analyzer API is not in tflite-runtime
            if op["op_name"] not in ("ADD", "SUB") or len(op["outputs"]) != 1:
                continue
            out = tensors[op["outputs"][0]]
            if getattr(out["dtype"], "__name__", str(out["dtype"])) not in _INT8_TYPES or out["quantization"][0] <= 0:
                continue
            in_scale = max(tensors[i]["quantization"][0] for i in op["inputs"] if i >= 0)
            if 2 * in_scale / ((1 << 20) * out["quantization"][0]) >= 1:
                raise ModelError(
                    f"{self.model_file.path}: tflite-runtime {self.version} would abort on int8 {op['op_name']} op "
                    f"#{op['index']} (output scale {out['quantization'][0]:.3g} is too small for its kernel); run "
                    "this model with the litert backend (pip install \"slidelite[litert]\")")
