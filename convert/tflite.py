"""The TFLite route of the converter: :func:`convert_tflite` (``slidelite convert --format tflite``).

    load -> reparameterize -> TFLite layout (tflite_graph) -> NHWC RGB 0..255 adapter -> litert-torch fp32 -> fp32 parity gate (LiteRT)
    -> [int8 recipe on the calibration images -> int8 agreement gate] -> TFLite Metadata + slidelite JSON
    -> check the written file -> latency fp32 vs int8 side by side in LiteRT -> report

Load, re-parameterize, labels, the metadata document, the calibration/validation images (read through
the runtime's own preprocessing), the verify gates, the atomic output and the report are the ONNX
route's steps (:mod:`slidelite.convert.pipeline`); layout, export, quantization and metadata embedding are
the TFLite ones (``tflite_graph``, ``tflite_export``, ``tflite_quantize``, ``tflite_metadata``). The fp32
parity gate compares the file with the zoo's deployed form, not with the rewritten layout.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from slidelite.metadata import ModelMetadata, PreprocessSpec, Quantization

from .calibration import CalibrationSet
from .errors import ConversionError, OutputPathError
from .int8_coverage import RecipeChoice, choose_recipe, tflite_int8_fraction, tflite_weight_shares
from .job import ConversionJob, ConversionResult, LoadedModel
from .labels import resolve_labels
from .load import load_model, reparameterize
from .model_metadata import build_metadata
from .output import check_output_path, staged_output
from .pipeline import validation_set
from .report import format_report
from .targets import target_recipe
from .tflite_export import export_tflite, image_input_adapter, nhwc_rgb_shape
from .tflite_metadata import embed_tflite_metadata, writer_python
from .tflite_quantize import DEFAULT_RECIPE, calibration_warning, get_tflite_recipe, quantize_tflite
from .verify import Parity, check_fp32, check_int8, compare_logits, torch_logits


def tflite_preprocess(loaded: LoadedModel) -> PreprocessSpec:
    """The runtime preprocessing of the exported graph: RGB pixels 0..255 as they are (mean 0, std 1/255),
    resize and crop as the model was trained (normalization and any luma conversion are in the graph)."""
    return dataclasses.replace(loaded.preprocess, color_mode="RGB", mean=(0.0,), std=(1.0 / 255.0,))


def tflite_metadata(loaded: LoadedModel, labels: Tuple[str, ...], job: ConversionJob, *, precision: str = "fp32",
                    input_name: str = "input", output_name: str = "logits", input_dtype: str = "float32",
                    input_quantization: Optional[Quantization] = None, metrics: Optional[Dict[str, object]] = None
                    ) -> ModelMetadata:
    """The slidelite document of a TFLite file written from ``loaded``: NHWC RGB input, logits out."""
    return build_metadata(dataclasses.replace(loaded, preprocess=tflite_preprocess(loaded)), labels,
                          precision=precision, name=job.name, input_name=input_name, output_name=output_name,
                          layout="NHWC", input_dtype=input_dtype, input_quantization=input_quantization,
                          metrics=metrics)


def check_tflite_job(job: ConversionJob) -> None:
    """Validate the TFLite-specific options before any work (the int8 recipe is chosen after the fp32 export,
    :func:`slidelite.convert.int8_coverage.choose_recipe`).

    Raises:
        UsageError: unknown recipe. ConversionError: --int8 without --calib, --dynamic-batch.
        OutputPathError: the output exists (no --overwrite), is not writable, or is one of the inputs.
    """
    if job.int8:
        get_tflite_recipe(job.int8_recipe)
        if job.calib is None:
            raise ConversionError("--int8 needs calibration images: pass --calib DIR (a folder of photos)")
    if job.dynamic_batch:
        raise ConversionError("--dynamic-batch is not supported with --format tflite (TFLite files are batch 1; "
                              "the runtime runs a batch image by image)")
    output = Path(job.output).resolve()
    for option, given in (("--checkpoint", job.checkpoint), ("--labels", job.labels)):
        if given is not None and Path(given).resolve() == output:
            raise OutputPathError(f"-o {job.output} is the {option} file; choose another output name")
    check_output_path(job.output, job.overwrite)


def convert_tflite(job: ConversionJob) -> ConversionResult:
    """Convert ``job`` to a ``.tflite`` file (fp32, or int8 with ``job.int8``) with TFLite Metadata.

    Raises:
        SlideliteError: a one-line reason; nothing was written to ``job.output``.
    """
    check_tflite_job(job)
    writer = writer_python(job.tflite_support_python)  # before the slow steps: fail fast with the set-up command
    loaded = reparameterize(load_model(job))
    labels = resolve_labels(job.labels, loaded.num_classes, loaded.label_set, job.allow_duplicate_labels)
    images = validation_set(job, tflite_metadata(loaded, labels, job))
    warnings: List[str] = list(loaded.warnings) + ([images.skipped_summary()] if images.skipped else [])
    reference = torch_logits(_adapter(loaded, loaded.module), images.inputs)  # the zoo's deployed form
    with tempfile.TemporaryDirectory(prefix="slidelite-tflite-") as work:
        fp32 = export_tflite(_adapter(loaded, tflite_form(loaded.module)), Path(work) / "fp32.tflite",
                             nhwc_rgb_shape(loaded.input_size))
        fp32_logits = litert_logits(fp32, images, job.threads)
        fp32_parity = compare_logits(reference, fp32_logits)
        check_fp32(fp32_parity, str(job.output))
        final, final_logits, int8_parity, choice, int8_fraction = fp32, fp32_logits, None, None, 0.0
        if job.int8:
            choice = choose_recipe(job.int8_recipe, target_recipe(job)[0] or DEFAULT_RECIPE, "tflite",
                                   tflite_weight_shares(fp32.read_bytes()))
            recipe = get_tflite_recipe(choice.name)
            if recipe.full_integer:  # dynamic-int8 only validates on the images
                warnings += [w for w in [calibration_warning(len(images))] if w]
            source = fp32
            if recipe.int8_storage:  # weights put on their int8 grid first (slidelite.convert.int8_weights)
                from .int8_weights import rounded_copy

                source = export_tflite(rounded_copy(_adapter(loaded, tflite_form(loaded.module)), images.inputs),
                                       Path(work) / "rounded.tflite", nhwc_rgb_shape(loaded.input_size))
            final = quantize_tflite(source, Path(work) / "int8.tflite", recipe, images.inputs)
            final_logits = litert_logits(final, images, job.threads)
            int8_parity = compare_logits(reference, final_logits)
            forced = check_int8(int8_parity, str(job.output), job.min_agreement, job.force)
            int8_fraction = tflite_int8_fraction(final.read_bytes())
            warnings += [w for w in (forced, choice.warning(int8_fraction)) if w]
        metadata = final_metadata(final, loaded, labels, job, fp32_parity, int8_parity, len(images),
                                  choice, int8_fraction)
        sizes = {"fp32": fp32.stat().st_size, **({"int8": final.stat().st_size} if choice else {})}
        latency = litert_latency({"fp32": fp32, **({"int8": final} if choice else {})}, job.threads,
                                 job.latency_runs) if job.latency_runs else {}
        with staged_output(job.output) as staged:
            embed_tflite_metadata(final, staged, metadata, writer)
            check_written_file(staged, job.output, images, final_logits, job.threads)
    result = ConversionResult(output=Path(job.output), metadata=metadata, fp32_parity=fp32_parity.__dict__,
                              int8_agreement=int8_parity.__dict__ if int8_parity else None, sizes=sizes,
                              latency_ms=latency, warnings=warnings, origin=loaded.origin,
                              int8_recipe=choice.describe(int8_fraction) if choice else "")
    result.report = format_report(result)
    return result


def _adapter(loaded: LoadedModel, module: Any) -> Any:
    """``module`` behind the NHWC RGB 0..255 input adapter of ``loaded``'s preprocessing."""
    return image_input_adapter(module, loaded.preprocess.mean, loaded.preprocess.std, loaded.channels)


