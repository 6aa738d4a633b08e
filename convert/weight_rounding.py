"""Step 3b (``--int8-recipe weight-only``): put every Conv2d/Linear weight of a torch module on a per-output-
channel symmetric int8 grid, chosen with the calibration images, before export.

Plain rounding to int8 (the usual weight-only recipe) moves EfficientNet-Lite0's top-1 on 13 % of real-photo
crops (``docs/models/efficientnet_lite0.md``); this step makes the rounding error small where it matters:

* **GPTQ** (Frantar et al., 2023; onnxruntime's weight-only quantizer has it for MatMul): layer by layer in
  execution order, the weights are quantized one input column at a time (largest input energy first) and
  the error of each column is pushed onto the columns not yet quantized, weighted by the inverse of the
  layer input's second moment ``H = E[x x^T]`` measured on the calibration images (already-quantized
  layers upstream). Grouped and depthwise convolutions are solved per group. A layer with fewer than
  :data:`MIN_SAMPLES_PER_COLUMN` input samples per column (a classifier head) is plainly rounded instead.
* **Bias correction** (Nagel et al., 2019): the mean output shift ``(W - Q) E[x]`` left by the rounding is
  added to the layer's bias (a bias is created when the layer has none).

The scale of each output channel is ``max|w| / 127`` and that largest weight is kept at exactly ``±127``
steps, so any per-channel min-max int8 quantizer (the ONNX writer :func:`slidelite.convert.int8_weights.store_int8_weights`,
ai-edge-quantizer's ``weight_only_wi8_afp32``) later recovers the very same integers from the exported
float weights, also after a BatchNorm is folded into the convolution (a per-channel factor).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

QMAX = 127
DAMPING = 0.01  # fraction of the mean diagonal added to H (GPTQ's default)
#: GPTQ needs this many input samples per input column; a layer seeing fewer (a classifier head sees one per
#: image) would fit the calibration images, so it gets plain rounding (GPTQ with H = identity)
MIN_SAMPLES_PER_COLUMN = 4


@dataclass
class _Moments:
    """Second moment ``sum x x^T`` (per group) and sum of the inputs of one layer, over the calibration images."""

    gram: Any = None  # torch.Tensor (G, I, I) float64
    total: Any = None  # torch.Tensor (G, I) float64
    count: int = 0


class _Stop(Exception):
    """Raised by the capture hook once the watched layer has seen its input (the rest of the net is skipped)."""


def quantizable_layers(module: Any, sample: np.ndarray) -> List[Any]:
    """The ``nn.Conv2d`` and ``nn.Linear`` layers of ``module`` in the order a forward pass on ``sample`` runs them."""
    import torch
    from torch import nn

    by_weight = {id(m.weight): m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    order: List[Any] = []

    def record(func, args, kwargs):
        layer = by_weight.get(id(_weight_arg(args, kwargs)))
        if layer is not None and layer not in order:
            order.append(layer)

    _run_watched(module, record, torch.as_tensor(sample))
    return order


def _weight_arg(args: tuple, kwargs: dict) -> Any:
    """The weight argument of an ``F.conv2d``/``F.linear`` call."""
    return args[1] if len(args) > 1 else kwargs.get("weight")


def _run_watched(module: Any, sink: Callable[[Any, tuple, dict], None], inputs: Any) -> None:
    """Run ``module`` on ``inputs`` with ``sink(func, args, kwargs)`` called for every
    ``F.conv2d``/``F.linear`` call; stop early when ``sink`` raises :class:`_Stop`."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (F.conv2d, F.linear):
                sink(func, args, kwargs)
            return func(*args, **kwargs)

    with torch.no_grad(), Watch():
        try:
            module(inputs)
        except _Stop:
            pass


