"""The tflite-runtime backend (``pip install "slidelite[tflite]"``), for boards where ``ai-edge-litert`` has
no wheel. ``tflite-runtime`` exposes the same ``Interpreter`` API, so everything but the engine import is
shared with :class:`~slidelite.backends.litert_backend.LiteRTBackend`.

Note: ``tflite-runtime`` 2.14 (its last release) is compiled against NumPy 1.x and needs ``numpy<2``. Its
int8 ADD/SUB kernels abort the whole process (``QuantizeMultiplierSmallerThanOneExp``) when the output
scale is more than 2^19 times smaller than the input scale, which the current TFLite quantizer produces for
near-constant tensors, and it silently computes dynamic-range (hybrid) FULLY_CONNECTED ops with per-channel
int8 weights wrongly; such models are refused with a message instead (LiteRT runs them).
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

    def _refuse_known_failures(self) -> None:
        """Refuse the two kinds of op tflite-runtime 2.14 gets wrong: int8 ADD/SUB whose requantization multiplier
        2*max(in)/(2^20*out) is >= 1 (the process aborts), and dynamic-range (hybrid) FULLY_CONNECTED with
        per-channel int8 weights (silently wrong logits)."""
        tensors: Dict[int, Any] = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        for op in self._interpreter._get_ops_details():  # the public analyzer API is not in tflite-runtime
            if op["op_name"] == "FULLY_CONNECTED" and _is_per_channel_hybrid(op, tensors):
                raise ModelError(
                    f"{self.model_file.path}: tflite-runtime {self.version} computes dynamic-range FULLY_CONNECTED "
                    f"op #{op['index']} with per-channel int8 weights wrongly; run this model with the litert backend "
                    "(pip install \"slidelite[litert]\"), or convert it with slidelite convert (per-tensor weights)")
            if op["op_name"] not in ("ADD", "SUB") or len(op["outputs"]) != 1:
                continue
            out = tensors[op["outputs"][0]]
            if _dtype_name(out) not in _INT8_TYPES or out["quantization"][0] <= 0:
                continue
            in_scale = max(tensors[i]["quantization"][0] for i in op["inputs"] if i >= 0)
            if 2 * in_scale / ((1 << 20) * out["quantization"][0]) >= 1:
                raise ModelError(
                    f"{self.model_file.path}: tflite-runtime {self.version} would abort on int8 {op['op_name']} op "
                    f"#{op['index']} (output scale {out['quantization'][0]:.3g} is too small for its kernel); run "
                    "this model with the litert backend (pip install \"slidelite[litert]\")")


def _dtype_name(tensor: Dict[str, Any]) -> str:
    """A tensor detail's numpy dtype name (``int8``, ``float32``, ...)."""
    return getattr(tensor["dtype"], "__name__", str(tensor["dtype"]))


def _is_per_channel_hybrid(op: Dict[str, Any], tensors: Dict[int, Any]) -> bool:
    """A float-input op whose weight (second input) is int8 with more than one quantization scale."""
    inputs = [i for i in op["inputs"] if i >= 0]
    if len(inputs) < 2 or _dtype_name(tensors[inputs[0]]) != "float32":
        return False
    weight = tensors[inputs[1]]
    scales = weight.get("quantization_parameters", {}).get("scales", ())
    return _dtype_name(weight) == "int8" and len(scales) > 1
