"""Real TFLite files written with LiteRT's own flatbuffer schema (no converter needed).

:func:`write_tflite` writes any single-subgraph model from tensor and operator specs (float or quantized
tensors, per-channel parameters, builtin options by their schema field names): the per-op agreement tests
of the numpy backend (tests/test_numpy_tflite.py) and the hardening corpus build their models with it.

:func:`make_tflite_classifier` is a tiny image classifier: ``MEAN(pixels, axes=[1, 2]) -> FULLY_CONNECTED(10)``,
the per-channel mean of the normalized NHWC input, then a seeded linear layer, so photos with different
colours score differently. The slidelite metadata is appended as the ZIP archive of associated files, as the
TFLite Metadata populator stores it. Used by the concurrency test (LiteRT backend) and by the corpus
(structurally valid but broken graphs).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from tests._runtime_fixtures import LABELS, fixture_metadata


@dataclass
class TensorSpec:
    """One tensor: ``data`` makes it a constant; ``scale`` (one value, or one per channel along ``axis``) and
    ``zero_point`` make it quantized."""

    name: str
    shape: Sequence[int]
    dtype: str = "float32"
    data: Optional[np.ndarray] = None
    scale: Optional[Sequence[float]] = None
    zero_point: Optional[Sequence[int]] = None
    axis: int = 0


@dataclass
class OpSpec:
    """One operator: the BuiltinOperator name, tensor indices (-1: omitted optional input) and the builtin
    options table (``'Conv2DOptions'``...) with its fields by their schema names (``strideW``...)."""

    op: str
    inputs: Sequence[int]
    outputs: Sequence[int]
    options: Optional[str] = None
    fields: Dict[str, Any] = field(default_factory=dict)


_TYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32", "uint8": "UINT8", "int8": "INT8",
          "int64": "INT64", "int16": "INT16", "bool": "BOOL"}


def write_tflite(path: "str | Path", tensors: Sequence[TensorSpec], ops: Sequence[OpSpec], inputs: Sequence[int],
                 outputs: Sequence[int], metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write the model to ``path`` (with ``metadata``, the slidelite document as an associated file)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buffers: List[Any] = [schema.BufferT()]
    tensor_tables = []
    for spec in tensors:
        item = schema.TensorT()
        item.name, item.shape = spec.name.encode(), list(spec.shape)
        item.type = getattr(schema.TensorType, _TYPES[spec.dtype])
        item.buffer = 0
        if spec.data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(spec.data, dtype=spec.dtype).tobytes(), dtype=np.uint8)
            item.buffer = len(buffers)
            buffers.append(buffer)
        if spec.scale is not None:
            quant = schema.QuantizationParametersT()
            quant.scale = [float(s) for s in spec.scale]
            quant.zeroPoint = [int(z) for z in (spec.zero_point if spec.zero_point is not None else [0] * len(spec.scale))]
            quant.quantizedDimension = spec.axis
            item.quantization = quant
        tensor_tables.append(item)
    names = sorted({op.op for op in ops})
    codes = []
    for name in names:
        code = schema.OperatorCodeT()
        code.builtinCode = getattr(schema.BuiltinOperator, name)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        code.version = 1
        codes.append(code)
    graph = schema.SubGraphT()
    graph.name, graph.tensors, graph.inputs, graph.outputs = b"main", tensor_tables, list(inputs), list(outputs)
    graph.operators = []
    for spec in ops:
        item = schema.OperatorT()
        item.opcodeIndex, item.inputs, item.outputs = names.index(spec.op), list(spec.inputs), list(spec.outputs)
        if spec.options:
            item.builtinOptionsType = getattr(schema.BuiltinOptions, spec.options)
            options = getattr(schema, f"{spec.options}T")()
            for key, value in spec.fields.items():
                setattr(options, key, value)
            item.builtinOptions = options
        graph.operators.append(item)
    model = schema.ModelT()
    model.version, model.description = 3, b"slidelite test fixture"
    model.operatorCodes, model.subgraphs, model.buffers = codes, [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = Path(path)
    path.write_bytes(bytes(builder.Output()))
    if metadata is not None:
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("slidelite_metadata.json", json.dumps(metadata))
    return path


def tflite_metadata(size: int = 32) -> Dict[str, Any]:
    """The metadata document of :func:`make_tflite_classifier` (NHWC float32 RGB input)."""
    document = fixture_metadata(layout="NHWC", size=size)
    document["name"] = "fixture_tflite"
    return document


def make_tflite_classifier(path: "str | Path", size: int = 32, seed: int = 0, subgraph: bool = True,
                           metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write the classifier to ``path``; ``subgraph=False`` writes one subgraph with no tensors or operators."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1.0, (len(LABELS), 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, len(LABELS)).astype(np.float32)
    tensors = [TensorSpec("pixels", [1, size, size, 3]), TensorSpec("axes", [2], "int32", np.array([1, 2])),
               TensorSpec("mean", [1, 3]), TensorSpec("fc_w", [len(LABELS), 3], data=weights),
               TensorSpec("fc_b", [len(LABELS)], data=bias), TensorSpec("scores", [1, len(LABELS)])]
    ops = [OpSpec("MEAN", [0, 1], [2], "ReducerOptions"), OpSpec("FULLY_CONNECTED", [2, 3, 4], [5], "FullyConnectedOptions")]
    if not subgraph:
        tensors, ops = [], []
    return write_tflite(path, tensors, ops, [0] if subgraph else [], [5] if subgraph else [],
                        metadata or tflite_metadata(size))


def reference_scores(tensor: np.ndarray, seed: int = 0) -> np.ndarray:
    """The classifier's logits for an NHWC float tensor, in numpy."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1.0, (len(LABELS), 3))
    bias = rng.normal(0, 0.1, len(LABELS))
    return tensor.astype(np.float64).mean(axis=(1, 2)) @ weights.T + bias


