"""The converter pipeline: named steps over a :class:`ConversionJob`, orchestrated by :func:`convert`.

    load_model -> reparameterize -> validation_set -> export (ONNX | TFLite) -> simplify -> verify fp32
    -> [int8 -> verify int8] -> latency -> embed metadata -> stage + rename -> report

Each step is a function in its own module and is usable on its own (tests call them one by one; the
TFLite route, :func:`slidelite.convert.tflite.convert_tflite`, reuses load, re-parameterize, the
calibration data, the metadata builder, the verify gates and the atomic output). Nothing is written to
``job.output`` unless every gate passed: the file is staged next to it and renamed at the end.
"""
from __future__ import annotations

import contextlib
import importlib
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import numpy as np

from slidelite.metadata import ModelMetadata

from .calibration import CalibrationSet, ImageFolderReader, image_files, load_calibration_set
from .errors import ConversionError
from .int8_coverage import choose_recipe, onnx_int8_fraction, onnx_weight_shares
from .int8_weights import pointwise_conv_weights, store_int8_weights
from .job import ConversionJob, ConversionResult, LoadedModel
from .labels import resolve_labels
from .load import load_model, reparameterize
from .model_metadata import build_metadata
from .onnx_export import embed_metadata, export_onnx, max_tensor_rank, onnx_logits, simplify_onnx
from .output import check_output_path, staged_output
from .quantize import DEFAULT_RECIPE, Int8Recipe, get_recipe, quantize_onnx
from .report import format_report, measure_latency
from .targets import target_recipe
from .verify import check_fp32, check_int8, compare_logits, torch_logits


def validation_set(job: ConversionJob, metadata: ModelMetadata) -> CalibrationSet:
    """Images for calibration and verification: ``job.calib``, else the sample photos shipped with the runtime."""
    folder = job.calib if job.calib is not None else default_validation_folder()
    return load_calibration_set(Path(folder), metadata, job.max_calib_images, job.progress)


def default_validation_folder() -> Path:
    """The runtime's bundled sample photos (``slidelite/samples``)."""
    import slidelite

    return Path(slidelite.__file__).resolve().parent / "samples"


def prepare(job: ConversionJob) -> Tuple[LoadedModel, ModelMetadata, CalibrationSet]:
    """Steps shared by every format: check the output path, load, re-parameterize, labels, fp32 metadata, images."""
    if job.int8:
        if job.format == "onnx":
            get_recipe(job.int8_recipe)
        if job.calib is None:
            raise ConversionError("--int8 needs calibration images: pass --calib DIR (a folder of photos)")
    check_output_path(job.output, job.overwrite, {"--checkpoint": job.checkpoint, "--labels": job.labels})
    if job.calib is not None:
        image_files(Path(job.calib))  # fail on a missing or empty folder before the slow steps
    loaded = reparameterize(load_model(job))
    labels = resolve_labels(job.labels, loaded.num_classes, loaded.label_set, job.allow_duplicate_labels)
    metadata = build_metadata(loaded, labels, name=job.name)
    return loaded, metadata, validation_set(job, metadata)


def convert(job: ConversionJob) -> ConversionResult:
    """Run the whole pipeline for ``job`` and return what was written and measured.

    Raises:
        SlideliteError: a one-line reason; nothing was written to ``job.output``.
    """
    if job.format not in ("onnx", "tflite"):
        raise ConversionError(f"unknown --format '{job.format}'; choose onnx or tflite")
    _, reason = target_recipe(job)  # an unknown --target fails here, before any work
    result = _tflite_route()(job) if job.format == "tflite" else convert_onnx(job)
    if reason:
        result.recipe_reason = reason
        result.report = format_report(result)
    return result


def _tflite_route():
    try:
        module = importlib.import_module("slidelite.convert.tflite")
    except ImportError as exc:
        raise ConversionError(f"the TFLite route is not available in this install ({exc})") from None
    return module.convert_tflite


def int8_weight_onnx(loaded: LoadedModel, inputs: np.ndarray, work: Path, job: ConversionJob) -> Path:
    """The ``weight-only`` recipe: round a copy of the module's weights onto the int8 grid with the calibration
    ``inputs``, export and simplify it, and store its weights as int8 (:mod:`slidelite.convert.int8_weights`)."""
    from .int8_weights import rounded_copy, store_int8_weights

    rounded = work / "rounded.onnx"
    export_onnx(rounded_copy(loaded.module, inputs), rounded, loaded.input_shape(1), opset=job.opset,
                dynamic_batch=job.dynamic_batch)
    simplify_onnx(rounded)
    store_int8_weights(rounded, work / "int8.onnx")
    return work / "int8.onnx"


