"""Inference backends behind one small interface (:class:`~slidelite.backends.base.Backend`).

The registry maps a backend name to the class implementing it, the model formats it runs, the pip extra
that installs its engine and the engine's import name. Nothing heavy is imported until
:func:`create_backend` runs: availability is probed with :func:`importlib.util.find_spec`, so
``import slidelite`` never loads onnxruntime or LiteRT.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from functools import lru_cache
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

from ..errors import BackendUnavailableError, UsageError
from .base import Backend

if TYPE_CHECKING:  # pragma: no cover
    from ..model_file import ModelFile


class BackendSpec(NamedTuple):
    """Where a backend lives and what it needs (a tuple: ``(target, formats, extra, engine)``).

    Attributes:
        target: ``'module:Class'`` of the :class:`Backend` subclass.
        formats: model formats it runs (``'onnx'``, ``'tflite'``).
        extra: the slidelite pip extra that installs the engine (None: nothing to install).
        engine: the engine's top-level import name (None: numpy only).
    """

    target: str
    formats: Tuple[str, ...]
    extra: Optional[str]
    engine: Optional[str]


#: Backend names in ``auto`` preference order (per format, the first available one wins).
BACKEND_NAMES: Tuple[str, ...] = ("onnxruntime", "litert", "tflite", "numpy")
BACKENDS: Dict[str, BackendSpec] = {
    "onnxruntime": BackendSpec("slidelite.backends.onnxruntime_backend:OnnxRuntimeBackend", ("onnx",), "onnx",
                               "onnxruntime"),
    "litert": BackendSpec("slidelite.backends.litert_backend:LiteRTBackend", ("tflite",), "litert", "ai_edge_litert"),
    "tflite": BackendSpec("slidelite.backends.tflite_backend:TFLiteRuntimeBackend", ("tflite",), "tflite",
                          "tflite_runtime"),
    "numpy": BackendSpec("slidelite.backends.numpy_backend:NumpyBackend", ("onnx", "tflite"), None, None),
}
#: (backend, format) pairs whose class is not the backend's ``target`` (the numpy backend reads TFLite separately).
FORMAT_TARGETS: Dict[Tuple[str, str], str] = {
    ("numpy", "tflite"): "slidelite.backends.numpy_tflite_backend:NumpyTFLiteBackend",
}
FORMATS: Tuple[str, ...] = ("onnx", "tflite")
#: How :func:`engine_problem` starts its two answers.
NOT_INSTALLED, FAILS_TO_IMPORT = "is not installed", "is installed but fails to import"
#: Where error messages send users whose platform lacks a backend wheel (per platform and Python version).
INSTALL_DOC_HINT = "which backend installs on which platform: https://github.com/slidelite/slidelite/blob/main/docs/install.md"

__all__ = ["Backend", "BackendSpec", "BACKEND_NAMES", "BACKENDS", "FAILS_TO_IMPORT", "FORMAT_TARGETS", "INSTALL_DOC_HINT", "NOT_INSTALLED",
           "available_backends", "backend_names_for", "candidates", "check_backend_name", "create_backend",
           "engine_problem", "is_available", "physical_cores", "resolve_threads", "try_load"]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def is_available(name: str) -> bool:
    """True when backend ``name``'s module and its engine package are installed (nothing is imported)."""
    spec = BACKENDS[name]
    module = spec.target.split(":")[0]
    return _module_exists(module) and (spec.engine is None or _module_exists(spec.engine))


def backend_names_for(fmt: str) -> List[str]:
    """Names of the backends that can run ``fmt`` models, in ``auto`` preference order."""
    return [name for name in BACKEND_NAMES if fmt in BACKENDS[name].formats]


