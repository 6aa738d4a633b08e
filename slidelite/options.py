"""Options of a :class:`slidelite.Classifier` (MediaPipe Tasks style)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .metadata_fields import MetadataFields

BACKENDS = ("auto", "onnxruntime", "litert", "tflite", "numpy")
PREPROCESSING = ("fast", "exact")


@dataclass
class ClassifierOptions:
    """How to build a classifier.

    Attributes:
        model: a model file path (``.onnx``/``.tflite``) or the name of a model shipped in the wheel;
            None means the embedded default model.
        backend: one of :data:`BACKENDS`; ``auto`` picks from the file type and what is installed.
        threads: intra-op threads; None means the number of physical cores.
        max_results: keep at most this many categories (None or <= 0: all).
        score_threshold: drop categories scoring below this.
        category_allowlist: keep only these labels (empty: all). Exclusive with the denylist.
        category_denylist: drop these labels.
        max_image_pixels: refuse images with more pixels (None: Pillow's decompression-bomb guard).
        verify_checksum: verify the sha256 of shipped models on load.
        metadata_fields: metadata fields that replace or supply the model's own (labels, input size, mean/std,
            crop, layout, ...), for a model file made elsewhere; None: the file's metadata as it is.
        preprocessing: one of :data:`PREPROCESSING`. ``fast`` resizes only the pixels under the centre crop,
            shrinks large images by an integer factor first and decodes large JPEGs at a reduced scale
            (:mod:`slidelite.resize_plan`); ``exact`` resizes the whole image as timm's eval transform does.
            Both give identical tensors when the image needs no resize; ``docs/benchmarks.md`` ("Camera
            path") measures the difference otherwise.
    """

    model: Optional[str] = None
    backend: str = "auto"
    threads: Optional[int] = None
    max_results: Optional[int] = 5
    score_threshold: float = 0.0
    category_allowlist: Sequence[str] = field(default_factory=tuple)
    category_denylist: Sequence[str] = field(default_factory=tuple)
    max_image_pixels: Optional[int] = None
    verify_checksum: bool = True
    metadata_fields: Optional["MetadataFields"] = None
    preprocessing: str = "fast"
