"""Model files: format detection, structural checks, sha256 and slidelite metadata extraction.

Only the standard library is used (plus the backend afterwards, for :func:`check_signature`):

* TFLite files are flatbuffers with the identifier ``TFL3`` at bytes 4..8. A truncated file is detected
  by walking the root table and the ``buffers`` vector (every weight buffer must lie inside the file).
  The metadata is the associated file ``slidelite_metadata.json`` in the ZIP archive that the TFLite
  Metadata populator appends to the flatbuffer; a file made elsewhere without it is read through its standard
  TFLite Metadata (labels file, NormalizationOptions, ImageProperties; :mod:`slidelite.tflite_metadata`).
* ONNX files are protobuf ``ModelProto`` messages with no magic number: the top level is walked
  (``ir_version`` and ``graph`` must be present, every length must fit in the file) and the metadata is
  the ``metadata_props`` entry ``slidelite.metadata``.
"""
from __future__ import annotations

import mmap
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple, Union

from ._paths import PERMISSION_DENIED, file_problem
from .backends._flatbuffer import Buffer, FlatbufferError
from .backends._onnx_reader import ProtobufError, model_metadata_props
from .errors import MetadataError, ModelError
from .metadata import (MAX_DOCUMENT_BYTES, ONNX_METADATA_KEY, TFLITE_METADATA_FILE, ModelMetadata, labels_from_text,
                       parse_metadata)
from .metadata_fields import MEDIAPIPE_DEFAULTS, TIMM_DEFAULTS, MetadataFields, metadata_layer, resolve_metadata
from .signature import GraphSignature, read_signature, shape_text
from .tflite_metadata import read_standard_metadata, read_tflite_graph, standard_layer

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend

FORMATS = ("onnx", "tflite")
SLIDELITE_ORIGIN = "slidelite metadata"
STANDARD_TFLITE_ORIGIN = "standard TFLite Metadata"
MAX_LABELS_FILE_BYTES = 16 * 1024 * 1024
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
        metadata: the parsed slidelite metadata (or the standard TFLite Metadata mapped onto it), or None when
            it is missing or invalid.
        metadata_error: why ``metadata`` is None (one line), else None.
        metadata_origin: where ``metadata`` came from: ``SLIDELITE_ORIGIN`` or ``STANDARD_TFLITE_ORIGIN``.
        metadata_sources: for metadata mapped from elsewhere, ``{field: where its value came from}``.
    """

    path: Path
    format: str
    size: int
    metadata: Optional[ModelMetadata]
    metadata_error: Optional[str] = None
    metadata_origin: str = ""
    metadata_sources: Mapping[str, str] = field(default_factory=dict)

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
        document = _tflite_member(path, TFLITE_METADATA_FILE)
        if document is None:
            standard = _standard_tflite_metadata(path, name)
            if standard is not None:
                metadata, error, sources = standard
                return ModelFile(path=path, format=fmt, size=size, metadata=metadata, metadata_error=error,
                                 metadata_origin=STANDARD_TFLITE_ORIGIN, metadata_sources=sources)
    metadata, error = _parse(document, name)
    return ModelFile(path=path, format=fmt, size=size, metadata=metadata, metadata_error=error,
                     metadata_origin=SLIDELITE_ORIGIN if metadata is not None else "")


def read_metadata(model_file: ModelFile, fields: Optional[MetadataFields] = None) -> ModelMetadata:
    """The slidelite metadata of ``model_file``, with the user's ``fields`` (if any) replacing or supplying fields.

    Raises:
        MetadataError: the file has no usable metadata, or the fields leave one out that nothing determines.
    """
    return resolve_file_metadata(model_file, fields or MetadataFields())[0]


def resolve_file_metadata(model_file: ModelFile, fields: MetadataFields,
                          always: bool = False) -> Tuple[ModelMetadata, Dict[str, str]]:
    """The metadata of ``model_file`` with ``fields`` applied, and ``{field: where it came from}``.

    Each field comes from the flags, else the file's own metadata (when valid), else the graph (input shape, dtype,
    a final softmax), else timm's defaults for resize and crop; the result is checked against the graph. With no
    field given the file's own metadata is used as it is, unless ``always`` (then a missing field is named).

    Raises:
        MetadataError: the file has no usable metadata, or the fields leave one out that nothing determines.
        ModelError: the graph cannot be read.
    """
    own = model_file.metadata
    if not fields.given and (own is not None or not always):
        if own is None:
            raise MetadataError(model_file.metadata_error or f"{model_file.name} has no slidelite metadata")
        return own, dict(model_file.metadata_sources)
    layers = [fields.layer()]
    if own is not None:
        layers.append(metadata_layer(own, model_file.metadata_sources, model_file.metadata_origin))
    layers.append(TIMM_DEFAULTS)
    signature = read_signature(model_file.path, model_file.format)
    metadata, sources = resolve_metadata(signature, layers, model_file.name, own)
    check_file_signature(metadata, signature, model_file.name)
    return metadata, sources


def check_signature(metadata: ModelMetadata, backend: "Backend", name: str) -> None:
    """Check the metadata against the loaded model: label count, input size/layout/dtype.

    Raises:
        MetadataError: naming both numbers when they disagree.
    """
    _check_shapes(metadata, backend.input_shape, backend.input_dtype, backend.output_shape, name)


def check_file_signature(metadata: ModelMetadata, signature: GraphSignature, name: str) -> None:
    """:func:`check_signature` against the signature read from the file (no inference engine needed).

    Raises:
        MetadataError: naming both numbers when they disagree.
    """
    _check_shapes(metadata, signature.input.shape, signature.input.dtype, signature.output.shape, name)


def _check_shapes(metadata: ModelMetadata, input_shape: Sequence[Optional[int]], input_dtype: str,
                  output_shape: Sequence[Optional[int]], name: str) -> None:
    width = output_shape[-1] if output_shape else None
    if width is not None and width != metadata.num_classes:
        raise MetadataError(
            f"{name}: metadata has {metadata.num_classes} labels but the model output has {width} classes"
        )
    inp, channels = metadata.input, metadata.preprocess.channels
    expected = (channels, inp.height, inp.width) if not inp.channels_last else (inp.height, inp.width, channels)
    actual = tuple(input_shape[1:])
    if len(actual) != 3 or any(a is not None and a != e for a, e in zip(actual, expected)):
        raise MetadataError(
            f"{name}: metadata input {inp.layout} {list(expected)} does not match the model input shape "
            f"{shape_text(input_shape)}"
        )
    if input_dtype != inp.dtype:
        raise MetadataError(f"{name}: metadata input dtype {inp.dtype} does not match the model's {input_dtype}")


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


def _tflite_member(path: Path, member_name: str, limit: int = MAX_DOCUMENT_BYTES) -> Optional[bytes]:
    """An associated file from the ZIP archive appended to a TFLite file (at most ``limit + 1`` bytes), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            with archive.open(member_name) as member:
                return member.read(limit + 1)  # the caller reports an oversized member
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error, NotImplementedError):
        return None


