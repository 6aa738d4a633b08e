"""Constructor arguments read from a state_dict's shapes, and the registered architecture a state_dict fits.

A fine-tuned checkpoint rarely matches a registered model's defaults: its head has the user's classes, it
was trained at another resolution (Swin's relative-position tables, PVT's position embeddings), or its
widths and depths were changed. For each architecture class a *rule* reads what the keys and shapes
determine (Slide-Swin: ``in_chans``, ``patch_size``, ``embed_dim``, ``depths``, ``num_heads``,
``num_slide_stages``, ``ka``, ``mlp_ratio``, ``qkv_bias``, ``patch_norm``, ``num_classes``; PVT / PVTv2:
``in_chans``, ``patch_size``, ``embed_dims``, ``depths``, ``num_heads`` of Slide stages, ``sr_ratios`` of
spatial-reduction stages, ``mlp_ratios``, ``num_slide_stages``, ``ka``, ``qkv_bias``, ``num_classes``).
``img_size`` is found by building the model on the meta device at candidate sizes (binary search: every
size-dependent shape grows with the size) until the size-dependent shapes match; when a range of sizes fits,
the model's default size is taken if it is in the range, else the one size in the range that is a multiple of
the largest power of two; otherwise the size is not determined and :class:`ShapeInferenceError` names
``--img-size``. Every inferred set of arguments is checked by building the model (meta device) and comparing
all keys and shapes, so a rule can never produce a model that the weights do not fit.

Not determined by shapes (the named model's value is kept): ``num_heads`` of PVT's spatial-reduction stages
(when the stage count changed, no value can be kept: :class:`ShapeInferenceError` names ``num_heads``),
``window_size``, ``qk_scale``, dropout rates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from ._registry import BASELINE_FAMILY, get_model_entry
from .complexity import meta_model
from .pvt import PyramidVisionTransformer
from .pvt_v2 import PyramidVisionTransformerV2
from .slide_swin import SlideSwinTransformer

Shapes = Mapping[str, Tuple[int, ...]]
MAX_IMG_SIZE = 4096


class ShapeInferenceError(ValueError):
    """The weights fit the architecture, but not with a given argument, or only with an argument the shapes do
    not determine; :attr:`argument` names it."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


@dataclass(frozen=True)
class ArchitectureFit:
    """How a registered architecture is built to fit a state_dict.

    Attributes:
        name: the registered model.
        arguments: constructor arguments that differ from the model's defaults (inferred, stored or given).
        sources: argument -> where its value came from (``weights``, ``config``, ``given``).
        img_sizes: (low, high) inclusive range of ``img_size`` values the weights fit (high None: unbounded), or
            None when nothing in the model depends on the size.
    """

    name: str
    arguments: Dict[str, Any]
    sources: Dict[str, str] = field(default_factory=dict)
    img_sizes: Optional[Tuple[int, Optional[int]]] = None

    def arguments_text(self) -> str:
        """``arg=value (where from), ...`` for reports; ``default arguments`` when none changed."""
        parts = [f"{k}={_show(v)} ({self.sources.get(k, 'given')})" for k, v in sorted(self.arguments.items())]
        if self.img_sizes is not None and "img_size" not in self.arguments:
            fitting = "any fits" if self.img_sizes == (1, None) else f"{_span(self.img_sizes)} fit"
            parts.append(f"img_size default ({fitting} the weights)")
        return ", ".join(parts) or "default arguments"

    def describe(self) -> str:
        """``name (arg=value (where from), ...)`` for reports."""
        return f"{self.name} ({self.arguments_text()})"


