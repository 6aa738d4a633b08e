"""Metadata for model files made elsewhere: fields from several sources resolved into one :class:`ModelMetadata`.

A field (labels, input size, layout, mean/std, crop, ...) is taken from the first *layer* that has it, in order:
the user's flags (:class:`MetadataFields`, shared by ``slidelite classify`` and ``slidelite metadata embed``), the
file's own metadata (slidelite's document, or the standard TFLite Metadata mapped by
:mod:`slidelite.model_file`), then what the graph determines (input shape, dtype, quantization, a final softmax),
then documented defaults. Fields nothing determines and no default covers (labels; mean/std of a float input; the
layout when the shape is ambiguous) are errors that name the flag to pass. The result records where each field
came from, which ``slidelite info`` prints.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import MetadataError
from .metadata import ModelMetadata, SCHEMA_NAME, SCHEMA_VERSION, metadata_from_dict
from .signature import GraphSignature, TensorInfo, shape_text


@dataclass(frozen=True)
class Sourced:
    """A field value and where it came from (shown by ``slidelite info``)."""

    value: Any
    source: str


Layer = Mapping[str, Sourced]

#: Defaults for a file with no metadata: timm's evaluation transform (what slidelite's own files use).
TIMM_DEFAULTS: Layer = {
    "resize_mode": Sourced("shorter_side", "default (timm evaluation transform)"),
    "crop_pct": Sourced(0.875, "default (timm evaluation transform)"),
    "interpolation": Sourced("bicubic", "default (timm evaluation transform)"),
}
#: Defaults for standard TFLite Metadata: MediaPipe's ImageClassifier resizes the whole image, bilinear, no crop.
MEDIAPIPE_DEFAULTS: Layer = {
    "resize_mode": Sourced("squash", "default (as MediaPipe's ImageClassifier: whole image resized, no crop)"),
    "crop_pct": Sourced(1.0, "default (as MediaPipe's ImageClassifier: whole image resized, no crop)"),
    "interpolation": Sourced("bilinear", "default (as MediaPipe's ImageClassifier)"),
}
_RAW_PIXEL_OFFSET = {"uint8": 0, "int8": -128}  # integer inputs take pixel + offset, as MediaPipe feeds them
_NO_QUANTIZATION = "none in the model (scale 1, zero point 0)"


@dataclass(frozen=True)
class MetadataFields:
    """Metadata fields a user gives for a file made elsewhere; None means not given.

    ``mean`` and ``std`` are in slidelite's units: ``x = (pixel / 255 - mean) / std``.
    """

    labels: Optional[Tuple[str, ...]] = None
    input_size: Optional[Tuple[int, int]] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    crop_pct: Optional[float] = None
    layout: Optional[str] = None
    interpolation: Optional[str] = None
    resize_mode: Optional[str] = None
    output_kind: Optional[str] = None
    name: Optional[str] = None

    @property
    def given(self) -> bool:
        """True when at least one field is set."""
        return any(getattr(self, f.name) is not None for f in fields(self))

    def layer(self) -> Dict[str, Sourced]:
        """The fields that are set, each sourced from its flag (``--input-size`` ...)."""
        return {f.name: Sourced(getattr(self, f.name), f"--{f.name.replace('_', '-')}")
                for f in fields(self) if getattr(self, f.name) is not None}


def metadata_layer(metadata: ModelMetadata, sources: Mapping[str, str], default_source: str) -> Dict[str, Sourced]:
    """The fields of an existing metadata document as a layer (each with its recorded source, else ``default_source``)."""
    inp, pre = metadata.input, metadata.preprocess
    values = {"labels": metadata.labels, "input_size": (inp.height, inp.width), "layout": inp.layout,
              "color_mode": pre.color_mode, "mean": pre.mean, "std": pre.std, "crop_pct": pre.crop_pct,
              "resize_mode": pre.resize_mode, "interpolation": pre.interpolation, "output_kind": metadata.output.kind,
              "name": metadata.name}
    return {key: Sourced(value, sources.get(key, default_source)) for key, value in values.items()}


def resolve_metadata(signature: GraphSignature, layers: Sequence[Layer], source: str,
                     base: Optional[ModelMetadata] = None) -> Tuple[ModelMetadata, Dict[str, str]]:
    """Resolve each field from the first layer that has it, the rest from the graph; validate the document.

    Args:
        signature: the file's input/output tensors (the graph's say on shape, dtype and softmax).
        layers: field layers, first wins (flags, then the file's metadata, then defaults).
        source: the file, named in error messages.
        base: an existing document whose other parts (precision, provenance, metrics) are kept.

    Returns:
        The metadata and ``{field: where it came from}``.

    Raises:
        MetadataError: a field nothing determines (naming the flag to pass), or an invalid value.
    """
    resolver = _Resolver(layers, source)
    inp, out = signature.input, signature.output
    if len(inp.shape) != 4:
        raise MetadataError(f"{source}: the model input '{inp.name}' has {len(inp.shape)} dimensions; an image "
                            "classifier takes a 4-d (batch, image) tensor")
    layout = resolver.pick("layout") or resolver.record("layout", _layout_from_shape(inp.shape, source), "model input shape")
    channels, height, width = _chw(inp.shape, layout)
    size = resolver.pick("input_size")
    if size is None:
        if height is None or width is None:
            raise MetadataError(f"{source}: the model input shape {shape_text(inp.shape)} does not fix the image size: "
                                "pass --input-size")
        size = resolver.record("input_size", (height, width), "model input shape")
    color = resolver.pick("color_mode") or resolver.record("color_mode", _color_mode(channels, source), "model input shape")
    labels = resolver.pick("labels")
    if labels is None:
        raise MetadataError(f"{source}: the model has no labels: pass --labels FILE (one label per line), or embed them "
                            "with `slidelite metadata embed`")
    if inp.dtype not in ("float32", *_RAW_PIXEL_OFFSET):
        raise MetadataError(f"{source}: the model input '{inp.name}' is {inp.dtype}; slidelite feeds float32, uint8 "
                            "or int8 images")
    input_doc: Dict[str, Any] = {"name": inp.name, "height": size[0], "width": size[1], "layout": layout,
                                 "dtype": inp.dtype}
    mean, std = resolver.pick("mean"), resolver.pick("std")
    if inp.dtype != "float32":
        scale, zero_point = _input_quantization(inp, base, resolver)
        input_doc["quantization"] = {"scale": scale, "zero_point": zero_point}
        if mean is None and std is None:
            mean, std = _raw_pixels(inp.dtype, scale, zero_point, resolver)
        elif resolver.sources["input_quantization"] == _NO_QUANTIZATION:
            raise MetadataError(f"{source}: the {inp.dtype} input '{inp.name}' has no quantization parameters, so "
                                "--mean/--std cannot be applied: leave them out to feed raw pixels")
    if mean is None or std is None:
        raise MetadataError(f"{source}: the normalization of the float input '{inp.name}' is unknown: pass --mean and "
                            "--std (in 0..1 pixel units, e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 for "
                            "ImageNet training, --mean 0 --std 0.00392157 for raw 0..255 input)")
    kind = resolver.pick("output_kind") or resolver.record(
        "output_kind", "probabilities" if signature.ends_in_softmax else "logits",
        "the graph ends in a softmax" if signature.ends_in_softmax else "the graph does not end in a softmax")
    document = dict(base.to_dict()) if base is not None else {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "precision": _precision(inp)}
    document.update({
        "name": resolver.pick("name") or (base.name if base is not None else _stem(source)),
        "labels": list(labels), "input": input_doc,
        "preprocess": {"color_mode": color, "resize_mode": resolver.pick("resize_mode"),
                       "crop_pct": resolver.pick("crop_pct"), "interpolation": resolver.pick("interpolation"),
                       "mean": list(mean), "std": list(std)},
        "output": {"name": out.name, "kind": kind, **_output_quantization(out, base, source)},
    })
    description = resolver.pick("description")
    if description:
        document["description"] = description
    return metadata_from_dict(document, source), resolver.sources


class _Resolver:
    """First-layer-wins field lookup that remembers each field's source."""

    def __init__(self, layers: Sequence[Layer], source: str) -> None:
        self.layers, self.source = layers, source
        self.sources: Dict[str, str] = {}

    def pick(self, key: str) -> Any:
        for layer in self.layers:
            if key in layer:
                self.sources[key] = layer[key].source
                return layer[key].value
        return None

    def record(self, key: str, value: Any, source: str) -> Any:
        self.sources[key] = source
        return value


def _layout_from_shape(shape: Tuple[Optional[int], ...], source: str) -> str:
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first != last:
        return "NCHW" if first else "NHWC"
    raise MetadataError(f"{source}: cannot tell the layout from the input shape {shape_text(shape)}: pass --layout nchw or "
                        "--layout nhwc")


def _chw(shape: Tuple[Optional[int], ...], layout: str) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    return (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])