def tflite_form(module: Any) -> Any:
    """The export layout of ``module`` (:func:`slidelite.convert.tflite_graph.tflite_form`; imports torch)."""
    from .tflite_graph import tflite_form as rewrite

    return rewrite(module)


def final_metadata(model: Path, loaded: LoadedModel, labels: Tuple[str, ...], job: ConversionJob, fp32: Parity,
                   int8: Optional[Parity], images: int, choice: Optional[RecipeChoice] = None,
                   int8_fraction: float = 0.0) -> ModelMetadata:
    """The slidelite document of the file about to be written: its real tensor names, dtype and quantization,
    the measured parity, and for int8 the recipe ``choice`` and the share of weights stored int8 (the precision
    says int8 only when at least half are)."""
    backend = _litert(model, 1)
    input_name, output_name, input_dtype, input_quant = (backend.input_name, backend.output_name, backend.input_dtype,
                                                         backend.input_quantization)
    backend.close()
    metrics: Dict[str, object] = {**fp32.as_metrics("fp32_vs_torch"), "validation_images": images}
    precision = "fp32"
    if int8 is not None and choice is not None:
        metrics.update(int8.as_metrics("int8_vs_torch"), int8_recipe=choice.name,
                       int8_weight_fraction=round(int8_fraction, 4))
        precision = choice.precision(get_tflite_recipe(choice.name).precision, int8_fraction)
    quant = Quantization(*input_quant) if input_quant is not None else None
    return tflite_metadata(loaded, labels, job, precision=precision,
                           input_name=input_name, output_name=output_name, input_dtype=input_dtype,
                           input_quantization=quant, metrics=metrics)


