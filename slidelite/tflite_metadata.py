"""Read a TFLite file's signature and its *standard* TFLite Metadata with the standard library only.

Files made elsewhere (Model Maker, Teachable Machine, MediaPipe's own classifiers, tflite-support's metadata
writer) carry the standard TFLite Metadata: a ``ModelMetadata`` flatbuffer (``metadata_schema.fbs``, identifier
``M001``) in the model buffer named ``TFLITE_METADATA``, whose associated files (the labels) are packed in the
ZIP archive appended to the model. This module reads just what an image classifier needs:

* :func:`read_tflite_graph`: the first subgraph's input and output tensors (name, shape, dtype, quantization) and
  whether the output comes out of a ``SOFTMAX`` (through any quantize/dequantize/reshape ops after it);
* :func:`read_standard_metadata`: the model name and description, the input's ``NormalizationOptions`` and
  ``ImageProperties`` and the output's ``TENSOR_AXIS_LABELS`` file and score calibration;
* :func:`standard_layer`: those fields in slidelite's terms (a :mod:`slidelite.metadata_fields` layer).

The flatbuffer access is the runtime's bounds-checked table walker (:mod:`slidelite.backends._flatbuffer`); every
malformed offset raises :class:`FlatbufferError` (a ``ValueError``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .backends._flatbuffer import Buffer, FlatbufferError, Table
from .metadata_fields import Sourced
from .signature import GraphSignature, TensorInfo

FlatBuffer = Any  # bytes, bytearray, memoryview or mmap

METADATA_BUFFER_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"

# schema.fbs field indices
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_METADATA = 1, 2, 4, 6
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME, _TENSOR_QUANTIZATION = 0, 1, 3, 4
_QUANT_SCALE, _QUANT_ZERO_POINT = 2, 3
_OPERATOR_OPCODE, _OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 0, 1, 2
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_BUILTIN = 0, 3
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_METADATA_NAME, _METADATA_BUFFER = 0, 1
# metadata_schema.fbs field indices (a union takes two slots: its type, then its value)
_MD_NAME, _MD_DESCRIPTION, _MD_SUBGRAPHS = 0, 1, 3
_SG_INPUTS, _SG_OUTPUTS, _SG_INPUT_UNITS, _SG_OUTPUT_UNITS = 2, 3, 5, 6
_TM_CONTENT, _TM_UNITS, _TM_FILES = 3, 4, 6
_CONTENT_TYPE, _CONTENT_PROPERTIES = 0, 1
_IMAGE_COLOR_SPACE, _IMAGE_DEFAULT_SIZE = 0, 1
_UNIT_TYPE, _UNIT_OPTIONS = 0, 1
_FILE_NAME, _FILE_TYPE = 0, 2

TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
                9: "int8", 10: "float64"}
SOFTMAX, DEQUANTIZE, QUANTIZE, RESHAPE = 25, 6, 114, 22
_PASS_THROUGH_OPS = (DEQUANTIZE, QUANTIZE, RESHAPE)
CONTENT_IMAGE = 2
UNIT_NORMALIZATION, UNIT_SCORE_CALIBRATION = 1, 2
FILE_AXIS_LABELS, FILE_SCORE_CALIBRATION = 2, 4
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}


def read_tflite_graph(data: FlatBuffer) -> GraphSignature:
    """Read the first subgraph's signature from a TFLite model buffer.

    Raises:
        FlatbufferError: malformed offsets, or a model with no subgraph, input or output.
    """
    model = Buffer(data).root()
    subgraphs = model.tables(_MODEL_SUBGRAPHS)
    if not subgraphs:
        raise FlatbufferError("the model has no subgraph")
    graph = subgraphs[0]
    tensors = graph.tables(_SUBGRAPH_TENSORS)
    inputs, outputs = graph.ints(_SUBGRAPH_INPUTS), graph.ints(_SUBGRAPH_OUTPUTS)
    if not inputs or not outputs or max(inputs[0], outputs[0]) >= len(tensors):
        raise FlatbufferError("the model's first subgraph has no input or output tensor")
    codes = [max(code.scalar(_OPCODE_DEPRECATED_BUILTIN, "<b"), code.scalar(_OPCODE_BUILTIN, "<i"))
             for code in model.tables(_MODEL_OPERATOR_CODES)]
    producers = {}
    for op in graph.tables(_SUBGRAPH_OPERATORS):
        index = op.scalar(_OPERATOR_OPCODE, "<I")
        for out in op.ints(_OPERATOR_OUTPUTS):
            producers[out] = (codes[index] if index < len(codes) else -1, op.ints(_OPERATOR_INPUTS))
    return GraphSignature(input=_tensor(tensors[inputs[0]]), output=_tensor(tensors[outputs[0]]),
                       ends_in_softmax=_from_softmax(producers, outputs[0]))


def _tensor(table: Table) -> TensorInfo:
    quant = table.table(_TENSOR_QUANTIZATION)
    scales = quant.ints(_QUANT_SCALE, "<f4") if quant is not None else ()
    zeros = quant.ints(_QUANT_ZERO_POINT, "<i8") if quant is not None else ()
    return TensorInfo(name=table.string(_TENSOR_NAME), shape=table.ints(_TENSOR_SHAPE),
                      dtype=TENSOR_TYPES.get(table.scalar(_TENSOR_TYPE, "<b"), "unknown"),
                      scale=float(scales[0]) if len(scales) == 1 else None,
                      zero_point=int(zeros[0]) if len(zeros) == 1 else None)


def _from_softmax(producers: dict, tensor: int) -> bool:
    """True when ``tensor`` comes out of a SOFTMAX, possibly through (de)quantize and reshape ops."""
    for _ in range(8):
        code, inputs = producers.get(tensor, (None, ()))
        if code == SOFTMAX:
            return True
        if code not in _PASS_THROUGH_OPS or not inputs:
            return False
        tensor = inputs[0]
    return False


@dataclass(frozen=True)
class StandardMetadata:
    """What an image classifier's standard TFLite Metadata says (empty fields: the metadata is silent)."""

    name: str = ""
    description: str = ""
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    color_space: str = "UNKNOWN"
    default_size: Optional[Tuple[int, int]] = None  # (height, width)
    labels_file: str = ""
    score_calibration: bool = False


