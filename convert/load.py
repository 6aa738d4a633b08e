"""Steps 1–2: load a classifier (zoo name, ``module:attr`` factory, module object or checkpoint-only) in
eval mode with its pretrained configuration, and re-parameterize it for inference."""
from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from slidelite.metadata import PreprocessSpec

from .errors import CheckpointLoadError, ConversionError, ModelSpecError
from .job import ConversionJob, LoadedModel, PreprocessOverrides
from .user_model import resolve_input, user_model


def load_model(job: ConversionJob) -> LoadedModel:
    """Build the model named by the job, load its checkpoint, apply preprocessing overrides; eval mode.

    Raises:
        ModelSpecError: unknown zoo name (close names suggested), or a ``module:attr`` naming no module/attribute.
        ModelBuildError: the ``module:attr`` code failed (import or factory raised, no module returned).
        ConversionError: a user module's input size cannot be told (:mod:`slidelite.convert.user_model`).
        CheckpointLoadError: the checkpoint is missing, unsafe or for another architecture, or fits only with an
            argument the user gave otherwise / the weights do not determine (the flag to pass is named).
    """
    from slidelite import zoo

    ckpt, origin = None, ()
    user_module = job.module is not None or (job.model is not None and ":" in job.model)
    if user_module:
        if set(job.model_args) - {"img_size"}:
            raise ModelSpecError(f"{_arguments(job.model_args)}: --num-classes and --model-arg set zoo model "
                                 "arguments; a module:attr factory or module builds its own model")
        module, cfg = user_model(job.module, job.model)
        arch = job.model or type(module).__name__
        if job.checkpoint is not None:
            ckpt = load_checkpoint_into(module, job.checkpoint, job.ema)
        built_args = {k: v for k, v in ckpt.overrides.items() if k == "img_size"} if ckpt is not None else {}
        origin = _weights_row(ckpt, job.checkpoint)
    else:
        module, arch, ckpt, built_args = _zoo_model(job)
        cfg = zoo.get_pretrained_cfg(arch)
        origin = _origin(arch, ckpt, built_args, job.checkpoint)
    overrides = _preprocess_overrides(job.preprocess, cfg, built_args)
    module.eval()
    notes: List[str] = []
    if user_module:
        overrides, notes = resolve_input(module, cfg, overrides)
    preprocess, input_size = _preprocess_spec(cfg, overrides)
    num_classes = _num_classes(module, cfg, (1, preprocess.channels) + tuple(input_size))
    return LoadedModel(
        module=module, architecture=arch, preprocess=preprocess, input_size=input_size, num_classes=num_classes,
        label_set=getattr(cfg, "label_set", ""), license=getattr(cfg, "license", ""),
        source=getattr(cfg, "source", "") or arch, checkpoint_sha256=ckpt.sha256 if ckpt is not None else "",
        origin=origin,
        warnings=tuple(notes),
    )


def _zoo_model(job: ConversionJob) -> Tuple[Any, str, Any, Dict[str, Any]]:
    """(module, zoo name, Checkpoint or None, constructor arguments used) for a zoo name and/or a checkpoint."""
    from slidelite import zoo

    arch = _zoo_name(job.model) if job.model is not None or job.checkpoint is None else None
    if job.checkpoint is not None:
        module, ckpt = build_from_checkpoint(job.checkpoint, arch, job.ema, job.model_args)
        return module, ckpt.arch, ckpt, dict(ckpt.fit.arguments)
    try:
        return zoo.create_model(arch, **job.model_args), arch, None, dict(job.model_args)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"cannot build {arch} with {_arguments(job.model_args)}: {exc}") from None


def _origin(arch: str, ckpt: Any, built_args: Dict[str, Any], path: Any) -> Tuple[Tuple[str, str], ...]:
    """Report rows: the zoo model with its arguments and where each came from; which weights of the checkpoint."""
    if ckpt is None:
        return (("model", f"{arch} ({_arguments(built_args) or 'default arguments'}; random weights)"),)
    return (("model", ckpt.fit.describe()),) + _weights_row(ckpt, path)


def _weights_row(ckpt: Any, path: Any) -> Tuple[Tuple[str, str], ...]:
    """The report row saying which weights of checkpoint ``path`` were converted (and which were not)."""
    if ckpt is None:
        return ()
    ema = ckpt.source_format in _checkpoint_api().EMA_KEYS
    used = f"{path}: {ckpt.source_format}" + (" (EMA weights)" if ema else "")
    if ckpt.unused_weights:
        used += f"; the file also holds {ckpt.unused_weights}, not used ({'--no-ema' if ema else '--ema'} takes them)"
    return (("weights", used),)


def _arguments(args: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(args.items()))


