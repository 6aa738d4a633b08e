"""Step 4 (TFLite): int8 post-training quantization of the fp32 ``.tflite`` with an explicit, named recipe.

The recipes run without TensorFlow; ``benchmarks/tflite_int8.py`` measures them against fp32 (latency,
size, agreement on held-out photos and on a trained model, per-op profiles; results in docs/tflite.md).
``weight-only`` is described in :mod:`slidelite.convert.int8_weights`; the two below are the int8 ones:

* ``dynamic-int8`` (default) — dynamic-range quantization with ai-edge-quantizer (``dynamic_wi8_afp32``
  restricted to FULLY_CONNECTED): int8 weights **per tensor**, activations quantized per row on the fly
  (XNNPACK's qd8 kernels); the large float constants no quantizer touches (Slide-Swin's window-attention
  position bias, materialized by the export) stored as int8 behind a DEQUANTIZE that XNNPACK folds at load
  (:func:`int8_float_constants`); float32 input and logits. Everything else stays fp32 in ONE XNNPACK graph.
  The per-op profile chose the op set: int8 FULLY_CONNECTED is 2.5-3x faster than fp32 here, while hybrid
  depthwise conv is slower than fp32, and int8 BATCH_MATMUL, SQUARED_DIFFERENCE (LayerNorm), SOFTMAX and
  SUM leave XNNPACK for slower built-in kernels. Per tensor, not per channel: tflite-runtime 2.14's hybrid
  FULLY_CONNECTED computes per-channel weights wrongly (all-zero Slide-Swin-T logits); per tensor runs right
  in both runtimes at the same LiteRT speed, for cosine-to-fp32 0.99956 instead of 0.99978 (Slide-Swin-T) and
  99.75 % instead of 99.85 % top-1 agreement on a trained Slide-Swin. Fastest and most accurate here
  (Slide-Swin-T 224: >= 1.5x fp32, 0.26x the size), and it keeps its speed on ARM CPUs (XNNPACK has the same
  qd8 kernels for NEON dot-product/i8mm). Runs in LiteRT, tflite-runtime, MediaPipe.
* ``dynamic-int8-conv`` — ``dynamic-int8`` plus the CONV_2D weights (int8 per channel, XNNPACK's qd8 conv
  kernels): the recipe picked for a mostly-convolution graph (:mod:`slidelite.convert.int8_coverage`).
  Measured on ResNet-18 224 (self-initialised, LiteRT, 2 threads, AMD EPYC with AVX-512 VNNI, load ~12):
  0.25x the size, 99.98 % of the weights int8, cosine to fp32 0.99988, 2.25x faster than fp32. ``full-int8``
  cannot run there at all (its max-pool PADV2 keeps a float pad value in an int8 graph).
* ``full-int8`` — static full-integer quantization with TFLite's own post-training quantizer (the
  calibrator + quantizer that ``TFLiteConverter`` uses, shipped in ``ai-edge-litert``): int8 weights per
  channel, int8 activations from MinMax calibration on the calibration images, **uint8 input** (the raw
  pixels: the input tensor is pinned to scale 1, zero point 0) and **float32 logits out** (one DEQUANTIZE
  at the end). Every op is integer: what integer-only accelerators (NNAPI, Edge TPU, Hexagon) need, and
  what takes camera bytes as they are. On x86 CPUs it is slower than fp32 (the int8 ops above) and it
  loses more accuracy (MinMax activation ranges): choose it for integer-only hardware.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from slidelite.errors import UsageError

from .errors import ConversionError, raise_if_interrupted

MIN_GOOD_CALIBRATION = 32
#: float constants at least this large are stored as int8 by the dynamic recipe (:func:`int8_float_constants`)
LARGE_CONSTANT_ELEMENTS = 16384


@dataclass(frozen=True)
class TFLiteInt8Recipe:
    """One TFLite int8 recipe (see the module docstring).

    Attributes:
        name: the ``--int8-recipe`` value.
        summary: one line for ``--help`` and the docs.
        full_integer: every op integer, uint8 input (needs calibration images).
    """

    name: str
    summary: str
    full_integer: bool
    int8_storage: bool = False  # weights rounded before export, stored int8, float kernels (int8_weights)
    precision: str = "int8"
    conv: bool = False  # dynamic range also on CONV_2D weights (per channel)


RECIPES: Dict[str, TFLiteInt8Recipe] = {r.name: r for r in (
    TFLiteInt8Recipe("dynamic-int8", "dynamic-range int8 fully-connected weights and large constants, float "
                     "activations and I/O (default: fastest and most accurate on CPUs)", full_integer=False),
    TFLiteInt8Recipe("full-int8", "static full-integer int8, uint8 pixels in, float32 logits out (integer-only "
                     "accelerators: NNAPI, Edge TPU, Hexagon)", full_integer=True),
    TFLiteInt8Recipe("dynamic-int8-conv", "dynamic-int8 plus CONV_2D weights (int8 per channel, XNNPACK qd8 conv "
                     "kernels): the CNN recipe", full_integer=False, conv=True),
    TFLiteInt8Recipe("weight-only", "int8 weight storage (GPTQ-rounded, per channel, DEQUANTIZE), float32 kernels; "
                     "small layers float16", full_integer=False, int8_storage=True, precision="int8-weights"),
)}
DEFAULT_RECIPE = "dynamic-int8"  # measured: faster, smaller and more accurate than full-int8 on CPUs


def get_tflite_recipe(name: Optional[str]) -> TFLiteInt8Recipe:
    """The TFLite recipe called ``name``; None (``--int8-recipe`` not given) means :data:`DEFAULT_RECIPE`.

    Raises:
        UsageError: unknown name, e.g. an ONNX recipe (the TFLite ones are listed).
    """
    name = DEFAULT_RECIPE if name is None else name
    if name not in RECIPES:
        raise UsageError(f"unknown --int8-recipe '{name}' for --format tflite; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def quantize_tflite(fp32_path: Path, int8_path: Path, recipe: TFLiteInt8Recipe, calibration: np.ndarray) -> Path:
    """Quantize ``fp32_path`` into ``int8_path`` with ``recipe``.

    Args:
        calibration: (N, H, W, C) float32 inputs exactly as the fp32 model takes them (pixels 0..255).

    Raises:
        ConversionError: no calibration input, or the quantizer failed (its first message line included).
    """
    if recipe.full_integer and len(calibration) < 1:
        raise ConversionError("full-integer int8 needs at least one calibration image: pass --calib DIR")
    model = Path(fp32_path).read_bytes()
    try:
        if recipe.int8_storage:
            from .int8_weights import tflite_int8_weights

            quantized = tflite_int8_weights(model)
        else:
            quantized = (full_integer_int8(model, calibration) if recipe.full_integer
                         else dynamic_range_int8(model, conv=recipe.conv))
    except ConversionError:
        raise
    except Exception as exc:  # the native quantizers raise RuntimeError/ValueError with long messages
        raise_if_interrupted(exc)
        lines = str(exc).strip().splitlines()
        raise ConversionError(f"int8 quantization ({recipe.name}) failed: {lines[0] if lines else type(exc).__name__}") from None
    Path(int8_path).write_bytes(quantized)
    return Path(int8_path)


def full_integer_int8(model: bytes, calibration: np.ndarray) -> bytes:
    """TFLite's post-training full-integer quantizer: uint8 input pinned to (scale 1, zero point 0), float32 output."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration_wrapper

    calibrator = calibration_wrapper.CalibrationWrapper(model, [], [])
    calibrator.Prepare([[1, *(int(d) for d in calibration.shape[1:])]])
    for sample in calibration:
        calibrator.FeedTensor([np.ascontiguousarray(sample[None], dtype=np.float32)])
    quantized = calibrator.QuantizeModel(np.dtype(np.uint8).num, np.dtype(np.float32).num, False,
                                         np.dtype(np.int8).num, np.dtype(np.int32).num, False, False)
    return pin_input_quantization(bytes(quantized), scale=1.0, zero_point=0)


