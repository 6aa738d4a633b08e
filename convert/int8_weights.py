"""Step 4 (``--int8-recipe weight-only``): int8 weight *storage* with float32 compute, for ONNX and TFLite.

The torch module's Conv2d/Linear weights are first put on their int8 grid with the calibration images
(:mod:`slidelite.convert.weight_rounding`: GPTQ + bias correction), the module is exported as usual, and
the exported file stores those weights as int8:

* ONNX (:func:`store_int8_weights`): each Conv/Gemm/MatMul weight becomes an int8 initializer, a ``Cast`` to
  float32 and a ``Mul`` by its per-output-channel float32 scale. Only constants feed these nodes, so
  onnxruntime (constant folding at session start) and slidelite's numpy backend (which has no
  ``DequantizeLinear``) fold them once at load: inference is the float32 graph. onnxruntime keeps
  ``DequantizeLinear`` nodes unfolded on purpose (to fuse QDQ groups), so that form would dequantize on
  every run.
* TFLite (:func:`tflite_int8_weights`): ai-edge-quantizer's weight-only recipe (``weight_only_wi8_afp32``:
  symmetric per-channel int8 weights behind a ``DEQUANTIZE`` op, float32 kernels), the standard LiteRT form.

Layers with fewer than :data:`SMALL_LAYER_ELEMENTS` weights (the stem and the early, thin layers, whose
rounding moves the output most per byte) stay float, stored as float16 (ONNX: ``Cast``; TFLite: the
standard float16 weight + ``DEQUANTIZE``). On EfficientNet-Lite0 they are 9.6 % of the weights.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .weight_rounding import QMAX

#: Conv/Linear layers with fewer weights than this stay float16 (measured: docs/models/efficientnet_lite0.md).
SMALL_LAYER_ELEMENTS = 40_000
_TFLITE_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def rounded_copy(module: Any, calibration: np.ndarray) -> Any:
    """A copy of ``module`` whose large Conv2d/Linear weights sit on their int8 grid (GPTQ + bias correction)."""
    import copy

    from .weight_rounding import round_weights_int8

    rounded = copy.deepcopy(module)
    round_weights_int8(rounded, calibration, min_elements=SMALL_LAYER_ELEMENTS)
    return rounded


def per_channel_int8(weight: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 codes and float32 scales (``max|w| / 127`` along ``axis``, broadcastable)."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=reduce, keepdims=True)
    scale = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
    codes = np.clip(np.rint(weight / scale), -QMAX, QMAX).astype(np.int8)
    return codes, scale


def _weight_axes(graph: Any) -> Dict[str, int]:
    """Initializer name -> output-channel axis, for the weights (input 1) of the graph's Conv, Gemm and
    MatMul nodes (MatMul and Gemm without transB: ``x @ W`` with W (in, out))."""
    shapes = {init.name: len(init.dims) for init in graph.initializer}
    axes: Dict[str, int] = {}
    for node in graph.node:
        weight = node.input[1] if len(node.input) > 1 else ""
        if node.op_type == "Conv" or (node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)):
            axes[weight] = 0
        elif node.op_type in ("Gemm", "MatMul") and shapes.get(weight) == 2:
            axes[weight] = 1
    return {name: axis for name, axis in axes.items() if name in shapes}


def pointwise_conv_weights(path: Path) -> List[str]:
    """The float weight names of the ungrouped 1x1 Conv nodes of the ONNX file at ``path`` (linear layers written
    as convolutions, as the deployed Slide attention writes its qkv and output projections)."""
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    names = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        weight = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else ""
        if len(shapes.get(weight, ())) == 4 and shapes[weight][2:] == (1, 1) and ("group" not in attrs or attrs["group"].i == 1):
            names.append(weight)
    return names


def store_int8_weights(source: Path, target: Path, min_elements: Optional[int] = None,
                       only: Optional[List[str]] = None) -> Dict[str, int]:
    """Write ``source`` with its Conv/Gemm/MatMul weights (or only the weights named in ``only``) stored as int8
    (+ Cast + per-channel Mul), the ones under ``min_elements`` (default :data:`SMALL_LAYER_ELEMENTS`) as float16
    (+ Cast); returns ``{"int8": n, "float16": m}`` weight-tensor counts."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    min_elements = SMALL_LAYER_ELEMENTS if min_elements is None else min_elements
    model = onnx.load(str(source))
    graph = model.graph
    axes = _weight_axes(graph)
    if only is not None:
        axes = {name: axis for name, axis in axes.items() if name in only}
    stored, nodes, counts = [], [], {"int8": 0, "float16": 0}
    for init in graph.initializer:
        if init.name not in axes or init.data_type != TensorProto.FLOAT:
            stored.append(init)
            continue
        weight = numpy_helper.to_array(init)
        if weight.size < min_elements:
            stored.append(numpy_helper.from_array(weight.astype(np.float16), f"{init.name}__fp16"))
            nodes.append(helper.make_node("Cast", [f"{init.name}__fp16"], [init.name], to=TensorProto.FLOAT,
                                          name=f"{init.name}__cast"))
            counts["float16"] += 1
            continue
        codes, scale = per_channel_int8(weight, axes[init.name])
        stored += [numpy_helper.from_array(codes, f"{init.name}__int8"),
                   numpy_helper.from_array(scale, f"{init.name}__scale")]
        nodes += [helper.make_node("Cast", [f"{init.name}__int8"], [f"{init.name}__float"], to=TensorProto.FLOAT,
                                   name=f"{init.name}__cast"),
                  helper.make_node("Mul", [f"{init.name}__float", f"{init.name}__scale"], [init.name],
                                   name=f"{init.name}__dequantize")]
        counts["int8"] += 1
    del graph.initializer[:]
    graph.initializer.extend(stored)
    original = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + original)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return counts


