"""Write a slidelite metadata document into a model file made elsewhere, with the standard library only.

* ONNX: the ``ModelProto`` top level is copied field by field, any old ``metadata_props`` entry with the key
  :data:`~slidelite.metadata.ONNX_METADATA_KEY` left out, and one new entry appended (protobuf messages may list
  their fields in any order, so appending is valid; every other byte is kept).
* TFLite: the flatbuffer is kept as it is; its appended ZIP archive of associated files (the standard TFLite
  Metadata's labels, if any) is written again with :data:`~slidelite.metadata.TFLITE_METADATA_FILE` added or
  replaced, stored uncompressed as the TFLite Metadata populator does.

The result is written atomically: a temporary file beside the destination, then a rename.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

from .backends._onnx_reader import FIXED32, FIXED64, LEN, MODEL_METADATA_PROPS, VARINT, ProtobufError, read_varint
from .backends._onnx_reader import string_map
from .errors import ModelError
from .metadata import ONNX_METADATA_KEY, TFLITE_METADATA_FILE, ModelMetadata


def onnx_with_metadata(model: bytes, document: str) -> bytes:
    """The ONNX ``model`` bytes with ``document`` as its ``slidelite.metadata`` property (replacing an old one).

    Raises:
        ProtobufError: ``model`` is not a well-formed protobuf message.
    """
    kept = bytearray()
    for number, wire, start, value_start, end in _top_level_fields(model):
        if number == MODEL_METADATA_PROPS and wire == LEN and string_map(model, value_start, end)[0] == ONNX_METADATA_KEY:
            continue
        kept += model[start:end]
    entry = _length_delimited(1, ONNX_METADATA_KEY.encode()) + _length_delimited(2, document.encode("utf-8"))
    return bytes(kept + _length_delimited(MODEL_METADATA_PROPS, entry))


def tflite_with_metadata(model: bytes, document: str) -> bytes:
    """The TFLite ``model`` bytes with ``document`` as its associated file ``slidelite_metadata.json``."""
    flatbuffer, members = model, []
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            infos = archive.infolist()
            members = [(info.filename, archive.read(info)) for info in infos if info.filename != TFLITE_METADATA_FILE]
            if infos:
                flatbuffer = model[:min(info.header_offset for info in infos)]
    except zipfile.BadZipFile:
        pass  # no associated files yet
    packed = io.BytesIO(flatbuffer)
    # mode "a" on bytes that are no archive appends a new one with file-absolute offsets, as the populator does
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in [*members, (TFLITE_METADATA_FILE, document.encode("utf-8"))]:
            archive.writestr(name, data)
    return packed.getvalue()


def embed_metadata(source: Path, fmt: str, metadata: ModelMetadata, destination: Path) -> Path:
    """Write ``source`` (an ``onnx``/``tflite`` file) with ``metadata`` embedded to ``destination``, atomically.

    ``destination`` may be ``source`` itself (in place); on any failure it is left as it was.

    Raises:
        ModelError: the file cannot be read, parsed or written (one line naming it).
    """
    try:
        model = Path(source).read_bytes()
    except OSError as exc:
        raise ModelError(f"{source}: cannot read model file ({exc.strerror or exc})") from None
    try:
        data = onnx_with_metadata(model, metadata.to_json()) if fmt == "onnx" else tflite_with_metadata(
            model, metadata.to_json())
    except ProtobufError as exc:
        raise ModelError(f"{source}: cannot rewrite the ONNX model ({exc})") from None
    write_atomically(Path(destination), data, mode_from=Path(source))
    return Path(destination)


def write_atomically(destination: Path, data: bytes, mode_from: Path) -> None:
    """Write ``data`` to a temporary file beside ``destination``, then rename it over ``destination``.

    Raises:
        ModelError: the folder is not writable or the disk is full (the destination is untouched).
    """
    folder = destination.parent if str(destination.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ModelError(f"{destination}: cannot write there ({exc.strerror or exc})") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(mode_from, temporary)
        os.replace(temporary, destination)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ModelError(f"{destination}: cannot write it ({exc.strerror or exc})") from None


def _top_level_fields(buf: bytes) -> Iterator[Tuple[int, int, int, int, int]]:
    """``(number, wire type, field start, value start, field end)`` of each top-level protobuf field."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        value_start = pos
        if wire == VARINT:
            _, pos = read_varint(buf, pos, end)
        elif wire == LEN:
            length, value_start = read_varint(buf, pos, end)
            pos = value_start + length
        elif wire in (FIXED64, FIXED32):
            pos += 8 if wire == FIXED64 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > end:
            raise ProtobufError("field past the end of the data", truncated=True)
        yield number, wire, start, value_start, pos


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | LEN) + _varint(len(payload)) + payload
