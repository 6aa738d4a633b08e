"""Checkpoint reading and loading: raw state_dicts and official training checkpoints, never executing pickled code.

Accepted files (all read with ``torch.load(path, map_location="cpu", weights_only=True)``):

* a raw ``state_dict`` (``torch.save(model.state_dict(), path)``);
* a training checkpoint wrapping it under ``model`` or ``state_dict`` (Swin / Slide-Transformer / DeiT /
  PVT / timm), optionally with EMA weights under ``state_dict_ema`` or ``model_ema``. The main weights are
  taken unless EMA is asked for (``prefer_ema=True``) or they are the only weights; the weights left unused
  are named in :attr:`Checkpoint.unused_weights` so a caller can say so;
* keys prefixed ``module.`` (DistributedDataParallel) are stripped.

Official Slide-Transformer checkpoints also pickle their yacs ``CfgNode`` config under ``config``, which
``weights_only=True`` refuses. The loader allow-lists the name ``yacs.config.CfgNode`` and maps it to
:class:`collections.OrderedDict`: a config node is then rebuilt as a plain mapping of its entries (and the
node's bookkeeping attributes), with no yacs import and no code from the file run. (A ``dict`` subclass
cannot stand in: torch's restricted unpickler fills only exact ``dict``/``OrderedDict``/``Counter``
instances.) ``argparse.Namespace`` (the ``args`` of DeiT/PVT/timm checkpoints) is allow-listed as well; it only
stores attributes; so are POSIX paths (``args.output_dir`` may be a ``pathlib`` path), built from strings.
Anything else a pickle asks for -- ``os.system``, ``builtins.eval``, arbitrary classes --
makes the load fail with a one-line :class:`CheckpointError` before anything is called.

The stored config describes the architecture: ``MODEL.TYPE == "slide_swin"`` selects the Slide-Swin family
whatever ``MODEL.NAME`` says (the official code builds from TYPE and the stored sizes; NAME is a run tag, used
only when it is a registered name), and the ``MODEL.SWIN.*``, ``MODEL.SLIDE.*``, ``DATA.IMG_SIZE``,
``MODEL.NUM_CLASSES`` values become :attr:`Checkpoint.overrides`. timm-style checkpoints name it under ``arch``;
DeiT/PVT/timm ``args`` under ``model`` (with ``nb_classes``/``num_classes``, ``input_size``/``img_size``).
Whatever the config does not say is read from the weights' shapes (:mod:`slidelite.zoo.shape_inference`:
``num_classes``, ``img_size``, widths, depths, heads, ...); without any name the architecture is the
registered model the weights fit with the fewest changed arguments.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from slidelite.errors import ModelError

from ._registry import BASELINE_FAMILY, UnknownModelError, create_model, get_model_entry, list_models
from .complexity import meta_model
from .shape_inference import (ArchitectureFit, ShapeInferenceError, find_architecture, fit_architecture,
                              shapes_of)

WRAPPER_KEYS = ("model", "state_dict")
EMA_KEYS = ("state_dict_ema", "model_ema")
# registered family of a yacs MODEL.TYPE (slide_transformer/models/build.py)
_YACS_FAMILIES = {"slide_swin": "slide_swin"}
_SAFE_GLOBALS = [(OrderedDict, "yacs.config.CfgNode"), argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath]
# constructor argument <- path in the official yacs config (slide_transformer/config.py, models/build.py)
_YACS_ARGS = {
    "img_size": ("DATA", "IMG_SIZE"),
    "num_classes": ("MODEL", "NUM_CLASSES"),
    "drop_path_rate": ("MODEL", "DROP_PATH_RATE"),
    "patch_size": ("MODEL", "SWIN", "PATCH_SIZE"),
    "in_chans": ("MODEL", "SWIN", "IN_CHANS"),
    "embed_dim": ("MODEL", "SWIN", "EMBED_DIM"),
    "depths": ("MODEL", "SWIN", "DEPTHS"),
    "num_heads": ("MODEL", "SWIN", "NUM_HEADS"),
    "window_size": ("MODEL", "SWIN", "WINDOW_SIZE"),
    "mlp_ratio": ("MODEL", "SWIN", "MLP_RATIO"),
    "qkv_bias": ("MODEL", "SWIN", "QKV_BIAS"),
    "qk_scale": ("MODEL", "SWIN", "QK_SCALE"),
    "ape": ("MODEL", "SWIN", "APE"),
    "patch_norm": ("MODEL", "SWIN", "PATCH_NORM"),
    "ka": ("MODEL", "SLIDE", "KA"),
    "num_slide_stages": ("MODEL", "SLIDE", "NUM_SLIDE_STAGES"),
}
_LIST_SHOWN = 3


class CheckpointError(ModelError):
    """A checkpoint is missing, unreadable, unsafe to unpickle, or does not fit the architecture (one line)."""


class ArgumentNeededError(CheckpointError):
    """The weights fit only with a constructor argument the caller gave wrongly or that the shapes do not
    determine; :attr:`argument` names it (``img_size``, ``num_classes``, ...)."""

    def __init__(self, message: str, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


@dataclass(frozen=True)
class Checkpoint:
    """The weights of a checkpoint file and what it says about its architecture.

    Attributes:
        state_dict: parameter/buffer name -> tensor (``module.`` prefix removed).
        config: the stored training config as plain nested dicts (yacs ``config`` or argparse ``args``), or None.
        arch: registered model name the config designates (after :func:`build_from_checkpoint`: the one built).
        overrides: constructor arguments read from the config (``img_size``, ``embed_dim``, ``depths``, ...).
        sha256: hex digest of the file.
        source_format: where the weights were found: ``state_dict`` (raw), ``model``, ``state_dict_ema``, ...
        family: registered family the config designates without naming a registered model (yacs MODEL.TYPE).
        unused_weights: the other weights the file holds and that were not taken (``state_dict_ema``, ``model``).
        fit: after :func:`build_from_checkpoint`: the arguments the model was built with and where each came from.
    """

    state_dict: Dict[str, torch.Tensor]
    config: Optional[Dict[str, Any]]
    arch: Optional[str]
    overrides: Dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    source_format: str = "state_dict"
    family: Optional[str] = None
    unused_weights: str = ""
    fit: Optional[ArchitectureFit] = None


def read_checkpoint(path: str | Path, prefer_ema: Optional[bool] = None) -> Checkpoint:
    """Read a checkpoint file safely (``weights_only=True``) and find its weights and config.

    Args:
        path: the file.
        prefer_ema: True: take the EMA weights (``state_dict_ema`` / ``model_ema``), error if there are none;
            False: take the main weights, error if there are none; None: the main weights when present, else EMA.
    Raises:
        CheckpointError: missing/unreadable file, refused pickle, no state_dict, non-tensor entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _safe_load(path)
    state, source_format, unused = _find_state_dict(obj, path, prefer_ema)
    config = _plain(_stored_config(obj)) if isinstance(obj, Mapping) else None
    arch, overrides = architecture_from_config(config)
    if arch is None and isinstance(obj, Mapping):  # timm's train.py: {'arch': name, 'state_dict': ..., 'args': ...}
        arch = _registered(obj.get("arch"))
    return Checkpoint(state_dict=state, config=config, arch=arch, overrides=overrides, sha256=_sha256(path),
                      source_format=source_format, family=_config_family(config), unused_weights=unused)


