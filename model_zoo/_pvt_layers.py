"""Building blocks shared by PVT (v1) and PVTv2, with or without Slide attention.

Parameter names follow the official code (whai362/PVT ``classification/pvt.py`` and ``pvt_v2.py``):
``attn.q``, ``attn.kv``, ``attn.sr``, ``attn.norm``, ``attn.proj``, ``mlp.fc1``, ``mlp.dwconv.dwconv``,
``mlp.fc2``. A Slide stage replaces the spatial-reduction attention by :class:`SlideAttention`
(``attn.qkv``, ``attn.dep_conv``, ``attn.dep_conv1``, ``attn.relative_position_bias_table``, ``attn.proj``).

Tokens flow as (B, N, C) with the feature-map size (H, W) passed beside them, as in the official code;
every tensor stays at rank <= 4 (the official code builds a 5-D key/value tensor; the arithmetic is the same).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ._layers import DropPath, Mlp, init_transformer_weights
from .slide_attention import SlideAttention


class SpatialReductionAttention(nn.Module):
    """PVT's spatial-reduction attention (SRA): keys and values come from an ``sr_ratio``-strided conv of the map.

    Args:
        dim: channels C.
        num_heads: heads; C must be divisible by it.
        qkv_bias: learnable biases in the q and kv projections.
        qk_scale: override of head_dim ** -0.5.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
        sr_ratio: spatial reduction of keys/values (1: global attention over all tokens).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, sr_ratio: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """x: (B, N, C) tokens of an H x W map (N = H*W, or H*W + 1 with a class token when sr_ratio is 1)."""
        B, N, C = x.shape
        heads, hd = self.num_heads, C // self.num_heads
        q = self.q(x).reshape(B, N, heads, hd).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        kv = self.kv(x)                                   # (B, M, 2C): k | v, head-major (official layout)
        M = kv.shape[1]
        k = kv[..., :C].reshape(B, M, heads, hd).transpose(1, 2)
        v = kv[..., C:].reshape(B, M, heads, hd).transpose(1, 2)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}"


class DWConv(nn.Module):
    """3x3 depthwise convolution over (B, N, C) tokens of an H x W map (PVTv2's ``mlp.dwconv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)


class ConvMlp(nn.Module):
    """PVTv2 MLP: fc1 -> 3x3 depthwise conv -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), H, W)))
        return self.drop(self.fc2(x))


class PVTBlock(nn.Module):
    """Pre-norm PVT block: attention (Slide or SRA), then an MLP (plain for PVT, with a depthwise conv for PVTv2).

    Args:
        dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, drop_path: as in PVT.
        norm_layer: normalization of the two pre-norms.
        sr_ratio: SRA reduction (ignored by Slide blocks).
        is_slide: use :class:`SlideAttention` (neighbourhood ``ka`` x ``ka``) instead of SRA.
        ka: Slide attention neighbourhood.
        conv_mlp: PVTv2's MLP with a depthwise conv.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer=nn.LayerNorm, sr_ratio: int = 1, is_slide: bool = False, ka: int = 3,
                 conv_mlp: bool = False) -> None:
        super().__init__()
        self.is_slide = is_slide
        self.conv_mlp = conv_mlp
        self.norm1 = norm_layer(dim)
        if is_slide:
            self.attn = SlideAttention(dim, num_heads, ka, qkv_bias, qk_scale, attn_drop, drop)
        else:
            self.attn = SpatialReductionAttention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = ConvMlp(dim, hidden, drop) if conv_mlp else Mlp(dim, hidden, drop=drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """x: (B, N, C) tokens of an H x W map -> (B, N, C)."""
        y = self.norm1(x)
        if self.is_slide:
            B, N, C = y.shape
            y = self.attn(y.reshape(B, H, W, C)).reshape(B, N, C)
        else:
            y = self.attn(y, H, W)
        x = x + self.drop_path(y)
        y = self.norm2(x)
        y = self.mlp(y, H, W) if self.conv_mlp else self.mlp(y)
        return x + self.drop_path(y)


def build_stages(embed_dims: Sequence[int], num_heads: Sequence[int], mlp_ratios: Sequence[float],
                 depths: Sequence[int], sr_ratios: Sequence[int], qkv_bias: bool, qk_scale: float | None,
                 drop_rate: float, attn_drop_rate: float, drop_path_rate: float, norm_layer, ka: int,
                 num_slide_stages: int, conv_mlp: bool) -> list[nn.ModuleList]:
    """The blocks of every stage (``block1`` .. ``blockN``); stochastic depth grows linearly over all blocks."""
    lengths = {len(embed_dims), len(num_heads), len(mlp_ratios), len(depths), len(sr_ratios)}
    if len(lengths) != 1:
        raise ValueError("embed_dims, num_heads, mlp_ratios, depths and sr_ratios must have one entry per stage")
    if not 0 <= num_slide_stages <= len(depths):
        raise ValueError(f"num_slide_stages must be in 0..{len(depths)}, got {num_slide_stages}")
    dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
    stages, cur = [], 0
    for i, depth in enumerate(depths):
        stages.append(nn.ModuleList([
            PVTBlock(embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias, qk_scale, drop_rate, attn_drop_rate,
                     dpr[cur + j], norm_layer, sr_ratios[i], is_slide=i < num_slide_stages, ka=ka, conv_mlp=conv_mlp)
            for j in range(depth)]))
        cur += depth
    return stages


def init_pvt_weights(model: nn.Module, init_convs: bool) -> None:
    """Official PVT initialization: Linear/LayerNorm as Swin; with ``init_convs`` (PVTv2) also Conv2d ~ N(0, 2/fan_out).

    Convolutions inside :class:`SlideAttention` keep their own initialization (the fixed one-hot shift kernels
    must not be overwritten).
    """
    model.apply(init_transformer_weights)
    if not init_convs:
        return
    slide = {id(m) for s in model.modules() if isinstance(s, SlideAttention) for m in s.modules()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in slide:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
