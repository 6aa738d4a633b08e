"""A minimal, defensive reader of ONNX ``ModelProto`` files in pure Python (stdlib + numpy, no ``onnx``).

Two levels:

* the protobuf wire format (:func:`read_varint`, :func:`iter_fields`): works on any buffer (``bytes``,
  ``mmap``, ``memoryview``) without copying; length-delimited fields are returned as ``(start, end)``
  offsets, so a multi-megabyte ``graph`` field is skipped in O(1) when only metadata is wanted;
* the ONNX messages the numpy backend needs (:func:`parse_model`): graph nodes with attributes,
  initializers (``raw_data`` and the typed ``*_data`` fields), inputs/outputs with shapes, opset imports
  and ``metadata_props``.

Every malformed, truncated or oversized input raises :class:`ProtobufError` (a ``ValueError``); the
path-level :func:`load_onnx_model` turns it into a one-line :class:`~slidelite.errors.ModelError` naming
the file (:mod:`slidelite.model_file` reads ``metadata_props`` with :func:`model_metadata_props`). Loops
always consume input, nested graphs are depth-limited and every tensor's data size is checked against its
declared shape before numpy sees it.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..errors import ModelError

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]
FieldValue = Union[int, Tuple[int, int]]

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5

# ModelProto field numbers (onnx/onnx.proto3)
MODEL_IR_VERSION = 1
MODEL_PRODUCER_NAME = 2
MODEL_GRAPH = 7
MODEL_OPSET_IMPORT = 8
MODEL_METADATA_PROPS = 14
# StringStringEntryProto
ENTRY_KEY, ENTRY_VALUE = 1, 2

#: Nested graphs (If/Loop bodies) deeper than this are refused.
MAX_GRAPH_DEPTH = 8
#: Tensors of higher rank are refused (ONNX models in practice stay far below).
MAX_RANK = 16

# TensorProto.DataType -> numpy dtype (STRING, complex and bfloat16 are not supported)
ONNX_DTYPES: Dict[int, np.dtype] = {
    1: np.dtype("float32"), 2: np.dtype("uint8"), 3: np.dtype("int8"), 4: np.dtype("uint16"),
    5: np.dtype("int16"), 6: np.dtype("int32"), 7: np.dtype("int64"), 9: np.dtype("bool"),
    10: np.dtype("float16"), 11: np.dtype("float64"), 12: np.dtype("uint32"), 13: np.dtype("uint64"),
}
# TensorProto field that holds a data type's values when raw_data is not used (float16 as its bit pattern)
_TYPED_FIELD: Dict[int, int] = {1: 4, 2: 5, 3: 5, 4: 5, 5: 5, 6: 5, 9: 5, 10: 5, 7: 7, 11: 10, 12: 11, 13: 11}


class ProtobufError(ValueError):
    """The buffer is not valid protobuf/ONNX; ``truncated`` tells a cut-off buffer apart."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: name, ONNX element type and shape (``int``, a symbolic ``str`` or None)."""

    name: str
    elem_type: int
    shape: Optional[Tuple[Union[int, str, None], ...]]

    @property
    def dtype(self) -> Optional[np.dtype]:
        """The numpy dtype of ``elem_type`` (None when numpy has no equivalent)."""
        return ONNX_DTYPES.get(self.elem_type)


@dataclass
class Node:
    """One graph node: op type, domain, input/output tensor names ('' = omitted optional) and attributes."""

    op_type: str
    domain: str
    name: str
    inputs: List[str]
    outputs: List[str]
    attributes: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """A ``GraphProto``: nodes in file order, initializers as numpy arrays, graph inputs and outputs."""

    name: str
    nodes: List[Node]
    initializers: Dict[str, np.ndarray]
    inputs: List[ValueInfo]
    outputs: List[ValueInfo]


@dataclass
class Model:
    """A ``ModelProto``: IR version, producer, ``{domain: opset}`` imports, the main graph, metadata_props."""

    ir_version: int
    producer_name: str
    opset_imports: Dict[str, int]
    graph: Graph
    metadata_props: Dict[str, str]


