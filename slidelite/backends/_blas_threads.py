"""Set the thread count of the BLAS numpy is linked against, without threadpoolctl (stdlib ctypes only).

numpy has no API for it. The BLAS library numpy loaded is found among the process's mapped files
(``/proc/self/maps`` on Linux) or, elsewhere, in the ``numpy.libs`` / ``numpy/.dylibs`` folders of the
wheel, and its OpenBLAS entry point is called: ``scipy_openblas_set_num_threads64_`` (numpy >= 2 wheels),
``openblas_set_num_threads64_`` (numpy 1.x wheels) or ``openblas_set_num_threads`` (Debian's and other
distributions' OpenBLAS). With any other BLAS (Accelerate, MKL, reference BLAS) nothing is changed and
the thread count stays the one the environment chose (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``
before Python starts). The setting is process-wide: the last backend created decides.

Policy: OpenBLAS is kept at one thread, and :func:`blas_matmul` raises it to the requested count only for
products of at least :data:`PARALLEL_MIN_MACS` multiply-adds. A fork-join per small product (a
transformer's per-token GEMMs) costs more than it saves, and far more when the cores are shared: each
join waits for the other thread's next time slice.
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
#: products smaller than this many multiply-adds run on one BLAS thread (about 1 ms on one core)
PARALLEL_MIN_MACS = 1 << 25
_requested = [1]


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
    """Let numpy's BLAS use up to ``threads`` threads for large products (see the module docstring);
    returns False when numpy's BLAS is not OpenBLAS."""
    setter = _function(_SETTERS)
    if setter is None or threads < 1:
        return False
    _requested[0] = int(threads)
    setter(ctypes.c_int(1))
    return True


def requested_blas_threads() -> int:
    """The thread count large products run with (the last ``set_blas_threads``)."""
    return _requested[0]


def blas_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b)``, on the requested BLAS threads when the product is large."""
    threads = _requested[0]
    if threads > 1 and a.ndim >= 2 and b.ndim >= 2:
        macs = max(a.size * b.shape[-1], b.size * a.shape[-2])  # exact for the batched shapes the kernels use
        setter = _function(_SETTERS) if macs >= PARALLEL_MIN_MACS else None
        if setter is not None:
            setter(ctypes.c_int(threads))
            try:
                return np.matmul(a, b)
            finally:
                setter(ctypes.c_int(1))
    return np.matmul(a, b)


def blas_threads() -> Optional[int]:
    """The thread count numpy's OpenBLAS uses now (None when it is not OpenBLAS)."""
    getter = _function(_GETTERS)
    if getter is None:
        return None
    getter.restype = ctypes.c_int
    return int(getter())
