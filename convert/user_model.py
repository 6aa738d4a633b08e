"""Step 1 for a user's own classifier (``--model module:attr``, ``ConversionJob(module=...)``): import the
factory with one-line errors, read the preprocessing the module declares, and find the input size it takes.

The input size is never assumed. In order: ``--img-size``/``--input-size``; the zoo configuration of a
registered factory; timm's ``pretrained_cfg``/``default_cfg`` (input size, mean, std, crop_pct,
interpolation); else a forward probe over common sizes (the sizes the module itself names first). A module
that accepts exactly one size (fixed position embeddings, a flattened head) gets it; one that accepts
several (a CNN with global pooling) is refused with the flag to pass. Every input size is checked with one
forward pass before the export starts.
"""
from __future__ import annotations

import difflib
import importlib
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple

from slidelite.metadata import INTERPOLATIONS

from .errors import ConversionError, ModelBuildError, ModelSpecError
from .job import PreprocessOverrides

#: sizes tried by the forward probe after the ones the module names (most common training sizes first)
PROBE_SIZES = (224, 64, 96, 128, 160, 192, 256, 288, 320, 384, 448, 512, 32, 28)
#: attributes (on the module or its ``patch_embed``) that name the input size the module was built for
SIZE_ATTRIBUTES = ("img_size", "image_size", "input_size")
ASSUMED_PREPROCESS = ("the model declares no preprocessing (no pretrained_cfg/default_cfg): ImageNet mean/std, "
                      "crop_pct 0.875, bicubic assumed; pass --mean/--std/--crop-pct/--interpolation if it was "
                      "trained otherwise")


def user_model(module: Any, spec: Optional[str]) -> Tuple[Any, Optional[Any]]:
    """The model object given (``ConversionJob.module``) or built from ``spec``, and the preprocessing it
    declares (:func:`module_config`).

    Raises:
        ModelSpecError / ModelBuildError: see :func:`import_factory`; also a ``module`` that is no torch module.
    """
    import torch

    factory = None
    if module is None:
        module, factory = import_factory(spec)
    elif not isinstance(module, torch.nn.Module):
        raise ModelBuildError(f"ConversionJob.module is a {type(module).__name__}, not a torch.nn.Module")
    return module, module_config(module, factory)


