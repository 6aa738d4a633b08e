"""PVTv2 and Slide-PVTv2: PVTv2 with Slide attention in the first stages.

``pvtv2_b1`` / ``pvtv2_b2`` follow the official code (whai362/PVT, ``classification/pvt_v2.py``) with its
state_dict keys (``patch_embed1..4``, ``block1..4``, ``norm1..4``, ``head``; the layout timm's
``checkpoint_filter_fn`` converts from), so official PVTv2 checkpoints load with ``strict=True``.
``slide_pvtv2_b1`` / ``slide_pvtv2_b2`` replace the spatial-reduction attention of the first
``num_slide_stages`` (2) stages by :class:`SlideAttention` (3x3 neighbourhood), as the Slide-Transformer
paper describes. The linear-SRA variant (``pvt_v2_b2_li``) is not provided.

Difference from the official code: ``patch_size`` is the stride of the first overlapping patch embedding,
with kernel ``2 * patch_size - 1`` (the official 7 / stride 4 at the default 4); tensors stay at rank <= 4.
PVTv2 has no absolute position embedding, so ``img_size`` does not change the model (it is accepted for
the official constructor signature) and any input size works.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
from torch import nn

from ._pvt_layers import build_stages, init_pvt_weights
from ._registry import register_model
from .pvt import SLIDE_SOURCE, paper_cfg


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (kernel ``2*stride-1``, padding ``kernel//2``) + LayerNorm."""

    def __init__(self, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        kernel = 2 * stride - 1
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, C, H, W) -> ((B, H'*W', embed_dim), H', W')."""
        x = self.proj(x)
        H, W = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class PyramidVisionTransformerV2(nn.Module):
    """PVTv2 with optional Slide attention in the first ``num_slide_stages`` stages.

    Constructor arguments follow the official ``PyramidVisionTransformerV2`` (plus ``ka`` and
    ``num_slide_stages``; ``linear`` is not supported).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (64, 128, 320, 512), num_heads: Sequence[int] = (1, 2, 5, 8),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), qkv_bias: bool = True, qk_scale: float | None = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 depths: Sequence[int] = (2, 2, 2, 2), sr_ratios: Sequence[int] = (8, 4, 2, 1), ka: int = 3,
                 num_slide_stages: int = 0) -> None:
        super().__init__()
        del img_size  # PVTv2 has no absolute position embedding: nothing depends on the training size
        self.num_classes = num_classes
        self.num_stages = len(depths)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        stages = build_stages(embed_dims, num_heads, mlp_ratios, depths, sr_ratios, qkv_bias, qk_scale, drop_rate,
                              attn_drop_rate, drop_path_rate, norm_layer, ka, num_slide_stages, conv_mlp=True)
        for i in range(self.num_stages):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(patch_size if i == 0 else 2,
                                                                   in_chans if i == 0 else embed_dims[i - 1],
                                                                   embed_dims[i]))
            setattr(self, f"block{i + 1}", stages[i])
            setattr(self, f"norm{i + 1}", norm_layer(embed_dims[i]))
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_pvt_weights(self, init_convs=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_features) average-pooled features."""
        B = x.shape[0]
        for i in range(self.num_stages):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, H, W)
            x = getattr(self, f"norm{i + 1}")(x)
            if i != self.num_stages - 1:
                x = x.transpose(1, 2).reshape(B, -1, H, W)
        return x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


def _build(depths: tuple, num_slide_stages: int, overrides: dict) -> PyramidVisionTransformerV2:
    args: dict[str, Any] = dict(depths=depths, num_slide_stages=num_slide_stages)
    args.update(overrides)
    return PyramidVisionTransformerV2(**args)


_PVT2_SRC = "whai362/PVT classification/pvt_v2.py (official ImageNet weights released by the PVT authors)"


@register_model("pvt_v2", paper_cfg(_PVT2_SRC, 14.0, 2.1, 78.7,
                                    "params from the PVTv2 paper; the Slide-Transformer table lists 13.1M"))
def pvtv2_b1(**overrides: Any) -> PyramidVisionTransformerV2:
    """PVTv2-B1 (official configuration)."""
    return _build((2, 2, 2, 2), 0, overrides)


@register_model("pvt_v2", paper_cfg(_PVT2_SRC, 25.4, 4.0, 82.0))
def pvtv2_b2(**overrides: Any) -> PyramidVisionTransformerV2:
    """PVTv2-B2 (official configuration)."""
    return _build((3, 4, 6, 3), 0, overrides)


@register_model("pvt_v2", paper_cfg(SLIDE_SOURCE, 13.0, 2.2, 79.5))
def slide_pvtv2_b1(**overrides: Any) -> PyramidVisionTransformerV2:
    """Slide-PVTv2-B1: PVTv2-B1 with Slide attention (ka 3) in stages 1-2."""
    return _build((2, 2, 2, 2), 2, overrides)


@register_model("pvt_v2", paper_cfg(SLIDE_SOURCE, 22.8, 4.2, 82.7))
def slide_pvtv2_b2(**overrides: Any) -> PyramidVisionTransformerV2:
    """Slide-PVTv2-B2: PVTv2-B2 with Slide attention (ka 3) in stages 1-2."""
    return _build((3, 4, 6, 3), 2, overrides)