def _preprocess_overrides(given: PreprocessOverrides, cfg: Any, built_args: Dict[str, Any]) -> PreprocessOverrides:
    """The user's preprocessing overrides completed from the arguments the model was built with: the input size
    from ``img_size``, the colour mode from ``in_chans`` (mean/std must then be given for the new channel count)."""
    overrides = given
    size = built_args.get("img_size")
    if overrides.input_size is None and isinstance(size, int):
        overrides = replace(overrides, input_size=(size, size))
    chans = built_args.get("in_chans")
    if cfg is None or chans is None or chans == cfg.input_size[0] or overrides.color_mode is not None:
        return overrides
    if chans not in (1, 3):
        raise ConversionError(f"the model takes {chans} input channels; only 1 (L) and 3 (RGB) are images")
    if any(len(v) not in (1, chans) for v in (overrides.mean or cfg.mean, overrides.std or cfg.std)):
        raise ConversionError(f"the weights take {chans} input channel(s) where the pretrained configuration has "
                              f"{cfg.input_size[0]}: pass --mean and --std with {chans} value(s) each")
    return replace(overrides, color_mode="L" if chans == 1 else "RGB")


def reparameterize(loaded: LoadedModel) -> LoadedModel:
    """Return a copy of ``loaded`` whose module is in its inference form (:func:`slidelite.zoo.reparameterize_model`)."""
    from slidelite.zoo import reparameterize_model

    return replace(loaded, module=reparameterize_model(loaded.module))


def _zoo_name(name: Optional[str]) -> str:
    from slidelite import zoo

    if name is None:
        raise ModelSpecError("give --model (a zoo name or module:attr) or --checkpoint")
    try:
        zoo.get_model_entry(name)
    except zoo.UnknownModelError as exc:
        raise ModelSpecError(f"--model: {exc}") from None
    return name


def _checkpoint_api() -> Any:
    """The zoo's checkpoint reader (``slidelite.zoo.checkpoint``)."""
    try:
        return importlib.import_module("slidelite.zoo.checkpoint")
    except ImportError as exc:
        raise ConversionError(f"checkpoint loading is unavailable: slidelite.zoo.checkpoint ({exc})") from None


def _checkpoint_failure(path: Any, exc: Exception) -> CheckpointLoadError:
    message = str(exc)
    return CheckpointLoadError(message if str(path) in message else f"{path}: {message}")


def build_from_checkpoint(path: Any, model_name: Optional[str], ema: Optional[bool] = None,
                          model_args: Optional[Dict[str, Any]] = None) -> Tuple[Any, Any]:
    """Build a zoo model from a checkpoint (:func:`slidelite.zoo.build_from_checkpoint`: architecture from
    ``model_name``, else the stored config, else the weights' keys and shapes; arguments from the shapes, the
    config and ``model_args``). Returns ``(module in eval mode, slidelite.zoo.checkpoint.Checkpoint)``.
    """
    api = _checkpoint_api()
    try:
        return api.build_from_checkpoint(str(path), model_name, ema, **(model_args or {}))
    except api.ArgumentNeededError as exc:
        raise CheckpointLoadError(f"{exc}; pass {_flag(exc.argument)}") from None
    except api.CheckpointError as exc:
        raise _checkpoint_failure(path, exc) from None


def _flag(argument: str) -> str:
    """The ``slidelite convert`` option that sets constructor argument ``argument``."""
    return {"img_size": "--img-size N (the training resolution)", "num_classes": "--num-classes N"}.get(
        argument, f"--model-arg {argument}=VALUE")


def load_checkpoint_into(module: Any, path: Any, ema: Optional[bool] = None) -> Any:
    """Strictly load the weights of checkpoint ``path`` into ``module``; return the Checkpoint (sha256 etc.)."""
    api = _checkpoint_api()
    try:
        ckpt = api.read_checkpoint(str(path), ema)
        api.load_state_dict_into(module, ckpt.state_dict, str(path))
    except api.CheckpointError as exc:
        raise _checkpoint_failure(path, exc) from None
    return ckpt


def _num_classes(module: Any, cfg: Any, input_shape: Tuple[int, int, int, int]) -> int:
    """Output width: the module's ``num_classes`` attribute (timm convention), else one forward pass."""
    value = getattr(module, "num_classes", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    import torch

    with torch.no_grad():
        out = module(torch.zeros(input_shape))
    if out.ndim != 2:
        raise ConversionError(f"the model returns a tensor of shape {tuple(out.shape)}; a classifier must return "
                              "(batch, classes) scores")
    return int(out.shape[1])


def _preprocess_spec(cfg: Any, overrides: PreprocessOverrides) -> Tuple[PreprocessSpec, Tuple[int, int]]:
    """Merge the pretrained cfg (or ImageNet defaults for generic models) with the CLI overrides."""
    base = PreprocessSpec()
    size: Tuple[int, int] = (224, 224)
    color = base.color_mode
    if cfg is not None:
        chans, height, width = cfg.input_size
        size, color = (height, width), ("RGB" if chans == 3 else "L")
        base = PreprocessSpec(color_mode=color, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                              mean=tuple(cfg.mean), std=tuple(cfg.std))
    o = overrides
    return PreprocessSpec(
        color_mode=o.color_mode or base.color_mode,
        resize_mode=base.resize_mode,
        crop_pct=o.crop_pct if o.crop_pct is not None else base.crop_pct,
        interpolation=o.interpolation or base.interpolation,
        mean=tuple(o.mean) if o.mean is not None else base.mean,
        std=tuple(o.std) if o.std is not None else base.std,
    ), (tuple(o.input_size) if o.input_size is not None else size)
