"""Step 3 (TFLite): wrap the classifier for phones and export it to a ``.tflite`` flatbuffer with litert-torch.

Route choice (measured, see docs/tflite.md): ``litert-torch`` lowers the re-parameterized Slide models
straight from PyTorch to TFLite built-in ops (no TensorFlow, no Flex ops); onnx2tf and TensorFlow's
converter also work but pull TensorFlow and convert slower.

The exported graph is what MediaPipe Tasks' ImageClassifier and Android apps feed as they are:

* input NHWC ``[1, H, W, 3]`` RGB pixels 0..255 (float32; uint8 after full-integer quantization),
  so per-channel normalization is folded into the graph (:class:`ImageInputAdapter`) and the TFLite
  Metadata declares the scalar normalization mean 0, std 1;
* grayscale models get an RGB input too (MediaPipe accepts only the RGB colour space): the graph
  converts with ITU-R 601 luma weights, the same as Pillow's ``convert("L")``;
* output ``[1, classes]`` float32 logits.
"""
from __future__ import annotations

import contextlib
import io
import operator
import warnings
from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

from .errors import ConversionError, raise_if_interrupted

#: Pillow's ``convert("L")`` weights (ITU-R 601-2 luma)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def image_input_adapter(module: Any, mean: Sequence[float], std: Sequence[float], channels: int) -> Any:
    """``module`` (NCHW normalized input) behind an NHWC RGB 0..255 input; see :class:`ImageInputAdapter`."""
    import torch

    class ImageInputAdapter(torch.nn.Module):
        """NHWC RGB pixels 0..255 -> [luma] -> ``(pixel / 255 - mean) / std`` -> NCHW -> the classifier."""

        def __init__(self) -> None:
            super().__init__()
            self.model = module
            gain = torch.tensor([1.0 / (255.0 * s) for s in _per_channel(std, channels)], dtype=torch.float32)
            offset = torch.tensor([-m / s for m, s in zip(_per_channel(mean, channels), _per_channel(std, channels))],
                                  dtype=torch.float32)
            if channels == 1:  # fold the luma conversion into the per-pixel affine map: one 1x1 conv
                weight = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).reshape(1, 3) * gain.reshape(1, 1)
            else:
                weight = torch.diag(gain)
            self.register_buffer("weight", weight)
            self.register_buffer("offset", offset)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            """(B, H, W, 3) pixels -> logits."""
            x = torch.nn.functional.linear(pixels, self.weight, self.offset)
            return self.model(x.permute(0, 3, 1, 2))

    return ImageInputAdapter().eval()


def _per_channel(values: Sequence[float], channels: int) -> List[float]:
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values


def nhwc_rgb_shape(input_size: Tuple[int, int], batch: int = 1) -> Tuple[int, int, int, int]:
    """The exported input shape ``(batch, H, W, 3)``."""
    return (batch, input_size[0], input_size[1], 3)


def export_tflite(adapter: Any, path: Path, input_shape: Tuple[int, int, int, int]) -> Path:
    """Convert ``adapter`` (eval mode) to an fp32 ``.tflite`` at ``path`` with litert-torch.

    Raises:
        ConversionError: litert-torch is missing, or the model cannot be lowered: the message names the
            operators without a TFLite lowering and the module each came from.
    """
    import torch

    example = (torch.zeros(input_shape),)
    try:
        with _quiet():
            import litert_torch

            litert_torch.convert(adapter, example).export(str(path))
    except ImportError as exc:
        raise ConversionError(f"the TFLite route needs litert-torch ({exc}); run scripts/setup_tflite.sh") from None
    except Exception as exc:  # litert-torch raises AssertionError/RuntimeError/... from many layers
        raise_if_interrupted(exc)
        raise ConversionError(f"TFLite conversion of {type(adapter.model).__name__} failed: "
                              f"{explain_lowering_failure(adapter, example, exc)}") from None
    return Path(path)


def explain_lowering_failure(module: Any, example: Tuple[Any, ...], exc: BaseException) -> str:
    """One line naming the ops litert-torch has no lowering for and the module each came from, else the
    exception's first line."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        missing = unlowerable_ops(module, example)
    except Exception as export_exc:  # torch.export itself failed: that is the reason
        lines = str(export_exc).strip().splitlines()
        return f"torch.export cannot trace the model ({lines[0] if lines else type(export_exc).__name__})"
    if not missing:
        return first
    listed = ", ".join(f"{op} (in {where})" for op, where in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return (f"no TFLite lowering for {listed}{more}; replace the op in that module or re-parameterize it "
            f"before converting (litert-torch said: {first})")


def unlowerable_ops(module: Any, example: Tuple[Any, ...]) -> List[Tuple[str, str]]:
    """``[(aten op, module path: class)]`` of the exported graph's ops that litert-torch cannot lower."""
    import torch
    from litert_torch import fx_infra
    from litert_torch.backend import lowerings

    with _quiet():
        program = torch.export.export(module, example)
        program = fx_infra.safe_run_decompositions(program, fx_infra.decomp.pre_lower_decomp(), can_skip=False)
    found: List[Tuple[str, str]] = []
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem or lowerings.lookup(node.target) is not None:
            continue
        if getattr(node.target, "__name__", "") == "with_effects":
            continue  # the side-effect token wrapper of another op, reported through that op
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        entry = (str(node.target), _module_name(stack[-1]) if stack else "the top-level forward")
        if entry not in found:
            found.append(entry)
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hold back what litert-torch, torch.export, jax and the MLIR converter print (Python and native)."""
    from slidelite.backends.litert_backend import held_native_stderr

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), held_native_stderr():
        warnings.simplefilter("ignore")
        yield


def _module_name(entry: Tuple[str, Any]) -> str:
    """``path: Class`` of an ``nn_module_stack`` entry, relative to the classifier inside the adapter."""
    path, kind = entry
    path = str(path).replace("L['self'].", "").replace("L__self__.", "")
    path = path[len("model."):] if path.startswith("model.") else path
    name = getattr(kind, "__name__", str(kind)).rsplit(".", 1)[-1]
    return f"{path}: {name}" if path and path != "model" else name
