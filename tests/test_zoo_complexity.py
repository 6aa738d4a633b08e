"""Parameter and MAC counting on modules whose counts are known by hand."""
from __future__ import annotations

import torch
from torch import nn

from slidelite.zoo import SlideAttention, count_flops, count_params
from slidelite.zoo.complexity import measure


class _Wrap(nn.Module):
    """(B, C, H, W) image -> (B, H, W, C) for a Slide attention under test."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x.permute(0, 2, 3, 1))


def test_count_params_all_and_trainable():
    model = nn.Sequential(nn.Linear(10, 5), nn.Conv2d(3, 4, 3))
    model[1].weight.requires_grad_(False)
    assert count_params(model) == 55 + 4 * 3 * 9 + 4
    assert count_params(model, trainable_only=True) == 55 + 4


def test_count_flops_is_macs_of_convs_and_matmuls():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (3, 10, 10)) == 8 * 3 * 9 * 100
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.GELU(), nn.Linear(6, 2))
    assert count_flops(mlp, (3, 2, 2)) == 12 * 6 + 6 * 2


def test_slide_attention_is_counted_in_its_deployed_form():
    """qkv + proj, the merged depthwise conv over k and v, and the two neighbourhood matmuls."""
    C, heads, ka, H, W = 16, 2, 3, 5, 6
    kk, N = ka * ka, H * W
    macs = count_flops(_Wrap(SlideAttention(C, heads, ka)), (C, H, W))
    assert macs == N * C * 3 * C + N * C * C + N * 2 * C * kk * kk + 2 * N * C * kk


def test_measure_runs_on_the_meta_device():
    params, macs = measure("slide_swin_micro", (1, 28, 28))
    assert (params, macs) == (577_830, 20_395_264)
