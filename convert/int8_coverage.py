"""int8 that means int8: which recipe fits a graph, and how much of a quantized file really is int8.

* :func:`onnx_weight_shares` / :func:`tflite_weight_shares`: the fp32 graph's weight elements by the kind of
  op that reads them (``conv``, ``matmul`` for MatMul/Gemm/FULLY_CONNECTED, ``other``).
* :func:`choose_recipe`: when ``--int8-recipe`` is not given, a graph whose weights are mostly convolution
  gets the format's conv recipe (the MatMul-only defaults would leave a CNN float), else the default.
* :func:`onnx_int8_fraction` / :func:`tflite_int8_fraction`: the share of a file's stored weight elements
  that are 8-bit integers. :meth:`RecipeChoice.precision` labels a file whose weights are less than half int8
  ``mixed`` instead of ``int8``, and :meth:`RecipeChoice.warning` says so in the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

#: weight elements by op kind; a graph is "conv" when its conv weights outnumber the matmul ones
CONV, MATMUL, OTHER = "conv", "matmul", "other"
MIN_INT8_FRACTION = 0.5
ONNX_CONV_OPS = {"Conv", "ConvTranspose"}
ONNX_MATMUL_OPS = {"MatMul", "Gemm"}
TFLITE_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")
TFLITE_MATMUL_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL")
#: the recipe each format picks for a mostly-convolution graph (measured: benchmarks/int8_recipe_choice.py)
CONV_RECIPES = {"onnx": "static-qdq-conv", "tflite": "dynamic-int8-conv"}


@dataclass(frozen=True)
class RecipeChoice:
    """The int8 recipe to run on a graph and why.

    Attributes:
        name: the recipe. fmt: ``onnx`` or ``tflite``. shares: the fp32 graph's weight elements by op kind.
        reason: why the converter chose it; empty when the user named it with ``--int8-recipe``.
    """

    name: str
    fmt: str
    shares: Dict[str, int]
    reason: str = ""

    def precision(self, recipe_precision: str, int8_fraction: float) -> str:
        """The metadata precision of the output: the recipe's int8 label (``int8``, ``int8-weights``) only when
        at least :data:`MIN_INT8_FRACTION` of the weights are int8, else ``mixed``."""
        if recipe_precision.startswith("int8") and int8_fraction < MIN_INT8_FRACTION:
            return "mixed"
        return recipe_precision

    def warning(self, int8_fraction: float) -> Optional[str]:
        """When less than half of the file's weights are int8: the real share, the label written, and the recipe
        that would quantize this graph."""
        if int8_fraction >= MIN_INT8_FRACTION:
            return None
        conv = CONV_RECIPES[self.fmt]
        hint = (f"; --int8-recipe {conv} quantizes the convolutions ({_share(self.shares, CONV)} of the weights)"
                if self.shares[CONV] > self.shares[MATMUL] and self.name != conv else "")
        return (f"int8 recipe {self.name} left most weights float: only {_percent(int8_fraction)} are int8, so the "
                f"file is labelled precision 'mixed', not int8{hint}")

    def describe(self, int8_fraction: float) -> str:
        """One report line: the recipe, why it was chosen, and the share of weights stored int8."""
        why = f" (chosen: {self.reason})" if self.reason else ""
        return f"{self.name}{why}; {_percent(int8_fraction)} of the weights int8"


def onnx_weight_shares(path: Path) -> Dict[str, int]:
    """Float weight elements of an ONNX file by the kind of op that reads them (each initializer once)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer
             if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    kinds: Dict[str, str] = {}
    for node in graph.node:
        kind = CONV if node.op_type in ONNX_CONV_OPS else MATMUL if node.op_type in ONNX_MATMUL_OPS else OTHER
        for name in node.input:
            if name in sizes and kinds.get(name, OTHER) == OTHER:
                kinds[name] = kind
    return _by_kind(sizes, kinds)