def _standard_tflite_metadata(path: Path, name: str) -> Optional[Tuple[Optional[ModelMetadata], Optional[str], Dict[str, str]]]:
    """The standard TFLite Metadata mapped onto slidelite's: ``(metadata, error, sources)``; None when there is none."""
    advice = "pass the fields as flags (see `slidelite classify --help`) or embed them with `slidelite metadata embed`"
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            standard = read_standard_metadata(data)
            if standard is None:
                return None
            signature = read_tflite_graph(data)
    except (FlatbufferError, OSError) as exc:
        return None, f"{name}: its standard TFLite Metadata is damaged ({exc}); {advice}", {}
    labels = None
    if standard.labels_file:
        raw = _tflite_member(path, standard.labels_file, MAX_LABELS_FILE_BYTES)
        if raw is None or len(raw) > MAX_LABELS_FILE_BYTES:
            return None, (f"{name}: the labels file '{standard.labels_file}' that its TFLite Metadata names is not in "
                          f"the model's associated files (or is over {MAX_LABELS_FILE_BYTES} bytes); {advice}"), {}
        try:
            labels = tuple(labels_from_text(raw.decode("utf-8")))
        except UnicodeDecodeError:
            return None, f"{name}: the labels file '{standard.labels_file}' in its TFLite Metadata is not UTF-8 text", {}
    layers = [standard_layer(standard, labels, signature.input.dtype), MEDIAPIPE_DEFAULTS]
    try:
        metadata, sources = resolve_metadata(signature, layers, name)
        check_file_signature(metadata, signature, name)
    except MetadataError as exc:
        return None, f"{exc} (the file's standard TFLite Metadata does not say)", {}
    if standard.score_calibration:
        sources["score_calibration"] = "in the TFLite Metadata, not applied: scores are the model's own"
    return metadata, None, sources


def _parse(document: Optional[Union[str, bytes]], name: str) -> Tuple[Optional[ModelMetadata], Optional[str]]:
    if document is None:
        return None, (
            f"{name} has no slidelite metadata: pass --labels, --mean, --std (see `slidelite classify --help`), "
            "embed them with `slidelite metadata embed`, or convert the model with `slidelite convert`"
        )
    try:
        return parse_metadata(document, source=name), None
    except MetadataError as exc:
        return None, str(exc)