def tflite_int8_weights(model: bytes, min_elements: Optional[int] = None) -> bytes:
    """ai-edge-quantizer's weight-only int8 (per-channel, ``DEQUANTIZE`` + float kernels) for the conv and
    fully-connected weights of at least ``min_elements`` (default :data:`SMALL_LAYER_ELEMENTS`); the smaller
    ones as float16 (``float_casting``)."""
    from ai_edge_quantizer import quantizer, recipe

    from .tflite_quantize import pack_buffers_inline

    min_elements = SMALL_LAYER_ELEMENTS if min_elements is None else min_elements
    entries: List[Dict[str, Any]] = [dict(entry, op_config=dict(entry["op_config"], min_weight_elements=min_elements))
                                     for entry in recipe.weight_only_wi8_afp32()]
    fp16 = {"weight_tensor_config": {"num_bits": 16, "symmetric": True, "granularity": "TENSORWISE",
                                     "dtype": "FLOAT"},
            "compute_precision": "FLOAT", "explicit_dequantize": True}
    entries += [{"regex": f"^{re.escape(name)};$", "operation": op, "algorithm_key": "float_casting",
                 "op_config": fp16} for name, op in _small_tflite_layers(model, min_elements)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        result = quantizer.Quantizer(bytearray(model), entries).quantize()
    return pack_buffers_inline(bytes(result.quantized_model))


def _small_tflite_layers(model: bytes, min_elements: int) -> List[Tuple[str, str]]:
    """(output tensor name, op name) of the conv / fully-connected ops whose constant weight is under
    ``min_elements`` (ai-edge-quantizer matches an op by its output names, each followed by ``;``)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    names = {getattr(schema.BuiltinOperator, n): n for n in _TFLITE_WEIGHT_OPS}
    small = []
    for graph in tree.subgraphs:
        for op in graph.operators:
            code = tree.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            weight = graph.tensors[op.inputs[1]] if builtin in names and len(op.inputs) > 1 else None
            if weight is not None and tree.buffers[weight.buffer].data is not None \
                    and int(np.prod(weight.shape)) < min_elements:
                name = graph.tensors[op.outputs[0]].name
                small.append((name.decode() if isinstance(name, bytes) else name, names[builtin]))
    return small
