"""The slidelite model metadata document (schema version 1).

A model file (``.onnx`` or ``.tflite``) carries one JSON document that tells the runtime everything
it needs: labels, the input tensor, the preprocessing, the output kind, precision and provenance.
ONNX stores it in ``metadata_props`` under :data:`ONNX_METADATA_KEY`; TFLite stores it as the
associated file :data:`TFLITE_METADATA_FILE` inside the standard TFLite Metadata. The full schema is
documented in ``docs/model-format.md``.

Only the standard library is used here, so the metadata can be parsed on any board.

Pixel normalization is defined as ``x = (pixel / 255 - mean) / std`` per channel, with pixels in
0..255 in the model's colour mode. A graph that folds normalization in and takes raw 0..255 floats
declares ``mean = 0`` and ``std = 1/255``. Integer inputs additionally declare ``quantization``
(``q = round(x / scale) + zero_point``, clipped to the dtype's range).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import MetadataError

SCHEMA_NAME = "slidelite.metadata"
SCHEMA_VERSION = 1
ONNX_METADATA_KEY = "slidelite.metadata"
TFLITE_METADATA_FILE = "slidelite_metadata.json"
MAX_LABELS = 100_000
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

LAYOUTS = ("NCHW", "NHWC")
INPUT_DTYPES = ("float32", "uint8", "int8")
COLOR_MODES = ("RGB", "L")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
RESIZE_MODES = ("shorter_side", "squash")
OUTPUT_KINDS = ("logits", "probabilities")
PRECISIONS = ("fp32", "fp16", "int8", "int8-weights", "mixed")


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of an integer tensor: ``real = (q - zero_point) * scale``."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class InputSpec:
    """The model's single image input tensor."""

    name: str
    height: int
    width: int
    layout: str = "NCHW"
    dtype: str = "float32"
    quantization: Optional[Quantization] = None

    @property
    def channels_last(self) -> bool:
        """True when the tensor is NHWC."""
        return self.layout == "NHWC"


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded image becomes the input tensor (timm semantics for resize and crop)."""

    color_mode: str = "RGB"
    resize_mode: str = "shorter_side"
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: Tuple[float, ...] = (0.485, 0.456, 0.406)
    std: Tuple[float, ...] = (0.229, 0.224, 0.225)

    @property
    def channels(self) -> int:
        """Number of colour channels the model expects (3 for RGB, 1 for L)."""
        return 3 if self.color_mode == "RGB" else 1


@dataclass(frozen=True)
class OutputSpec:
    """The model's class-score output tensor."""

    name: str
    kind: str = "logits"
    quantization: Optional[Quantization] = None


