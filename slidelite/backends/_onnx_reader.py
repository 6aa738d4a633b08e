"""A minimal reader of the protobuf wire format, enough to walk an ONNX ``ModelProto`` (stdlib only).

Works on any buffer (``bytes``, ``mmap``, ``memoryview``) without copying: length-delimited fields are
returned as ``(start, end)`` offsets into the buffer, so a multi-megabyte ``graph`` field is skipped in
O(1). Every malformed or truncated input raises :class:`ProtobufError`.
"""
from __future__ import annotations

import struct
from typing import Dict, Iterator, Optional, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview]

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5

# ModelProto field numbers (onnx/onnx.proto3)
MODEL_IR_VERSION = 1
MODEL_GRAPH = 7
MODEL_METADATA_PROPS = 14
# StringStringEntryProto
ENTRY_KEY, ENTRY_VALUE = 1, 2

FieldValue = Union[int, Tuple[int, int]]


class ProtobufError(ValueError):
    """The buffer is not valid protobuf wire format; ``truncated`` tells a cut-off buffer apart."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


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
        if shift >= 64:
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


def string_map(buf: Buffer, start: int, end: int) -> Tuple[str, str]:
    """Decode one ``StringStringEntryProto`` (``metadata_props`` entry) into ``(key, value)``."""
    parts = {ENTRY_KEY: "", ENTRY_VALUE: ""}
    for number, wire, value in iter_fields(buf, start, end):
        if number in parts and wire == LEN:
            lo, hi = value  # type: ignore[misc]
            try:
                parts[number] = bytes(buf[lo:hi]).decode("utf-8")
            except UnicodeDecodeError:
                raise ProtobufError("metadata_props entry is not UTF-8") from None
    return parts[ENTRY_KEY], parts[ENTRY_VALUE]


def model_metadata_props(buf: Buffer) -> Dict[str, str]:
    """Walk the top level of an ONNX ``ModelProto`` and return its ``metadata_props``.

    Raises:
        ProtobufError: the buffer is not an ONNX model (no ``ir_version``/``graph``), or is truncated.
    """
    props: Dict[str, str] = {}
    seen = set()
    for number, wire, value in iter_fields(buf):
        seen.add((number, wire))
        if number == MODEL_METADATA_PROPS and wire == LEN:
            key, text = string_map(buf, *value)  # type: ignore[misc]
            props[key] = text
    if (MODEL_IR_VERSION, VARINT) not in seen or (MODEL_GRAPH, LEN) not in seen:
        raise ProtobufError("not an ONNX ModelProto (no ir_version or graph)")
    return props
