"""Typed classification results (MediaPipe Tasks style)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:  # pragma: no cover - ``import slidelite`` stays free of numpy
    import numpy as np


@dataclass(frozen=True)
class Category:
    """One class of a result: its index in the model output, its label and its score (probability)."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent per stage of one classification."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        """Sum of the three stages."""
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class PreparedImage:
    """An image already turned into the model's input tensor (:meth:`slidelite.Classifier.prepare`), ready for
    :meth:`slidelite.Classifier.classify_prepared`: a pipeline prepares the next frame while the model runs."""

    tensor: np.ndarray
    preprocess_ms: float
    source: Optional[str] = None


@dataclass(frozen=True)
class ClassificationResult:
    """The categories kept for one image (best first) and the stage timings."""

    categories: List[Category] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    source: Optional[str] = None

    @property
    def top(self) -> Optional[Category]:
        """The best category, or None when every category was filtered out."""
        return self.categories[0] if self.categories else None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form (used by ``slidelite classify --json``)."""
        out = asdict(self)
        out["timings"]["total_ms"] = self.timings.total_ms
        return out