def litert_logits(model: Path, images: CalibrationSet, threads: int) -> np.ndarray:
    """Run ``model`` with LiteRT on the (N, H, W, 3) float pixel inputs; integer inputs are quantized from the
    tensor's own parameters. Returns (N, classes) float32."""
    backend = _litert(model, threads)
    try:
        return np.concatenate([backend.run(images.inputs[i:i + 1]) for i in range(len(images))]).astype(np.float32)
    finally:
        backend.close()


def _litert(model: Path, threads: int):
    """A LiteRT backend (the runtime's own) on ``model``."""
    from slidelite.backends.litert_backend import LiteRTBackend
    from slidelite.model_file import open_model_file

    return LiteRTBackend(open_model_file(model), threads)


def check_written_file(staged: Path, output: Path, images: CalibrationSet, expected: np.ndarray, threads: int) -> None:
    """The written file must carry valid slidelite metadata and reproduce the verified graph's logits."""
    from slidelite.errors import MetadataError
    from slidelite.model_file import open_model_file, read_metadata

    try:
        read_metadata(open_model_file(staged))
    except MetadataError as exc:
        raise ConversionError(f"{output}: the written file's metadata does not read back ({exc})") from None
    subset = dataclasses.replace(images, inputs=images.inputs[:1], paths=images.paths[:1])
    if not np.allclose(litert_logits(staged, subset, threads), expected[:1], rtol=1e-5, atol=1e-6):
        raise ConversionError(f"{output}: the written file does not reproduce the verified graph")


def litert_latency(models: Dict[str, Path], threads: int, runs: int) -> Dict[str, float]:
    """Median latency (ms) of each model in LiteRT, timed interleaved by :mod:`slidelite.bench`."""
    from slidelite.bench import BenchSettings, TargetSpec, run_benchmark

    specs = [TargetSpec(str(path), "litert") for path in models.values()]
    report = run_benchmark(specs, BenchSettings(warmup=2, runs=runs, threads=threads))
    return {label: section["latency_ms"]["p50"] for label, section in zip(models, report["targets"])}
