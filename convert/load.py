"""Steps 1–2: load a classifier (zoo name, ``module:attr`` factory, module object or checkpoint-only) in
eval mode with its pretrained configuration, and re-parameterize it for inference."""
from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Any, List, Optional, Tuple

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
        CheckpointLoadError: the checkpoint is missing, unsafe or for another architecture.
    """
    from slidelite import zoo

    ckpt, user_module = None, job.module is not None or (job.model is not None and ":" in job.model)
    if user_module:
        module, cfg = user_model(job.module, job.model)
        arch = job.model or type(module).__name__
        if job.checkpoint is not None:
            ckpt = load_checkpoint_into(module, job.checkpoint)
    else:
        arch = _zoo_name(job.model) if job.model is not None or job.checkpoint is None else None
        if job.checkpoint is not None:
            module, ckpt = build_from_checkpoint(job.checkpoint, arch)
            arch = ckpt.arch
        else:
            module = zoo.create_model(arch)
        cfg = zoo.get_pretrained_cfg(arch)
    overrides = job.preprocess
    stored_size = ckpt.overrides.get("img_size") if ckpt is not None else None
    if overrides.input_size is None and isinstance(stored_size, int):
        overrides = replace(overrides, input_size=(stored_size, stored_size))
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
        warnings=tuple(notes),
    )


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


def build_from_checkpoint(path: Any, model_name: Optional[str]) -> Tuple[Any, Any]:
    """Build a zoo model from a checkpoint (architecture from its stored config when ``model_name`` is None).

    Returns ``(module in eval mode, slidelite.zoo.checkpoint.Checkpoint)``.
    """
    api = _checkpoint_api()
    try:
        return api.build_from_checkpoint(str(path), model_name)
    except api.CheckpointError as exc:
        raise _checkpoint_failure(path, exc) from None


def load_checkpoint_into(module: Any, path: Any) -> Any:
    """Strictly load the weights of checkpoint ``path`` into ``module``; return the Checkpoint (sha256 etc.)."""
    api = _checkpoint_api()
    try:
        ckpt = api.read_checkpoint(str(path))
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
