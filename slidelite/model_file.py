"""Model files: format detection, structural checks, sha256 and slidelite metadata extraction.

Only the standard library is used (plus the backend afterwards, for :func:`check_signature`):

* TFLite files are flatbuffers with the identifier ``TFL3`` at bytes 4..8. A truncated file is detected
  by walking the root table and the ``buffers`` vector (every weight buffer must lie inside the file).
  The metadata is the associated file ``slidelite_metadata.json`` in the ZIP archive that the TFLite
  Metadata populator appends to the flatbuffer.
* ONNX files are protobuf ``ModelProto`` messages with no magic number: the top level is walked
  (``ir_version`` and ``graph`` must be present, every length must fit in the file) and the metadata is
  the ``metadata_props`` entry ``slidelite.metadata``.
"""
from __future__ import annotations

import mmap
import os
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple, Union

from ._paths import PERMISSION_DENIED, file_problem
from .backends._flatbuffer import Buffer, FlatbufferError
from .backends._onnx_reader import ProtobufError, model_metadata_props
from .errors import MetadataError, ModelError
from .metadata import MAX_DOCUMENT_BYTES, ONNX_METADATA_KEY, TFLITE_METADATA_FILE, ModelMetadata, parse_metadata

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend

FORMATS = ("onnx", "tflite")
TFLITE_IDENTIFIER = b"TFL3"
_TFLITE_MODEL_SUBGRAPHS, _TFLITE_MODEL_BUFFERS = 2, 4  # Model field indices
_TFLITE_BUFFER_DATA, _TFLITE_BUFFER_OFFSET, _TFLITE_BUFFER_SIZE = 0, 1, 2