def available_backends(fmt: str) -> List[str]:
    """Names of the installed backends that can run ``fmt`` models, in ``auto`` preference order."""
    return [name for name in backend_names_for(fmt) if is_available(name)]


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical CPU cores this process may use (SMT siblings counted once); falls back to ``os.cpu_count()``."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", encoding="ascii") as f:
                cores.add(f.read().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def resolve_threads(threads: Optional[int]) -> int:
    """Validate a ``threads`` option; None means :func:`physical_cores`.

    Raises:
        UsageError: ``threads`` is not a positive integer.
    """
    if threads is None:
        return physical_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    return threads


def create_backend(model_file: "ModelFile", name: str = "auto", threads: Optional[int] = None) -> Backend:
    """Load ``model_file`` into backend ``name``.

    ``'auto'`` tries the backends that run the file's format in :data:`BACKEND_NAMES` order and takes the
    first one whose engine is installed and imports (see :func:`engine_problem`), so an ``.onnx`` file
    falls back to the numpy backend when onnxruntime is missing or broken. A backend that imports but
    refuses the file raises (``auto`` does not try the next one: ``slidelite info`` shows which would run it).

    Raises:
        UsageError: unknown backend name, a backend that cannot run this format, or threads <= 0.
        BackendUnavailableError: no candidate's engine imports; the message names the pip extra.
        ModelError: the engine cannot load the file.
    """
    threads = resolve_threads(threads)
    names = candidates(model_file, name)
    problems: List[Tuple[str, str]] = []
    for candidate in names:
        backend, problem = try_load(model_file, candidate, threads)
        if backend is not None:
            return backend
        problems.append((candidate, problem))
    broken = [(n, p) for n, p in problems if not p.startswith(NOT_INSTALLED)]
    if broken:
        engine, problem = broken[0]
        raise BackendUnavailableError(f"no backend for {model_file.path}: {engine} {problem} ({INSTALL_DOC_HINT})")
    extra = BACKENDS[names[0]].extra
    hint = f'pip install "slidelite[{extra}]"' if extra else "reinstall slidelite"
    raise BackendUnavailableError(f"no backend for {model_file.path}: {hint} ({INSTALL_DOC_HINT})")


def try_load(model_file: "ModelFile", name: str, threads: int = 1) -> Tuple[Optional[Backend], str]:
    """Load ``model_file`` into backend ``name`` exactly (no fallback, no format check): the loaded backend and
    ``''``, or None and why its engine cannot be used (:func:`engine_problem`). The load is also the backend's
    own check of every op, attribute and dtype in the file.

    Raises:
        ModelError: the engine refuses or cannot read the file.
    """
    problem = engine_problem(name)
    if problem is not None:
        return None, problem
    target = FORMAT_TARGETS.get((name, model_file.format), BACKENDS[name].target)
    module_name, class_name = target.split(":")
    try:  # the engine's native library may only load inside the backend (ai_edge_litert.interpreter)
        return getattr(importlib.import_module(module_name), class_name)(model_file, threads), ""
    except ImportError as exc:
        return None, f"{FAILS_TO_IMPORT} ({_one_line(exc)})"


def engine_problem(name: str) -> Optional[str]:
    """Why backend ``name`` cannot be used on this machine (not installed, or installed but its engine fails
    to import), or None when it imports. Imports the engine."""
    spec = BACKENDS[name]
    if not is_available(name):
        return f'{NOT_INSTALLED} (pip install "slidelite[{spec.extra}]")' if spec.extra else \
            f"{NOT_INSTALLED} (reinstall slidelite)"
    try:
        importlib.import_module(spec.target.split(":")[0])
        if spec.engine is not None:
            importlib.import_module(spec.engine)
    except ImportError as exc:
        return f"{FAILS_TO_IMPORT} ({_one_line(exc)})"
    return None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def check_backend_name(name: str) -> None:
    """Raise :class:`UsageError` unless ``name`` is ``'auto'`` or a registered backend name."""
    if name != "auto" and name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}': choose one of auto, {', '.join(BACKEND_NAMES)}")


def candidates(model_file: "ModelFile", name: str) -> List[str]:
    """The backends ``name`` stands for on ``model_file``, in the order they are tried (``auto``: every backend
    for the file's format; else ``[name]``).

    Raises:
        UsageError: unknown backend name, or a backend that cannot run this format.
    """
    fmt = model_file.format
    check_backend_name(name)
    names = backend_names_for(fmt) if name == "auto" else [name]
    if fmt not in BACKENDS[names[0]].formats:
        runnable = ", ".join(backend_names_for(fmt))
        raise UsageError(f"backend '{name}' cannot run {fmt} models ({model_file.path}); use one of: auto, {runnable}")
    return names
