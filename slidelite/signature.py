"""A model file's signature read from the file itself (no inference engine): the image input and class-score
output tensors, and whether the graph ends in a softmax.

Used to fill in the metadata of files made elsewhere (:mod:`slidelite.metadata_fields`). ONNX files are walked
with the runtime's protobuf reader (the initializers are skipped, not decoded); TFLite files with
:func:`slidelite.tflite_metadata.read_tflite_graph`.
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Set, Tuple, Union

from .backends._onnx_reader import (LEN, MODEL_GRAPH, ONNX_DTYPES, ProtobufError, ValueInfo, _parse_node,
                                    _parse_value_info, _span, iter_fields)
from .errors import ModelError

Dim = Optional[int]

#: ONNX ops that pass a softmax's output on unchanged in meaning (followed back to find the softmax).
_ONNX_PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Cast", "DequantizeLinear", "QuantizeLinear")
_TENSOR_NAME = 8  # TensorProto.name


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output tensor: name, shape (None: dynamic), dtype and per-tensor quantization."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None


@dataclass(frozen=True)
class GraphSignature:
    """The first image input, the first output, and whether that output comes out of a softmax."""

    input: TensorInfo
    output: TensorInfo
    ends_in_softmax: bool


def shape_text(shape: Sequence[Optional[int]]) -> str:
    """``[1, 3, ?, ?]``: a shape with dynamic dimensions as ``?``."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def read_signature(path: Union[str, Path], fmt: str) -> GraphSignature:
    """The signature of the ``fmt`` (``onnx``/``tflite``) model file at ``path``.

    Raises:
        ModelError: the graph cannot be read or has no input or output (one line naming the file).
    """
    from .tflite_metadata import FlatbufferError, read_tflite_graph  # lazy: this module is imported by it

    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return read_tflite_graph(data) if fmt == "tflite" else _onnx_signature(data)
    except (ProtobufError, FlatbufferError) as exc:
        raise ModelError(f"{path}: cannot read the model's graph ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror or exc})") from None


def _onnx_signature(data: mmap.mmap) -> GraphSignature:
    """Walk the ONNX graph's nodes, inputs and outputs (initializers: only their names)."""
    graph = next((value for number, wire, value in iter_fields(data) if number == MODEL_GRAPH and wire == LEN), None)
    if graph is None:
        raise ProtobufError("no graph")
    inputs, outputs, initializers = [], [], set()  # type: ignore[var-annotated]
    producers: Dict[str, Tuple[str, Tuple[str, ...]]] = {}
    for number, wire, value in iter_fields(data, *_span(graph, "graph")):
        if wire != LEN:
            continue
        if number == 1:
            node = _parse_node(data, *_span(value, "a node"), depth=0)
            producers.update({out: (node.op_type, tuple(node.inputs)) for out in node.outputs})
        elif number == 5:
            initializers.add(_initializer_name(data, value))
        elif number == 11:
            inputs.append(_parse_value_info(data, *_span(value, "a graph input")))
        elif number == 12:
            outputs.append(_parse_value_info(data, *_span(value, "a graph output")))
    images = [value for value in inputs if value.name not in initializers]
    if not images or not outputs:
        raise ProtobufError("the graph has no input or no output")
    return GraphSignature(_onnx_tensor(images[0]), _onnx_tensor(outputs[0]), _onnx_softmax(producers, outputs[0].name))


def _initializer_name(data: mmap.mmap, span: object) -> str:
    for number, wire, value in iter_fields(data, *_span(span, "an initializer")):  # type: ignore[arg-type]
        if number == _TENSOR_NAME and wire == LEN:
            lo, hi = _span(value, "a tensor name")
            return bytes(data[lo:hi]).decode("utf-8", "replace")
    return ""


def _onnx_tensor(value: ValueInfo) -> TensorInfo:
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in value.shape or ())
    dtype = ONNX_DTYPES.get(value.elem_type)
    return TensorInfo(name=value.name, shape=dims, dtype=str(dtype) if dtype is not None else "unknown")


def _onnx_softmax(producers: Dict[str, Tuple[str, Tuple[str, ...]]], tensor: str) -> bool:
    seen: Set[str] = set()
    while tensor not in seen:
        seen.add(tensor)
        op, inputs = producers.get(tensor, ("", ()))
        if op == "Softmax":
            return True
        if op not in _ONNX_PASS_THROUGH or not inputs:
            return False
        tensor = inputs[0]
    return False
