"""The metadata-field flags shared by ``slidelite classify`` and ``slidelite metadata embed`` (one definition),
and the number/size parsers ``slidelite convert`` uses for its preprocessing flags too.

``--labels FILE --input-size HxW --mean M[,M,M] --std S[,S,S] --crop-pct P --layout nchw|nhwc
--interpolation NAME --resize-mode shorter_side|squash --output-kind logits|probabilities``: each replaces or
supplies one field of a model's metadata (see :class:`slidelite.metadata_fields.MetadataFields`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, TypeVar

import click

from ..errors import UsageError
from ..metadata import INTERPOLATIONS, LAYOUTS, OUTPUT_KINDS, RESIZE_MODES, LabelsFileError, load_labels_file
from ..metadata_fields import MetadataFields

F = TypeVar("F", bound=Callable[..., Any])

FIELD_OPTIONS = (
    click.option("--labels", type=click.Path(path_type=Path), default=None, metavar="FILE",
                 help="Labels file, one label per line in output order."),
    click.option("--input-size", default=None, metavar="HxW", help="Input height x width (or one number)."),
    click.option("--mean", default=None, metavar="M[,M,M]",
                 help="Normalization mean per channel, 0..1 pixel units: x = (pixel/255 - mean) / std."),
    click.option("--std", default=None, metavar="S[,S,S]", help="Normalization std per channel, 0..1 pixel units."),
    click.option("--crop-pct", type=click.FloatRange(0.05, 1.0), default=None,
                 help="Centre-crop fraction (1: no crop). Default: the model's metadata, else 0.875."),
    click.option("--layout", type=click.Choice([layout.lower() for layout in LAYOUTS], case_sensitive=False),
                 default=None, help="Input layout. Default: the model's metadata, else from the input shape."),
    click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default=None,
                 help="Resize filter. Default: the model's metadata, else bicubic."),
    click.option("--resize-mode", type=click.Choice(RESIZE_MODES), default=None,
                 help="shorter_side (keep the aspect ratio, then crop) or squash. Default: the metadata, else "
                      "shorter_side."),
    click.option("--output-kind", type=click.Choice(OUTPUT_KINDS), default=None,
                 help="Whether the output is logits or probabilities. Default: the metadata, else probabilities "
                      "when the graph ends in a softmax."),
)


def metadata_field_options(command: F) -> F:
    """Add the metadata-field flags (:data:`FIELD_OPTIONS`) to a click command."""
    for option in reversed(FIELD_OPTIONS):
        command = option(command)
    return command


def metadata_fields(labels: Optional[Path], input_size: Optional[str], mean: Optional[str], std: Optional[str],
                    crop_pct: Optional[float], layout: Optional[str], interpolation: Optional[str],
                    resize_mode: Optional[str], output_kind: Optional[str], name: Optional[str] = None) -> MetadataFields:
    """The :class:`MetadataFields` the flags give.

    Raises:
        UsageError: a malformed number list or size, or an unreadable labels file.
    """
    return MetadataFields(labels=_labels(labels), input_size=parse_size(input_size), mean=parse_floats(mean, "--mean"),
                          std=parse_floats(std, "--std"), crop_pct=crop_pct,
                          layout=layout.upper() if layout else None, interpolation=interpolation,
                          resize_mode=resize_mode, output_kind=output_kind, name=name)


def parse_floats(value: Optional[str], option: str) -> Optional[Tuple[float, ...]]:
    """Parse ``0.5,0.5,0.5`` (commas or spaces)."""
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in re.split(r"[,\s]+", value.strip()) if v)
    except ValueError:
        raise UsageError(f"{option} '{value}': expected numbers separated by commas, e.g. 0.485,0.456,0.406") from None
    if not numbers:
        raise UsageError(f"{option} '{value}': expected at least one number")
    return numbers


def parse_size(value: Optional[str], img_size: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """``--input-size HxW`` (or one number) / ``--img-size N`` -> (H, W)."""
    if value is None:
        return (img_size, img_size) if img_size else None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", value)
    if not match or int(match.group(1)) < 1 or (match.group(2) is not None and int(match.group(2)) < 1):
        raise UsageError(f"--input-size '{value}': expected HxW such as 224x224, or one number")
    height = int(match.group(1))
    return (height, int(match.group(2) or height))


def _labels(path: Optional[Path]) -> Optional[Tuple[str, ...]]:
    if path is None:
        return None
    try:
        return tuple(load_labels_file(str(path)))
    except LabelsFileError as exc:
        raise UsageError(f"--labels {path}: {exc}") from None