@dataclass(frozen=True)
class Provenance:
    """Where the model file came from."""

    architecture: str = ""
    checkpoint_sha256: str = ""
    converter_version: str = ""
    source: str = ""
    license: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """The parsed, validated metadata document of one model file."""

    name: str
    labels: Tuple[str, ...]
    input: InputSpec
    preprocess: PreprocessSpec
    output: OutputSpec
    precision: str = "fp32"
    description: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        """Number of labels (equals the output width)."""
        return len(self.labels)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON-ready document, with ``schema`` and ``schema_version`` first."""
        body = asdict(self)
        body.pop("schema_version")
        body["labels"] = list(self.labels)
        body["preprocess"]["mean"] = list(self.preprocess.mean)
        body["preprocess"]["std"] = list(self.preprocess.std)
        body["metrics"] = dict(self.metrics)
        return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, **body}

    def to_json(self) -> str:
        """Serialize to a compact JSON string (UTF-8 safe)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def parse_metadata(document: "str | bytes", source: str = "model") -> ModelMetadata:
    """Parse and validate a metadata JSON document.

    Args:
        document: the JSON text (``str`` or UTF-8 ``bytes``).
        source: the file the document came from, named in error messages.

    Raises:
        MetadataError: with a one-line message naming ``source`` and the problem.
    """
    if isinstance(document, bytes):
        if len(document) > MAX_DOCUMENT_BYTES:
            raise MetadataError(f"{source}: slidelite metadata is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError:
            raise MetadataError(f"{source}: slidelite metadata is not UTF-8 text") from None
    if len(document) > MAX_DOCUMENT_BYTES:
        raise MetadataError(f"{source}: slidelite metadata is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        raw = json.loads(document)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(f"{source}: slidelite metadata is not valid JSON ({exc})") from None
    return metadata_from_dict(raw, source)


def metadata_from_dict(raw: Any, source: str = "model") -> ModelMetadata:
    """Validate a decoded metadata document and build :class:`ModelMetadata`.

    Raises:
        MetadataError: when a field is missing, has the wrong type or an unknown value.
    """
    reader = _Reader(source)
    top = reader.mapping(raw, "metadata")
    if top.get("schema") != SCHEMA_NAME:
        raise MetadataError(f"{source}: metadata is not a {SCHEMA_NAME} document (schema={top.get('schema')!r})")
    version = top.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MetadataError(f"{source}: metadata field 'schema_version' must be an integer")
    if version > SCHEMA_VERSION or version < 1:
        raise MetadataError(
            f"{source}: metadata schema version {version} is not supported by this slidelite "
            f"(supports 1..{SCHEMA_VERSION}); upgrade slidelite: pip install -U slidelite"
        )
    labels = reader.labels(reader.field(top, "labels"))
    inp = reader.mapping(reader.field(top, "input"), "input")
    pre = reader.mapping(reader.field(top, "preprocess"), "preprocess")
    out = reader.mapping(reader.field(top, "output"), "output")
    prov = reader.mapping(top.get("provenance", {}), "provenance")
    metrics = reader.mapping(top.get("metrics", {}), "metrics")

    preprocess = PreprocessSpec(
        color_mode=reader.choice(pre, "color_mode", COLOR_MODES, "preprocess"),
        resize_mode=reader.choice(pre, "resize_mode", RESIZE_MODES, "preprocess"),
        crop_pct=reader.number(pre, "crop_pct", "preprocess", low=0.05, high=1.0),
        interpolation=reader.choice(pre, "interpolation", INTERPOLATIONS, "preprocess"),
        mean=reader.vector(pre, "mean", "preprocess"),
        std=reader.vector(pre, "std", "preprocess", positive=True),
    )
    if len(preprocess.mean) not in (1, preprocess.channels) or len(preprocess.std) not in (1, preprocess.channels):
        raise MetadataError(
            f"{source}: metadata preprocess mean/std need 1 or {preprocess.channels} values for colour mode "
            f"{preprocess.color_mode}"
        )
    dtype = reader.choice(inp, "dtype", INPUT_DTYPES, "input")
    input_spec = InputSpec(
        name=reader.text(inp, "name", "input"),
        height=reader.integer(inp, "height", "input", low=1, high=16384),
        width=reader.integer(inp, "width", "input", low=1, high=16384),
        layout=reader.choice(inp, "layout", LAYOUTS, "input"),
        dtype=dtype,
        quantization=reader.quantization(inp, "input"),
    )
    if dtype != "float32" and input_spec.quantization is None:
        raise MetadataError(f"{source}: metadata input dtype {dtype} needs 'quantization' (scale, zero_point)")
    output_spec = OutputSpec(
        name=reader.text(out, "name", "output"),
        kind=reader.choice(out, "kind", OUTPUT_KINDS, "output"),
        quantization=reader.quantization(out, "output"),
    )
    return ModelMetadata(
        name=reader.text(top, "name", "metadata"),
        labels=labels,
        input=input_spec,
        preprocess=preprocess,
        output=output_spec,
        precision=reader.choice(top, "precision", PRECISIONS, "metadata"),
        description=str(top.get("description", "")),
        provenance=Provenance(**{k: str(prov.get(k, "")) for k in Provenance.__dataclass_fields__}),
        metrics=dict(metrics),
        schema_version=version,
    )


class _Reader:
    """Typed field access that turns every problem into a one-line :class:`MetadataError`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> MetadataError:
        return MetadataError(f"{self.source}: metadata {message}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"section '{where}' must be a JSON object, got {type(value).__name__}")
        return value

    def field(self, obj: Mapping[str, Any], key: str, where: str = "metadata") -> Any:
        if key not in obj:
            raise self.fail(f"is missing the field '{where}.{key}'" if where != "metadata" else f"is missing the field '{key}'")
        return obj[key]

    def text(self, obj: Mapping[str, Any], key: str, where: str) -> str:
        value = self.field(obj, key, where)
        if not isinstance(value, str) or not value:
            raise self.fail(f"field '{where}.{key}' must be a non-empty string")
        return value

    def choice(self, obj: Mapping[str, Any], key: str, allowed: Sequence[str], where: str) -> str:
        value = self.field(obj, key, where)
        if value not in allowed:
            raise self.fail(f"field '{where}.{key}' is {value!r}; expected one of {', '.join(allowed)}")
        return value

    def number(self, obj: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
        value = self.field(obj, key, where)
        if not _finite_number(value):
            raise self.fail(f"field '{where}.{key}' must be a number")
        if not low <= value <= high:
            raise self.fail(f"field '{where}.{key}' = {value} is outside [{low}, {high}]")
        return float(value)

    def integer(self, obj: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
        value = self.field(obj, key, where)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"field '{where}.{key}' must be an integer")
        if not low <= value <= high:
            raise self.fail(f"field '{where}.{key}' = {value} is outside [{low}, {high}]")
        return value

    def vector(self, obj: Mapping[str, Any], key: str, where: str, positive: bool = False) -> Tuple[float, ...]:
        value = self.field(obj, key, where)
        if not isinstance(value, list) or not value or not all(_finite_number(v) for v in value):
            raise self.fail(f"field '{where}.{key}' must be a non-empty list of numbers")
        if positive and any(v <= 0 for v in value):
            raise self.fail(f"field '{where}.{key}' must hold positive numbers")
        return tuple(float(v) for v in value)

    def quantization(self, obj: Mapping[str, Any], where: str) -> Optional[Quantization]:
        value = obj.get("quantization")
        if value is None:
            return None
        q = self.mapping(value, f"{where}.quantization")
        scale = self.number(q, "scale", f"{where}.quantization", low=1e-30, high=1e30)
        zero_point = self.integer(q, "zero_point", f"{where}.quantization", low=-128, high=255)
        return Quantization(scale=scale, zero_point=zero_point)

    def labels(self, value: Any) -> Tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("field 'labels' must be a non-empty list of strings")
        if len(value) > MAX_LABELS:
            raise self.fail(f"field 'labels' has {len(value)} entries; at most {MAX_LABELS} are allowed")
        if not all(isinstance(v, str) for v in value):
            raise self.fail("field 'labels' must hold only strings")
        return tuple(value)


def _finite_number(value: Any) -> bool:
    """True for a finite JSON number that fits in a float (not a bool, not an integer like 10**400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class LabelsFileError(ValueError):
    """A labels file cannot be used; the message says why (without the path)."""


def load_labels_file(path: str) -> List[str]:
    """Read a labels file, refusing a missing or unreadable file, a file with no labels and empty lines.

    Raises:
        LabelsFileError: one line saying what is wrong (the caller names the file).
    """
    try:
        labels = read_labels_file(path)
    except FileNotFoundError:
        raise LabelsFileError("labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsFileError(f"cannot read the labels file ({exc}); give a UTF-8 text file, one label per line") from None
    empty = [i + 1 for i, label in enumerate(labels) if not label]
    if empty:
        raise LabelsFileError(f"line {empty[0]} is empty; every class needs a label")
    if not labels:
        raise LabelsFileError("the labels file is empty; give one label per line")
    return labels


def read_labels_file(path: str) -> List[str]:
    """Read a labels file: one label per line, blank trailing lines ignored, a UTF-8 byte-order mark dropped."""
    with open(path, encoding="utf-8-sig") as handle:
        return labels_from_text(handle.read())


def labels_from_text(text: str) -> List[str]:
    """The labels of a labels file's text: one per line (stripped), blank trailing lines ignored, a leading
    UTF-8 byte-order mark dropped."""
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]
