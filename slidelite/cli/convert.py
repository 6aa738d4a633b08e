"""``slidelite convert``: turn a PyTorch classifier (zoo model + checkpoint, or any ``module:attr`` factory)
into an ONNX (or TFLite) model file with embedded metadata, optionally int8, behind a parity gate.

torch is imported only when the command runs; without the converter extras it prints one line saying
what to install. Exit codes: 0 written, 1 conversion refused (nothing written), 2 usage error.
"""
from __future__ import annotations

import importlib.util

import re
from pathlib import Path
from typing import Optional, Tuple

import click

from ..errors import SlideliteError, UsageError
from ..metadata import COLOR_MODES, INTERPOLATIONS
from ._common import error_boundary, print_warning

EXTRAS_MESSAGE = 'slidelite convert needs the converter extras: pip install "slidelite[convert]"'


def _floats(value: Optional[str], option: str) -> Optional[Tuple[float, ...]]:
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


def _size(value: Optional[str], img_size: Optional[int]) -> Optional[Tuple[int, int]]:
    """``--input-size HxW`` (or one number) / ``--img-size N`` -> (H, W)."""
    if value is None:
        return (img_size, img_size) if img_size else None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", value)
    if not match or int(match.group(1)) < 1:
        raise UsageError(f"--input-size '{value}': expected HxW such as 224x224, or one number")
    height = int(match.group(1))
    return (height, int(match.group(2) or height))


def _require_extras() -> None:
    """Raise a one-line error when torch or onnx is not installed (checked without importing them)."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "torch")):
        raise SlideliteError(EXTRAS_MESSAGE)


@click.command("convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", "model", metavar="NAME|MODULE:ATTR", default=None,
              help="Zoo model name (slidelite models) or module:attr of any torch classifier factory. "
                   "Default with --checkpoint: read from the checkpoint's stored config.")
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), default=None,
              help="Weights: state_dict or training checkpoint (loaded with weights_only=True).")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Labels file, one per line (default: the model's label set, else class_<i>).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default="onnx", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--int8", is_flag=True, help="Quantize to int8 (needs --calib).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Folder of calibration/validation images (also used by the parity check).")
@click.option("--int8-recipe", default=None,
              help="int8 recipe of the format: onnx dynamic-matmul (default), static-qdq-matmul, ...; tflite "
                   "dynamic-int8 (default), full-int8; both: weight-only (int8-stored weights, fp32 compute) "
                   "(docs/converter.md, docs/tflite.md).")
@click.option("--target", default=None, metavar="x86-avx2|x86-vnni|arm64|arm64-dotprod|generic|auto",
              help="Deployment CPU: picks the int8 recipe for it (auto: this machine's SIMD flags) unless "
                   "--int8-recipe is given; the report says why (docs/converter.md).")
@click.option("--img-size", type=click.IntRange(min=1), default=None, help="Square input size (e.g. 224).")
@click.option("--input-size", default=None, metavar="HxW", help="Input height x width (overrides --img-size).")
@click.option("--mean", default=None, metavar="M[,M,M]", help="Normalization mean per channel (0..1 scale).")
@click.option("--std", default=None, metavar="S[,S,S]", help="Normalization std per channel (0..1 scale).")
@click.option("--crop-pct", type=click.FloatRange(0.05, 1.0), default=None, help="Centre-crop fraction.")
@click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default=None)
@click.option("--color-mode", type=click.Choice(COLOR_MODES), default=None)
@click.option("--dynamic-batch", is_flag=True, help="Export a dynamic batch axis (default: batch 1).")
@click.option("--opset", type=click.IntRange(17, 23), default=None, help="ONNX opset (default 20).")
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0), default=0.99, show_default=True,
              help="Refuse int8 whose top-1 agreement with fp32 is lower.")
@click.option("--force", is_flag=True, help="Write int8 even under --min-agreement (never when fp32 parity fails).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--name", default=None, help="Model name in the metadata (default: the architecture).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads for verification and latency.")
@click.option("--max-calib-images", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--latency-runs", type=click.IntRange(min=0), default=20, show_default=True,
              help="Timed runs per model in the report (0: skip).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@error_boundary
def command(model: Optional[str], checkpoint: Optional[Path], labels: Optional[Path], fmt: str, output: Path,
            int8: bool, calib: Optional[Path], int8_recipe: Optional[str], target: Optional[str], img_size: Optional[int], input_size: Optional[str],
            mean: Optional[str], std: Optional[str], crop_pct: Optional[float], interpolation: Optional[str],
            color_mode: Optional[str], dynamic_batch: bool, opset: Optional[int], min_agreement: float,
            force: bool, overwrite: bool, name: Optional[str], threads: int, max_calib_images: int,
            latency_runs: int, quiet: bool) -> int:
    """Convert a PyTorch image classifier to a model file with embedded metadata, verified against torch."""
    if model is None and checkpoint is None:
        raise UsageError("give --model (a zoo name or module:attr) and/or --checkpoint")
    overrides = dict(input_size=_size(input_size, img_size), mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                     crop_pct=crop_pct, interpolation=interpolation, color_mode=color_mode)
    _require_extras()
    from slidelite.convert import ConversionJob, PreprocessOverrides, convert

    job = ConversionJob(output=output, model=model, checkpoint=checkpoint, labels=labels, format=fmt, int8=int8,
                        calib=calib, int8_recipe=int8_recipe, target=target, preprocess=PreprocessOverrides(**overrides),
                        dynamic_batch=dynamic_batch, min_agreement=min_agreement, force=force, overwrite=overwrite,
                        name=name, threads=threads, progress=not quiet, max_calib_images=max_calib_images,
                        latency_runs=latency_runs)
    if opset is not None:
        job.opset = opset
    result = convert(job)
    for warning in result.warnings:
        print_warning(warning)
    click.echo(result.report)
    return 0
