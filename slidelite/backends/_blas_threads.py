"""The numpy backend's threads: numpy's BLAS thread count (set without threadpoolctl: stdlib ctypes only)
and a small thread pool for large products and cache-blocked kernels.

numpy has no API for it. The BLAS library numpy loaded is found among the process's mapped files
(``/proc/self/maps`` on Linux) or, elsewhere, in the ``numpy.libs`` / ``numpy/.dylibs`` folders of the
wheel, and its OpenBLAS entry point is called: ``scipy_openblas_set_num_threads64_`` (numpy >= 2 wheels),
``openblas_set_num_threads64_`` (numpy 1.x wheels) or ``openblas_set_num_threads`` (Debian's and other
distributions' OpenBLAS). With any other BLAS (Accelerate, MKL, reference BLAS) nothing is changed and
the thread count stays the one the environment chose (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``
before Python starts). The setting is process-wide: the last backend created decides.

Policy (``threads`` = N > 1): OpenBLAS is kept at one thread. :func:`blas_matmul` splits a product by a
matrix of at least :data:`PARALLEL_MIN_MACS` multiply-adds by rows, and a batched one by its batch, over N
threads of a pool (numpy releases the GIL inside BLAS and its loops; the pool's idle threads sleep); smaller
products run on the caller's thread. OpenBLAS's own threads are never woken: after a call they spin on the
cores for a while, and raising them for the batched products alone made Slide-Swin-T slower at two threads
(199-211 ms) than at one (166-182 ms), against 126-129 ms with this policy (quiet 2-core VM). :func:`parallel_ranges`
shares the cache-blocked kernels' blocks (depthwise convolution bands, Gelu/LayerNorm/Softmax blocks) the
same way. Measured on a shared 2-core VM: OpenBLAS's own threads on every product made
``slide_swin_micro_fmnist`` take 345 ms per image at 2 threads (its idle workers spin, and each fork-join
waits for the other core's next time slice), and Slide-Swin-T 4.4 s; with this policy 12-16 ms and 0.7 s.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
_cache: List[Optional[ctypes.CDLL]] = []
#: products smaller than this many multiply-adds run on one BLAS thread (about 0.1 ms on one core)
PARALLEL_MIN_MACS = 1 << 22
_requested = [1]
_pools: List[Tuple[int, ThreadPoolExecutor]] = []
_pool_lock = threading.Lock()


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


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if not _pools or _pools[0][0] != threads:
            _pools[:] = [(threads, ThreadPoolExecutor(threads - 1, thread_name_prefix="slidelite-blas"))]
        return _pools[0][1]


def _quiet(work: Callable[[int, int], None], lo: int, hi: int) -> None:
    """Run ``work`` with floating-point warnings off, as the plan's own thread does (errstate is per thread)."""
    with np.errstate(all="ignore"):
        work(lo, hi)


def parallel_ranges(count: int, work: Callable[[int, int], None], min_count: int = 2) -> None:
    """Call ``work(lo, hi)`` on contiguous ranges covering ``range(count)``, one per requested thread (the
    caller's thread does the first; numpy releases the GIL in its loops). One range when ``threads`` is 1
    or ``count < min_count * threads``."""
    threads = min(_requested[0], count // max(min_count, 1)) if count else 1
    if threads <= 1:
        work(0, count)
        return
    bounds = [count * i // threads for i in range(threads + 1)]
    jobs = [_pool(_requested[0]).submit(_quiet, work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    work(bounds[0], bounds[1])
    for job in jobs:
        job.result()


#: an in-place step on a block of output rows that :func:`blas_matmul` runs right after computing them
Epilogue = Callable[[np.ndarray], object]


def _row_split_matmul(a: np.ndarray, b: np.ndarray, epilogue: Optional[Epilogue]) -> np.ndarray:
    """``a @ b`` for a 2-D ``b``, the rows of ``a`` split over ``threads`` threads (numpy releases the GIL
    inside BLAS), each product on one OpenBLAS thread, each block's ``epilogue`` run by the same thread."""
    rows = a.reshape(-1, a.shape[-1])
    out = np.empty((rows.shape[0], b.shape[1]), np.result_type(a, b))

    def block(lo: int, hi: int) -> None:
        np.matmul(rows[lo:hi], b, out=out[lo:hi])
        if epilogue is not None:
            epilogue(out[lo:hi])

    parallel_ranges(rows.shape[0], block, min_count=1)
    return out.reshape(a.shape[:-1] + (b.shape[1],))


def _batch_split_matmul(a: np.ndarray, b: np.ndarray, epilogue: Optional[Epilogue]) -> np.ndarray:
    """``a @ b`` for equal batch shapes, the batch split over ``threads`` threads, each product on one OpenBLAS
    thread (OpenBLAS's own threads, once woken, spin on the cores for a while after the call and starve the pool's
    threads in the ops that follow: Slide-Swin-T took longer at two threads than at one)."""
    batch = a.shape[:-2]
    left, right = a.reshape((-1,) + a.shape[-2:]), b.reshape((-1,) + b.shape[-2:])
    out = np.empty((left.shape[0], a.shape[-2], b.shape[-1]), np.result_type(a, b))

    def block(lo: int, hi: int) -> None:
        np.matmul(left[lo:hi], right[lo:hi], out=out[lo:hi])
        if epilogue is not None:
            epilogue(out[lo:hi])

    parallel_ranges(left.shape[0], block, min_count=1)
    return out.reshape(batch + out.shape[1:])


def blas_matmul(a: np.ndarray, b: np.ndarray, epilogue: Optional[Epilogue] = None) -> np.ndarray:
    """``np.matmul(a, b)``, on the requested threads when the product is large, then ``epilogue`` (in place: a
    bias, an activation) on the result, on the threads that computed it while it is still in their cache."""
    threads = _requested[0]
    if threads > 1 and a.ndim >= 2 and b.ndim >= 2:
        macs = max(a.size * b.shape[-1], b.size * a.shape[-2])  # exact for the batched shapes the kernels use
        if macs >= PARALLEL_MIN_MACS and b.ndim == 2 and a.size // a.shape[-1] >= 2 * threads:
            return _row_split_matmul(a, b, epilogue)
        if macs >= PARALLEL_MIN_MACS and a.ndim == b.ndim > 2 and a.shape[:-2] == b.shape[:-2] \
                and int(np.prod(a.shape[:-2])) >= 2 * threads:
            return _batch_split_matmul(a, b, epilogue)
    out = np.matmul(a, b)
    if epilogue is not None:
        epilogue(out)
    return out


def blas_threads() -> Optional[int]:
    """The thread count numpy's OpenBLAS uses now (None when it is not OpenBLAS)."""
    getter = _function(_GETTERS)
    if getter is None:
        return None
    getter.restype = ctypes.c_int
    return int(getter())
