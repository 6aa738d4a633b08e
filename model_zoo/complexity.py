"""Model complexity: parameter count and FLOPs in the Swin/PVT convention (multiply-accumulates).

The Swin, PVT and Slide-Transformer papers report "FLOPs" that are multiply-accumulate counts (Swin-T:
"4.5G"). :func:`count_flops` follows that convention: it counts the MACs of every matrix multiplication and
convolution with :class:`torch.utils.flop_counter.FlopCounterMode` (which counts 2 FLOPs per MAC) and halves
the total. Element-wise work (softmax, normalization, activations, additions) is not counted -- the same
choice as fvcore/mmcv's counters used by those papers.

Slide attention is measured in its deployed (re-parameterized) form: the k and v depthwise convolutions count
ka^2 MACs per output; the neighbourhood logits and the weighted sum (ka^2 MACs each per channel and pixel) are
products summed over head_dim and over the ka^2 neighbours -- matrix products in all but layout, so they are
counted too: the deployed form computes them with 1x1 convolutions (a sum over each head's channels, a copy
of the weights to them) that the counter sees; for a form that writes them as element-wise multiply + sum
(``counts_neighbourhood = False``, the Im2Col baseline) :func:`_neighbourhood_macs` adds them. Models are measured on the ``meta`` device when built
there: no arithmetic runs.

Run ``python -m slidelite.zoo.complexity`` to print the zoo table (docs/zoo.md).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .slide_attention import SlideAttention, reparameterize_model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``; buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass (the papers' "FLOPs"), batch 1, deployed form.

    Args:
        model: any classifier; modules with a ``reparameterize`` hook are measured on a re-parameterized copy.
        input_size: (C, H, W) of one image.
    """
    deployed = reparameterize_model(model)
    x = torch.zeros((1, *input_size), device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    neighbourhood = [0]
    hooks = [m.register_forward_hook(_neighbourhood_macs(neighbourhood)) for m in deployed.modules()
             if isinstance(m, SlideAttention) and not m.counts_neighbourhood]
    try:
        with counter, torch.no_grad():
            deployed(x)
    finally:
        for hook in hooks:
            hook.remove()
    return counter.get_total_flops() // 2 + neighbourhood[0]


def _neighbourhood_macs(total: list) -> Any:
    """A forward hook adding a Slide attention's logits and weighted sum: ka^2 MACs each per channel and pixel."""
    def hook(module: SlideAttention, inputs: Any, output: Any) -> None:
        batch, height, width, channels = inputs[0].shape
        total[0] += 2 * batch * height * width * channels * module.ka * module.ka
    return hook


def meta_model(name: str, **overrides: Any) -> nn.Module:
    """Registered model ``name`` built on the meta device: shapes only, no memory, no initialization arithmetic."""
    from ._registry import create_model

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # factories that load weights: copying into meta tensors is a no-op
        model = create_model(name, **overrides)
    return model.to("meta")  # buffers built on the CPU (index tables) move too


def measure(name: str, input_size: Sequence[int] = (3, 224, 224)) -> tuple[int, int]:
    """(parameters, MACs at ``input_size``) of registered model ``name``, measured on the meta device."""
    model = meta_model(name)
    return count_params(model), count_flops(model, input_size)


def zoo_table() -> str:
    """Markdown table of every registered Slide/PVT/Swin model: measured params and GFLOPs next to the paper's."""
    from ._registry import get_pretrained_cfg, list_models

    rows = ["| model | params (M) | paper params (M) | GFLOPs (MACs) | paper GFLOPs | paper top-1 |",
            "|---|---:|---:|---:|---:|---:|"]
    for name in list_models():
        cfg = get_pretrained_cfg(name)
        if cfg.input_size[1:] != (224, 224) or cfg.paper_params_m is None:
            continue
        params, macs = measure(name, cfg.input_size)
        rows.append(f"| {name} | {params / 1e6:.2f} | {cfg.paper_params_m} | {macs / 1e9:.2f} | "
                    f"{cfg.paper_gflops} | {cfg.paper_top1} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(zoo_table())
