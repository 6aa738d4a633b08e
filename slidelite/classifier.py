"""The image classifier (MediaPipe Tasks style): options in, typed results out.

Example::

    from slidelite import Classifier

    with Classifier.from_file("model.onnx", max_results=3) as classifier:
        result = classifier.classify("cat.jpg")
        print(result.top.label, result.top.score, result.timings.total_ms)
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, List, Optional, Sequence

import numpy as np

from .backends import check_backend_name, create_backend, resolve_threads
from .backends.base import Backend
from .errors import UsageError
from .image import ImageSource
from .metadata import ModelMetadata
from .model_file import ModelFile, check_signature, open_model_file, read_metadata
from .options import PREPROCESSING, ClassifierOptions
from .postprocess import CategoryFilter, scores_from_output
from .preprocess import prepare_input
from .results import ClassificationResult, PreparedImage, Timings

DEFAULT_BATCH_SIZE = 16


class Classifier:
    """Classifies images with one model file. Create it with :meth:`create_from_options`,
    :meth:`from_file` or :meth:`default`; it is thread-safe and a context manager."""

    def __init__(self, options: ClassifierOptions, model_file: ModelFile, metadata: ModelMetadata,
                 backend: Backend) -> None:
        """Use the ``create_from_options``/``from_file``/``default`` constructors instead."""
        self._options = options
        self._model_file = model_file
        self._metadata = metadata
        self._backend: Optional[Backend] = backend
        self._filter = CategoryFilter(metadata.labels, options.max_results, options.score_threshold,
                                      tuple(options.category_allowlist), tuple(options.category_denylist))
        self._lock: ContextManager[Any] = nullcontext() if backend.thread_safe else threading.Lock()

    @classmethod
    def create_from_options(cls, options: ClassifierOptions) -> "Classifier":
        """Validate ``options``, open the model, load it into a backend and check it against its metadata.

        Raises:
            UsageError: an invalid option (unknown backend, threads <= 0, allow- and deny-list together,
                unknown labels in them, ...).
            ModelError: the model is missing, not a model, truncated, or cannot be loaded.
            MetadataError: no usable metadata (slidelite's, the standard TFLite Metadata, or
                ``options.metadata_fields``), or metadata that disagrees with the model.
            BackendUnavailableError: no installed engine can run the model.
        """
        _validate(options)
        model_file = open_model_file(_resolve_model(options))
        metadata = read_metadata(model_file, options.metadata_fields)
        backend = create_backend(model_file, options.backend, options.threads)
        try:
            check_signature(metadata, backend, model_file.name)
            return cls(options, model_file, metadata, backend)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def from_file(cls, path: "str | os.PathLike[str]", **option_overrides: Any) -> "Classifier":
        """A classifier for the model file ``path``; keyword arguments set :class:`ClassifierOptions` fields."""
        return cls.create_from_options(ClassifierOptions(model=os.fspath(path), **option_overrides))

    @classmethod
    def default(cls, **option_overrides: Any) -> "Classifier":
        """A classifier for the default model shipped in the wheel."""
        return cls.create_from_options(ClassifierOptions(model=None, **option_overrides))

    @property
    def options(self) -> ClassifierOptions:
        """The options this classifier was created with."""
        return self._options

    @property
    def metadata(self) -> ModelMetadata:
        """The model's slidelite metadata."""
        return self._metadata

    @property
    def model_file(self) -> ModelFile:
        """The opened model file (path, format, size, sha256)."""
        return self._model_file

    @property
    def backend(self) -> Backend:
        """The inference backend running the model."""
        if self._backend is None:
            raise UsageError("the classifier is closed")
        return self._backend

    def classify(self, image: ImageSource) -> ClassificationResult:
        """Classify one image (path, bytes, file object, PIL image or numpy array).

        Raises:
            ImageError: the image cannot be read (the message names it).
        """
        return self.classify_prepared(self.prepare(image))

    def prepare(self, image: ImageSource) -> PreparedImage:
        """The first stage of :meth:`classify`: decode and preprocess ``image`` (no model run).

        Raises:
            ImageError: the image cannot be read (the message names it).
        """
        start = time.perf_counter()
        tensor = self._prepare(image)
        return PreparedImage(tensor, _ms(time.perf_counter() - start), _path_of(image))

    def classify_prepared(self, prepared: PreparedImage) -> ClassificationResult:
        """The rest of :meth:`classify`: run the model on an image from :meth:`prepare`; keep its categories."""
        start = time.perf_counter()
        raw = self._run(prepared.tensor)
        inferred = time.perf_counter()
        categories = self._filter(scores_from_output(raw, self._metadata)[0])
        timings = Timings(prepared.preprocess_ms, _ms(inferred - start), _ms(time.perf_counter() - inferred))
        return ClassificationResult(categories=categories, timings=timings, source=prepared.source)

    def classify_batch(self, images: Sequence[ImageSource], batch_size: int = DEFAULT_BATCH_SIZE) -> List[ClassificationResult]:
        """Classify several images; results are in input order.

        When the model's batch dimension is dynamic, up to ``batch_size`` images run through the backend
        at once and each result's ``inference_ms`` is that run's time divided by the images in it;
        otherwise the images are classified one by one.

        Raises:
            ImageError: the first image that cannot be read.
        """
        if not self.backend.dynamic_batch:
            return [self.classify(image) for image in images]
        results: List[ClassificationResult] = []
        for first in range(0, len(images), max(1, batch_size)):
            results.extend(self._classify_chunk(images[first:first + max(1, batch_size)]))
        return results

    def _classify_chunk(self, images: Sequence[ImageSource]) -> List[ClassificationResult]:
        tensors, prep_ms = [], []
        for image in images:
            start = time.perf_counter()
            tensors.append(self._prepare(image))
            prep_ms.append(_ms(time.perf_counter() - start))
        start = time.perf_counter()
        raw = self._run(np.concatenate(tensors))
        infer_ms = _ms(time.perf_counter() - start) / len(images)
        results = []
        for image, prep, scores in zip(images, prep_ms, scores_from_output(raw, self._metadata)):
            start = time.perf_counter()
            categories = self._filter(scores)
            timings = Timings(prep, infer_ms, _ms(time.perf_counter() - start))
            results.append(ClassificationResult(categories=categories, timings=timings, source=_path_of(image)))
        return results

    def _prepare(self, image: ImageSource) -> np.ndarray:
        return prepare_input(image, self._metadata, self._options.max_image_pixels,
                             fast=self._options.preprocessing == "fast")

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        backend = self.backend
        with self._lock:
            return backend.run(tensor)

    def close(self) -> None:
        """Release the backend; the classifier cannot be used afterwards. Closing twice is harmless."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        backend = self._backend.name if self._backend is not None else "closed"
        return f"Classifier({self._model_file.name!r}, backend={backend!r}, labels={self._metadata.num_classes})"


def _validate(options: ClassifierOptions) -> None:
    """Option checks that need no model (done before anything is loaded)."""
    check_backend_name(options.backend)
    resolve_threads(options.threads)
    if options.category_allowlist and options.category_denylist:
        raise UsageError("category allowlist and denylist are mutually exclusive: pass only one of them")
    if options.preprocessing not in PREPROCESSING:
        raise UsageError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, got {options.preprocessing!r}")
    limit = options.max_image_pixels
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise UsageError(f"max_image_pixels must be a positive integer or None, got {limit!r}")


def _resolve_model(options: ClassifierOptions) -> Path:
    """The model file ``options.model`` names: a file path, a shipped model name, or None (the default)."""
    from .models import resolve_model  # lazy: reading the shipped-model manifest is only needed here

    return resolve_model(options.model, options.backend, verify_checksum=options.verify_checksum)


def _path_of(image: ImageSource) -> Optional[str]:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else None


def _ms(seconds: float) -> float:
    return seconds * 1000.0


__all__ = ["Classifier", "DEFAULT_BATCH_SIZE"]