#: hostile edits of a valid TFLite file (:func:`damage_tflite`) and the reader's words for them
DAMAGES = {"offset_past_end": "outside the", "offset_wraps": "outside the", "billion_tensors": "outside the"}


def damage_tflite(data: bytes, kind: str) -> bytes:
    """``data`` with one hostile edit: the Model's ``subgraphs`` offset pointing far past the end
    (``offset_past_end``) or wrapping below the start (``offset_wraps``), or subgraph 0 declaring a billion tensors
    (``billion_tensors``)."""
    import struct

    from slidelite.backends._flatbuffer import Buffer

    root = Buffer(data).root()
    out = bytearray(data)
    if kind == "billion_tensors":
        field = root.tables(2)[0].field(0)
        struct.pack_into("<I", out, field + struct.unpack_from("<I", data, field)[0], 0x3FFFFFFF)
    else:
        struct.pack_into("<I", out, root.field(2), 0x7FFF0000 if kind == "offset_past_end" else 0xFFFFFFF0)
    return bytes(out)


def unsupported_op_classifier(path: "str | Path", size: int = 32) -> Path:
    """The fixture classifier with a CUMSUM (which the numpy backend does not implement) before its linear layer."""
    rng = np.random.default_rng(0)
    tensors = [TensorSpec("pixels", [1, size, size, 3]), TensorSpec("axes", [2], "int32", np.array([1, 2])),
               TensorSpec("mean", [1, 3]), TensorSpec("axis", [], "int32", np.array(1, np.int32)),
               TensorSpec("cumsum", [1, 3]), TensorSpec("fc_w", [len(LABELS), 3], data=rng.normal(0, 1, (len(LABELS), 3))),
               TensorSpec("scores", [1, len(LABELS)])]
    ops = [OpSpec("MEAN", [0, 1], [2], "ReducerOptions"), OpSpec("CUMSUM", [2, 3], [4]),
           OpSpec("FULLY_CONNECTED", [4, 5, -1], [6], "FullyConnectedOptions")]
    return write_tflite(path, tensors, ops, [0], [6], tflite_metadata(size))


def cyclic_classifier(path: "str | Path", size: int = 32) -> Path:
    """The fixture classifier with its two operators in the wrong order: FULLY_CONNECTED reads the MEAN's output
    before MEAN runs (what a cycle looks like in TFLite's execution order)."""
    weights = np.random.default_rng(0).normal(0, 1, (len(LABELS), 3))
    tensors = [TensorSpec("pixels", [1, size, size, 3]), TensorSpec("axes", [2], "int32", np.array([1, 2])),
               TensorSpec("mean", [1, 3]), TensorSpec("fc_w", [len(LABELS), 3], data=weights),
               TensorSpec("scores", [1, len(LABELS)])]
    ops = [OpSpec("FULLY_CONNECTED", [2, 3, -1], [4], "FullyConnectedOptions"), OpSpec("MEAN", [0, 1], [2], "ReducerOptions")]
    return write_tflite(path, tensors, ops, [0], [4], tflite_metadata(size))