def int8_onnx(recipe: Int8Recipe, fp32: Path, loaded: LoadedModel, images: CalibrationSet, input_name: str, work: Path,
              job: ConversionJob) -> Path:
    """The int8 file made with ``recipe`` in ``work``: weight-storage recipes re-export a rounded copy of the module
    (:func:`int8_weight_onnx`), the others quantize the ``fp32`` file (static ones calibrated on ``images``); in a
    graph whose weights are mostly MatMul/Gemm, a MatMul recipe's file also stores its 1x1 convolutions' weights
    as int8."""
    if recipe.int8_storage:
        return int8_weight_onnx(loaded, images.inputs, work, job)
    reader = ImageFolderReader(images, input_name) if recipe.static else None
    quantized = quantize_onnx(fp32, work / "quantized.onnx", recipe, reader)
    pointwise = pointwise_conv_weights(quantized) if recipe.op_types and "Conv" not in recipe.op_types else []
    shares = onnx_weight_shares(fp32) if pointwise else {}
    if not pointwise or shares.get("conv", 0) * 2 >= sum(shares.values()):
        return quantized
    # a MatMul recipe on a MatMul graph leaves its few linear layers written as 1x1 convolutions (the Slide
    # attention's projections) float: store their weights int8 too (float compute), so the file is int8 throughout
    store_int8_weights(quantized, work / "int8.onnx", min_elements=0, only=pointwise)
    return work / "int8.onnx"


@contextlib.contextmanager
def _step(bar: Any, name: str) -> Iterator[None]:
    """Show ``name`` on the step progress bar while it runs, then advance the bar."""
    bar.set_description(f"convert: {name}")
    yield
    bar.update()


def convert_onnx(job: ConversionJob) -> ConversionResult:
    """The ONNX route: export, simplify, check rank, verify fp32, [int8 + verify], embed metadata, stage, rename."""
    from tqdm import tqdm

    bar = tqdm(total=5 + int(job.int8) + int(bool(job.latency_runs)), unit="step", disable=not job.progress,
               leave=False)
    with bar, tempfile.TemporaryDirectory(prefix="slidelite-convert-") as work:
        with _step(bar, "load"):
            loaded, metadata, images = prepare(job)
            reference = torch_logits(loaded.module, images.inputs)
        warnings = list(loaded.warnings) + ([images.skipped_summary()] if images.skipped else [])
        fp32 = Path(work) / "fp32.onnx"
        with _step(bar, "export ONNX"):
            export_onnx(loaded.module, fp32, loaded.input_shape(1), opset=job.opset, dynamic_batch=job.dynamic_batch)
        with _step(bar, "simplify"):
            simplify_onnx(fp32)
            over = max_tensor_rank(fp32)
        if over:
            name, rank = next(iter(over.items()))
            warnings.append(f"{len(over)} tensor(s) above 4-D remain (e.g. {name}: rank {rank})")
        with _step(bar, "verify fp32"):
            final_logits = onnx_logits(fp32, images.inputs, job.threads)
            fp32_parity = compare_logits(reference, final_logits)
            check_fp32(fp32_parity, str(job.output))
        final, int8_parity, choice, int8_fraction = fp32, None, None, 0.0
        if job.int8:
            choice = choose_recipe(job.int8_recipe, target_recipe(job)[0] or DEFAULT_RECIPE, "onnx",
                                   onnx_weight_shares(fp32))
            recipe = get_recipe(choice.name)
            with _step(bar, f"int8 ({recipe.name})"):
                final = int8_onnx(recipe, fp32, loaded, images, metadata.input.name, Path(work), job)
                final_logits = onnx_logits(final, images.inputs, job.threads)
                int8_parity = compare_logits(reference, final_logits)
                forced = check_int8(int8_parity, str(job.output), job.min_agreement, job.force)
                int8_fraction = onnx_int8_fraction(final)
            warnings += [w for w in (forced, choice.warning(int8_fraction)) if w]
        sizes = {"fp32": fp32.stat().st_size, **({"int8": final.stat().st_size} if job.int8 else {})}
        latency: Dict[str, float] = {}
        if job.latency_runs:
            with _step(bar, "latency"):
                latency = measure_latency({"fp32": fp32, **({"int8": final} if job.int8 else {})},
                                          images.inputs[:1], job.threads, job.latency_runs)
        metrics: Dict[str, Any] = {**fp32_parity.as_metrics("fp32_vs_torch"), "validation_images": len(images)}
        if choice is not None:
            metrics.update(int8_parity.as_metrics("int8_vs_torch"), int8_recipe=choice.name,
                           int8_weight_fraction=round(int8_fraction, 4))
        final_meta = build_metadata(loaded, metadata.labels, name=job.name, metrics=metrics,
                                    precision=choice.precision(recipe.precision, int8_fraction) if choice else "fp32")
        with _step(bar, "write"), staged_output(job.output) as staged:
            embed_metadata(final, final_meta, staged)
            if not np.allclose(onnx_logits(staged, images.inputs[:1], job.threads), final_logits[:1],
                               rtol=1e-5, atol=1e-6):
                raise ConversionError(f"{job.output}: the written file does not reproduce the verified graph")
    result = ConversionResult(output=Path(job.output), metadata=final_meta, fp32_parity=asdict(fp32_parity),
                              int8_agreement=asdict(int8_parity) if int8_parity else None, sizes=sizes,
                              latency_ms=latency, warnings=warnings, origin=loaded.origin,
                              int8_recipe=choice.describe(int8_fraction) if choice else "")
    result.report = format_report(result)
    return result
