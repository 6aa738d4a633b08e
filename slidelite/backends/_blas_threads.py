"""Set the thread count of the BLAS numpy is linked against, without threadpoolctl (stdlib ctypes only).

numpy has no API for it. The BLAS library numpy loaded is found among the process's mapped files
(``/proc/self/maps`` on Linux) or, elsewhere, in the ``numpy.libs`` / ``numpy/.dylibs`` folders of the
wheel, and its OpenBLAS entry point is called: ``scipy_openblas_set_num_threads64_`` (numpy >= 2 wheels),
``openblas_set_num_threads64_`` (numpy 1.x wheels) or ``openblas_set_num_threads`` (Debian's and other
distributions' OpenBLAS). With any other BLAS (Accelerate, MKL, reference BLAS) nothing is changed and
the thread count stays the one the environment chose (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``
before Python starts). The setting is process-wide: the last backend created decides.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
_cache: List[Optional[ctypes.CDLL]] = []


def _blas_candidates() -> List[str]:
    """Paths of loaded (or bundled) shared libraries whose name says BLAS, most likely first."""
    paths: List[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if "blas" in Path(path).name.lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    package = Path(np.__file__).resolve().parent
    for folder in (package.parent / "numpy.libs", package / ".dylibs"):
        if folder.is_dir():
            paths += sorted(str(p) for p in folder.iterdir() if "blas" in p.name.lower())
    return paths


def _library() -> Optional[ctypes.CDLL]:
    """The first candidate library exporting an OpenBLAS thread setter (looked up once)."""
    if not _cache:
        found = None
        for path in _blas_candidates():
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD if hasattr(os, "RTLD_NOLOAD") else 0)
            except OSError:
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
            if any(hasattr(lib, name) for name in _SETTERS):
                found = lib
                break
        _cache.append(found)
    return _cache[0]


def _function(names: tuple) -> Optional[Callable[..., int]]:
    lib = _library()
    for name in names:
        if lib is not None and hasattr(lib, name):
            return getattr(lib, name)
    return None


def set_blas_threads(threads: int) -> bool:
    """Make numpy's BLAS use ``threads`` threads; returns False when numpy's BLAS is not OpenBLAS."""
    setter = _function(_SETTERS)
    if setter is None or threads < 1:
        return False
    setter(ctypes.c_int(int(threads)))
    return True


def blas_threads() -> Optional[int]:
    """The thread count numpy's OpenBLAS uses now (None when it is not OpenBLAS)."""
    getter = _function(_GETTERS)
    if getter is None:
        return None
    getter.restype = ctypes.c_int
    return int(getter())
