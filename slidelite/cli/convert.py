"""``slidelite convert``: turn a PyTorch classifier (zoo model + checkpoint, or any ``module:attr`` factory)
into an ONNX (or TFLite) model file with embedded metadata, optionally int8, behind a parity gate.

torch is imported only when the command runs; without the converter extras it prints one line saying
what to install. Exit codes: 0 written, 1 conversion refused (nothing written), 2 usage error.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from ..errors import SlideliteError, UsageError
from ..metadata import COLOR_MODES, INTERPOLATIONS
from ._common import error_boundary, print_warning
from ._metadata_options import parse_floats, parse_size

EXTRAS_MESSAGE = 'slidelite convert needs the converter extras: pip install "slidelite[convert]"'


def parse_model_args(items: Tuple[str, ...]) -> Dict[str, Any]:
    """``--model-arg KEY=VALUE`` -> {KEY: VALUE}; VALUE is a Python literal (``64``, ``0.5``, ``True``), a
    comma-separated tuple (``2,2,6,2``) or else a string."""
    args: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--model-arg '{item}': expected KEY=VALUE, e.g. embed_dim=64 or depths=2,2,6,2")
        args[key.strip()] = _literal(text.strip())
    return args


def _literal(text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value


def default_output(checkpoint: Optional[Path], model: Optional[str], fmt: str) -> Path:
    """``<checkpoint stem>.<fmt>`` (else ``<model name>.<fmt>``) in the current folder."""
    stem = checkpoint.stem if checkpoint is not None else re.sub(r"[^\w.-]+", "_", str(model)).strip("_")
    return Path(f"{stem}.{fmt}")


def _require_extras() -> None:
    """Raise a one-line error when torch or onnx is not installed (checked without importing them)."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "torch")):
        raise SlideliteError(EXTRAS_MESSAGE)


@click.command("convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint_file", metavar="[CHECKPOINT]", required=False, type=click.Path(path_type=Path))
@click.option("--model", "-m", "model", metavar="NAME|MODULE:ATTR", default=None,
              help="Zoo model name (slidelite models) or module:attr of any torch classifier factory. "
                   "Default with a checkpoint: the stored config's, else the zoo model its weights fit.")
