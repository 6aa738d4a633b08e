"""Step 3a (TFLite): rewrite the re-parameterized classifier into the layout XNNPACK runs fastest.

The zoo's deployed Slide attention (:meth:`slidelite.zoo.SlideAttention.reparameterize`) is written for ONNX
Runtime: channel-first convolutions, per neighbour a depthwise convolution of k and of v. XNNPACK (LiteRT) runs
channels-last, and there the fastest form measured (``benchmarks/slide_attention_forms.py``, docs/benchmarks.md)
is :class:`TapGemmSlideAttention`, which uses that the merged kernel ``W[c, j, t]`` (head channel c, neighbour
j, tap t of the ka x ka kernel) is shared across heads:

    logit_j = sum_t sum_c W[c, j, t] q_c k_c(p + d_t) + sum_c q_c b_k[c, j]
    out_c   = sum_t v_c(p + d_t) sum_j W[c, j, t] attn_j + sum_j attn_j b_v[c, j]

so per tap t: one shifted copy of k (a SLICE of the zero-padded map, flattened so every shift is a row
offset), its product with q, and one FULLY_CONNECTED (head_dim -> ka^2) over all heads and pixels adds to the
logits; one SOFTMAX; per tap one FULLY_CONNECTED (ka^2 -> head_dim) of the weights times the shifted v. The
bias terms are one FULLY_CONNECTED each (per head for k: it holds the position term). The same multiply-adds
as the convolutions, in GEMMs and contiguous copies; no multiplier-9 or per-pixel batched products, no
concatenation of shifted maps. The previous TFLite form (a multiplier-1 depthwise conv per offset, SUM over
head_dim, CONCATENATION of the logits) measured 1.2x slower in the whole model; files made with it (the
shipped ones) still run, and the numpy backend still fuses their attention chain.

:class:`ReshapePatchMerging` replaces Swin patch merging's four strided slices and a concatenation by one
reshape/transpose, with the LayerNorm and the reduction's input channels permuted to match (exact).

Only exact :class:`SlideAttention` / ``PatchMerging`` instances are rewritten (benchmark baselines that
subclass them keep their own form); the ONNX route exports the zoo's deployed form unchanged.
"""
from __future__ import annotations

import copy

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
                setattr(parent, name, TapGemmSlideAttention(child))
            elif type(child) is PatchMerging:
                setattr(parent, name, ReshapePatchMerging(child))
    return module.eval()


class TapGemmSlideAttention(nn.Module):
    """A deployed :class:`SlideAttention` computed tap by tap with small matrix products (module docstring).

    Args:
        attn: a re-parameterized Slide attention; its ``qkv`` and ``proj`` are shared, the kernel and biases of
            its ``k_conv`` and ``v_conv`` are regrouped by tap.
    """

    def __init__(self, attn: SlideAttention) -> None:
        super().__init__()
        heads, hd, kk = attn.num_heads, attn.head_dim, attn.ka * attn.ka
        self.dim, self.num_heads, self.head_dim, self.ka = attn.dim, heads, hd, attn.ka
        self.qkv, self.proj = attn.qkv, attn.proj
        # output channel c * kk + j of k_conv / v_conv holds neighbour j of channel c; its kernel, tap t
        kernel = attn.k_conv.weight.detach().reshape(heads, hd, kk, kk)[0]              # (c, j, t), every head
        key_bias = attn.k_conv.bias.detach().reshape(heads, hd, kk)                     # (head, c, j): + position
        self.register_buffer("key_taps", kernel.permute(2, 0, 1).contiguous())          # (t, c, j)
        self.register_buffer("key_bias", torch.block_diag(*key_bias))                   # (C, heads * kk)
        self.register_buffer("value_taps", kernel.permute(2, 1, 0).contiguous())        # (t, j, c)
        self.register_buffer("value_bias", attn.v_conv.bias.detach().reshape(heads, hd, kk)[0].t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C), as :meth:`SlideAttention.forward` in its deployed form."""
        B, H, W, C = x.shape
        heads, hd, ka, kk, p = self.num_heads, self.head_dim, self.ka, self.ka * self.ka, self.ka // 2
        row = W + 2 * p                                                  # padded row: shifts are row offsets
        L = H * row
        qkv = self.qkv(x)                                                # q pre-scaled
        q = F.pad(qkv[..., :C], (0, 0, 0, 2 * p)).reshape(B, L, C)
        k, v = (F.pad(t, (0, 0, p, p, p, p + 1)).reshape(B, -1, C) for t in (qkv[..., C:2 * C], qkv[..., 2 * C:]))
        offsets = [a * row + b for a in range(ka) for b in range(ka)]
        N = B * L * heads                                                # 2-D products: FULLY_CONNECTED
        logits = torch.matmul(q.reshape(B * L, C), self.key_bias).reshape(N, kk)
        for t, o in enumerate(offsets):
            logits = logits + torch.matmul((q * k[:, o:o + L]).reshape(N, hd), self.key_taps[t])
        attn = logits.softmax(-1)                                        # (B * L * heads, kk)
        out = torch.matmul(attn, self.value_bias)
        for t, o in enumerate(offsets):
            out = out + torch.matmul(attn, self.value_taps[t]) * v[:, o:o + L].reshape(N, hd)
        return self.proj(out.reshape(B, H, row, C)[:, :, :W])


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