def _layer_columns(func: Any, args: tuple, kwargs: dict, groups: int) -> Any:
    """The layer's input as (G, I, L) float64 columns, one column per output position (im2col for conv)."""
    import torch
    import torch.nn.functional as F

    x = args[0]
    if func is F.linear:
        return x.reshape(-1, x.shape[-1]).T.to(torch.float64)[None]
    weight = _weight_arg(args, kwargs)
    names = ("stride", "padding", "dilation", "groups")
    params = dict(zip(names, args[3:7]), **{k: kwargs[k] for k in names if k in kwargs})
    padding = _numeric_padding(params.get("padding", 0), weight.shape[2:], params.get("dilation", 1))
    cols = F.unfold(x.to(torch.float64), weight.shape[2:], dilation=params.get("dilation", 1), padding=padding,
                    stride=params.get("stride", 1))  # (N, C*kh*kw, L)
    n, rows, length = cols.shape
    cols = cols.reshape(n, groups, rows // groups, length).permute(1, 2, 0, 3)
    return cols.reshape(groups, rows // groups, n * length)


def _numeric_padding(padding: Any, kernel: Any, dilation: Any) -> Any:
    """Conv padding as numbers: ``"valid"`` is 0, ``"same"`` (odd kernels) is ``dilation * (k - 1) / 2``."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return 0
    dilation = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    if padding != "same" or any(k % 2 == 0 for k in kernel):
        raise ValueError(f"weight-only int8: convolution padding '{padding}' with kernel {tuple(kernel)} is not supported")
    return tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))


def layer_moments(module: Any, layer: Any, calibration: np.ndarray, batch: int = 8) -> _Moments:
    """``sum x x^T`` (per group) and ``sum x`` of ``layer``'s inputs over the calibration images."""
    import torch

    moments = _Moments()
    groups = getattr(layer, "groups", 1)

    def sink(func, args, kwargs):
        if _weight_arg(args, kwargs) is not layer.weight:
            return
        cols = _layer_columns(func, args, kwargs, groups)
        gram = cols @ cols.transpose(1, 2)
        moments.gram = gram if moments.gram is None else moments.gram + gram
        total = cols.sum(dim=2)
        moments.total = total if moments.total is None else moments.total + total
        moments.count += cols.shape[2]
        raise _Stop

    for start in range(0, len(calibration), batch):
        _run_watched(module, sink, torch.as_tensor(calibration[start:start + batch]))
    return moments


def gptq_int8(weight: Any, gram: Any) -> Any:
    """GPTQ of ``weight`` (G, O, I) against the input second moments ``gram`` (G, I, I), float64.

    Returns the quantized weight (same shape, float64, on the grid ``k * max|w_row| / 127``, ``|k| <= 127``,
    each row's largest weight at exactly ``±127`` steps)."""
    import torch

    w = weight.clone()
    scale = w.abs().amax(dim=2, keepdim=True) / QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    pinned = w.abs().argmax(dim=2)  # (G, O): the column of each row's largest weight
    pinned_value = torch.gather(w, 2, pinned[..., None])[..., 0]
    h = gram.clone()
    diag = torch.diagonal(h, dim1=1, dim2=2)
    dead = diag == 0
    diag[dead] = 1.0
    w.masked_fill_(dead[:, None, :] & (torch.arange(w.shape[2])[None, None, :] != pinned[..., None]), 0.0)
    order = torch.argsort(torch.diagonal(h, dim1=1, dim2=2), dim=1, descending=True)  # act-order
    w = torch.gather(w, 2, order[:, None, :].expand_as(w))
    h = torch.gather(torch.gather(h, 1, order[:, :, None].expand_as(h)), 2, order[:, None, :].expand_as(h))
    position = torch.argsort(order, dim=1)  # column index -> its place in the order
    pinned_at = torch.gather(position, 1, pinned)
    h += DAMPING * torch.diagonal(h, dim1=1, dim2=2).mean(dim=1)[:, None, None] * torch.eye(h.shape[1], dtype=h.dtype)
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    quantized = torch.zeros_like(w)
    for i in range(w.shape[2]):
        column = w[:, :, i]
        q = torch.clamp(torch.round(column / scale[..., 0]), -QMAX, QMAX) * scale[..., 0]
        q = torch.where(pinned_at == i, torch.sign(pinned_value) * QMAX * scale[..., 0], q)
        quantized[:, :, i] = q
        error = (column - q) / inverse[:, i, i][:, None]
        w[:, :, i + 1:] -= error[..., None] * inverse[:, None, i, i + 1:]
    return torch.gather(quantized, 2, position[:, None, :].expand_as(quantized))


def round_weights_int8(module: Any, calibration: np.ndarray, min_elements: int = 0, batch: int = 8,
                       progress: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """Quantize every Conv2d/Linear weight of ``module`` in place onto its int8 grid (GPTQ + bias correction).

    Args:
        module: the re-parameterized torch model, eval mode.
        calibration: (N, C, H, W) float32 inputs as the module takes them.
        min_elements: layers with fewer weights stay float (the most sensitive, cheapest ones).
        progress: called with each layer's name before it is quantized.

    Returns:
        Relative weight change ``|Q - W| / |W|`` per layer (by qualified name).
    """
    import torch

    names = {id(m): name for name, m in module.named_modules()}
    changes: Dict[str, float] = {}
    for layer in quantizable_layers(module, calibration[:1]):
        if layer.weight.numel() < min_elements:
            continue
        name = names[id(layer)]
        if progress is not None:
            progress(name)
        groups = getattr(layer, "groups", 1)
        moments = layer_moments(module, layer, calibration, batch)
        if moments.gram is None:
            continue  # not reached by the forward pass
        original = layer.weight.detach().to(torch.float64)
        weight = original.reshape(groups, original.shape[0] // groups, -1)
        gram = moments.gram
        if moments.count < MIN_SAMPLES_PER_COLUMN * weight.shape[2]:
            gram = torch.eye(weight.shape[2], dtype=gram.dtype).expand_as(gram)
        quantized = gptq_int8(weight, gram)
        mean = moments.total / moments.count  # (G, I)
        shift = ((weight - quantized) @ mean[..., None])[..., 0].reshape(-1)  # (O,)
        with torch.no_grad():
            layer.weight.copy_(quantized.reshape(original.shape).to(layer.weight.dtype))
            if layer.bias is None:
                layer.bias = torch.nn.Parameter(shift.to(layer.weight.dtype))
            else:
                layer.bias.add_(shift.to(layer.bias.dtype))
        changes[name] = float((quantized - weight).norm() / weight.norm())
    return changes