def shapes_of(state_dict: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
    """key -> shape of a state_dict (tensors or meta tensors)."""
    return {k: tuple(v.shape) for k, v in state_dict.items()}


# -- rules ---------------------------------------------------------------------------------------------------------

def _count(shapes: Shapes, pattern: str, start: int = 0) -> int:
    """How many consecutive indices ``start, start+1, ..`` give a key ``pattern.format(i)`` present in ``shapes``."""
    n = 0
    while pattern.format(start + n) in shapes:
        n += 1
    return n


def _head(shapes: Shapes) -> int:
    return shapes["head.weight"][0] if "head.weight" in shapes else 0


def _slide_table(shape: Tuple[int, ...]) -> Optional[Tuple[int, int]]:
    """(num_heads, ka) of a Slide attention position table (1, heads, 1, ka*ka, 1, 1); None for other tables."""
    if len(shape) != 6:
        return None
    return shape[1], math.isqrt(shape[3])


def swin_arguments(shapes: Shapes) -> Dict[str, Any]:
    """Slide-Swin / Swin arguments fixed by the shapes (keys of :class:`SlideSwinTransformer`)."""
    embed_dim, in_chans, patch_size, _ = shapes["patch_embed.proj.weight"]
    stages = _count(shapes, "layers.{}.blocks.0.norm1.weight")
    if stages == 0:
        raise KeyError("layers.0.blocks.0.norm1.weight")
    tables = [shapes[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(stages)]
    slide = [_slide_table(t) for t in tables]
    num_slide = next((i for i, s in enumerate(slide) if s is None), stages)
    args: Dict[str, Any] = dict(
        in_chans=in_chans, patch_size=patch_size, embed_dim=embed_dim, num_classes=_head(shapes),
        depths=tuple(_count(shapes, f"layers.{i}.blocks.{{}}.norm1.weight") for i in range(stages)),
        num_heads=tuple(s[0] if s is not None else t[1] for s, t in zip(slide, tables)),
        num_slide_stages=num_slide, mlp_ratio=shapes["layers.0.blocks.0.mlp.fc1.weight"][0] / embed_dim,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in shapes, patch_norm="patch_embed.norm.weight" in shapes)
    if num_slide:
        args["ka"] = slide[0][1]
    return args


def _pvt_common(shapes: Shapes, kernel_to_patch: Callable[[int], int]) -> Dict[str, Any]:
    """Arguments shared by PVT and PVTv2 (stage keys ``patch_embed<i>``, ``block<i>``)."""
    stages = _count(shapes, "patch_embed{}.proj.weight", start=1)
    if stages == 0 or "block1.0.norm1.weight" not in shapes:
        raise KeyError("patch_embed1.proj.weight")
    dims = tuple(shapes[f"patch_embed{i}.proj.weight"][0] for i in range(1, stages + 1))
    _, in_chans, kernel, _ = shapes["patch_embed1.proj.weight"]
    slide = [_slide_table(shapes.get(f"block{i}.0.attn.relative_position_bias_table", ())) for i in range(1, stages + 1)]
    num_slide = next((i for i, s in enumerate(slide) if s is None), stages)
    last = f"block{stages}.0.attn"
    args: Dict[str, Any] = dict(
        in_chans=in_chans, patch_size=kernel_to_patch(kernel), embed_dims=dims, num_classes=_head(shapes),
        depths=tuple(_count(shapes, f"block{i}.{{}}.norm1.weight") for i in range(1, stages + 1)),
        # heads of spatial-reduction stages are not in the shapes (None: keep the model's own)
        num_heads=tuple(s[0] if s is not None else None for s in slide),
        # the reduction of Slide stages is unused (None: keep the model's own)
        sr_ratios=tuple(None if s is not None else shapes.get(f"block{i + 1}.0.attn.sr.weight", (0, 0, 1))[2]
                        for i, s in enumerate(slide)),
        mlp_ratios=tuple(shapes[f"block{i}.0.mlp.fc1.weight"][0] / d for i, d in enumerate(dims, start=1)),
        num_slide_stages=num_slide, qkv_bias=f"{last}.q.bias" in shapes or f"{last}.qkv.bias" in shapes)
    if num_slide:
        args["ka"] = slide[0][1]
    return args


def pvt_arguments(shapes: Shapes) -> Dict[str, Any]:
    """PVT (v1) / Slide-PVT arguments fixed by the shapes (patch embedding: kernel = stride = patch)."""
    if "pos_embed1" not in shapes:
        raise KeyError("pos_embed1")
    return _pvt_common(shapes, lambda kernel: kernel)


def pvtv2_arguments(shapes: Shapes) -> Dict[str, Any]:
    """PVTv2 / Slide-PVTv2 arguments fixed by the shapes (overlapping patch embedding: kernel = 2 * stride - 1)."""
    if "pos_embed1" in shapes or "norm1.weight" not in shapes:
        raise KeyError("norm1.weight")
    return _pvt_common(shapes, lambda kernel: (kernel + 1) // 2)


def pvt_built_values(model: nn.Module) -> Dict[str, Any]:
    """The per-stage ``num_heads`` and ``sr_ratios`` a built PVT / PVTv2 uses (what the shapes may not say)."""
    attentions = [getattr(model, f"block{i}")[0].attn for i in range(1, model.num_stages + 1)]
    return {"num_heads": tuple(a.num_heads for a in attentions),
            "sr_ratios": tuple(getattr(a, "sr_ratio", 1) for a in attentions)}


RULES: Dict[type, Callable[[Shapes], Dict[str, Any]]] = {
    SlideSwinTransformer: swin_arguments, PyramidVisionTransformer: pvt_arguments,
    PyramidVisionTransformerV2: pvtv2_arguments,
}
# values of a built model that complete what its rule leaves unknown (None entries)
BUILT_VALUES: Dict[type, Callable[[nn.Module], Dict[str, Any]]] = {
    PyramidVisionTransformer: pvt_built_values, PyramidVisionTransformerV2: pvt_built_values,
}


# -- fitting -------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _default_model(name: str) -> Optional[nn.Module]:
    try:
        return meta_model(name)
    except Exception:  # noqa: BLE001 -- a factory that cannot build on meta takes no part in inference
        return None


def default_shapes(name: str) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Keys and shapes of registered model ``name`` at its defaults (meta device), or None if it cannot build there."""
    model = _default_model(name)
    return shapes_of(model.state_dict()) if model is not None else None


def _rule(name: str) -> Optional[Callable[[Shapes], Dict[str, Any]]]:
    model = _default_model(name)
    return RULES.get(type(model)) if model is not None else None


def _merge(key: str, inferred: Any, default: Any) -> Any:
    """An inferred tuple with unknown (None) entries completed from the default of the same length. Otherwise
    unknown reductions (``sr_ratios`` of Slide stages, unused) become 1; unknown heads stay None (see
    :func:`fit_architecture`)."""
    if isinstance(inferred, tuple) and None in inferred:
        if isinstance(default, tuple) and len(default) == len(inferred):
            return tuple(d if v is None else v for v, d in zip(inferred, default))
        if key == "sr_ratios":
            return tuple(1 if v is None else v for v in inferred)
    return inferred


def read_arguments(name: str, shapes: Shapes) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(every argument the shapes determine, the same arguments at ``name``'s defaults), or None when ``name``'s
    rule does not apply to these keys (another family) or ``name`` has no rule."""
    rule, defaults = _rule(name), default_shapes(name)
    if rule is None or defaults is None:
        return None
    built = BUILT_VALUES.get(type(_default_model(name)))
    try:
        default = {**rule(defaults), **(built(_default_model(name)) if built is not None else {})}
        return {k: _merge(k, v, default.get(k)) for k, v in rule(shapes).items()}, default
    except (KeyError, IndexError, ValueError, ZeroDivisionError):
        return None


def inferred_arguments(name: str, shapes: Shapes) -> Optional[Dict[str, Any]]:
    """Constructor arguments of ``name`` that the shapes determine and that differ from its defaults.

    None when ``name``'s rule does not apply to these keys, or ``name`` has no rule and the shapes are not
    exactly its own.
    """
    read = read_arguments(name, shapes)
    if read is None:
        return {} if _rule(name) is None and dict(shapes) == default_shapes(name) else None
    full, default = read
    return {k: v for k, v in full.items() if v != default.get(k)}


def _built_shapes(name: str, args: Mapping[str, Any]) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Keys and shapes of ``name(**args)`` built on the meta device; None when these arguments do not build."""
    try:
        return shapes_of(meta_model(name, **args).state_dict())
    except (TypeError, ValueError, RuntimeError, IndexError, ZeroDivisionError):
        return None


def _profile(name: str, args: Mapping[str, Any], keys: Sequence[str]) -> Optional[Tuple[int, ...]]:
    """Element counts of ``keys`` in ``name(**args)``; None if it does not build or has other keys."""
    shapes = _built_shapes(name, args)
    if shapes is None or set(shapes) != set(keys):
        return None
    return tuple(math.prod(shapes[k]) for k in keys)


def img_size_range(name: str, args: Mapping[str, Any], shapes: Shapes) -> Optional[Tuple[int, Optional[int]]]:
    """Inclusive (low, high) range of ``img_size`` at which ``name(**args)`` has exactly ``shapes`` (high None:
    unbounded up to :data:`MAX_IMG_SIZE`); None when no size fits.

    Each size-dependent shape grows with the size, so the element counts of all keys, compared in key order,
    are monotonic in the size: a doubling search then a binary search find the range's ends, building only
    sizes near the answer (large sizes of window-56 models are slow to build).
    """
    keys = sorted(shapes)
    target = tuple(math.prod(shapes[k]) for k in keys)

    def below(size: int, strict: bool) -> bool:  # profile(size) < target (strict) or <= target
        profile = _profile(name, {**args, "img_size": size}, keys)
        if profile is None:
            return True  # too small to build, or other keys: look further up
        return profile < target if strict else profile <= target

    low = _first_not(lambda size: below(size, strict=True), 1)
    if low > MAX_IMG_SIZE or _built_shapes(name, {**args, "img_size": low}) != dict(shapes):
        return None
    end = _first_not(lambda size: below(size, strict=False), low)
    return low, (end - 1 if end <= MAX_IMG_SIZE else None)


def _first_not(predicate: Callable[[int], bool], start: int) -> int:
    """The smallest size >= ``start`` where ``predicate`` (true below some size, false from it on) is false;
    ``MAX_IMG_SIZE + 1`` when it is true up to :data:`MAX_IMG_SIZE`."""
    lo, probe = start, start
    while probe <= MAX_IMG_SIZE and predicate(probe):
        lo, probe = probe + 1, probe * 2
    hi = min(probe, MAX_IMG_SIZE + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if predicate(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


def choose_img_size(sizes: Tuple[int, Optional[int]], default: int) -> Optional[int]:
    """``default`` if in ``sizes``, else the one size in the range that is a multiple of the largest power of two
    (64 down to 1) with exactly one multiple there; None when that is not unique (unbounded or wide ranges)."""
    low, high = sizes
    if low <= default and (high is None or default <= high):
        return default
    if high is None:
        return None
    for step in (64, 32, 16, 8, 4, 2, 1):
        multiples = [s for s in range(-(-low // step) * step, high + 1, step)]
        if len(multiples) == 1:
            return multiples[0]
        if multiples:
            return None
    return None


def fit_architecture(name: str, shapes: Shapes, stored: Optional[Mapping[str, Any]] = None,
                     given: Optional[Mapping[str, Any]] = None) -> Optional[ArchitectureFit]:
    """Build arguments of ``name`` that the weights (``shapes``) fit, or None when no arguments make them fit.

    ``stored`` (a checkpoint's config) and ``given`` (the caller's arguments) apply on top of what the shapes say.

    Raises:
        ShapeInferenceError: the weights fit ``name`` but not with a given argument's value, or only with an
            ``img_size`` the shapes do not determine (:attr:`ShapeInferenceError.argument` names it).
    """
    inferred = inferred_arguments(name, shapes)
    if inferred is None:
        return None
    stored, given = dict(stored or {}), dict(given or {})
    args = {**inferred, **stored, **given}
    sources = {**{k: "weights" for k in inferred}, **{k: "config" for k in stored}, **{k: "given" for k in given}}
    unknown = [k for k, v in args.items() if isinstance(v, tuple) and None in v]
    if unknown:
        raise ShapeInferenceError(unknown[0], f"{unknown[0]} is not determined by the weights for the stages marked "
                                  f"'?' ({','.join('?' if v is None else str(v) for v in args[unknown[0]])}: "
                                  f"spatial-reduction attention stores no per-head tensor); give all {unknown[0]}")
    sized = _rule(name) is not None
    if _built_shapes(name, args) == dict(shapes):
        sizes = img_size_range(name, args, shapes) if sized and "img_size" not in args else None
        return ArchitectureFit(name, args, sources, sizes)
    _refuse_contradicting(name, shapes, stored, given)
    free = {k: v for k, v in args.items() if k != "img_size"}
    sizes = img_size_range(name, free, shapes) if sized else None
    if sizes is None:
        return None
    if "img_size" in args:
        what = "given" if "img_size" in given else "stored in the checkpoint"
        raise ShapeInferenceError("img_size", f"img_size {args['img_size']} ({what}) does not fit the weights: their "
                                  f"size-dependent tables (position bias / embeddings) fit img_size {_span(sizes)}")
    size = choose_img_size(sizes, get_model_entry(name).pretrained_cfg.input_size[1])
    if size is None:
        raise ShapeInferenceError("img_size", f"img_size is not determined by the weights: {_span(sizes)} all fit "
                                  f"{name}; give the training resolution")
    sources["img_size"] = f"weights: {_span(sizes)} fit"
    return ArchitectureFit(name, {**free, "img_size": size}, sources, sizes)


def _refuse_contradicting(name: str, shapes: Shapes, stored: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Raise when the weights fit ``name`` without some given argument (``num_classes``, ``in_chans``, ...) whose
    value contradicts the shapes: one line naming both values."""
    read = read_arguments(name, shapes)
    if read is None:
        return
    full = read[0]
    wrong = [k for k, v in given.items() if k != "img_size" and k in full and full[k] != v]
    if not wrong:
        return
    try:
        fits_without = fit_architecture(name, shapes, stored, {k: v for k, v in given.items()
                                                               if k not in wrong and k != "img_size"})
    except ShapeInferenceError:
        fits_without = None
    if fits_without is not None:
        what = "head has" if wrong == ["num_classes"] else "shapes give"
        raise ShapeInferenceError(wrong[0], f"{_assignments(given, wrong)} (given) does not fit the weights: their "
                                  f"{what} {_assignments(full, wrong)}")


def _assignments(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_show(values[k])}" for k in keys)


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return str(value)


def _span(sizes: Tuple[int, Optional[int]]) -> str:
    low, high = sizes
    if high is None:
        return f">= {low}"
    return str(low) if low == high else f"{low}-{high}"


def find_architecture(shapes: Shapes, names: Sequence[str], stored: Optional[Mapping[str, Any]] = None,
                      given: Optional[Mapping[str, Any]] = None) -> Optional[ArchitectureFit]:
    """The model among ``names`` that the weights fit with the fewest arguments changed from its defaults
    (on a tie: architectures before baselines, then the closest parameter count, then the name), or None.

    Raises:
        ShapeInferenceError: the best-ranked model that the weights fit needs an argument that is given
            otherwise or not determined (see :func:`fit_architecture`). The search stops there rather than
            try models that change more arguments: those fit the shapes only by changing arguments the shapes
            cannot check (e.g. Slide-Swin-T with micro's widths, whose window size would differ).
    """
    size = sum(math.prod(s) for s in shapes.values())
    ranked = []
    for name in names:
        inferred = inferred_arguments(name, shapes)
        if inferred is not None:
            gap = abs(size - sum(math.prod(s) for s in (default_shapes(name) or {}).values()))
            ranked.append((len(inferred), get_model_entry(name).family == BASELINE_FAMILY, gap, name))
    for *_, name in sorted(ranked):
        fit = fit_architecture(name, shapes, stored, given)  # a refusal stops the search: see the docstring
        if fit is not None:
            return fit
    return None