@click.option("--checkpoint", "-c", type=click.Path(path_type=Path), default=None,
              help="Weights: state_dict or training checkpoint (loaded with weights_only=True); also positional.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="Classes of the zoo model's head (default: from the checkpoint's weights, else the model's).")
@click.option("--model-arg", "model_arg", multiple=True, metavar="KEY=VALUE",
              help="Any other constructor argument of the zoo model, e.g. embed_dim=64 or depths=2,2,6,2 "
                   "(repeatable; default: from the checkpoint's weights and config).")
@click.option("--ema/--no-ema", default=None,
              help="Convert the checkpoint's EMA weights (state_dict_ema / model_ema) or its main weights "
                   "(default: the main weights when present; the report says which).")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Labels file, one per line (default: the model's label set, else class_<i>).")
@click.option("--allow-duplicate-labels", is_flag=True,
              help="Accept a labels file naming two classes alike (refused by default).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default="onnx", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="File to write (default: <checkpoint or model name>.<format> in the current folder).")
@click.option("--int8", is_flag=True, help="Quantize to int8 (needs --calib).")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Folder of calibration/validation images (also used by the parity check).")
@click.option("--int8-recipe", default=None,
              help="int8 recipe of the format: onnx dynamic-matmul, static-qdq-conv, static-qdq-matmul, ...; tflite "
                   "dynamic-int8, dynamic-int8-conv, full-int8; both: weight-only (int8-stored weights, fp32 compute). Default: chosen "
                   "by the graph (mostly conv: static-qdq-conv / dynamic-int8-conv, else the --target's MatMul recipe, "
                   "dynamic-matmul / dynamic-int8 without one; docs/converter.md, docs/tflite.md).")
@click.option("--target", default=None, metavar="x86-avx2|x86-vnni|arm64|arm64-dotprod|generic|auto",
              help="Deployment CPU: picks the MatMul int8 recipe for it (auto: this machine's SIMD flags) unless "
                   "--int8-recipe is given; the report says why (docs/converter.md).")
@click.option("--img-size", type=click.IntRange(min=1), default=None,
              help="Training resolution: a zoo model is built at this size (position tables) and fed square "
                   "images of it (default: from the checkpoint's weights, else the model's); needed for a module:attr "
                   "model that declares none and accepts several.")
@click.option("--input-size", default=None, metavar="HxW",
              help="Input height x width of the exported file (preprocessing only; overrides --img-size's).")
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
@click.option("--tflite-support-python", type=click.Path(path_type=Path), default=None, metavar="PYTHON",
              help="Python with tflite-support that writes TFLite Metadata (default: $SLIDELITE_TFLITE_SUPPORT_PYTHON, "
                   "else .venv-tflite beside the active environment, made by scripts/setup_tflite.sh).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@error_boundary
def command(checkpoint_file: Optional[Path], model: Optional[str], checkpoint: Optional[Path],
            num_classes: Optional[int], model_arg: Tuple[str, ...], ema: Optional[bool], labels: Optional[Path],
            allow_duplicate_labels: bool, fmt: str, output: Optional[Path], int8: bool, calib: Optional[Path],
            int8_recipe: Optional[str], target: Optional[str], img_size: Optional[int], input_size: Optional[str], mean: Optional[str],
            std: Optional[str], crop_pct: Optional[float], interpolation: Optional[str], color_mode: Optional[str],
            dynamic_batch: bool, opset: Optional[int], min_agreement: float, force: bool, overwrite: bool,
            name: Optional[str], threads: int, max_calib_images: int, latency_runs: int,
            tflite_support_python: Optional[Path], quiet: bool) -> int:
    """Convert a PyTorch image classifier to a model file with embedded metadata, verified against torch.

    CHECKPOINT (or --checkpoint) is a state_dict or training checkpoint; without --model its architecture and
    constructor arguments (classes, training size, widths, depths) are read from its config and weights.
    """
    if checkpoint_file is not None and checkpoint is not None:
        raise UsageError(f"give the checkpoint once: {checkpoint_file} and --checkpoint {checkpoint}")
    checkpoint = checkpoint or checkpoint_file
    if model is None and checkpoint is None:
        raise UsageError("give a CHECKPOINT and/or --model (a zoo name or module:attr)")
    overrides = dict(input_size=parse_size(input_size, img_size), mean=parse_floats(mean, "--mean"),
                     std=parse_floats(std, "--std"),
                     crop_pct=crop_pct, interpolation=interpolation, color_mode=color_mode)
    model_args = {**parse_model_args(model_arg),
                  **{k: v for k, v in (("num_classes", num_classes), ("img_size", img_size)) if v is not None}}
    _require_extras()
    from slidelite.convert import ConversionJob, PreprocessOverrides, convert
    from slidelite.convert.report import format_report

    job = ConversionJob(output=output or default_output(checkpoint, model, fmt), model=model, checkpoint=checkpoint,
                        model_args=model_args, ema=ema, labels=labels, allow_duplicate_labels=allow_duplicate_labels,
                        format=fmt, int8=int8, calib=calib, int8_recipe=int8_recipe, target=target,
                        preprocess=PreprocessOverrides(**overrides), dynamic_batch=dynamic_batch,
                        min_agreement=min_agreement, force=force, overwrite=overwrite, name=name, threads=threads,
                        progress=not quiet, max_calib_images=max_calib_images, latency_runs=latency_runs,
                        tflite_support_python=tflite_support_python)
    if opset is not None:
        job.opset = opset
    result = convert(job)
    for warning in result.warnings:
        print_warning(warning)
    click.echo(format_report(result, warnings=False))  # each warning once, on stderr
    return 0
