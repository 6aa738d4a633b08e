"""slidelite: torch-free edge inference for Slide-Transformer image classifiers.

``import slidelite`` is light: it loads only the standard library. :class:`Classifier` (numpy, Pillow) is
imported on first use, and an inference engine (onnxruntime, LiteRT) only when a model is opened.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

from .errors import BackendUnavailableError, ImageError, MetadataError, ModelError, SlideliteError, UsageError
from .metadata import ModelMetadata
from .options import ClassifierOptions
from .results import Category, ClassificationResult, Timings

if TYPE_CHECKING:  # pragma: no cover
    from .classifier import Classifier

__version__ = "0.1.0"

__all__ = [
    "__version__", "Classifier", "ClassifierOptions", "Category", "ClassificationResult", "Timings",
    "ModelMetadata", "SlideliteError", "ImageError", "ModelError", "MetadataError", "BackendUnavailableError",
    "UsageError",
]


def __getattr__(name: str) -> Any:
    """Import :class:`Classifier` lazily (it pulls in numpy and Pillow)."""
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'slidelite' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
