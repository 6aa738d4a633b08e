"""The data passed between the converter's steps: what to convert (:class:`ConversionJob`), the loaded
model (:class:`LoadedModel`) and what came out (:class:`ConversionResult`).

Every step of :mod:`slidelite.convert.pipeline` is a plain function over these types, so another
export route (TFLite) reuses load, re-parameterize, calibration data, metadata and verify unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from slidelite.metadata import ModelMetadata, PreprocessSpec

FORMATS = ("onnx", "tflite")


@dataclass
class PreprocessOverrides:
    """CLI overrides of the pretrained configuration (None: keep the model's own value)."""

    input_size: Optional[Tuple[int, int]] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None
    color_mode: Optional[str] = None


@dataclass
class ConversionJob:
    """Everything one conversion needs; built by the CLI or directly from Python.

    Attributes:
        output: the file to write (written atomically: a temp file renamed at the end).
        model: a zoo name (``slide_swin_tiny``) or ``module:attr`` factory; None: read it from the checkpoint.
        module: an already built ``torch.nn.Module`` (Python callers); takes precedence over ``model``.
        checkpoint: a state_dict / training checkpoint to load (``torch.load(weights_only=True)``).
        model_args: constructor arguments of a zoo model (``num_classes``, ``img_size``, ``embed_dim``, ...);
            with a checkpoint they must agree with its weights, and the ones not given are read from the weights
            and the stored config (:mod:`slidelite.zoo.shape_inference`).
        ema: True: convert the checkpoint's EMA weights (``state_dict_ema`` / ``model_ema``); False: its main
            weights; None: the main weights when present, else the EMA ones (the report says which).
        labels: a labels file (one per line); None: the model's label set, else ``class_0..``.
        allow_duplicate_labels: accept a labels file that names two classes alike.
        format: ``onnx`` or ``tflite``.
        int8: also quantize to int8 (needs ``calib``).
        calib: folder of calibration / validation images (also used by verify when given).
        int8_recipe: name of the int8 recipe of the format (:mod:`slidelite.convert.quantize`, ONNX;
            :mod:`slidelite.convert.tflite_quantize`, TFLite); None: chosen by what the graph holds
            (:func:`slidelite.convert.int8_coverage.choose_recipe`), with ``target``'s MatMul recipe.
        target: deployment CPU (:data:`slidelite.convert.targets.TARGETS` or ``auto``); picks the MatMul int8
            recipe when ``int8_recipe`` is None (:func:`slidelite.convert.targets.target_recipe`).
        preprocess: overrides of the pretrained configuration (a user module that declares no input size and
            accepts several needs ``input_size``: :mod:`slidelite.convert.user_model`).
        dynamic_batch: export a dynamic batch axis instead of batch 1.
        opset: ONNX opset.
        min_agreement: int8 top-1 agreement gate (fraction of images).
        force: write even when the int8 gate fails (never when the fp32 gate fails).
        overwrite: replace an existing output file.
        name: model name written into the metadata (default: the architecture).
        threads: inference threads used by verify and the latency report.
        progress: show progress bars.
        max_calib_images: use at most this many calibration images.
        latency_runs: timed runs per model in the report (0: skip latency).
        tflite_support_python: the Python with tflite-support that writes TFLite Metadata (None: found as
            :func:`slidelite.convert.tflite_metadata.writer_python` describes).
    """

    output: Path
    model: Optional[str] = None
    module: Any = None
    checkpoint: Optional[Path] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    ema: Optional[bool] = None
    labels: Optional[Path] = None
    allow_duplicate_labels: bool = False
    format: str = "onnx"
    int8: bool = False
    calib: Optional[Path] = None
    int8_recipe: Optional[str] = None
    target: Optional[str] = None
    preprocess: PreprocessOverrides = field(default_factory=PreprocessOverrides)
    dynamic_batch: bool = False
    opset: int = 20
    min_agreement: float = 0.99
    force: bool = False
    overwrite: bool = False
    name: Optional[str] = None
    threads: int = 2
    progress: bool = True
    max_calib_images: int = 64
    latency_runs: int = 20
    tflite_support_python: Optional[Path] = None


@dataclass
class LoadedModel:
    """A torch classifier in eval mode plus what the metadata needs to know about it.

    ``origin`` holds report rows saying how it was built: the arguments and where each came from, which
    weights of the checkpoint were used.
    """

    module: Any
    architecture: str
    preprocess: PreprocessSpec
    input_size: Tuple[int, int]
    num_classes: int
    label_set: str = ""
    license: str = ""
    source: str = ""
    checkpoint_sha256: str = ""
    origin: Tuple[Tuple[str, str], ...] = ()
    warnings: Tuple[str, ...] = ()  # what loading had to assume or find out (reported with the result)

    @property
    def channels(self) -> int:
        """Input channels (3 for RGB, 1 for L)."""
        return self.preprocess.channels

    def input_shape(self, batch: int = 1) -> Tuple[int, int, int, int]:
        """The NCHW input shape for ``batch`` images."""
        return (batch, self.channels, self.input_size[0], self.input_size[1])


@dataclass
class ConversionResult:
    """What :func:`slidelite.convert.convert` wrote and measured."""

    output: Path
    metadata: ModelMetadata
    fp32_parity: Dict[str, float]
    int8_agreement: Optional[Dict[str, float]] = None
    sizes: Dict[str, int] = field(default_factory=dict)
    latency_ms: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    int8_recipe: str = ""  # the recipe run, why it was chosen, the share of weights int8 (empty for fp32)
    report: str = ""
    origin: Tuple[Tuple[str, str], ...] = ()
    recipe_reason: str = ""  # what --target chose and why (empty without --target)
