"""The Slide attention computed as small matrix products, shared by the numpy backend's ONNX and TFLite fusions
(:mod:`._onnx_slide_attention`, :mod:`._tflite_fusion`), which find the deployed attention in a file and hand its
two shift convolutions' weights to :func:`prepare_weights`.

For a query map ``q``, key and value maps ``k``, ``v`` (channels-last, ``heads`` heads of ``hd`` channels),
``kk = ka^2`` neighbours and the shift convolutions ``W[c, n, t]`` (channel ``c``, neighbour ``n``, kernel tap
``t``) with biases ``b``, both convolutions are linear in their input, so with ``k_t`` the map shifted by tap
``t`` (zero padded)::

    logits[p, h, n] = sum_{t, d} (q ⊙ k_t)[p, h, d] W_k[hd*h + d, n, t] + sum_d q[p, h, d] b_k[hd*h + d, n]
    out[p, h, d]    = sum_t v_t[p, h, d] M[p, h, t, d] + M[p, h, kk, d],
                      M[p, h] = attn[p, h, :] @ [W_v[hd*h + d, :, t] per (t, d) | b_v[hd*h + d, :] per d]

so per head the logits are one ``(pixels, (kk + 1) * hd) @ ((kk + 1) * hd, kk)`` product of the products
``q ⊙ k_t`` (with q itself as the last block, for the bias), and the output one ``(pixels, kk) @ (kk, (kk + 1) *
hd)`` product followed by one einsum with the shifted values. That is the multiply-adds of the convolutions
(about ``2 kk^2`` per channel and pixel) but in BLAS, and a handful of passes over memory instead of ``kk``
passes per convolution; rows are processed in bands that stay in cache, shared among the requested threads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._blas_threads import parallel_ranges
from ._depthwise_nhwc import pad_nhwc

#: rows of the map are attended in bands whose tap products hold about this many values (they stay in cache)
BAND_VALUES = 1 << 18


@dataclass(frozen=True)
class SlideAttentionWeights:
    """What the fused kernel needs, laid out once at load.

    Attributes:
        heads: attention heads.
        head_dim: channels per head.
        ka: neighbourhood (and kernel) size.
        logits: per head, ``((kk + 1) * hd, kk)``: rows ``t * hd + d`` hold ``W_k[hd*h + d, :, t]``, rows
            ``kk * hd + d`` the key bias ``b_k[hd*h + d, :]``.
        values: per head, ``(kk, (kk + 1) * hd)``: column ``t * hd + d`` holds ``W_v[hd*h + d, :, t]``, column
            ``kk * hd + d`` the value bias.
    """

    heads: int
    head_dim: int
    ka: int
    logits: np.ndarray
    values: np.ndarray


class SlideAttentionKernel:
    """Channels-last ``(B, H, W, C)`` query, key and value maps (any strides) -> the ``(B, H, W, C)`` attention
    output (see the module docstring); the query is expected pre-scaled, as the deployed form has it."""

    def __init__(self, weights: SlideAttentionWeights) -> None:
        self.w = weights
        self.channels = weights.heads * weights.head_dim

    def __call__(self, query: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        w, c = self.w, self.channels
        batch, height, width, _ = query.shape
        heads, hd, ka = w.heads, w.head_dim, w.ka
        kk, pad = ka * ka, ka // 2
        key_taps = self._taps(pad_nhwc(keys, pad, pad, pad, pad), height, width)
        value_taps = self._taps(pad_nhwc(values, pad, pad, pad, pad), height, width)
        query = query.reshape(batch, height, width, heads, 1, 1, hd)
        out = np.empty((batch, height, width, heads, hd), np.float32)
        band = max(1, BAND_VALUES // max(1, width * (kk + 1) * c))

        def rows(first: int, last: int) -> None:
            for top in range(first * band, min(last * band, height), band):
                bottom = min(top + band, height)
                self._band(query[:, top:bottom], key_taps[:, top:bottom], value_taps[:, top:bottom], out[:, top:bottom])

        parallel_ranges(-(-height // band), rows)
        return out.reshape(batch, height, width, c)

    def _band(self, query: np.ndarray, key_taps: np.ndarray, value_taps: np.ndarray, out: np.ndarray) -> None:
        """The attention for a band of rows: ``query`` ``(B, rows, W, heads, 1, 1, hd)``, the tap views
        ``(B, rows, W, heads, ka, ka, hd)``, into ``out`` ``(B, rows, W, heads, hd)``."""
        w = self.w
        heads, hd, ka = w.heads, w.head_dim, w.ka
        kk = ka * ka
        shape = key_taps.shape
        pixels = shape[0] * shape[1] * shape[2]
        # per pixel and head: q * k_t for every tap t, then q itself (the key bias's rows)
        products = np.empty(shape[:4] + (kk + 1, hd), np.float32)
        np.multiply(key_taps, query, out=products[..., :kk, :].reshape(shape))
        products[..., kk, :] = query[..., 0, 0, :]
        rows = products.reshape(pixels, heads, (kk + 1) * hd)
        mixed = np.empty((pixels, heads, (kk + 1) * hd), np.float32)
        for h in range(heads):
            logits = np.matmul(rows[:, h], w.logits[h])
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            np.matmul(logits, w.values[h], out=mixed[:, h])
        mixed = mixed.reshape(shape[:4] + (kk + 1, hd))
        np.einsum("nyxhijd,nyxhijd->nyxhd", value_taps, mixed[..., :kk, :].reshape(shape), out=out)
        out += mixed[..., kk, :]

    def _taps(self, padded: np.ndarray, height: int, width: int) -> np.ndarray:
        """``(B, H, W, heads, ka, ka, hd)`` view of the padded map: tap ``(i, j)`` of ``(y, x)`` reads ``(y+i, x+j)``."""
        s = padded.strides
        heads, hd, ka = self.w.heads, self.w.head_dim, self.w.ka
        return np.lib.stride_tricks.as_strided(
            padded, (padded.shape[0], height, width, heads, ka, ka, hd),
            (s[0], s[1], s[2], hd * s[3], s[1], s[2], s[3]), writeable=False)


def prepare_weights(heads: int, head_dim: int, k_weight: np.ndarray, k_bias: np.ndarray, v_weight: np.ndarray,
                    v_bias: np.ndarray) -> SlideAttentionWeights:
    """The per-head product matrices from the two shift convolutions' weights ``(C*kk, 1, ka, ka)`` and biases."""
    ka = k_weight.shape[2]
    kk = ka * ka
    grid = (heads, head_dim, kk, kk)  # (head, d, neighbour n, tap t)
    k_taps = k_weight.reshape(grid).transpose(0, 3, 1, 2).reshape(heads, kk * head_dim, kk)  # rows (t, d)
    k_rows = k_bias.reshape(heads, head_dim, kk)  # rows d
    v_taps = v_weight.reshape(grid).transpose(0, 2, 3, 1).reshape(heads, kk, kk * head_dim)  # columns (t, d)
    v_cols = v_bias.reshape(heads, head_dim, kk).transpose(0, 2, 1)  # columns d
    return SlideAttentionWeights(heads, head_dim, ka,
                                 np.ascontiguousarray(np.concatenate([k_taps, k_rows], axis=1), np.float32),
                                 np.ascontiguousarray(np.concatenate([v_taps, v_cols], axis=2), np.float32))