@dataclass(frozen=True)
class ModelFile:
    """An opened model file.

    Attributes:
        path: the file.
        format: ``'onnx'`` or ``'tflite'``.
        size: the file size in bytes.
        metadata: the parsed slidelite metadata, or None when it is missing or invalid.
        metadata_error: why ``metadata`` is None (one line), else None.
    """

    path: Path
    format: str
    size: int
    metadata: Optional[ModelMetadata]
    metadata_error: Optional[str] = None

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the file (computed on first use, cached per file state)."""
        from .models import file_sha256  # lazy: the shipped-model registry is not needed to open a file

        return file_sha256(self.path)

    @property
    def name(self) -> str:
        """The path as a string, used in messages."""
        return str(self.path)


def open_model_file(path: Union[str, "os.PathLike[str]"]) -> ModelFile:
    """Detect the format of ``path``, check its structure and read its slidelite metadata.

    Metadata problems do not raise here (``info`` shows a file without metadata); they are recorded in
    :attr:`ModelFile.metadata_error` and raised by :func:`read_metadata`.

    Raises:
        ModelError: missing, a directory, unreadable, empty, not an ONNX/TFLite model, or truncated.
    """
    path = Path(path)
    name = str(path)
    problem, size = file_problem(path)
    if problem:
        raise ModelError(f"{name}: {problem}: pass an .onnx or .tflite model file")
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            fmt, document = _inspect(data, name)
    except PermissionError:
        raise ModelError(f"{name}: {PERMISSION_DENIED}") from None
    except OSError as exc:
        raise ModelError(f"{name}: cannot read model file ({exc.strerror or exc})") from None
    if fmt == "tflite":
        document = _tflite_document(path)
    metadata, error = _parse(document, name)
    return ModelFile(path=path, format=fmt, size=size, metadata=metadata, metadata_error=error)


def read_metadata(model_file: ModelFile) -> ModelMetadata:
    """The slidelite metadata of ``model_file``.

    Raises:
        MetadataError: the file has no slidelite metadata, or the document is invalid.
    """
    if model_file.metadata is None:
        raise MetadataError(model_file.metadata_error or f"{model_file.name} has no slidelite metadata")
    return model_file.metadata


def check_signature(metadata: ModelMetadata, backend: "Backend", name: str) -> None:
    """Check the metadata against the loaded model: label count, input size/layout/dtype.

    Raises:
        MetadataError: naming both numbers when they disagree.
    """
    width = backend.output_shape[-1] if backend.output_shape else None
    if width is not None and width != metadata.num_classes:
        raise MetadataError(
            f"{name}: metadata has {metadata.num_classes} labels but the model output has {width} classes"
        )
    inp, channels = metadata.input, metadata.preprocess.channels
    expected = (channels, inp.height, inp.width) if not inp.channels_last else (inp.height, inp.width, channels)
    actual = tuple(backend.input_shape[1:])
    if len(actual) != 3 or any(a is not None and a != e for a, e in zip(actual, expected)):
        raise MetadataError(
            f"{name}: metadata input {inp.layout} {list(expected)} does not match the model input shape "
            f"{_shape_text(backend.input_shape)}"
        )
    if backend.input_dtype != inp.dtype:
        raise MetadataError(f"{name}: metadata input dtype {inp.dtype} does not match the model's {backend.input_dtype}")


def tflite_subgraph_count(path: Union[str, "os.PathLike[str]"]) -> int:
    """How many subgraphs the TFLite file at ``path`` declares (0: nothing to run; the engines crash on it).

    Raises:
        ModelError: the file cannot be read or its root table lies outside the file.
    """
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            subgraphs = Buffer(data).root().vector(_TFLITE_MODEL_SUBGRAPHS, 4)
            return 0 if subgraphs is None else subgraphs[1]
    except FlatbufferError:
        raise ModelError(f"{path}: truncated TFLite model file; download or convert it again") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror or exc})") from None


def _shape_text(shape: Tuple[Optional[int], ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _inspect(data: mmap.mmap, name: str) -> Tuple[str, Optional[str]]:
    """Return ``(format, onnx metadata document or None)`` after the structural checks."""
    if data[4:8] == TFLITE_IDENTIFIER:
        _check_tflite(data, name)
        return "tflite", None
    try:
        props = model_metadata_props(data)
    except ProtobufError as exc:
        if exc.truncated and data[:1] == b"\x08":  # starts with ModelProto.ir_version: a cut-off ONNX file
            raise ModelError(f"{name}: truncated ONNX model file ({exc}); download or convert it again") from None
        raise ModelError(f"{name}: not an ONNX or TFLite model file") from None
    return "onnx", props.get(ONNX_METADATA_KEY)


def _check_tflite(data: mmap.mmap, name: str) -> None:
    """Walk the flatbuffer root table and every weight buffer; anything outside the file means truncation."""
    try:
        buf = Buffer(data)
        for table in buf.root().tables(_TFLITE_MODEL_BUFFERS):
            table.vector(_TFLITE_BUFFER_DATA, 1)
            offset = table.scalar(_TFLITE_BUFFER_OFFSET, "<Q")
            if offset > 1:  # large models keep weights outside the flatbuffer, at an absolute file offset
                buf.check(int(offset), int(table.scalar(_TFLITE_BUFFER_SIZE, "<Q")))
    except FlatbufferError:
        raise ModelError(f"{name}: truncated TFLite model file; download or convert it again") from None


def _tflite_document(path: Path) -> Optional[bytes]:
    """The slidelite metadata document from the ZIP archive appended to a TFLite file, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            with archive.open(TFLITE_METADATA_FILE) as member:
                return member.read(MAX_DOCUMENT_BYTES + 1)  # parse_metadata reports an oversized document
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error, NotImplementedError):
        return None


def _parse(document: Optional[Union[str, bytes]], name: str) -> Tuple[Optional[ModelMetadata], Optional[str]]:
    if document is None:
        return None, (
            f"{name} has no slidelite metadata: convert it with `slidelite convert`, or embed a metadata "
            "document as described in docs/model-format.md"
        )
    try:
        return parse_metadata(document, source=name), None
    except MetadataError as exc:
        return None, str(exc)