# --------------------------------------------------------------------------------------------- wire format

def read_varint(buf: Buffer, pos: int, end: int) -> Tuple[int, int]:
    """Decode the base-128 varint at ``pos``; returns ``(value, next_pos)``."""
    value = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("varint runs past the end of the data", truncated=True)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def iter_fields(buf: Buffer, start: int = 0, end: Optional[int] = None) -> Iterator[Tuple[int, int, FieldValue]]:
    """Yield ``(field_number, wire_type, value)`` for each field of the message in ``buf[start:end]``.

    ``value`` is the integer for VARINT/FIXED32/FIXED64 fields and ``(start, end)`` for LEN fields.
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield number, wire, value
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise ProtobufError(f"field {number} needs {length} bytes, {end - pos} left", truncated=True)
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise ProtobufError(f"field {number} runs past the end of the data", truncated=True)
            yield number, wire, struct.unpack_from("<I" if size == 4 else "<Q", buf, pos)[0]
            pos += size
        else:
            raise ProtobufError(f"unsupported wire type {wire} (field {number})")


def _signed64(value: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64 (how protobuf encodes negative ints)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(buf: Buffer, span: FieldValue, what: str) -> str:
    lo, hi = _span(span, what)
    try:
        return bytes(buf[lo:hi]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"{what} is not UTF-8 text") from None


def _span(value: FieldValue, what: str) -> Tuple[int, int]:
    if not isinstance(value, tuple):
        raise ProtobufError(f"{what} has the wrong wire type")
    return value


def _varints(buf: Buffer, wire: int, value: FieldValue) -> List[int]:
    """A repeated varint field's values from one occurrence: packed (LEN) or a single VARINT."""
    if wire == VARINT:
        return [_signed64(value)]  # type: ignore[arg-type]
    lo, hi = _span(value, "packed integers")
    out = []
    while lo < hi:
        item, lo = read_varint(buf, lo, hi)
        out.append(_signed64(item))
    return out


def _floats(buf: Buffer, wire: int, value: FieldValue, fmt: str = "<f") -> List[float]:
    """A repeated float/double field's values from one occurrence: packed (LEN) or a single FIXED32/64."""
    size = struct.calcsize(fmt)
    if wire in (FIXED32, FIXED64):
        if (wire == FIXED32) != (size == 4):
            raise ProtobufError("float field has the wrong wire type")
        return [struct.unpack(fmt, struct.pack("<I" if size == 4 else "<Q", value))[0]]
    lo, hi = _span(value, "packed floats")
    if (hi - lo) % size:
        raise ProtobufError("packed float field length is not a multiple of the element size")
    return list(struct.unpack_from(f"<{(hi - lo) // size}{fmt[1]}", buf, lo))


# --------------------------------------------------------------------------------------------- messages

def string_map(buf: Buffer, start: int, end: int) -> Tuple[str, str]:
    """Decode one ``StringStringEntryProto`` (``metadata_props`` entry) into ``(key, value)``."""
    parts = {ENTRY_KEY: "", ENTRY_VALUE: ""}
    for number, wire, value in iter_fields(buf, start, end):
        if number in parts and wire == LEN:
            parts[number] = _text(buf, value, "a metadata_props entry")
    return parts[ENTRY_KEY], parts[ENTRY_VALUE]


def model_metadata_props(buf: Buffer) -> Dict[str, str]:
    """Walk the top level of an ONNX ``ModelProto`` and return its ``metadata_props`` (the graph is skipped).

    Raises:
        ProtobufError: the buffer is not an ONNX model (no ``ir_version``/``graph``), or is truncated.
    """
    props: Dict[str, str] = {}
    seen = set()
    for number, wire, value in iter_fields(buf):
        seen.add((number, wire))
        if number == MODEL_METADATA_PROPS and wire == LEN:
            key, text = string_map(buf, *_span(value, "metadata_props"))
            props[key] = text
    if (MODEL_IR_VERSION, VARINT) not in seen or (MODEL_GRAPH, LEN) not in seen:
        raise ProtobufError("not an ONNX ModelProto (no ir_version or graph)")
    return props


