"""Slide-Swin: Swin Transformer with Slide attention in the early stages (official ``SlideSwinTransformer``).

Module tree and state_dict keys equal the official code (LeapLabTHU/Slide-Transformer,
``slide_transformer/models/slide_swin.py``), so official checkpoints load with ``strict=True``.
Differences, none of which changes the outputs at the official configuration:

* any input resolution: H and W are read from the input at run time (the official code bakes
  ``input_resolution`` into every block). Window attention clips its window to the feature map and pads
  to a multiple of the window (padded keys masked); patch merging zero-pads odd sizes.
* features flow as (B, H, W, C) instead of (B, H*W, C); LayerNorm and Linear act on the last axis,
  so the arithmetic is the same.
* the inference form (after :func:`reparameterize_model`) uses tensors of rank <= 4 only.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import DropPath, Mlp, init_transformer_weights
from ._registry import PretrainedConfig, register_model
from .slide_attention import SlideAttention


@lru_cache(maxsize=64)
def relative_position_index(wh: int, ww: int, table_size: int) -> torch.Tensor:
    """Index (wh*ww, wh*ww) into a (2*table_size-1)^2 relative-position table for a wh x ww window."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device="cpu"), torch.arange(ww, device="cpu"),
                                        indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (table_size - 1)
    return rel[..., 0] * (2 * table_size - 1) + rel[..., 1]


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nWindows, wh*ww, C) using rank-4 reshapes only (official window order)."""
    B, H, W, C = x.shape
    nh, nw = H // wh, W // ww
    x = x.reshape(B * nh, wh, nw, ww * C).transpose(1, 2)
    return x.reshape(B * nh * nw, wh * ww, C)


def window_reverse(windows: torch.Tensor, wh: int, ww: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nWindows, wh*ww, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    nh, nw = H // wh, W // ww
    x = windows.reshape(-1, nw, wh, ww * C).transpose(1, 2)
    return x.reshape(-1, H, W, C)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative-position bias table (Swin), any window up to ``window_size``."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size, window_size, window_size).clone())
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, wh: int, ww: int) -> torch.Tensor:
        """(heads, wh*ww, wh*ww) bias for a wh x ww window."""
        if (wh, ww) == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:
            index = relative_position_index(wh, ww, self.window_size).to(self.relative_position_bias_table.device)
        n = wh * ww
        return self.relative_position_bias_table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, wh: int, ww: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B_, N, C) windows; mask: (nW, N, N) additive or None."""
        B_, N, C = x.shape
        heads = self.num_heads
        qkv = self.qkv(x)
        q = qkv[..., :C].reshape(B_, N, heads, C // heads).transpose(1, 2) * self.scale
        k = qkv[..., C:2 * C].reshape(B_, N, heads, C // heads).transpose(1, 2)
        v = qkv[..., 2 * C:].reshape(B_, N, heads, C // heads).transpose(1, 2)
        attn = q @ k.transpose(-2, -1) + self.position_bias(wh, ww).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.reshape(B_ // nW, nW, heads, N * N) + mask.reshape(1, nW, 1, N * N)).reshape(B_, heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


def _window_mask(Hp: int, Wp: int, H: int, W: int, wh: int, ww: int, shift: int, device) -> torch.Tensor | None:
    """Additive (nW, N, N) mask: -100 between tokens of different shifted regions or onto padding."""
    if shift == 0 and (Hp, Wp) == (H, W):
        return None
    region = torch.zeros(1, Hp, Wp, 1, device=device)
    if shift:
        count = 0
        for hs in (slice(0, -wh), slice(-wh, -shift), slice(-shift, None)):
            for ws in (slice(0, -ww), slice(-ww, -shift), slice(-shift, None)):
                region[:, hs, ws, :] = count
                count += 1
    pad = torch.zeros(1, Hp, Wp, 1, device=device)
    pad[:, H:, :, :] = 1
    pad[:, :, W:, :] = 1
    if shift:
        pad = torch.roll(pad, shifts=(-shift, -shift), dims=(1, 2))
    region_w = window_partition(region, wh, ww).squeeze(-1)
    pad_w = window_partition(pad, wh, ww).squeeze(-1)
    mask = (region_w.unsqueeze(1) != region_w.unsqueeze(2)) | (pad_w.unsqueeze(1) > 0)
    return mask.float() * -100.0


class SwinTransformerBlock(nn.Module):
    """Pre-norm transformer block: Slide attention (``is_slide``) or (shifted) window attention, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer=nn.LayerNorm, ka: int = 3, is_slide: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.is_slide = is_slide
        self.norm1 = norm_layer(dim)
        if is_slide:
            self.attn = SlideAttention(dim, num_heads, ka, qkv_bias, qk_scale, attn_drop, drop)
        else:
            self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        wh, ww = min(self.window_size, H), min(self.window_size, W)
        shift = self.shift_size if (H > self.window_size and W > self.window_size) else 0
        Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = _window_mask(Hp, Wp, H, W, wh, ww, shift, x.device)
        windows = self.attn(window_partition(x, wh, ww), wh, ww, mask)
        x = window_reverse(windows, wh, ww, Hp, Wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :H, :W, :] if (Hp, Wp) != (H, W) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        y = self.norm1(x)
        y = self.attn(y) if self.is_slide else self._window_attention(y)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging (Swin); odd H or W is zero-padded (a no-op at the official sizes)."""

    def __init__(self, dim: int, norm_layer=nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks, then optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Sequence[float] | float = 0.0, norm_layer=nn.LayerNorm, downsample: bool = False,
                 ka: int = 3, is_slide: bool = True, shift: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, num_heads, window_size,
                                 shift_size=window_size // 2 if (shift and i % 2 == 1) else 0,
                                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop,
                                 attn_drop=attn_drop,
                                 drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                                 norm_layer=norm_layer, ka=ka, is_slide=is_slide)
            for i in range(depth)])
        self.downsample = PatchMerging(dim, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (conv, stride = patch) with optional LayerNorm; any input size."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm_layer=None) -> None:
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, H/p, W/p, embed_dim)."""
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class SlideSwinTransformer(nn.Module):
    """Slide-Swin Transformer; constructor arguments follow the official ``SlideSwinTransformer``.

    ``img_size`` only sizes the window-attention tables (window = min(window_size, stage resolution) as
    in the official code); the model accepts any input size at run time.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_layer=nn.LayerNorm, patch_norm: bool = True, ka: int = 3, num_slide_stages: int = 2,
                 **kwargs: Any) -> None:
        super().__init__()
        unknown = set(kwargs) - {"ape", "use_checkpoint"}
        if unknown or kwargs.get("ape"):
            raise TypeError(f"unsupported SlideSwinTransformer arguments: {sorted(unknown or {'ape'})}")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        resolution = img_size // patch_size
        self.layers = nn.ModuleList()
        stage_res = resolution
        for i in range(self.num_layers):
            stage_res = resolution if i == 0 else -(-stage_res // 2)  # patch merging pads odd sizes
            is_slide = i < num_slide_stages
            stage_window = window_size if stage_res > window_size else max(stage_res, 1)
            self.layers.append(BasicLayer(
                dim=int(embed_dim * 2 ** i), depth=depths[i], num_heads=num_heads[i], window_size=stage_window,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=i < self.num_layers - 1, ka=ka, is_slide=is_slide,
                shift=not is_slide and stage_res > window_size))
        self.norm = norm_layer(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_transformer_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        """Parameter-name fragments excluded from weight decay (as in the official recipe)."""
        return {"relative_position_bias_table"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features) pooled features."""
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


def _official(embed_dim: int, depths: Tuple[int, ...], num_heads: Tuple[int, ...], drop_path_rate: float,
              overrides: dict) -> SlideSwinTransformer:
    args = dict(img_size=224, embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=56, ka=3,
                num_slide_stages=2, drop_path_rate=drop_path_rate)
    args.update(overrides)
    return SlideSwinTransformer(**args)


_SRC = "LeapLabTHU/Slide-Transformer (no released weights)"


@register_model("slide_swin", PretrainedConfig(source=_SRC, paper_params_m=28.0, paper_gflops=4.6, paper_top1=82.3))
def slide_swin_tiny(**overrides: Any) -> SlideSwinTransformer:
    """Slide-Swin-T (official cfgs/slide_swin_t.yaml)."""
    return _official(96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, overrides)


@register_model("slide_swin", PretrainedConfig(source=_SRC, paper_params_m=50.0, paper_gflops=8.7, paper_top1=83.4))
def slide_swin_small(**overrides: Any) -> SlideSwinTransformer:
    """Slide-Swin-S (official cfgs/slide_swin_s.yaml)."""
    return _official(96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3, overrides)


@register_model("slide_swin", PretrainedConfig(source=_SRC, paper_params_m=87.0, paper_gflops=15.5, paper_top1=83.8))
def slide_swin_base(**overrides: Any) -> SlideSwinTransformer:
    """Slide-Swin-B (official cfgs/slide_swin_b.yaml)."""
    return _official(128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5, overrides)


FMNIST_CFG = PretrainedConfig(
    input_size=(1, 28, 28), crop_pct=1.0, interpolation="bilinear", mean=(0.2860,), std=(0.3530,),
    num_classes=10, label_set="fashion-mnist", license="MIT (data); Apache-2.0 (weights)",
    source="trained here: model_zoo/recipes/train_fmnist.py",
)


@register_model("slide_swin", FMNIST_CFG)
def slide_swin_micro(**overrides: Any) -> SlideSwinTransformer:
    """A 3-stage micro Slide-Swin (Slide attention in stages 1-2, global attention in stage 3) for 28x28 inputs.

    Small enough to train on a 2-core CPU: ~0.6M parameters, ~35 MFLOPs at 28x28.
    """
    args = dict(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depths=(2, 2, 2),
                num_heads=(2, 4, 8), window_size=7, ka=3, num_slide_stages=2, drop_path_rate=0.05)
    args.update(overrides)
    return SlideSwinTransformer(**args)
