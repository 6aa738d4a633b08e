"""Depthwise 2-D convolution on channels-last (NHWC) maps, shared by the numpy backend's ONNX ``Conv`` and TFLite
``DEPTHWISE_CONV_2D`` kernels.

numpy has no fused multiply-add, so a loop over the kernel taps costs two passes per tap (multiply, then add).
Here the columns and channels of a row are read as one axis ``m = (x, c)``: in a map padded once, the window of
tap ``(i, j)`` is then a strided view ``(n, out_h, out_w * C)`` whose rows are contiguous runs, and one
``np.einsum("nhijm,ijm->nhm")`` over all taps sums the products in a single pass, its inner loop running along
whole rows against the tap weights repeated along the output row (built once per width and cached). A stride
along x breaks the uniform ``m`` axis, so strided convolutions first split the padded map into ``stride`` column
phase images (together one copy of it); the taps reading one phase again form one einsum, and the phases are
summed. Measured on EfficientNet-Lite0's depthwise maps (``benchmarks/numpy_backend.py``): 2-2.6x faster than
the per-tap passes. Output rows are shared among the requested threads (numpy's einsum loop releases the GIL).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ._blas_threads import parallel_ranges

#: the tap weights repeated along an output row are cached up to this size; wider rows use the 6-D einsum
ROW_WEIGHTS_MAX_BYTES = 8 << 20
#: output rows are shared among threads only when each thread gets at least this many products
PARALLEL_MIN_PRODUCTS = 1 << 18


def pad_nhwc(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0) -> np.ndarray:
    """``x`` ``(n, h, w, c)`` with ``value`` around it: one allocation, the borders filled and the interior copied
    (``np.pad``, or zeros then a copy, costs another pass over the whole map)."""
    if not (top or bottom or left or right):
        return x
    n, h, w, c = x.shape
    out = np.empty((n, h + top + bottom, w + left + right, c), x.dtype)
    out[:, :top] = value
    out[:, top + h:] = value
    out[:, top:top + h, :left] = value
    out[:, top:top + h, left + w:] = value
    out[:, top:top + h, left:left + w] = x
    return out


class DepthwiseNhwc:
    """``out[n, y, x, c] = sum_ij xp[n, y*sh + i*dh, x*sw + j*dw, c] * taps[i, j, c]`` for a padded NHWC ``xp``.

    Args:
        taps: ``(kh, kw, C)`` weights (float, or int32 for integer accumulation).
        strides: ``(sh, sw)``.
        dilations: ``(dh, dw)``.
    """

    def __init__(self, taps: np.ndarray, strides: Sequence[int], dilations: Sequence[int]) -> None:
        self.taps = np.ascontiguousarray(taps)
        self.kh, self.kw, self.channels = self.taps.shape
        self.sh, self.sw = (int(s) for s in strides)
        self.dh, self.dw = (int(d) for d in dilations)
        self._phases = self._column_phases()
        self._row_weights: Dict[int, List[np.ndarray]] = {}

    def _column_phases(self) -> List[Tuple[int, int, int, List[int]]]:
        """Per column phase ``p`` of the stride: ``(p, first offset, offset step, taps j)`` of the kernel columns
        it serves, tap ``j`` reading column ``x + first + k * step`` of phase image ``p`` (k its rank there)."""
        phases = []
        for phase in range(self.sw):
            js = [j for j in range(self.kw) if j * self.dw % self.sw == phase]
            if js:
                offsets = [j * self.dw // self.sw for j in js]
                step = offsets[1] - offsets[0] if len(offsets) > 1 else 1
                phases.append((phase, offsets[0], step, js))
        return phases

    def __call__(self, xp: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
        """The convolution of padded ``xp`` ``(n, H, W, C)`` into a new ``(n, out_h, out_w, C)`` array."""
        n = xp.shape[0]
        out = np.empty((n, out_h, out_w, self.channels), np.result_type(xp.dtype, self.taps.dtype))
        weights = self._weights(out_w)
        if weights is None:
            self._einsum_6d(xp, out)
            return out
        images = [xp if self.sw == 1 else np.ascontiguousarray(xp[:, :, phase::self.sw])
                  for phase, _, _, _ in self._phases]
        views = [self._row_view(image, first, step, len(js), out_h, out_w)
                 for image, (_, first, step, js) in zip(images, self._phases)]
        flat = out.reshape(n, out_h, out_w * self.channels)

        def rows(lo: int, hi: int) -> None:
            np.einsum("nhijm,ijm->nhm", views[0][:, lo:hi], weights[0], out=flat[:, lo:hi])
            for view, weight in zip(views[1:], weights[1:]):
                flat[:, lo:hi] += np.einsum("nhijm,ijm->nhm", view[:, lo:hi], weight)

        parallel_ranges(out_h, rows, self._min_rows(out))
        return out

    def _min_rows(self, out: np.ndarray) -> int:
        """Fewest output rows worth a thread of their own."""
        n, _, out_w, c = out.shape
        return -(-PARALLEL_MIN_PRODUCTS // max(1, n * out_w * c * self.kh * self.kw))

    def _row_view(self, image: np.ndarray, first: int, step: int, count: int, out_h: int, out_w: int) -> np.ndarray:
        """``(n, out_h, kh, count, out_w * C)`` windows of a contiguous (phase) image: rows by the stride, taps by
        the dilation, and along ``m`` the ``out_w`` pixels times ``C`` channels of one output row."""
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        s = image.strides
        start = image[:, :, first:]
        return np.lib.stride_tricks.as_strided(
            start, (image.shape[0], out_h, self.kh, count, out_w * self.channels),
            (s[0], s[1] * self.sh, s[1] * self.dh, s[2] * step, s[3]), writeable=False)

    def _weights(self, out_w: int) -> List[np.ndarray] | None:
        """Per column phase, its taps' weights ``(kh, count, out_w * C)`` repeated along the row; None when too big."""
        cached = self._row_weights.get(out_w)
        if cached is None:
            if self.taps.nbytes * out_w > ROW_WEIGHTS_MAX_BYTES:
                return None
            cached = [np.ascontiguousarray(np.broadcast_to(
                self.taps[:, js, None, :], (self.kh, len(js), out_w, self.channels))).reshape(self.kh, len(js), -1)
                for _, _, _, js in self._phases]
            cached = self._row_weights.setdefault(out_w, cached)
        return cached

    def _einsum_6d(self, xp: np.ndarray, out: np.ndarray) -> None:
        """One einsum over ``(n, y, x, i, j, c)`` windows (inner loop along ``C``): for rows too wide to cache."""
        s = xp.strides
        n, out_h, out_w, c = out.shape
        windows = np.lib.stride_tricks.as_strided(
            xp, (n, out_h, out_w, self.kh, self.kw, c),
            (s[0], s[1] * self.sh, s[2] * self.sw, s[1] * self.dh, s[2] * self.dw, s[3]), writeable=False)
        parallel_ranges(out_h, lambda lo, hi: np.einsum("nhwijc,ijc->nhwc", windows[:, lo:hi], self.taps,
                                                         out=out[:, lo:hi]), self._min_rows(out))