def parse_tensor(buf: Buffer, start: int, end: int) -> Tuple[str, np.ndarray]:
    """Decode a ``TensorProto`` into ``(name, array)``; the array owns its (aligned, writable) memory."""
    name, dims, data_type = "", [], 1
    raw: Optional[Tuple[int, int]] = None
    typed: Dict[int, List[Any]] = {}
    for number, wire, value in iter_fields(buf, start, end):
        if number == 1:
            dims.extend(_varints(buf, wire, value))
        elif number == 2 and wire == VARINT:
            data_type = value  # type: ignore[assignment]
        elif number == 8 and wire == LEN:
            name = _text(buf, value, "a tensor name")
        elif number == 9 and wire == LEN:
            raw = _span(value, "raw_data")
        elif number == 4:
            typed.setdefault(number, []).extend(_floats(buf, wire, value))
        elif number in (5, 7, 11):
            typed.setdefault(number, []).extend(_varints(buf, wire, value))
        elif number == 10:
            typed.setdefault(number, []).extend(_floats(buf, wire, value, "<d"))
        elif number in (6, 13):
            what = "string data" if number == 6 else "external data"
            raise ProtobufError(f"tensor '{name or '?'}' uses {what}, which is not supported")
    dtype = ONNX_DTYPES.get(data_type)  # type: ignore[arg-type]
    if dtype is None:
        raise ProtobufError(f"tensor '{name}' has unsupported data type {data_type}")
    if len(dims) > MAX_RANK or any(not 0 <= d < 1 << 40 for d in dims):
        raise ProtobufError(f"tensor '{name}' has an invalid shape {dims}")
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if raw is not None:
        lo, hi = raw
        if typed or hi - lo != count * dtype.itemsize:
            raise ProtobufError(f"tensor '{name}': shape {dims} needs {count * dtype.itemsize} bytes, raw_data has {hi - lo}")
        array = np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=count, offset=lo).astype(dtype)
    else:
        array = _typed_array(name, data_type, dtype, typed, count)  # type: ignore[arg-type]
    return name, array.reshape(dims)


def _typed_array(name: str, data_type: int, dtype: np.dtype, typed: Dict[int, List[Any]], count: int) -> np.ndarray:
    """The values of a tensor stored in its typed ``*_data`` field (the one ONNX prescribes for its type)."""
    expected = _TYPED_FIELD[data_type]
    values = typed.get(expected, [])
    if set(typed) - {expected} or len(values) != count:
        raise ProtobufError(f"tensor '{name}': shape needs {count} values of type {dtype}, the file has {len(values)}")
    if expected == 4 or expected == 10:
        return np.array(values, dtype=np.float64).astype(dtype)
    if expected == 11:
        return np.array([v & 0xFFFFFFFFFFFFFFFF for v in values], dtype=np.uint64).astype(dtype)
    as_int64 = np.array(values, dtype=np.int64)
    return as_int64.astype(np.uint16).view(np.float16) if data_type == 10 else as_int64.astype(dtype)


def _parse_shape(buf: Buffer, start: int, end: int) -> Tuple[Union[int, str, None], ...]:
    dims: List[Union[int, str, None]] = []
    for number, wire, value in iter_fields(buf, start, end):
        if number == 1 and wire == LEN:
            dim: Union[int, str, None] = None
            for dnum, dwire, dvalue in iter_fields(buf, *_span(value, "a dimension")):
                if dnum == 1 and dwire == VARINT:
                    dim = _signed64(dvalue)  # type: ignore[arg-type]
                elif dnum == 2 and dwire == LEN:
                    dim = _text(buf, dvalue, "a dimension name") or None
            dims.append(dim)
            if len(dims) > MAX_RANK:
                raise ProtobufError("a value has more than %d dimensions" % MAX_RANK)
    return tuple(dims)


