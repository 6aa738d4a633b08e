"""Model registry (timm style): ``@register_model``, ``create_model(name, **overrides)``, ``list_models()``.

A registered entry point is a function ``fn(**overrides) -> nn.Module``; its pretrained configuration
(:class:`PretrainedConfig`) is attached with :func:`register_model` and read by the converter to write
the runtime metadata (input size, crop_pct, interpolation, mean, std, labels).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
BASELINE_FAMILY = "baseline"  # benchmark baselines: they yield to the architecture they share keys with
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedConfig:
    """What the runtime needs to know about a model's expected inputs and outputs (timm's pretrained_cfg)."""

    input_size: Tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    label_set: str = "imagenet-1k"
    license: str = "Apache-2.0"
    source: str = ""
    paper_params_m: Optional[float] = None
    paper_gflops: Optional[float] = None
    paper_top1: Optional[float] = None
    notes: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture: its factory, family and pretrained configuration."""

    name: str
    family: str
    factory: Callable[..., Any]
    pretrained_cfg: PretrainedConfig = field(default_factory=PretrainedConfig)


_REGISTRY: Dict[str, ModelEntry] = {}


def register_model(family: str, pretrained_cfg: Optional[PretrainedConfig] = None) -> Callable:
    """Decorator registering ``fn`` under its function name in architecture family ``family``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, family, fn, pretrained_cfg or PretrainedConfig())
        return fn

    return decorate


class UnknownModelError(KeyError):
    """Raised by :func:`create_model` for a name that is not registered; suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_model_entry(name: str) -> ModelEntry:
    """Return the registry entry for ``name``, or raise :class:`UnknownModelError` with suggestions."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        raise UnknownModelError(f"unknown model '{name}'{hint}")
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any):
    """Build the registered model ``name``; ``overrides`` are constructor arguments of the architecture."""
    return get_model_entry(name).factory(**overrides)


def list_models(family: Optional[str] = None) -> List[str]:
    """Names of all registered models (optionally of one family), sorted."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_pretrained_cfg(name: str) -> PretrainedConfig:
    """The pretrained configuration registered with model ``name``."""
    return get_model_entry(name).pretrained_cfg