def _color_mode(channels: Optional[int], source: str) -> str:
    if channels in (1, 3):
        return "RGB" if channels == 3 else "L"
    raise MetadataError(f"{source}: the model input has {channels} channels; slidelite feeds RGB (3) or grayscale (1) "
                        "images")


def _input_quantization(inp: TensorInfo, base: Optional[ModelMetadata], resolver: _Resolver) -> Tuple[float, int]:
    """The integer input's (scale, zero point): the tensor's, else the existing document's, else (1, 0)."""
    if inp.scale:
        return resolver.record("input_quantization", (inp.scale, inp.zero_point or 0), "model input tensor")
    if base is not None and base.input.quantization is not None:
        quant = base.input.quantization
        return resolver.record("input_quantization", (quant.scale, quant.zero_point), "slidelite metadata")
    return resolver.record("input_quantization", (1.0, 0), _NO_QUANTIZATION)


def _raw_pixels(dtype: str, scale: float, zero_point: int, resolver: _Resolver) -> Tuple[Tuple[float], Tuple[float]]:
    """mean/std that make the quantized input ``pixel`` (uint8) or ``pixel - 128`` (int8), as MediaPipe feeds it."""
    offset = _RAW_PIXEL_OFFSET[dtype]
    note = f"{dtype} input: raw pixels{' - 128' if offset else ''}, as MediaPipe feeds it"
    resolver.record("mean", None, note)
    resolver.record("std", None, note)
    return ((zero_point - offset) / 255.0,), (1.0 / (255.0 * scale),)