def _parse_value_info(buf: Buffer, start: int, end: int) -> ValueInfo:
    name, elem_type, shape = "", 0, None
    for number, wire, value in iter_fields(buf, start, end):
        if number == 1 and wire == LEN:
            name = _text(buf, value, "a value name")
        elif number == 2 and wire == LEN:  # TypeProto
            for tnum, twire, tvalue in iter_fields(buf, *_span(value, "a type")):
                if tnum != 1 or twire != LEN:  # only tensor_type
                    continue
                for num, w, v in iter_fields(buf, *_span(tvalue, "a tensor type")):
                    if num == 1 and w == VARINT:
                        elem_type = v  # type: ignore[assignment]
                    elif num == 2 and w == LEN:
                        shape = _parse_shape(buf, *_span(v, "a shape"))
    return ValueInfo(name, elem_type, shape)


def _parse_attribute(buf: Buffer, start: int, end: int, depth: int) -> Tuple[str, Any]:
    """Decode an ``AttributeProto`` into ``(name, python value)`` (ints, floats, bytes, arrays, graphs)."""
    name, attr_type = "", 0
    scalars: Dict[int, Any] = {}
    floats: List[float] = []
    ints: List[int] = []
    strings: List[bytes] = []
    tensors: List[np.ndarray] = []
    graphs: List[Graph] = []
    for number, wire, value in iter_fields(buf, start, end):
        if number == 1 and wire == LEN:
            name = _text(buf, value, "an attribute name")
        elif number == 20 and wire == VARINT:
            attr_type = value  # type: ignore[assignment]
        elif number == 2 and wire == FIXED32:
            scalars[2] = _floats(buf, wire, value)[0]
        elif number == 3 and wire == VARINT:
            scalars[3] = _varints(buf, wire, value)[0]
        elif number == 4 and wire == LEN:
            lo, hi = _span(value, "a string attribute")
            scalars[4] = bytes(buf[lo:hi])
        elif number == 5 and wire == LEN:
            scalars[5] = parse_tensor(buf, *_span(value, "a tensor attribute"))[1]
        elif number == 6 and wire == LEN:
            scalars[6] = parse_graph(buf, *_span(value, "a graph attribute"), depth=depth + 1)
        elif number == 7:
            floats.extend(_floats(buf, wire, value))
        elif number == 8:
            ints.extend(_varints(buf, wire, value))
        elif number == 9 and wire == LEN:
            lo, hi = _span(value, "a strings attribute")
            strings.append(bytes(buf[lo:hi]))
        elif number == 10 and wire == LEN:
            tensors.append(parse_tensor(buf, *_span(value, "a tensors attribute"))[1])
        elif number == 11 and wire == LEN:
            graphs.append(parse_graph(buf, *_span(value, "a graphs attribute"), depth=depth + 1))
    by_type: Dict[int, Callable[[], Any]] = {
        1: lambda: scalars.get(2, 0.0), 2: lambda: scalars.get(3, 0), 3: lambda: scalars.get(4, b""),
        4: lambda: scalars.get(5), 5: lambda: scalars.get(6), 6: lambda: floats, 7: lambda: ints,
        8: lambda: strings, 9: lambda: tensors, 10: lambda: graphs,
    }
    if attr_type not in by_type:
        raise ProtobufError(f"attribute '{name}' has unsupported type {attr_type}")
    result = by_type[attr_type]()
    if result is None:
        raise ProtobufError(f"attribute '{name}' has no value")
    return name, result


def _parse_node(buf: Buffer, start: int, end: int, depth: int) -> Node:
    node = Node(op_type="", domain="", name="", inputs=[], outputs=[])
    for number, wire, value in iter_fields(buf, start, end):
        if wire != LEN:
            continue
        if number == 1:
            node.inputs.append(_text(buf, value, "a node input"))
        elif number == 2:
            node.outputs.append(_text(buf, value, "a node output"))
        elif number == 3:
            node.name = _text(buf, value, "a node name")
        elif number == 4:
            node.op_type = _text(buf, value, "an op type")
        elif number == 7:
            node.domain = _text(buf, value, "a node domain")
        elif number == 5:
            key, attr = _parse_attribute(buf, *_span(value, "an attribute"), depth=depth)
            node.attributes[key] = attr
    if not node.op_type:
        raise ProtobufError(f"node '{node.name}' has no op_type")
    return node