def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                         model_name: Optional[str] = None) -> None:
    """Strictly load ``state_dict`` into ``model``; on any mismatch raise one line naming keys, shapes and a fitting
    model (``model_name``, the registered name ``model`` was built from, is named only with the arguments that
    would make it fit)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [f"{k} {given[k]} vs {expected[k]}" for k in expected if k in given and given[k] != expected[k]]
    if missing or unexpected or mismatched:
        parts = [_listing(n, items) for n, items in (("missing key(s)", missing), ("unexpected key(s)", unexpected),
                                                     ("shape mismatch(es)", mismatched)) if items]
        raise CheckpointError(f"{source}: does not fit {type(model).__name__}: {'; '.join(parts)}; "
                              f"{_fit_hint(given, model_name)}")
    model.load_state_dict(state_dict, strict=True)


def build_from_checkpoint(path: str | Path, model_name: Optional[str] = None, prefer_ema: Optional[bool] = None,
                          **overrides: Any) -> Tuple[nn.Module, Checkpoint]:
    """Build the checkpoint's architecture, load its weights (strict) and return ``(model in eval mode, checkpoint)``.

    The architecture is ``model_name``, else the one named by the stored config, else the registered model (of
    the config's family, if it names one) that the weights fit with the fewest changed arguments. Constructor
    arguments: what the weights' shapes determine (:mod:`slidelite.zoo.shape_inference`), then the stored
    config, then ``overrides``. The returned checkpoint's ``arch`` is the name used, its ``fit`` the arguments.

    Raises:
        ArgumentNeededError: the weights fit only with an argument that ``overrides`` gives otherwise, or that
            the shapes do not determine (``img_size`` of some Swin checkpoints); the message names it.
        CheckpointError: unreadable file, unknown name, or weights that fit no architecture.
    """
    ckpt = read_checkpoint(path, prefer_ema=prefer_ema)
    try:
        fit = _architecture(ckpt, model_name, overrides, path)
    except ShapeInferenceError as exc:
        others = [n for n in fitting_architectures(ckpt.state_dict) if n != model_name]
        hint = f"; the weights fit {' / '.join(others)} as it is" if others else ""
        raise ArgumentNeededError(f"{path}: {exc}{hint}", exc.argument) from None
    try:
        model = create_model(fit.name, **fit.arguments)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {fit.name} with the checkpoint's configuration "
                              f"{fit.arguments}: {exc}") from None
    load_state_dict_into(model, ckpt.state_dict, str(path), fit.name)
    return model.eval(), replace(ckpt, arch=fit.name, fit=fit)


def _architecture(ckpt: Checkpoint, model_name: Optional[str], overrides: Mapping[str, Any],
                  path: str | Path) -> ArchitectureFit:
    """The model to build for ``ckpt`` and its arguments (see :func:`build_from_checkpoint`)."""
    shapes = shapes_of(ckpt.state_dict)
    name = model_name or ckpt.arch
    if name is not None:
        try:
            get_model_entry(name)
        except UnknownModelError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        fit = fit_architecture(name, shapes, ckpt.overrides, overrides)
        # no arguments make the weights fit: build with what is known and let the strict load say what differs
        return fit or ArchitectureFit(name, {**ckpt.overrides, **overrides})
    fit = find_architecture(shapes, list_models(ckpt.family), ckpt.overrides, overrides)
    if fit is None:
        stored = "its config names no registered model" if ckpt.config else "it stores no model config"
        raise CheckpointError(f"{path}: cannot tell the architecture: {stored}; {_fit_hint(shapes, search=False)}; "
                              "pass the model name (e.g. --model)")
    return fit


def architecture_from_config(config: Optional[Mapping[str, Any]]) -> Tuple[Optional[str], Dict[str, Any]]:
    """(registered model name or None, constructor overrides) described by a stored training config.

    Understands the official Slide-Transformer yacs config (``MODEL.TYPE == "slide_swin"``) and the
    argparse ``args`` of DeiT/PVT-style checkpoints (``model``, ``input_size``, ``nb_classes``).
    """
    if not config:
        return None, {}
    model = config.get("MODEL")
    if isinstance(model, Mapping):
        if model.get("TYPE") not in _YACS_FAMILIES:
            return None, {}
        overrides = {}
        for arg, keys in _YACS_ARGS.items():
            value = _lookup(config, keys)
            if value is not _MISSING:
                overrides[arg] = tuple(value) if isinstance(value, list) else value
        return _registered(model.get("NAME")), overrides
    name = config.get("model")
    overrides = _args_overrides(config)
    if isinstance(name, str):
        return _registered(name) or _registered(name.replace("pvt_v2_", "pvtv2_")), overrides
    return None, overrides


def _args_overrides(args: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor arguments in argparse ``args`` (DeiT/PVT: ``input_size``, ``nb_classes``; timm: ``img_size``,
    ``input_size`` as [C, H, W], ``num_classes``, ``in_chans``)."""
    overrides: Dict[str, Any] = {}
    for arg, keys in (("num_classes", ("nb_classes", "num_classes")), ("img_size", ("input_size", "img_size")),
                      ("in_chans", ("in_chans",))):
        value = next((args[k] for k in keys if _is_int(args.get(k))), None)
        if value is not None:
            overrides[arg] = value
    shape = args.get("input_size")
    if isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_is_int(v) for v in shape) and shape[1] == shape[2]:
        overrides.update(in_chans=shape[0], img_size=shape[1])
    return overrides


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _config_family(config: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The registered family of a yacs config's MODEL.TYPE (the official code builds from TYPE, not NAME)."""
    model = config.get("MODEL") if config else None
    return _YACS_FAMILIES.get(model.get("TYPE")) if isinstance(model, Mapping) else None


def fitting_architectures(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered models whose state_dict has exactly these keys and shapes (architectures first, baselines last)."""
    given = frozenset((k, tuple(v.shape)) for k, v in state_dict.items())
    fits = [name for name in list_models() if _signature(name) == given]
    return sorted(fits, key=lambda n: get_model_entry(n).family == BASELINE_FAMILY)


# -- reading -----------------------------------------------------------------------------------------------------

def _safe_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says what matters
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"GLOBAL ([\w.]+)|unrecognized function (\S+)|but got (<class [^>]+>)",
                            str(exc.__context__ or exc))
        if refused is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
        what = next(g for g in refused.groups() if g).rstrip(".")
        raise CheckpointError(
            f"{path}: refused to unpickle: the file asks for {what}, which is not allowed (loading it could run "
            "code; only tensors, containers and training configs are read). If you trust it, re-save just the "
            "weights: torch.save(model.state_dict(), 'weights.pth')") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The informative line of a torch.load error: the restricted unpickler's own message when there is one."""
    cause = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def _find_state_dict(obj: Any, path: Path, prefer_ema: Optional[bool]) -> Tuple[Dict[str, torch.Tensor], str, str]:
    """(weights, the key they were under, the other weights' key left unused or "")."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict or training checkpoint")
    ema = next((k for k in EMA_KEYS if isinstance(obj.get(k), Mapping)), None)
    main = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
    found = f"found {_listing('key(s)', [str(k) for k in obj])}"
    if prefer_ema and ema is None:
        raise CheckpointError(f"{path}: no EMA weights ({' / '.join(EMA_KEYS)}) in this checkpoint ({found}); "
                              "load without the EMA option")
    if prefer_ema is False and main is None and ema is not None:
        raise CheckpointError(f"{path}: holds only EMA weights ({ema}; {found}); load without the no-EMA option")
    key = ema if prefer_ema else main or ema
    if key is not None:
        state, source_format = obj[key], key
    elif any(isinstance(v, torch.Tensor) for v in obj.values()):
        state, source_format = obj, "state_dict"
    else:
        raise CheckpointError(f"{path}: no weights found: expected a state_dict or one of the keys "
                              f"{', '.join(WRAPPER_KEYS + EMA_KEYS)} ({found})")
    unused = next((k for k in (main, ema) if k is not None and k != key), "")
    return _validated(state, path), source_format, unused


def _validated(state: Mapping[Any, Any], path: Path) -> Dict[str, torch.Tensor]:
    if not state:
        raise CheckpointError(f"{path}: the state_dict is empty")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                                  "expected parameter name -> tensor")
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _stored_config(obj: Mapping[str, Any]) -> Any:
    config = obj.get("config")
    if isinstance(config, Mapping):
        return config
    args = obj.get("args")
    return vars(args) if isinstance(args, argparse.Namespace) else None


def _plain(value: Any) -> Any:
    """Config data as plain dicts/lists/scalars (CfgNode stand-ins are OrderedDicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    return value


_MISSING = object()


def _lookup(config: Mapping[str, Any], keys: Tuple[str, ...]) -> Any:
    node: Any = config
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _registered(name: Any) -> Optional[str]:
    return name if isinstance(name, str) and name in list_models() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- architecture matching -----------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _signature(name: str) -> Optional[frozenset]:
    """Keys and shapes of registered model ``name``'s state_dict, built on the meta device (no memory, no init)."""
    try:
        model = meta_model(name)
    except Exception:  # noqa: BLE001 -- a factory that cannot build on meta simply takes no part in matching
        return None
    return frozenset((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _fit_hint(given: Mapping[str, Tuple[int, ...]], model_name: Optional[str] = None, search: bool = True) -> str:
    """Which registered architecture the weights fit: exactly, else (``search``) with inferred arguments, else the
    closest one."""
    signature = frozenset(given.items())
    scored = [(len(sig ^ signature), name) for name in list_models() if (sig := _signature(name)) is not None]
    fits = [name for diff, name in scored if diff == 0 and name != model_name]
    if fits:
        return f"the weights fit {' / '.join(fits)}: build that model instead"
    try:
        fit = find_architecture(given, list_models()) if search else None
    except ShapeInferenceError as exc:
        return str(exc)
    if fit is not None and fit.name == model_name:
        return f"they fit {model_name} built with {fit.arguments_text()}"
    if fit is not None:
        return f"the weights fit {fit.describe()}: build that model instead"
    if not scored:
        return "no registered architecture to compare with"
    diff, name = min(scored)
    return f"no registered architecture fits them (closest: {name}, {diff} key/shape differences)"


def _listing(noun: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_SHOWN]) + (", ..." if len(items) > _LIST_SHOWN else "")
    return f"{len(items)} {noun} ({shown})"
