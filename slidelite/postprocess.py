"""Postprocessing: raw model output -> class scores -> the categories kept (MediaPipe Tasks semantics).

* Integer outputs are dequantized with the output quantization of the metadata:
  ``real = (q - zero_point) * scale``.
* ``logits`` outputs go through a numerically stable softmax; ``probabilities`` are used as they are.
* Categories are sorted by score (ties: lower index first), those scoring below ``score_threshold`` are
  dropped, the allow-list keeps only the named labels, the deny-list drops them (the two lists are
  mutually exclusive), and ``max_results`` keeps the best ones (None or <= 0: all).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from .errors import UsageError
from .metadata import ModelMetadata
from .results import Category


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64, stable for any finite logits."""
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= np.sum(shifted, axis=-1, keepdims=True)
    return shifted


def scores_from_output(raw: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    """Class scores (probabilities, float64) from the raw output of a model, batch shape kept.

    Integer outputs are dequantized when the metadata declares an output quantization; float outputs
    are taken as real values (a backend may already have dequantized them).
    """
    scores = np.asarray(raw, dtype=np.float64)
    quant = metadata.output.quantization
    if quant is not None and np.issubdtype(np.asarray(raw).dtype, np.integer):
        scores = (scores - quant.zero_point) * quant.scale
    if metadata.output.kind == "logits":
        scores = softmax(scores)
    return scores


class CategoryFilter:
    """Threshold, allow/deny lists and top-k for one model's labels, validated once and reused per image."""

    def __init__(self, labels: Sequence[str], max_results: Optional[int] = None, score_threshold: float = 0.0,
                 allowlist: Sequence[str] = (), denylist: Sequence[str] = ()) -> None:
        """
        Raises:
            UsageError: both lists given, a listed label the model does not have, a non-integer
                ``max_results`` or a non-finite ``score_threshold``.
        """
        if allowlist and denylist:
            raise UsageError("category allowlist and denylist are mutually exclusive: pass only one of them")
        if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int)):
            raise UsageError(f"max_results must be an integer, got {max_results!r}")
        if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)) or not math.isfinite(
                score_threshold):
            raise UsageError(f"score_threshold must be a finite number, got {score_threshold!r}")
        self.labels = tuple(labels)
        self.max_results = max_results if max_results is not None and max_results > 0 else None
        self.score_threshold = float(score_threshold)
        self._keep = self._mask(allowlist, denylist)

    def _mask(self, allowlist: Sequence[str], denylist: Sequence[str]) -> Optional[np.ndarray]:
        listed, kind = (allowlist, "allowlist") if allowlist else (denylist, "denylist")
        if not listed:
            return None
        known = set(self.labels)
        unknown = [name for name in dict.fromkeys(listed) if name not in known]
        if unknown:
            raise UsageError(
                f"unknown label(s) in the category {kind}: {', '.join(repr(n) for n in unknown)} "
                f"(the model has {len(self.labels)} labels, e.g. {', '.join(repr(n) for n in self.labels[:3])})"
            )
        named = np.isin(np.asarray(self.labels, dtype=object), np.asarray(list(listed), dtype=object))
        return named if allowlist else ~named

    def __call__(self, scores: np.ndarray) -> List[Category]:
        """The kept categories of one image's scores (1-D, one per label), best first."""
        scores = np.asarray(scores).reshape(-1)
        if scores.shape[0] != len(self.labels):
            raise ValueError(f"{scores.shape[0]} scores for {len(self.labels)} labels")
        keep = scores >= self.score_threshold
        if self._keep is not None:
            keep &= self._keep
        candidates = np.flatnonzero(keep)
        if self.max_results is not None and candidates.size > self.max_results:
            # only the scores at least the k-th best (ties included) need sorting: a partition finds it in O(n)
            values = scores[candidates]
            kth = np.partition(values, candidates.size - self.max_results)[candidates.size - self.max_results]
            candidates = candidates[values >= kth]
        order = candidates[np.argsort(-scores[candidates], kind="stable")][: self.max_results]
        return [Category(index=int(i), label=self.labels[i], score=float(scores[i])) for i in order]


def select_categories(scores: np.ndarray, labels: Sequence[str], max_results: Optional[int] = None,
                      score_threshold: float = 0.0, allowlist: Sequence[str] = (),
                      denylist: Sequence[str] = ()) -> List[Category]:
    """The categories kept for one image's ``scores`` (see :class:`CategoryFilter`), best first.

    Raises:
        UsageError: allow- and deny-list both given, or a listed label the model does not have.
    """
    return CategoryFilter(labels, max_results, score_threshold, allowlist, denylist)(scores)