def parse_graph(buf: Buffer, start: int, end: int, depth: int = 0) -> Graph:
    """Decode a ``GraphProto`` (nested graphs up to :data:`MAX_GRAPH_DEPTH` levels)."""
    if depth > MAX_GRAPH_DEPTH:
        raise ProtobufError(f"graphs nested deeper than {MAX_GRAPH_DEPTH} levels")
    graph = Graph(name="", nodes=[], initializers={}, inputs=[], outputs=[])
    for number, wire, value in iter_fields(buf, start, end):
        if wire != LEN:
            continue
        if number == 1:
            graph.nodes.append(_parse_node(buf, *_span(value, "a node"), depth=depth))
        elif number == 2:
            graph.name = _text(buf, value, "a graph name")
        elif number == 5:
            key, array = parse_tensor(buf, *_span(value, "an initializer"))
            graph.initializers[key] = array
        elif number == 15:
            raise ProtobufError("sparse initializers are not supported")
        elif number == 11:
            graph.inputs.append(_parse_value_info(buf, *_span(value, "a graph input")))
        elif number == 12:
            graph.outputs.append(_parse_value_info(buf, *_span(value, "a graph output")))
    return graph


def parse_model(buf: Buffer) -> Model:
    """Decode a whole ONNX ``ModelProto`` from ``buf``.

    Raises:
        ProtobufError: malformed, truncated or unsupported content (external data, sparse or string tensors).
    """
    ir_version: Optional[int] = None
    producer, opsets, props = "", {}, {}
    graph: Optional[Graph] = None
    for number, wire, value in iter_fields(buf):
        if number == MODEL_IR_VERSION and wire == VARINT:
            ir_version = value  # type: ignore[assignment]
        elif number == MODEL_PRODUCER_NAME and wire == LEN:
            producer = _text(buf, value, "producer_name")
        elif number == MODEL_GRAPH and wire == LEN:
            graph = parse_graph(buf, *_span(value, "graph"))
        elif number == MODEL_OPSET_IMPORT and wire == LEN:
            domain, version = "", 0
            for onum, owire, ovalue in iter_fields(buf, *_span(value, "opset_import")):
                if onum == 1 and owire == LEN:
                    domain = _text(buf, ovalue, "an opset domain")
                elif onum == 2 and owire == VARINT:
                    version = _signed64(ovalue)  # type: ignore[arg-type]
            opsets["ai.onnx" if domain == "" else domain] = version
        elif number == MODEL_METADATA_PROPS and wire == LEN:
            key, text = string_map(buf, *_span(value, "metadata_props"))
            props[key] = text
    if ir_version is None or graph is None:
        raise ProtobufError("not an ONNX ModelProto (no ir_version or graph)")
    return Model(ir_version, producer, opsets, graph, props)


# --------------------------------------------------------------------------------------------- files

def load_onnx_model(path: Union[str, Path]) -> Model:
    """Decode the whole ONNX model at ``path`` (memory-mapped): graph, initializers, opsets, metadata_props.

    Raises:
        ModelError: the file is missing, unreadable, empty, truncated, malformed or uses unsupported
            storage (external data, sparse or string tensors); one line naming the file.
    """
    try:
        with open(path, "rb") as f:
            if not f.seek(0, 2):
                raise ModelError(f"{path}: the file is empty; re-download or re-convert the model")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return parse_model(view)
    except ProtobufError as exc:
        hint = "the file is truncated; re-download it" if exc.truncated else "not a valid ONNX model"
        raise ModelError(f"{path}: {exc} ({hint})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
