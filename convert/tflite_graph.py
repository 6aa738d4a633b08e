"""Step 3a (TFLite): rewrite the re-parameterized classifier into the layout XNNPACK runs fastest.

The zoo's deployed Slide attention (:meth:`slidelite.zoo.SlideAttention.reparameterize`) computes every
neighbourhood key and value with depthwise convolutions of channel multiplier ka^2 (9). Measured in LiteRT
(``benchmarks/tflite_int8.py``, per-op profile, docs/tflite.md) for the earlier deployed form (one such
convolution, then two batched matrix products per pixel and head), that is slow in TFLite:

* XNNPACK's fast depthwise kernels need channel multiplier 1; multiplier 9 runs as a grouped GEMM with
  K = N = 9 (the largest single op of Slide-Swin-T in fp32);
* the batched products have 9408 batches of (1 x 32) @ (32 x 9): per-batch overhead, no useful GEMM;
* the layout around them costs SLICE (k | v), TRANSPOSE (v) and RESHAPE copies.

:class:`PerOffsetSlideAttention` computes the same function with the offsets as separate ops: for each of
the ka^2 offsets j one multiplier-1 depthwise convolution of k and one of v (the merged kernel's slice
j), the logit ``sum_d q_d * k_j,d`` (element-wise product, reduction over the head's channels), one
SOFTMAX over the ka^2 logits and ``sum_j attn_j * v_j`` accumulated offset by offset. Same weights, same
arithmetic up to float summation order (max |delta| ~1e-7); no batched matmul, no multiplier-9 conv, and
no concatenation of the shifted maps (measured: concatenating them was 16% of the int8 model's op time).

:class:`ReshapePatchMerging` replaces Swin patch merging's four strided slices and a concatenation by one
reshape/transpose, with the LayerNorm and the reduction's input channels permuted to match (exact).

Only exact :class:`SlideAttention` / ``PatchMerging`` instances are rewritten (benchmark baselines that
subclass them keep their own form); the ONNX route exports the zoo's deployed form unchanged.
"""
from __future__ import annotations

import copy
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from slidelite.zoo.slide_attention import SlideAttention
from slidelite.zoo.slide_swin import PatchMerging


def tflite_form(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every deployed Slide attention and patch merging rewritten (eval mode).

    Imported lazily by the TFLite route (this module imports torch and the zoo)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is SlideAttention and child.deployed:
                setattr(parent, name, PerOffsetSlideAttention(child))
            elif type(child) is PatchMerging:
                setattr(parent, name, ReshapePatchMerging(child))
    return module.eval()


class PerOffsetSlideAttention(nn.Module):
    """A deployed :class:`SlideAttention` computed offset by offset (see the module docstring).

    Args:
        attn: a re-parameterized Slide attention; its ``qkv`` and ``proj`` are shared, the kernels of its
            ``k_conv`` and ``v_conv`` are regrouped by offset.
    """

    def __init__(self, attn: SlideAttention) -> None:
        super().__init__()
        C, kk, ka = attn.dim, attn.ka * attn.ka, attn.ka
        self.dim, self.num_heads, self.head_dim, self.ka = C, attn.num_heads, attn.head_dim, ka
        self.qkv, self.proj = attn.qkv, attn.proj
        # output channel c * kk + j of k_conv / v_conv holds offset j of channel c (here c over k then v)
        convs = (attn.k_conv, attn.v_conv)
        weight = torch.cat([conv.weight.detach() for conv in convs]).reshape(2 * C, kk, 1, ka, ka)
        bias = torch.cat([conv.bias.detach() for conv in convs]).reshape(2 * C, kk)
        self.register_buffer("shift_weight", weight.transpose(0, 1).contiguous())  # (kk, 2C, 1, ka, ka)
        self.register_buffer("shift_bias", bias.transpose(0, 1).contiguous())      # (kk, 2C)

    def _shifted(self, x: torch.Tensor, lo: int, hi: int) -> List[torch.Tensor]:
        """The ka^2 neighbourhood copies of channels ``lo:hi`` of the NCHW map ``x``, each (B, H, W, hi - lo)."""
        x = x[:, lo:hi]
        return [F.conv2d(x, self.shift_weight[j, lo:hi], self.shift_bias[j, lo:hi], padding=self.ka // 2,
                         groups=hi - lo).permute(0, 2, 3, 1) for j in range(self.ka * self.ka)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C), as :meth:`SlideAttention.forward` in its deployed form."""
        B, H, W, C = x.shape
        heads, hd, kk = self.num_heads, self.head_dim, self.ka * self.ka
        N = B * H * W
        qkv = self.qkv(x)                                                    # q pre-scaled
        q = qkv[..., :C]
        kv = qkv[..., C:].permute(0, 3, 1, 2)                                # (B, 2C, H, W)
        keys, values = self._shifted(kv, 0, C), self._shifted(kv, C, 2 * C)
        logits = torch.cat([(k * q).reshape(N, heads, hd).sum(-1, keepdim=True) for k in keys], -1)
        attn = logits.softmax(-1)                                            # (N, heads, kk)
        out = sum(attn[..., j:j + 1] * values[j].reshape(N, heads, hd) for j in range(kk))
        return self.proj(out.reshape(B, H, W, C))


class ReshapePatchMerging(nn.Module):
    """Swin patch merging with one reshape/transpose instead of four strided slices and a concatenation.

    The zoo's ``PatchMerging`` concatenates the 2x2 neighbours in the order (0,0), (1,0), (0,1), (1,1)
    (row offset fastest); the reshape yields (row offset, column offset, channel), so the LayerNorm
    parameters and the reduction's input columns are permuted once here. Odd sizes are zero-padded as before.

    Args:
        merge: a zoo ``PatchMerging``; its parameters are copied in the permuted order.
    """

    def __init__(self, merge: PatchMerging) -> None:
        super().__init__()
        C = merge.dim
        order = torch.arange(4 * C).reshape(2, 2, C).transpose(0, 1).reshape(-1)  # new slot -> old channel
        self.dim = C
        self.norm = copy.deepcopy(merge.norm)
        self.reduction = copy.deepcopy(merge.reduction)
        with torch.no_grad():
            self.norm.weight.copy_(merge.norm.weight[order])
            self.norm.bias.copy_(merge.norm.bias[order])
            self.reduction.weight.copy_(merge.reduction.weight[:, order])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        x = x.reshape(B * H // 2, 2, W // 2, 2 * C).transpose(1, 2).reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))
