"""Channels-last (NHWC) 2-D convolution, the layout the numpy backend's plan gives convolutions with
constant weights (see :mod:`._onnx_fusion`): channels are the contiguous axis, so

* a 1x1 convolution is one GEMM: ``(N*H*W, C) @ (C, O)``;
* a depthwise convolution is one multiply-add per kernel tap (a 3x3 kernel: 9), each over a strided
  window of the padded image (of one of its ``stride**2`` phase images when strided) times the tap's
  per-channel weights repeated along the output row, into one preallocated output and one scratch buffer;
* any other (ungrouped) convolution is im2col (the taps' windows concatenated along channels, one copy)
  and one GEMM with the weights laid out ``(kh*kw*C, O)`` once at load.

Bias and a fused ReLU/ReLU6 are applied in place. Registered as the ``Conv`` kernel for nodes the plan
marked ``_layout=NHWC``; every other Conv keeps :class:`._numpy_ops.Conv2d`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ._blas_threads import blas_matmul, parallel_ranges
from ._numpy_ops import BLOCK, OPS, Attrs, Consts, Kernel, OpError, apply_activation, conv_pads, register_op
from ._onnx_reader import Node


#: largest size of a depthwise convolution's weights repeated along an output row (:meth:`ConvNhwc._row_weights`)
ROW_WEIGHTS_MAX_BYTES = 1 << 20


class ConvNhwc:
    """A 2-D convolution on NHWC input with constant weights (ungrouped or depthwise), NHWC output."""

    def __init__(self, attrs: Attrs, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
        self.attrs = attrs
        self.out_channels, group_in, kh, kw = weight.shape
        groups = int(attrs.get("group", 1))
        self.depthwise = groups > 1
        if self.depthwise and (group_in != 1 or groups != self.out_channels):
            raise OpError("NHWC Conv supports ungrouped and depthwise (multiplier 1) convolutions")
        self.in_channels = group_in * groups
        self.kernel = (kh, kw)
        self.strides = tuple(attrs.get("strides", [1, 1]))
        self.dilations = tuple(attrs.get("dilations", [1, 1]))
        self.bias = None if bias is None else bias.astype(weight.dtype).reshape(-1)
        self.activation = attrs.get("_activation")
        if self.depthwise:  # (taps, C)
            self.taps = np.ascontiguousarray(weight.reshape(self.out_channels, kh * kw).T)
            self._row_cache: Dict[int, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        else:  # (kh*kw*C, O): the column order of the im2col below
            self.matrix = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, self.out_channels))

    def __call__(self, x: np.ndarray, *unused: Optional[np.ndarray]) -> np.ndarray:
        if x.ndim != 4 or x.shape[3] != self.in_channels:
            raise OpError(f"Conv expects {self.in_channels} input channels, got input {tuple(x.shape)} (NHWC)")
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        n, height, width, _ = x.shape
        top, left, bottom, right = conv_pads(self.attrs, (height, width), self.kernel, self.strides, self.dilations)
        h, w = height + top + bottom, width + left + right
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            raise OpError(f"Conv input {h}x{w} (padded) is smaller than its {kh}x{kw} kernel")
        if top or left or bottom or right:
            padded = np.zeros((n, h, w, x.shape[3]), x.dtype)
            padded[:, top:top + height, left:left + width] = x
            x = padded
        if self.depthwise:
            return self._depthwise(x, oh, ow)
        windows = [x[:, ky * dh:ky * dh + sh * (oh - 1) + 1:sh, kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                   for ky in range(kh) for kx in range(kw)]
        out = self._gemm(windows, n, oh, ow)
        if self.bias is not None:
            out += self.bias
        return apply_activation(out, self.activation)

    def _depthwise(self, x: np.ndarray, oh: int, ow: int) -> np.ndarray:
        """Multiply-add per tap, a band of output rows at a time so the passes stay in the cache; the bands
        are shared among the requested threads."""
        n, c = x.shape[0], x.shape[3]
        out = np.empty((n, oh, ow, c), x.dtype)
        band = max(1, BLOCK // max(n * ow * c, 1))
        taps, bias = self._row_weights(ow)
        sources = self._tap_sources(x)
        parallel_ranges(-(-oh // band), lambda lo, hi: self._bands(sources, out, band, lo, hi, taps, bias))
        return out

    def _tap_sources(self, x: np.ndarray) -> List[Tuple[np.ndarray, int, int]]:
        """Per kernel tap, the image it reads and the (row, column) offset of its stride-1 window there. A
        strided convolution is split into ``stride**2`` phase images first (one copy of the input), so
        every window row is one contiguous run of ``ow * C`` values."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        phases: Dict[Tuple[int, int], np.ndarray] = {}
        sources = []
        for ky, kx in ((ky, kx) for ky in range(kh) for kx in range(kw)):
            key = (ky * dh % sh, kx * dw % sw)
            if key not in phases:
                phases[key] = x if key == (0, 0) and (sh, sw) == (1, 1) else np.ascontiguousarray(
                    x[:, key[0]::sh, key[1]::sw])
            sources.append((phases[key], ky * dh // sh, kx * dw // sw))
        return sources

    def _row_weights(self, ow: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The per-tap weights and the bias, repeated along an output row of ``ow`` pixels (built once per
        width) while that stays small: a window row is one contiguous run of ``ow * C`` values, so numpy's
        loops then run over whole rows instead of ``C``-long broadcast pieces (about 2x faster with 32
        channels, 1.2x with several hundred)."""
        if self.taps.nbytes * ow > ROW_WEIGHTS_MAX_BYTES:
            return self.taps, self.bias
        cached = self._row_cache.get(ow)
        if cached is None:
            taps = np.ascontiguousarray(np.broadcast_to(self.taps[:, None, :], (len(self.taps), ow, self.in_channels)))
            bias = None if self.bias is None else np.ascontiguousarray(np.broadcast_to(self.bias, (ow, self.in_channels)))
            cached = self._row_cache.setdefault(ow, (taps, bias))
        return cached

    def _bands(self, sources: List[Tuple[np.ndarray, int, int]], out: np.ndarray, band: int, first: int, last: int,
               taps: np.ndarray, bias: Optional[np.ndarray]) -> None:
        """Depthwise output bands ``first..last-1`` (of ``band`` rows each) into ``out``."""
        n, oh, ow, c = out.shape
        scratch = np.empty((n, band, ow, c), out.dtype)
        for r0 in range(first * band, min(last * band, oh), band):
            rows = min(band, oh - r0)
            target, tmp = out[:, r0:r0 + rows], scratch[:, :rows]
            for tap, (image, y0, x0) in enumerate(sources):
                window = image[:, r0 + y0:r0 + y0 + rows, x0:x0 + ow]
                if tap == 0:
                    np.multiply(window, taps[0], out=target)
                else:
                    np.multiply(window, taps[tap], out=tmp)
                    target += tmp
            if bias is not None:
                target += bias
            apply_activation(target, self.activation)

    def _gemm(self, windows: List[np.ndarray], n: int, oh: int, ow: int) -> np.ndarray:
        cols = windows[0] if len(windows) == 1 else np.concatenate(windows, axis=3)
        out = blas_matmul(cols.reshape(n * oh * ow, -1), self.matrix)
        return out.reshape(n, oh, ow, self.out_channels)


_nchw_conv = OPS["Conv"]


@register_op("Conv")
def _conv(node: Node, consts: Consts) -> Kernel:
    if node.attributes.get("_layout") == "NHWC":
        bias = consts[2] if len(consts) > 2 else None
        return ConvNhwc(node.attributes, consts[1], bias)  # type: ignore[arg-type]
    return _nchw_conv(node, consts)
