"""Reference baselines for the benchmarks: Slide-Swin-T with Im2Col gathering, and plain Swin-T window attention.

* ``slide_swin_tiny_im2col`` -- the same network, weights and state_dict keys as ``slide_swin_tiny``, but
  every depthwise "shift" convolution of Slide attention is computed the Im2Col way: ``F.unfold`` gathers the
  ka x ka neighbourhood of every pixel into columns, and a per-channel (ka^2 x ka^2) matrix product applies
  the kernel. With the one-hot kernels that is exactly the Im2Col gathering of local attention; with the
  deformed-shift branch it is the same function as the convolution, so the outputs equal ``slide_swin_tiny``
  for the same weights. :meth:`Im2ColSlideAttention.reparameterize` merges the two branches into one kernel
  like Slide attention does, and keeps applying it through ``F.unfold``: the deployed model stays Im2Col.
* ``swin_tiny_window`` -- Swin-T (window 7, shifted windows, window attention in all four stages), built from
  the same :class:`SlideSwinTransformer` with ``num_slide_stages=0``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .pvt import paper_cfg
from .slide_attention import SlideAttention, multiplier_form
from .slide_swin import SlideSwinTransformer, slide_swin_tiny


class Im2ColConv2d(nn.Conv2d):
    """A depthwise ``Conv2d`` (stride 1, 'same' zero padding, any channel multiplier) computed as Im2Col + matmul.

    ``F.unfold`` copies the k x k neighbourhood of every pixel (the Im2Col step); output channel
    ``c * m + j`` is then ``sum_o weight[c*m + j, o] * column[c, o]`` -- a (m x k^2) by (k^2 x H*W) matrix
    product per input channel. Parameters and state_dict keys are those of ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        k = self.kernel_size[0]
        cols = F.unfold(x, k, padding=k // 2).reshape(B, C, k * k, H * W)
        out = self.weight.reshape(C, -1, k * k) @ cols                       # (B, C, m, H*W)
        if self.bias is not None:
            out = out + self.bias.reshape(C, -1, 1)
        return out.reshape(B, -1, H, W)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "Im2ColConv2d":
        """Wrap the parameters of a depthwise, stride-1, 'same'-padded ``conv`` (shared, not copied)."""
        k = conv.kernel_size[0]
        if (conv.groups != conv.in_channels or conv.stride != (1, 1) or conv.kernel_size != (k, k)
                or conv.padding != (k // 2, k // 2) or conv.dilation != (1, 1)):
            raise ValueError(f"Im2ColConv2d only replaces depthwise stride-1 'same' convolutions, got {conv}")
        new = cls(conv.in_channels, conv.out_channels, k, padding=k // 2, groups=conv.groups,
                  bias=conv.bias is not None, device="meta")
        new.weight = conv.weight
        new.bias = conv.bias
        return new


class Im2ColSlideAttention(SlideAttention):
    """:class:`SlideAttention` whose neighbourhood gathering is Im2Col (``F.unfold``) in both forms."""

    counts_neighbourhood = False  # the deployed logits and weighted sum are element-wise products and sums

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dep_conv = Im2ColConv2d.from_conv(self.dep_conv)
        self.dep_conv1 = Im2ColConv2d.from_conv(self.dep_conv1)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        """Both branches, each gathered through ``F.unfold`` (the Im2Col training form)."""
        return self.dep_conv(x) + self.dep_conv1(x)

    def _forward_deployed(self, x: torch.Tensor) -> torch.Tensor:
        """The merged kernel applied through ``F.unfold`` as C -> C * ka^2 gatherings of k and v
        (:func:`multiplier_form`)."""
        return multiplier_form(self, x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the two branches into one kernel (as Slide attention), still applied through ``F.unfold``."""
        if self.deployed:
            return
        super().reparameterize()
        self.k_conv = Im2ColConv2d.from_conv(self.k_conv)
        self.v_conv = Im2ColConv2d.from_conv(self.v_conv)

    @classmethod
    def from_slide_attention(cls, attn: SlideAttention) -> "Im2ColSlideAttention":
        """An Im2Col copy of a (training-form) ``attn`` with the same hyper-parameters and weights."""
        if attn.deployed:
            raise ValueError("convert the training form: reparameterize after switching to Im2Col")
        new = cls(attn.dim, attn.num_heads, attn.ka, qkv_bias=attn.qkv.bias is not None, qk_scale=attn.scale,
                  attn_drop=attn.attn_drop.p, proj_drop=attn.proj_drop.p)
        new.load_state_dict(attn.state_dict())
        return new.to(attn.qkv.weight.device)


def use_im2col(model: nn.Module) -> nn.Module:
    """Replace every :class:`SlideAttention` of ``model`` (in place) by its Im2Col equivalent; return ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is SlideAttention:
                setattr(parent, name, Im2ColSlideAttention.from_slide_attention(child))
    return model


@register_model("baseline", paper_cfg("slidelite baseline of slide_swin_tiny (same weights, Im2Col gathering)",
                                      29.0, 4.6, 82.3, "numbers of Slide-Swin-T: same function"))
def slide_swin_tiny_im2col(**overrides: Any) -> SlideSwinTransformer:
    """Slide-Swin-T with Im2Col (``F.unfold``) neighbourhood gathering; same weights and keys as ``slide_swin_tiny``."""
    return use_im2col(slide_swin_tiny(**overrides))


@register_model("baseline", paper_cfg("microsoft/Swin-Transformer (Swin-T: window 7, shifted windows)",
                                      29.0, 4.5, 81.3))
def swin_tiny_window(**overrides: Any) -> SlideSwinTransformer:
    """Swin-T: window attention (window 7, shift 3 on odd blocks) in every stage, no Slide stage."""
    args: dict[str, Any] = dict(img_size=224, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                window_size=7, num_slide_stages=0, drop_path_rate=0.2)
    args.update(overrides)
    return SlideSwinTransformer(**args)