def tflite_weight_shares(model: bytes) -> Dict[str, int]:
    """Float weight elements of a ``.tflite`` flatbuffer by the kind of op that reads them (each buffer once)."""
    from ai_edge_litert import schema_py_generated as schema

    tree = _read_tflite(model)
    codes = {getattr(schema.BuiltinOperator, n): CONV for n in TFLITE_CONV_OPS}
    codes.update({getattr(schema.BuiltinOperator, n): MATMUL for n in TFLITE_MATMUL_OPS})
    floats = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
    sizes: Dict[int, int] = {}
    kinds: Dict[int, str] = {}
    for graph in tree.subgraphs:
        for op in graph.operators:
            code = tree.operatorCodes[op.opcodeIndex]
            kind = codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), OTHER)
            for index in op.inputs:
                tensor = graph.tensors[index] if index >= 0 else None
                if tensor is None or tensor.type not in floats or not _has_data(tree, tensor):
                    continue
                sizes[tensor.buffer] = _elements(tensor)
                if kinds.get(tensor.buffer, OTHER) == OTHER:
                    kinds[tensor.buffer] = kind
    return _by_kind(sizes, kinds)


def _by_kind(sizes: Dict, kinds: Dict) -> Dict[str, int]:
    shares = {CONV: 0, MATMUL: 0, OTHER: 0}
    for key, size in sizes.items():
        shares[kinds.get(key, OTHER)] += size
    return shares


def choose_recipe(requested: Optional[str], default: str, fmt: str, shares: Dict[str, int]) -> RecipeChoice:
    """``requested`` when the user named a recipe; else the conv recipe of ``fmt`` for a graph whose conv
    weights outnumber its MatMul/Gemm weights, else ``default``."""
    if requested is not None:
        return RecipeChoice(requested, fmt, shares)
    if shares[CONV] > shares[MATMUL]:
        return RecipeChoice(CONV_RECIPES[fmt], fmt, shares, f"{_share(shares, CONV)} of the weights are convolution")
    return RecipeChoice(default, fmt, shares, f"{_share(shares, MATMUL)} of the weights are MatMul/Gemm")


def onnx_int8_fraction(path: Path) -> float:
    """Share of the weight elements of an ONNX file stored as int8/uint8 (float and 8-bit initializers
    counted; int32 biases and int64 indices are neither)."""
    import onnx

    eight = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    graph = onnx.load(str(path), load_external_data=False).graph
    counts = {True: 0, False: 0}
    for init in graph.initializer:
        if init.data_type in eight or init.data_type in floats:
            counts[init.data_type in eight] += int(np.prod(init.dims))
    return counts[True] / max(1, counts[True] + counts[False])


def tflite_int8_fraction(model: bytes) -> float:
    """Share of the constant tensor elements of a ``.tflite`` stored as int8/uint8 (each buffer once)."""
    from ai_edge_litert import schema_py_generated as schema

    tree = _read_tflite(model)
    eight = (schema.TensorType.INT8, schema.TensorType.UINT8)
    floats = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
    seen: Dict[int, bool] = {}
    sizes: Dict[int, int] = {}
    for graph in tree.subgraphs:
        for tensor in graph.tensors:
            if (tensor.type in eight or tensor.type in floats) and _has_data(tree, tensor):
                seen[tensor.buffer] = tensor.type in eight
                sizes[tensor.buffer] = _elements(tensor)
    int8 = sum(size for buffer, size in sizes.items() if seen[buffer])
    return int8 / max(1, sum(sizes.values()))


def _share(shares: Dict[str, int], kind: str) -> str:
    return _percent(shares[kind] / (sum(shares.values()) or 1))


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _read_tflite(model: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model))


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape)) if tensor.shape is not None and len(tensor.shape) else 1


def _has_data(tree, tensor) -> bool:
    data = tree.buffers[tensor.buffer].data if 0 < tensor.buffer < len(tree.buffers) else None
    return data is not None and len(data) > 0