def read_standard_metadata(data: FlatBuffer) -> Optional[StandardMetadata]:
    """The standard TFLite Metadata of a TFLite model buffer, or None when it has none.

    Raises:
        FlatbufferError: the metadata buffer is malformed or is not a TFLite Metadata flatbuffer.
    """
    blob = _metadata_buffer(data)
    if blob is None:
        return None
    if blob[4:8] != METADATA_IDENTIFIER:
        raise FlatbufferError(f"the {METADATA_BUFFER_NAME} buffer is not TFLite Metadata (no {METADATA_IDENTIFIER.decode()} "
                              "identifier)")
    root = Buffer(blob).root()
    subgraphs = root.tables(_MD_SUBGRAPHS)
    graph = subgraphs[0] if subgraphs else None
    inputs = graph.tables(_SG_INPUTS) if graph is not None else []
    outputs = graph.tables(_SG_OUTPUTS) if graph is not None else []
    mean, std = (), ()
    color_space, size = "UNKNOWN", None
    if inputs:
        mean, std = _normalization(inputs[0].tables(_TM_UNITS) + (graph.tables(_SG_INPUT_UNITS) if graph else []))
        color_space, size = _image_properties(inputs[0])
    labels, calibration = "", False
    if outputs:
        files = outputs[0].tables(_TM_FILES)
        labels = next((f.string(_FILE_NAME) for f in files if f.scalar(_FILE_TYPE, "<b") == FILE_AXIS_LABELS), "")
        units = outputs[0].tables(_TM_UNITS) + graph.tables(_SG_OUTPUT_UNITS)
        calibration = any(u.scalar(_UNIT_TYPE, "<B") == UNIT_SCORE_CALIBRATION for u in units) or any(
            f.scalar(_FILE_TYPE, "<b") == FILE_SCORE_CALIBRATION for f in files)
    return StandardMetadata(name=root.string(_MD_NAME), description=root.string(_MD_DESCRIPTION), mean=mean, std=std,
                            color_space=color_space, default_size=size, labels_file=labels,
                            score_calibration=calibration)


