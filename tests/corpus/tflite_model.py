"""A real, tiny TFLite image classifier written with LiteRT's own flatbuffer schema (no converter needed).

The graph is ``MEAN(pixels, axes=[1, 2]) -> FULLY_CONNECTED(10)``: the per-channel mean of the normalized
NHWC input, then a seeded linear layer, so photos with different colours score differently. The slidelite
metadata is appended as the ZIP archive of associated files, as the TFLite Metadata populator stores it.
Used by the concurrency test (LiteRT backend) and by the corpus (structurally valid but broken graphs).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from tests._runtime_fixtures import LABELS, fixture_metadata


def tflite_metadata(size: int = 32) -> Dict[str, Any]:
    """The metadata document of :func:`make_tflite_classifier` (NHWC float32 RGB input)."""
    document = fixture_metadata(layout="NHWC", size=size)
    document["name"] = "fixture_tflite"
    return document


def make_tflite_classifier(path: "str | Path", size: int = 32, seed: int = 0, subgraph: bool = True,
                           metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write the classifier to ``path``; ``subgraph=False`` writes one subgraph with no tensors or operators."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1.0, (len(LABELS), 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, len(LABELS)).astype(np.float32)

    def buffer(data: Optional[np.ndarray] = None) -> Any:
        item = schema.BufferT()
        item.data = None if data is None else np.frombuffer(data.tobytes(), dtype=np.uint8)
        return item

    def tensor(name: str, shape: list, kind: int, index: int) -> Any:
        item = schema.TensorT()
        item.name, item.shape, item.type, item.buffer = name.encode(), shape, kind, index
        return item

    def operator_code(code: int) -> Any:
        item = schema.OperatorCodeT()
        item.builtinCode = item.deprecatedBuiltinCode = code
        item.version = 1
        return item

    f32, i32 = schema.TensorType.FLOAT32, schema.TensorType.INT32
    graph = schema.SubGraphT()
    graph.name = b"main"
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [], [], [], []
    if subgraph:
        graph.tensors = [tensor("pixels", [1, size, size, 3], f32, 0), tensor("axes", [2], i32, 1),
                         tensor("mean", [1, 3], f32, 0), tensor("fc_w", [len(LABELS), 3], f32, 2),
                         tensor("fc_b", [len(LABELS)], f32, 3), tensor("scores", [1, len(LABELS)], f32, 0)]
        graph.inputs, graph.outputs = [0], [5]
        reduce = schema.OperatorT()
        reduce.opcodeIndex, reduce.inputs, reduce.outputs = 0, [0, 1], [2]
        reduce.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
        reduce.builtinOptions = schema.ReducerOptionsT()
        dense = schema.OperatorT()
        dense.opcodeIndex, dense.inputs, dense.outputs = 1, [2, 3, 4], [5]
        dense.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
        dense.builtinOptions = schema.FullyConnectedOptionsT()
        graph.operators = [reduce, dense]
    model = schema.ModelT()
    model.version, model.description = 3, b"slidelite test fixture"
    model.operatorCodes = [operator_code(schema.BuiltinOperator.MEAN),
                           operator_code(schema.BuiltinOperator.FULLY_CONNECTED)]
    model.subgraphs = [graph]
    model.buffers = [buffer(), buffer(np.array([1, 2], np.int32)), buffer(weights), buffer(bias)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = Path(path)
    path.write_bytes(bytes(builder.Output()))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("slidelite_metadata.json", json.dumps(metadata or tflite_metadata(size)))
    return path


def reference_scores(tensor: np.ndarray, seed: int = 0) -> np.ndarray:
    """The classifier's logits for an NHWC float tensor, in numpy."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1.0, (len(LABELS), 3))
    bias = rng.normal(0, 0.1, len(LABELS))
    return tensor.astype(np.float64).mean(axis=(1, 2)) @ weights.T + bias
