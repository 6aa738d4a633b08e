"""Helpers for the model-zoo tests: reference state_dict listings, official-style checkpoints, graph rank probes."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slidelite.zoo import SlideAttention, get_pretrained_cfg

# Copied from the official code's state_dicts (see tests/fixtures/reference/SOURCES.md).
REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference"

# The official yaml files (slide_transformer/cfgs/slide_swin_{t,s,b}.yaml), as values.
OFFICIAL_YAML = {
    "slide_swin_tiny": dict(DROP_PATH_RATE=0.2, EMBED_DIM=96, DEPTHS=[2, 2, 6, 2], NUM_HEADS=[3, 6, 12, 24]),
    "slide_swin_small": dict(DROP_PATH_RATE=0.3, EMBED_DIM=96, DEPTHS=[2, 2, 18, 2], NUM_HEADS=[3, 6, 12, 24]),
    "slide_swin_base": dict(DROP_PATH_RATE=0.5, EMBED_DIM=128, DEPTHS=[2, 2, 18, 2], NUM_HEADS=[4, 8, 16, 32]),
}


def reference_state_dict(name: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """key -> (shape, dtype) listed in tests/fixtures/reference/<name>.state_dict.txt (from the official code)."""
    entries = {}
    for line in (REFERENCE_DIR / f"{name}.state_dict.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            entries[key] = (tuple(ast.literal_eval(shape)), dtype)
    return entries


def official_config(name: str = "slide_swin_tiny", img_size: int = 224, num_classes: int = 1000, **swin: Any):
    """A yacs ``CfgNode`` built like the official ``config.py``: defaults, then the model's yaml, then frozen.

    ``swin`` overrides MODEL.SWIN values (e.g. ``EMBED_DIM=32``) after the yaml is merged.
    """
    from yacs.config import CfgNode as CN

    cfg = CN()
    cfg.BASE = [""]
    cfg.DATA = CN()
    cfg.DATA.BATCH_SIZE = 128
    cfg.DATA.IMG_SIZE = 224
    cfg.DATA.INTERPOLATION = "bicubic"
    cfg.MODEL = CN()
    cfg.MODEL.TYPE = "swin"
    cfg.MODEL.NAME = "swin_tiny_patch4_window7_224"
    cfg.MODEL.NUM_CLASSES = 1000
    cfg.MODEL.DROP_RATE = 0.0
    cfg.MODEL.DROP_PATH_RATE = 0.1
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.IN_CHANS = 3
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SLIDE = CN()
    cfg.MODEL.SLIDE.KA = 3
    cfg.MODEL.SLIDE.NUM_SLIDE_STAGES = 2
    cfg.TRAIN = CN()
    cfg.TRAIN.OPTIMIZER = CN()
    cfg.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)
    values = OFFICIAL_YAML[name]
    yaml = CN({"MODEL": {"TYPE": "slide_swin", "NAME": name, "DROP_PATH_RATE": values["DROP_PATH_RATE"],
                         "SWIN": {k: v for k, v in values.items() if k != "DROP_PATH_RATE"} | {"WINDOW_SIZE": 56},
                         "SLIDE": {"KA": 3, "NUM_SLIDE_STAGES": 2}}})
    cfg.merge_from_other_cfg(yaml)
    cfg.DATA.IMG_SIZE = img_size
    cfg.MODEL.NUM_CLASSES = num_classes
    for key, value in swin.items():
        cfg.MODEL.SWIN[key] = value
    cfg.freeze()
    return cfg


def save_training_checkpoint(path: Path, model: torch.nn.Module, config: Any = None, ema: Dict | None = None,
                             ddp: bool = False) -> Path:
    """Save ``model`` the way the official ``save_checkpoint`` does (model, optimizer, scheduler, config, ...)."""
    prefix = "module." if ddp else ""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ckpt = {"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": {"last_epoch": 3},
            "max_accuracy": 81.25, "epoch": 3, "config": config}
    if ema is not None:
        ckpt["state_dict_ema"] = {prefix + k: v for k, v in ema.items()}
    torch.save(ckpt, path)
    return path


def randomize_slide_branches(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every Slide attention a non-trivial deformed branch, shift biases and position table (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SlideAttention) and not module.deployed:
                for tensor, std in ((module.dep_conv1.weight, 0.3), (module.dep_conv1.bias, 0.3),
                                    (module.dep_conv.bias, 0.3), (module.relative_position_bias_table, 0.5)):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    return model


def image_sizes(name: str) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """The model's native (C, H, W) input and a second, non-square one (224 -> 192 x 256; 28 -> 24 x 32)."""
    c, h, w = get_pretrained_cfg(name).input_size
    return (c, h, w), (c, h - h // 7, w + w // 7)


class RankProbe(TorchDispatchMode):
    """Records the highest rank of any tensor an aten op produces (views and reshapes included)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_rank = 0
        self.worst = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() > self.max_rank:
                self.max_rank, self.worst = t.dim(), f"{func} -> {tuple(t.shape)}"
        return out


#: Layouts that training scripts save a state_dict in (:func:`wrap_state_dict`).
CHECKPOINT_LAYOUTS = ("state_dict", "model+epoch", "ddp", "ema")


def wrap_state_dict(layout: str, state: Dict[str, Any], main: Optional[Dict[str, Any]] = None) -> Any:
    """``state`` as a training script saves it: ``state_dict`` as it is; ``model+epoch`` ``{'model', 'epoch'}``;
    ``ddp`` ``{'state_dict': {'module.' + key: ...}}``; ``ema`` ``{'model': main, 'state_dict_ema': state}``
    (``state`` is the EMA copy, ``main`` the other weights)."""
    if layout == "state_dict":
        return state
    if layout == "model+epoch":
        return {"model": state, "epoch": 3}
    if layout == "ddp":
        return {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}
    if layout == "ema":
        return {"model": main, "state_dict_ema": state, "epoch": 3}
    raise ValueError(f"unknown checkpoint layout {layout}")