def import_factory(spec: str) -> Tuple[Any, Any]:
    """Import ``module:attr`` and build the model: call it, or take it when it already is a module.

    Returns ``(torch.nn.Module, the attribute named)``.

    Raises:
        ModelSpecError: the spec is malformed, the module does not exist or has no such attribute (exit 2).
        ModelBuildError: the user's code failed: importing it raised, the factory raised, or it is not
            callable / returned something other than a ``torch.nn.Module`` (exit 1).
    """
    import torch

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelSpecError(f"--model {spec}: expected module:attr, e.g. torchvision.models:resnet18")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ModelSpecError(f"--model {spec}: cannot import module '{module_name}' ({exc}); check the name "
                                 "and that its package is installed in this Python") from None
        raise ModelBuildError(f"--model {spec}: importing '{module_name}' failed: {describe_exception(exc)}") from None
    except (Exception, SystemExit) as exc:  # the user's code: anything it raises is one line
        raise ModelBuildError(f"--model {spec}: importing '{module_name}' failed: {describe_exception(exc)}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            close = difflib.get_close_matches(part, [n for n in dir(target) if not n.startswith("_")], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelSpecError(f"--model {spec}: '{module_name}' has no attribute '{attr}'{hint}")
        target = getattr(target, part)
    if isinstance(target, torch.nn.Module):
        return target, target
    if not callable(target):
        raise ModelBuildError(f"--model {spec}: '{attr}' is a {type(target).__name__}, not a torch.nn.Module or a "
                              "factory returning one")
    try:
        module = target()
    except (Exception, SystemExit) as exc:
        raise ModelBuildError(f"--model {spec}: calling {attr}() failed: {describe_exception(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelBuildError(f"--model {spec}: {attr}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module, target


def describe_exception(exc: BaseException) -> str:
    """``Type: first message line (file:line)`` in one line; the place is the innermost frame outside torch and
    the import machinery (the user's or the package's own code), else the innermost one."""
    import torch

    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    library = str(Path(torch.__file__).parent)
    own = [f for f in frames if not f.filename.startswith((library, "<frozen"))] or frames
    return f"{text} ({Path(own[-1].filename).name}:{own[-1].lineno})" if own else text


def module_config(module: Any, factory: Any = None) -> Optional[Any]:
    """The preprocessing the model declares, as a :class:`slidelite.zoo.PretrainedConfig`, or None.

    Sources: the zoo entry whose factory is ``factory``; timm's ``pretrained_cfg`` / ``default_cfg`` (a dict
    or an object) on the module. Missing fields keep PretrainedConfig's defaults; no label set is implied.
    """
    from slidelite import zoo

    for name in zoo.list_models():
        entry = zoo.get_model_entry(name)
        if factory is not None and entry.factory is factory:
            return entry.pretrained_cfg
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    if cfg is None:
        return None
    read = cfg.get if isinstance(cfg, dict) else lambda key, default=None: getattr(cfg, key, default)
    size = read("input_size")
    if not (isinstance(size, (tuple, list)) and len(size) == 3 and all(isinstance(v, int) for v in size)):
        return None
    values = dict(input_size=tuple(size), label_set="", license=str(read("license", "") or ""),
                  source=str(read("hf_hub_id", "") or read("architecture", "") or ""))
    if read("mean") is not None and read("std") is not None:
        values.update(mean=tuple(float(v) for v in read("mean")), std=tuple(float(v) for v in read("std")))
    if isinstance(read("crop_pct"), (int, float)):
        values["crop_pct"] = float(read("crop_pct"))
    if read("interpolation") in INTERPOLATIONS:
        values["interpolation"] = read("interpolation")
    return zoo.PretrainedConfig(**values)


def resolve_input(module: Any, cfg: Optional[Any], overrides: PreprocessOverrides
                  ) -> Tuple[PreprocessOverrides, List[str]]:
    """Settle the colour mode and input size of a user module (module docstring); returns the overrides with
    ``input_size`` and ``color_mode`` filled in, and notes for the report.

    Raises:
        ConversionError: the module rejects the given size, accepts several sizes and no size was given or
            declared, accepts none of the probed sizes, or does not return (batch, classes) scores.
    """
    color = overrides.color_mode or (("L" if cfg.input_size[0] == 1 else "RGB") if cfg is not None
                                     else first_conv_color_mode(module))
    channels = 1 if color == "L" else 3
    notes = [ASSUMED_PREPROCESS] if cfg is None and None in (overrides.mean, overrides.std) else []
    if overrides.input_size is not None:
        size = tuple(overrides.input_size)
        failure = forward_failure(module, (1, channels) + size)
        if failure:
            raise ConversionError(f"the model does not accept a {_shape(channels, size)} input ({failure}); pass the "
                                  "size it was trained at with --img-size N or --input-size HxW")
        return replace(overrides, input_size=size, color_mode=color), notes
    if cfg is not None:
        declared = tuple(cfg.input_size[1:])
        failure = forward_failure(module, (1, channels) + declared)
        if not failure:
            return replace(overrides, input_size=declared, color_mode=color), notes
        notes.append(f"the model's config says {_shape(channels, declared)} but the module rejects it ({failure}); "
                     "probing for the size it takes")
    accepted, first_failure = probe_sizes(module, channels, candidate_sizes(module))
    if len(accepted) > 1:
        raise ConversionError(
            f"cannot tell the input size: the model accepts {_shape(channels, accepted[0])} and "
            f"{_shape(channels, accepted[1])} inputs and declares none (no pretrained_cfg); pass the size it was "
            "trained at with --img-size N or --input-size HxW")
    if not accepted:
        raise ConversionError(f"the model accepts none of the input sizes tried ({first_failure}); pass the size it "
                              "was trained at with --img-size N or --input-size HxW")
    notes.append(f"input size {_shape(channels, accepted[0])}: the only size the model accepts (forward probe)")
    return replace(overrides, input_size=accepted[0], color_mode=color), notes


def first_conv_color_mode(module: Any) -> str:
    """``L`` when the module's first Conv2d takes one channel, else ``RGB``."""
    import torch

    first = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return "L" if first is not None and first.in_channels == 1 else "RGB"


def candidate_sizes(module: Any) -> List[Tuple[int, int]]:
    """The sizes the module names (``img_size``, ``image_size``, ``input_size`` on it or its ``patch_embed``)
    followed by :data:`PROBE_SIZES`, without repeats."""
    named = []
    for owner in (module, getattr(module, "patch_embed", None)):
        for attr in SIZE_ATTRIBUTES:
            named.extend(_as_sizes(getattr(owner, attr, None)) if owner is not None else [])
    sizes: List[Tuple[int, int]] = []
    for size in named + [(s, s) for s in PROBE_SIZES]:
        if size not in sizes:
            sizes.append(size)
    return sizes


def _as_sizes(value: Any) -> List[Tuple[int, int]]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return [(value, value)]
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and v > 0 for v in value) and len(value) in (2, 3):
        return [tuple(value[-2:])]
    return []


def probe_sizes(module: Any, channels: int, sizes: Iterable[Tuple[int, int]], enough: int = 2
                ) -> Tuple[List[Tuple[int, int]], str]:
    """Run one forward pass per size until ``enough`` sizes are accepted; returns (accepted sizes, the first
    failure message)."""
    accepted: List[Tuple[int, int]] = []
    first_failure = ""
    for size in sizes:
        failure = forward_failure(module, (1, channels) + tuple(size))
        if not failure:
            accepted.append(tuple(size))
            if len(accepted) >= enough:
                break
        first_failure = first_failure or failure
    return accepted, first_failure


def forward_failure(module: Any, shape: Tuple[int, ...]) -> str:
    """Empty when ``module`` maps a zero tensor of ``shape`` to (batch, classes) scores; else why not.

    Raises:
        ConversionError: the module runs but returns something other than a (batch, classes) tensor.
    """
    import torch

    try:
        with torch.no_grad():
            out = module(torch.zeros(shape))
    except Exception as exc:  # the user's forward: any error means "not this size"
        return describe_exception(exc)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConversionError(f"the model returns {got} for a {tuple(shape)} input; a classifier must return "
                              "(batch, classes) scores")
    return ""


def _shape(channels: int, size: Tuple[int, int]) -> str:
    return f"{channels}x{size[0]}x{size[1]}"