def _output_quantization(out: TensorInfo, base: Optional[ModelMetadata], source: str) -> Dict[str, Any]:
    """The integer output's quantization: the tensor's, else the existing document's; float outputs need none."""
    if out.dtype == "float32":
        return {}
    if out.scale:
        return {"quantization": {"scale": out.scale, "zero_point": out.zero_point or 0}}
    if base is not None and base.output.quantization is not None:
        return {"quantization": {"scale": base.output.quantization.scale,
                                 "zero_point": base.output.quantization.zero_point}}
    raise MetadataError(f"{source}: the {out.dtype} output '{out.name}' has no quantization parameters in the file, so "
                        "its scores cannot be read; write a full metadata document as in docs/model-format.md")


def _precision(inp: TensorInfo) -> str:
    return "fp32" if inp.dtype == "float32" else "int8"


def _stem(source: str) -> str:
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] or name




#: The order in which :func:`source_lines` lists fields (mean and std share a line when they share a source).
SOURCE_ORDER = ("name", "labels", "input_size", "layout", "color_mode", "mean/std", "input_quantization", "resize_mode",
                "crop_pct", "interpolation", "output_kind", "score_calibration")
_ALWAYS_LISTED = ("labels", "input_size", "layout", "color_mode", "mean/std", "resize_mode", "crop_pct", "interpolation",
                  "output_kind")


def source_lines(sources: Mapping[str, str], default: str) -> List[Tuple[str, str]]:
    """``[(field, where it came from)]`` in :data:`SOURCE_ORDER`; fields not in ``sources`` came from ``default``."""
    merged = dict(sources)
    if "mean" in merged or "std" in merged:
        merged["mean/std"] = ", ".join(dict.fromkeys((merged.pop("mean", default), merged.pop("std", default))))
    return [(key, merged.get(key, default)) for key in SOURCE_ORDER if key in merged or key in _ALWAYS_LISTED]
