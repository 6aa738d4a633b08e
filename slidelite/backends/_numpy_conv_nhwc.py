"""Channels-last (NHWC) 2-D convolution, the layout the numpy backend's plan gives convolutions with
constant weights (see :mod:`._onnx_fusion`): channels are the contiguous axis, so

* a 1x1 convolution is one GEMM: ``(N*H*W, C) @ (C, O)``;
* a depthwise convolution is one einsum over all kernel taps' strided windows of the padded image
  (:mod:`._depthwise_nhwc`);
* any other (ungrouped) convolution is im2col (the taps' windows concatenated along channels, one copy)
  and one GEMM with the weights laid out ``(kh*kw*C, O)`` once at load.

Bias and a fused ReLU/ReLU6 are applied in place. Registered as the ``Conv`` kernel for nodes the plan
marked ``_layout=NHWC``; every other Conv keeps :class:`._numpy_ops.Conv2d`.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ._blas_threads import blas_matmul
from ._depthwise_nhwc import DepthwiseNhwc, pad_nhwc
from ._numpy_ops import (OPS, Attrs, Consts, Kernel, OpError, apply_activation, bias_activation, conv_pads,
                         register_op)
from ._onnx_reader import Node


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
        if self.depthwise:
            self.depthwise_kernel = DepthwiseNhwc(weight.reshape(self.out_channels, kh, kw).transpose(1, 2, 0),
                                                  self.strides, self.dilations)
        else:  # (kh*kw*C, O): the column order of the im2col below; bias and activation per block of rows
            self.matrix = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, self.out_channels))
            self.epilogue = bias_activation(self.bias, self.activation)

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
        x = pad_nhwc(x, top, bottom, left, right)
        if self.depthwise:
            return self._depthwise(x, oh, ow)
        windows = [x[:, ky * dh:ky * dh + sh * (oh - 1) + 1:sh, kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                   for ky in range(kh) for kx in range(kw)]
        return self._gemm(windows, n, oh, ow)

    def _depthwise(self, x: np.ndarray, oh: int, ow: int) -> np.ndarray:
        out = self.depthwise_kernel(x, oh, ow)
        if self.bias is not None:
            out += self.bias
        return apply_activation(out, self.activation)

    def _gemm(self, windows: List[np.ndarray], n: int, oh: int, ow: int) -> np.ndarray:
        cols = windows[0] if len(windows) == 1 else np.concatenate(windows, axis=3)
        out = blas_matmul(cols.reshape(n * oh * ow, -1), self.matrix, self.epilogue)
        return out.reshape(n, oh, ow, self.out_channels)


_nchw_conv = OPS["Conv"]


@register_op("Conv")
def _conv(node: Node, consts: Consts) -> Kernel:
    if node.attributes.get("_layout") == "NHWC":
        bias = consts[2] if len(consts) > 2 else None
        return ConvNhwc(node.attributes, consts[1], bias)  # type: ignore[arg-type]
    return _nchw_conv(node, consts)
