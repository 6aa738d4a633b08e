"""Real third-party classifier code for the converter tests and benchmarks: torchvision's and timm's model
definitions, as ``module:attr`` factories (``--model tests._torch_classifiers:resnet18``).

torchvision and timm are installed with ``--no-deps`` (``scripts/test.sh``: their declared torch would pull a
CUDA build). torchvision's ``__init__`` then fails against the local torch (``RuntimeError: operator
torchvision::nms does not exist``: its compiled ops are built for another torch), and timm imports
torchvision. The model definitions themselves are plain Python over torch, so :func:`vision_packages` imports
``torchvision`` and ``torchvision.models`` as *bare* packages (their folders on ``__path__``, their
``__init__`` not run) and the model files load as they are. Nothing is stubbed: every layer is the real code.

Weights are self-initialised (seeded), never downloaded. The factories use the architectures' own
constructor arguments; the classifier head is scaled so that random-weight logits have clear top-1 margins.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import torch
from torch import nn

BARE_PACKAGES = ("torchvision", "torchvision.models")
HEAD_SCALE = 8.0


def vision_packages() -> None:
    """Make ``torchvision`` / ``torchvision.models`` importable as bare packages (idempotent)."""
    for name in BARE_PACKAGES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__path__"):
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"{name} is not installed: pip install --no-deps 'torchvision==0.28.*' (scripts/test.sh)")
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules[name] = package


def torchvision_model(file: str, factory: str, **kwargs: Any) -> nn.Module:
    """``torchvision.models.<file>.<factory>(weights=None, **kwargs)``, seeded, head scaled, eval mode."""
    vision_packages()
    module = importlib.import_module(f"torchvision.models.{file}")
    return _seeded(lambda: getattr(module, factory)(weights=None, **kwargs))


def timm_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` (keeps timm's ``pretrained_cfg``), seeded."""
    vision_packages()
    import timm

    return _seeded(lambda: timm.create_model(name, pretrained=False, **kwargs))


def _seeded(build: Any) -> nn.Module:
    torch.manual_seed(0)
    model = build()
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(HEAD_SCALE)
    return model.eval()


def mobilenet_v3_small() -> nn.Module:
    """torchvision MobileNetV3-Small, 10 classes (HardSwish, squeeze-excitation, depthwise convs)."""
    return torchvision_model("mobilenetv3", "mobilenet_v3_small", num_classes=10)


def resnet18() -> nn.Module:
    """torchvision ResNet-18, ImageNet head (11.7 M weights, almost all Conv)."""
    return torchvision_model("resnet", "resnet18")


def efficientnet_b0() -> nn.Module:
    """torchvision EfficientNet-B0, 10 classes (SiLU, squeeze-excitation, stochastic depth)."""
    return torchvision_model("efficientnet", "efficientnet_b0", num_classes=10)


def vit_tiny_64() -> nn.Module:
    """torchvision VisionTransformer at 64 px (patch 16, 2 layers, width 64): fixed position embeddings, so
    it accepts exactly one input size and declares none in a config."""
    vision_packages()
    from torchvision.models.vision_transformer import VisionTransformer

    return _seeded(lambda: VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64,
                                             mlp_dim=128, num_classes=10))


def timm_convnext_atto() -> nn.Module:
    """timm ConvNeXt-Atto, 10 classes (LayerNorm2d, depthwise 7x7, GELU); timm's pretrained_cfg says 224."""
    return timm_model("convnext_atto", num_classes=10)


def timm_deit_tiny_96() -> nn.Module:
    """timm DeiT-Tiny built at 96 px, 10 classes: its pretrained_cfg still says 224, the module accepts only 96."""
    return timm_model("deit_tiny_patch16_224", img_size=96, num_classes=10)


def timm_resnet10t() -> nn.Module:
    """timm ResNet-10-T, 10 classes: a small CNN whose pretrained_cfg says 3x176x176, crop 0.875."""
    return timm_model("resnet10t", num_classes=10)