def _metadata_buffer(data: FlatBuffer) -> Optional[bytes]:
    """The bytes of the model buffer that the ``TFLITE_METADATA`` entry names, or None."""
    model = Buffer(data).root()
    buffers = model.tables(_MODEL_BUFFERS)
    for entry in model.tables(_MODEL_METADATA):
        if entry.string(_METADATA_NAME) != METADATA_BUFFER_NAME:
            continue
        index = entry.scalar(_METADATA_BUFFER, "<I")
        if index >= len(buffers):
            raise FlatbufferError(f"the {METADATA_BUFFER_NAME} entry names buffer {index}, the model has {len(buffers)}")
        buffer = buffers[index]
        offset = buffer.scalar(_BUFFER_OFFSET, "<Q")
        if offset > 1:  # large models keep buffers outside the flatbuffer, at an absolute file offset
            size = buffer.scalar(_BUFFER_SIZE, "<Q")
            model.buf.check(offset, size)
            return bytes(data[offset:offset + size])
        return buffer.blob(_BUFFER_DATA)
    return None


def _normalization(units: List[Table]) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    for unit in units:
        options = unit.table(_UNIT_OPTIONS) if unit.scalar(_UNIT_TYPE, "<B") == UNIT_NORMALIZATION else None
        if options is not None:
            return options.ints(0, "<f4"), options.ints(1, "<f4")
    return (), ()


def _image_properties(tensor: Table) -> Tuple[str, Optional[Tuple[int, int]]]:
    content = tensor.table(_TM_CONTENT)
    if content is None or content.scalar(_CONTENT_TYPE, "<B") != CONTENT_IMAGE:
        return "UNKNOWN", None
    image = content.table(_CONTENT_PROPERTIES)
    if image is None:
        return "UNKNOWN", None
    size = image.table(_IMAGE_DEFAULT_SIZE)
    dims = (size.scalar(1, "<I"), size.scalar(0, "<I")) if size is not None else None
    return COLOR_SPACES.get(image.scalar(_IMAGE_COLOR_SPACE, "<b"), "UNKNOWN"), dims if dims and all(dims) else None


def standard_layer(metadata: StandardMetadata, labels: Optional[Tuple[str, ...]], input_dtype: str) -> Dict[str, Sourced]:
    """The fields the standard metadata sets, in slidelite's terms, each with its source.

    NormalizationOptions work on 0..255 pixels (``(pixel - mean) / std``); slidelite's mean/std are those divided
    by 255. Like MediaPipe, they are used for float inputs only: integer inputs take raw pixels.
    """
    layer: Dict[str, Sourced] = {}
    if metadata.name:
        layer["name"] = Sourced(metadata.name, "TFLite Metadata name")
    if metadata.description:
        layer["description"] = Sourced(metadata.description, "TFLite Metadata description")
    if labels is not None:
        layer["labels"] = Sourced(labels, f"TFLite Metadata labels file '{metadata.labels_file}'")
    if metadata.mean and metadata.std and input_dtype == "float32":
        where = (f"TFLite Metadata NormalizationOptions (mean {_numbers(metadata.mean)}, std {_numbers(metadata.std)} "
                 "on 0..255 pixels)")
        layer["mean"] = Sourced(tuple(m / 255.0 for m in metadata.mean), where)
        layer["std"] = Sourced(tuple(s / 255.0 for s in metadata.std), where)
    if metadata.color_space != "UNKNOWN":
        layer["color_mode"] = Sourced("L" if metadata.color_space == "GRAYSCALE" else "RGB",
                                      f"TFLite Metadata ImageProperties ({metadata.color_space})")
    if metadata.default_size is not None:
        layer["input_size"] = Sourced(metadata.default_size, "TFLite Metadata ImageProperties default_size")
    return layer


def _numbers(values: Tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