def dynamic_range_int8(model: bytes, conv: bool = False) -> bytes:
    """ai-edge-quantizer's dynamic-range recipe on FULLY_CONNECTED (per-tensor int8 weights) and, with ``conv``,
    CONV_2D (per-channel int8 weights; depthwise convs stay float: their hybrid kernel is slower than fp32),
    every weight buffer packed inside the flatbuffer, large element-wise constants as int8."""
    from ai_edge_quantizer import quantizer, recipe

    ops = {"FULLY_CONNECTED": "TENSORWISE", **({"CONV_2D": "CHANNELWISE"} if conv else {})}  # see the module doc
    entries = []
    for operation, granularity in ops.items():
        for entry in recipe.dynamic_wi8_afp32():
            weights = dict(entry["op_config"]["weight_tensor_config"], granularity=granularity)
            entries.append(dict(entry, operation=operation,
                                op_config=dict(entry["op_config"], weight_tensor_config=weights)))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        result = quantizer.Quantizer(bytearray(model), entries).quantize()
    return int8_float_constants(pack_buffers_inline(bytes(result.quantized_model)))


def int8_float_constants(model: bytes, min_elements: int = LARGE_CONSTANT_ELEMENTS) -> bytes:
    """Store every float32 constant of at least ``min_elements`` values that only element-wise ops (ADD, SUB,
    MUL) read as int8 behind a DEQUANTIZE op.

    These are the constants no quantizer handles: in Slide-Swin-T the window attention's relative-position
    bias, which litert-torch materializes as (1, heads, N, N) tensors (11 MB of the file). Symmetric int8 per
    channel of the first axis longer than 1 (the heads), zero point 0. XNNPACK unpacks a DEQUANTIZE of a
    constant once when the model is loaded (measured: no run-time cost). Conv/FC weights are left to the
    quantizer: a DEQUANTIZE'd weight would make XNNPACK treat it as a run-time input.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = tree.subgraphs[0]
    elementwise = {schema.BuiltinOperator.ADD, schema.BuiltinOperator.SUB, schema.BuiltinOperator.MUL}
    consumers: Dict[int, set] = {}
    for op in graph.operators:
        code = tree.operatorCodes[op.opcodeIndex]
        for index in op.inputs:
            consumers.setdefault(index, set()).add(max(code.builtinCode, code.deprecatedBuiltinCode))
    large = [i for i, tensor in enumerate(graph.tensors)
             if tensor.type == schema.TensorType.FLOAT32 and _constant(tree, tensor) is not None
             and _constant(tree, tensor).size // 4 >= min_elements and consumers.get(i, {-1}) <= elementwise]
    if not large:
        return model
    dequantize = _opcode_index(tree, schema.BuiltinOperator.DEQUANTIZE)
    ops = []
    for index in large:
        tensor = graph.tensors[index]
        values = np.frombuffer(_constant(tree, tensor).tobytes(), dtype=np.float32).reshape(tensor.shape)
        axis = next((a for a, n in enumerate(values.shape) if n > 1), 0)
        reduce = tuple(a for a in range(values.ndim) if a != axis)
        scale = np.maximum(np.abs(values).max(axis=reduce, keepdims=True), 1e-30) / 127.0
        stored = schema.TensorT()
        stored.name, stored.shape, stored.type = tensor.name + b"_int8" if isinstance(tensor.name, bytes) \
            else f"{tensor.name}_int8", list(values.shape), schema.TensorType.INT8
        stored.quantization = schema.QuantizationParametersT()
        stored.quantization.scale = [float(v) for v in scale.ravel()]
        stored.quantization.zeroPoint = [0] * scale.size
        stored.quantization.quantizedDimension = axis
        buffer = schema.BufferT()
        buffer.data = np.clip(np.round(values / scale), -127, 127).astype(np.int8).tobytes()
        tree.buffers.append(buffer)
        stored.buffer = len(tree.buffers) - 1
        tree.buffers[tensor.buffer] = schema.BufferT()  # the float tensor becomes the DEQUANTIZE output
        graph.tensors.append(stored)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = dequantize, [len(graph.tensors) - 1], [index]
        ops.append(op)
    graph.operators = ops + list(graph.operators)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def _constant(tree: Any, tensor: Any) -> Optional[np.ndarray]:
    """The inline data of a constant tensor (uint8 array), or None for an activation."""
    data = tree.buffers[tensor.buffer].data if tensor.buffer < len(tree.buffers) else None
    return None if data is None or len(data) == 0 else np.asarray(data, dtype=np.uint8)


def _opcode_index(tree: Any, builtin: int) -> int:
    """Index of ``builtin`` in the model's operator codes (added when missing)."""
    from ai_edge_litert import schema_py_generated as schema

    for index, code in enumerate(tree.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    tree.operatorCodes.append(code)
    return len(tree.operatorCodes) - 1


def pin_input_quantization(model: bytes, scale: float, zero_point: int) -> bytes:
    """Set the (integer) input tensor's quantization to exactly ``scale``/``zero_point`` (buffers packed inline).

    The calibrated range of the pixel input is the observed one (e.g. 0..254.9); pinning it to the full
    0..255 keeps the meaning 'the uint8 input is the raw pixel' that MediaPipe and camera apps rely on.
    The graph's first QUANTIZE op requantizes from whatever the input parameters are, so this is exact.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = tree.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    if tensor.quantization is None or tensor.quantization.scale is None:
        raise ConversionError("the quantized model's input carries no quantization parameters")
    tensor.quantization.scale = [float(scale)]
    tensor.quantization.zeroPoint = [int(zero_point)]
    tensor.quantization.min = None
    tensor.quantization.max = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def pack_buffers_inline(model: bytes) -> bytes:
    """Move weight buffers stored after the flatbuffer (``Buffer.offset``) inside it.

    ai-edge-quantizer writes such buffers; TFLite Metadata writers rebuild the flatbuffer and drop them,
    leaving a file that no longer loads. A model whose buffers are all inline is returned unchanged.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    root = schema.Model.GetRootAs(model, 0)
    if not any(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength())):
        return model
    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def calibration_warning(count: int) -> Optional[str]:
    """A warning when fewer than :data:`MIN_GOOD_CALIBRATION` images calibrate a full-integer model."""
    if count >= MIN_GOOD_CALIBRATION:
        return None
    return (f"only {count} calibration image(s); {MIN_GOOD_CALIBRATION} or more give stable int8 ranges "
            "(add photos like the ones the model will see to --calib)")
