"""PVT (v1) and Slide-PVT: Pyramid Vision Transformer with Slide attention in the first stages.

``pvt_tiny`` / ``pvt_small`` follow the official code (whai362/PVT, ``classification/pvt.py``) with its
state_dict keys (``patch_embed1..4``, ``pos_embed1..4``, ``block1..4``, ``norm``, ``cls_token``, ``head``), so
official PVT checkpoints load with ``strict=True``. ``slide_pvt_tiny`` / ``slide_pvt_small`` replace the
spatial-reduction attention of the first ``num_slide_stages`` (2) stages by :class:`SlideAttention` (3x3
neighbourhood), as the Slide-Transformer paper describes; the SR convolutions of those stages disappear,
which is where the paper's parameter savings come from (docs/zoo.md has the numbers).

Differences from the official code, none of which changes the outputs at 224 x 224:

* the position-embedding grid of stage i is ``img_size // patch_size // 2**i`` (the official formula
  ``img_size // 2**(i+1) // 2`` gives the same numbers for patch_size 4); embeddings are resized
  (bilinear, as the official code) only when the feature map differs from that grid;
* key/value tensors are kept at rank 4 (the official code builds a 5-D tensor).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._pvt_layers import build_stages, init_pvt_weights
from ._registry import PretrainedConfig, register_model


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (conv with stride = patch) + LayerNorm; returns tokens and the grid size."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, C, H, W) -> ((B, H'*W', embed_dim), H', W')."""
        x = self.proj(x)
        H, W = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


def resize_pos_embed(pos_embed: torch.Tensor, grid: int, H: int, W: int) -> torch.Tensor:
    """(1, grid*grid, C) position embedding -> (1, H*W, C), bilinear as the official PVT (identity at H = W = grid)."""
    if (H, W) == (grid, grid):
        return pos_embed
    C = pos_embed.shape[-1]
    pos = pos_embed.reshape(1, grid, grid, C).permute(0, 3, 1, 2)
    return F.interpolate(pos, size=(H, W), mode="bilinear").flatten(2).transpose(1, 2)


class PyramidVisionTransformer(nn.Module):
    """PVT v1 with optional Slide attention in the first ``num_slide_stages`` stages.

    Constructor arguments follow the official ``PyramidVisionTransformer`` (plus ``ka`` and
    ``num_slide_stages``). ``img_size`` sizes the learned position embeddings; any input size works at
    run time (embeddings are interpolated). The last stage carries the class token, so it cannot be a
    Slide stage.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (64, 128, 320, 512), num_heads: Sequence[int] = (1, 2, 5, 8),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 depths: Sequence[int] = (2, 2, 2, 2), sr_ratios: Sequence[int] = (8, 4, 2, 1), ka: int = 3,
                 num_slide_stages: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_stages = len(depths)
        if num_slide_stages >= self.num_stages:
            raise ValueError("the last PVT stage holds the class token and cannot use Slide attention; "
                             f"num_slide_stages must be < {self.num_stages}")
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        stages = build_stages(embed_dims, num_heads, mlp_ratios, depths, sr_ratios, qkv_bias, qk_scale, drop_rate,
                              attn_drop_rate, drop_path_rate, norm_layer, ka, num_slide_stages, conv_mlp=False)
        self.grids = []
        grid = img_size // patch_size
        for i in range(self.num_stages):
            grid = grid if i == 0 else grid // 2
            self.grids.append(grid)
            tokens = grid * grid + (1 if i == self.num_stages - 1 else 0)
            setattr(self, f"patch_embed{i + 1}",
                    PatchEmbed(patch_size if i == 0 else 2, in_chans if i == 0 else embed_dims[i - 1], embed_dims[i]))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, tokens, embed_dims[i])))
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(p=drop_rate))
            setattr(self, f"block{i + 1}", stages[i])
        self.num_features = embed_dims[-1]
        self.norm = norm_layer(self.num_features)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.num_features))
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for i in range(self.num_stages):
            nn.init.trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_pvt_weights(self, init_convs=False)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameters excluded from weight decay (official recipe)."""
        return {"cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features) class-token features."""
        B = x.shape[0]
        last = self.num_stages - 1
        for i in range(self.num_stages):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            pos = getattr(self, f"pos_embed{i + 1}")
            if i == last:
                x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
                pos = torch.cat((pos[:, :1], resize_pos_embed(pos[:, 1:], self.grids[i], H, W)), dim=1)
            else:
                pos = resize_pos_embed(pos, self.grids[i], H, W)
            x = getattr(self, f"pos_drop{i + 1}")(x + pos)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, H, W)
            if i != last:
                x = x.transpose(1, 2).reshape(B, -1, H, W)
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


def _build(depths: tuple, num_slide_stages: int, overrides: dict) -> PyramidVisionTransformer:
    args: dict[str, Any] = dict(depths=depths, num_slide_stages=num_slide_stages)
    args.update(overrides)
    return PyramidVisionTransformer(**args)


_PVT_SRC = "whai362/PVT classification/pvt.py (official ImageNet weights released by the PVT authors)"
SLIDE_SOURCE = "Slide-Transformer paper (Pan et al., CVPR 2023), Fig. 5 / Table; no released code or weights"


def paper_cfg(source: str, params: float, gflops: float, top1: float, notes: str = "") -> PretrainedConfig:
    """ImageNet-1k pretrained configuration (bicubic, crop 0.875, ImageNet mean/std) with the paper's numbers."""
    return PretrainedConfig(source=source, paper_params_m=params, paper_gflops=gflops, paper_top1=top1, notes=notes)


@register_model("pvt", paper_cfg(_PVT_SRC, 13.2, 1.9, 75.1))
def pvt_tiny(**overrides: Any) -> PyramidVisionTransformer:
    """PVT-Tiny (official configuration)."""
    return _build((2, 2, 2, 2), 0, overrides)


@register_model("pvt", paper_cfg(_PVT_SRC, 24.5, 3.8, 79.8))
def pvt_small(**overrides: Any) -> PyramidVisionTransformer:
    """PVT-Small (official configuration)."""
    return _build((3, 4, 6, 3), 0, overrides)


@register_model("pvt", paper_cfg(SLIDE_SOURCE, 12.2, 2.0, 78.0))
def slide_pvt_tiny(**overrides: Any) -> PyramidVisionTransformer:
    """Slide-PVT-Tiny: PVT-Tiny with Slide attention (ka 3) in stages 1-2."""
    return _build((2, 2, 2, 2), 2, overrides)


@register_model("pvt", paper_cfg(SLIDE_SOURCE, 22.7, 4.0, 81.7))
def slide_pvt_small(**overrides: Any) -> PyramidVisionTransformer:
    """Slide-PVT-Small: PVT-Small with Slide attention (ka 3) in stages 1-2."""
    return _build((3, 4, 6, 3), 2, overrides)
