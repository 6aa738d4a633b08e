"""Slide attention (Pan et al., "Slide-Transformer", CVPR 2023).

For a query at pixel p with head h, local attention over the ka x ka neighbourhood N(p) is

    attn_h(p, j) = softmax_j( q_h(p) . (k_h(p + d_j) + r_h(j)) ),   j = 0 .. ka^2 - 1
    out_h(p)     = sum_j attn_h(p, j) * v_h(p + d_j)

with d_j the j-th offset of the ka x ka grid, r_h(j) a learnable relative-position term added to the
keys (so it is multiplied by q_h(p) summed over the head dimension, exactly as the official code
applies it), and zeros outside the feature map. The Im2Col gathering ``k_h(p + d_j)`` is re-read as
ka^2 *shifted copies* of the key map; each shift is a depthwise convolution with a one-hot kernel
(``dep_conv``, weight frozen, bias learnable). The "deformed shifting" branch ``dep_conv1`` is a
learnable depthwise convolution of the same shape trained beside it, so the keys are

    k_shift = dep_conv(k) + dep_conv1(k)        (same for v)

Both branches are linear in k and share the input, so training computes the sum as ONE convolution with
the summed kernels and biases, over k and v in one call (the same values and the same gradients for
``dep_conv1`` and the biases, at half the convolution work of running the branches separately).
For the same reason :meth:`SlideAttention.reparameterize` merges them into one
convolution per tensor (weights summed, biases summed), also folding the q scale into the qkv projection
and the relative-position term into the key bias. The inference form is channel-first and made of
convolutions with constant kernels, the layout ONNX Runtime's CPU kernels run fastest (its NCHWc convolutions
and element-wise ops, with no per-pixel products): one transpose in, q, k and v as 1x1 convolutions, and per
neighbour j a multiplier-1 depthwise convolution each of k and v (slice j of the merged kernel, shared across
heads), the logit as q times the shifted key summed over the head's channels (a grouped 1x1 convolution with
a kernel of ones), the softmax over the ka^2 logits written out (max, exp, sum, divide), each weight copied to
its head's channels by a grouped 1x1 convolution of ones and multiplied with the shifted value, the products
summed, proj as a 1x1 convolution and one transpose out. Measured with ``benchmarks/slide_attention_forms.py``
against the earlier forms (a multiplier-ka^2 depthwise convolution per tensor with element-wise products and
sums; per-pixel batched products before that). TFLite rewrites it as shifted slices and small matrix
products per neighbour (``convert/tflite_graph.py``), the form XNNPACK runs fastest.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def one_hot_shift_kernels(ka: int, channels: int) -> torch.Tensor:
    """Depthwise kernels (channels * ka^2, 1, ka, ka); output j of each channel copies offset j."""
    kernel = torch.zeros(ka * ka, 1, ka, ka)
    for j in range(ka * ka):
        kernel[j, 0, j // ka, j % ka] = 1.0
    return kernel.repeat(channels, 1, 1, 1)


class SlideAttention(nn.Module):
    """Multi-head Slide attention over (B, H, W, C) feature maps; parameter names follow the official code.

    Args:
        dim: channels C.
        num_heads: heads; C must be divisible by it.
        ka: neighbourhood size (odd).
        qkv_bias: learnable bias in the qkv projection.
        qk_scale: override of head_dim ** -0.5.
        attn_drop: dropout on attention weights (training).
        proj_drop: dropout after the output projection (training).
    """

    #: the deployed form's logits and weighted sum are convolutions (counted by a FLOP counter), not element-wise
    counts_neighbourhood = True

    def __init__(self, dim: int, num_heads: int, ka: int = 3, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if ka % 2 != 1:
            raise ValueError(f"ka must be odd, got {ka}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.ka = ka
        self.deployed = False
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        conv = dict(kernel_size=ka, bias=True, groups=self.head_dim, padding=ka // 2)
        self.dep_conv = nn.Conv2d(self.head_dim, ka * ka * self.head_dim, **conv)
        self.dep_conv1 = nn.Conv2d(self.head_dim, ka * ka * self.head_dim, **conv)
        self.dep_conv.weight = nn.Parameter(one_hot_shift_kernels(ka, self.head_dim), requires_grad=False)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(1, num_heads, 1, ka * ka, 1, 1))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.k_conv: nn.Conv2d | None = None
        self.v_conv: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over (B, H, W, C) and return (B, H, W, C)."""
        return self._forward_deployed(x) if self.deployed else self._forward_train(x)

    def _forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """The two-branch form, in the official 6-D layout (B, heads, head_dim, ka^2, H, W)."""
        B, H, W, C = x.shape
        heads, hd, kk = self.num_heads, self.head_dim, self.ka * self.ka
        f = self.qkv(x).permute(0, 3, 1, 2).reshape(B * heads, 3 * hd, H, W)
        q = (f[:, :hd] * self.scale).reshape(B, heads, hd, 1, H, W)
        kv = self._shift(torch.cat([f[:, hd:2 * hd], f[:, 2 * hd:]]))  # k and v of every head, one batch
        k, v = (t.reshape(B, heads, hd, kk, H, W) for t in kv.chunk(2))
        k = k + self.relative_position_bias_table
        attn = (q * k).sum(2, keepdim=True).softmax(dim=3)
        attn = self.attn_drop(attn)
        out = (attn * v).sum(3).reshape(B, C, H, W).permute(0, 2, 3, 1)
        return self.proj_drop(self.proj(out))

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        """``dep_conv(x) + dep_conv1(x)``, computed as one convolution with the summed kernels and biases."""
        return F.conv2d(x, self.dep_conv.weight + self.dep_conv1.weight, self.dep_conv.bias + self.dep_conv1.bias,
                        padding=self.ka // 2, groups=self.head_dim)

    def _forward_deployed(self, x: torch.Tensor) -> torch.Tensor:
        """The re-parameterized form, all convolutions over channel-first maps (see the module docstring)."""
        B, H, W, C = x.shape
        heads, ka, kk = self.num_heads, self.ka, self.ka * self.ka
        kernel = self._deployed_kernel
        x = x.permute(0, 3, 1, 2)
        q, k, v = (F.conv2d(x, kernel(f"{name}_weight"), kernel(f"{name}_bias")) for name in ("q", "k", "v"))
        logits = torch.cat([F.conv2d(q * F.conv2d(k, kernel(f"key_weight_{j}"), kernel(f"key_bias_{j}"),
                                                  padding=ka // 2, groups=C), kernel("head_sum"), groups=heads)
                            for j in range(kk)], 1).reshape(B, kk, heads * H * W)
        # softmax over kk written out: ONNX Runtime transposes for a Softmax on a non-last axis
        e = (logits - logits.amax(dim=1, keepdim=True)).exp()
        attn = (e / e.sum(dim=1, keepdim=True)).reshape(B, kk * heads, H, W)
        out = sum(F.conv2d(attn[:, j * heads:(j + 1) * heads], kernel("head_copy"), groups=heads)
                  * F.conv2d(v, kernel(f"value_weight_{j}"), kernel(f"value_bias_{j}"), padding=ka // 2, groups=C)
                  for j in range(kk))
        out = F.conv2d(out, kernel("proj_weight"), self.proj.bias)
        return out.permute(0, 2, 3, 1)

    def _deployed_kernel(self, name: str) -> torch.Tensor | None:
        """The deployed forward's constant ``name`` (see :meth:`_store_deployed_kernels`)."""
        return getattr(self, f"deployed_{name}")

    def _store_deployed_kernels(self) -> None:
        """The deployed forward's kernels as non-persistent buffers, each used whole (a constant of known shape
        for every exporter, the legacy TorchScript one included; the state dict keeps ``qkv``, ``proj``,
        ``k_conv`` and ``v_conv``): q|k|v and proj as 1x1 kernels, the C -> C * ka^2 depthwise ``k_conv`` /
        ``v_conv`` as ka^2 depthwise C -> C kernels and biases (their output channel c * ka^2 + j is offset j of
        channel c), and the kernels of ones that sum a head's channels and copy a weight to them."""
        C, heads, hd, ka, kk = self.dim, self.num_heads, self.head_dim, self.ka, self.ka * self.ka
        weight, bias = self.qkv.weight.reshape(3 * C, C, 1, 1), self.qkv.bias
        kernels = {"proj_weight": self.proj.weight.reshape(C, C, 1, 1),
                   "head_sum": weight.new_ones(heads, hd, 1, 1), "head_copy": weight.new_ones(C, 1, 1, 1)}
        for i, name in enumerate("qkv"):
            kernels[f"{name}_weight"] = weight[i * C:(i + 1) * C]
            kernels[f"{name}_bias"] = None if bias is None else bias[i * C:(i + 1) * C]
        for name, conv in (("key", self.k_conv), ("value", self.v_conv)):
            offsets, biases = conv.weight.reshape(C, kk, kk).transpose(0, 1), conv.bias.reshape(C, kk).transpose(0, 1)
            for j in range(kk):
                kernels[f"{name}_weight_{j}"] = offsets[j].reshape(C, 1, ka, ka)
                kernels[f"{name}_bias_{j}"] = biases[j]
        for name, value in kernels.items():
            self.register_buffer(f"deployed_{name}", None if value is None else value.detach().clone(),
                                 persistent=False)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the shift and deformed branches into one conv for k and one for v; fold q scale and position term."""
        if self.deployed:
            return
        C, heads, hd, kk = self.dim, self.num_heads, self.head_dim, self.ka * self.ka
        weight = (self.dep_conv.weight + self.dep_conv1.weight).repeat(heads, 1, 1, 1)  # (C*kk, 1, ka, ka)
        bias = (self.dep_conv.bias + self.dep_conv1.bias).reshape(1, hd, kk).repeat(heads, 1, 1)
        pos = self.relative_position_bias_table.reshape(heads, 1, kk)  # added to keys, broadcast over d
        self.k_conv = self._depthwise(weight, (bias + pos).reshape(-1))
        self.v_conv = self._depthwise(weight, bias.reshape(-1))
        # the official layout of the qkv output is (head, q/k/v, d); reorder rows to (q/k/v, head, d)
        self.qkv.weight.copy_(self.qkv.weight.reshape(heads, 3, hd, C).transpose(0, 1).reshape(3 * C, C))
        self.qkv.weight[:C] *= self.scale
        if self.qkv.bias is not None:
            self.qkv.bias.copy_(self.qkv.bias.reshape(heads, 3, hd).transpose(0, 1).reshape(3 * C))
            self.qkv.bias[:C] *= self.scale
        del self.dep_conv, self.dep_conv1, self.relative_position_bias_table
        self._store_deployed_kernels()
        self.deployed = True

    def _depthwise(self, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
        """A (C -> C * ka^2) depthwise conv holding ``weight``/``bias`` in their dtype and device (no float32
        round trip for float64 models)."""
        conv = nn.Conv2d(self.dim, weight.shape[0], self.ka, padding=self.ka // 2, groups=self.dim, bias=True,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, ka={self.ka}, deployed={self.deployed}"


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return a deployable copy of ``model``: every module with a ``reparameterize()`` hook is re-parameterized.

    The walk follows timm's convention (``model.modules()``), so any architecture that embeds
    :class:`SlideAttention` (or another module exposing ``reparameterize``) is handled. The result is
    in eval mode.
    """
    import copy

    target = model if inplace else copy.deepcopy(model)
    for module in list(target.modules()):
        hook = getattr(module, "reparameterize", None)
        if module is not target and callable(hook):
            hook()
    return target.eval()


def multiplier_form(attn: SlideAttention, x: torch.Tensor) -> torch.Tensor:
    """The earlier deployed form of a re-parameterized ``attn`` on (B, H, W, C): one transpose of the qkv map,
    ``attn.k_conv`` / ``attn.v_conv`` as C -> C * ka^2 modules (depthwise convs of channel multiplier ka^2, or the
    Im2Col baseline's gathering), the logits as an element-wise product with q summed over the head's channels,
    the softmax written out, the output as a product summed over the ka^2 axis, one transpose back."""
    B, H, W, C = x.shape
    heads, hd, kk = attn.num_heads, attn.head_dim, attn.ka * attn.ka
    N = B * heads                                                        # rank <= 4: batch and heads merged
    f = attn.qkv(x).permute(0, 3, 1, 2)                                  # (B, 3C, H, W): q|k|v, q pre-scaled
    q = f[:, :C].reshape(N, hd, 1, H * W)
    k = attn.k_conv(f[:, C:2 * C]).reshape(N, hd, kk, H * W)             # (channel, offset j) per head
    logits = (q * k).sum(1, keepdim=True)                                # (N, 1, kk, HW)
    e = (logits - logits.amax(dim=2, keepdim=True)).exp()
    weights = e / e.sum(dim=2, keepdim=True)
    v = attn.v_conv(f[:, 2 * C:]).reshape(N, hd, kk, H * W)
    out = (weights * v).sum(2).reshape(B, C, H, W)
    return attn.proj(out.permute(0, 2, 3, 1))


def unfold_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ka: int,
                           position_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference Im2Col local attention (F.unfold gathering), used by tests and the Im2Col baseline.

    Args:
        q, k, v: (B, heads, head_dim, H, W); q already scaled.
        ka: neighbourhood size.
        position_bias: (heads, ka^2) term added to the gathered keys, or None.
    Returns:
        (B, heads, head_dim, H, W)
    """
    B, heads, hd, H, W = q.shape
    kk = ka * ka
    k_cols = F.unfold(k.reshape(B, heads * hd, H, W), ka, padding=ka // 2).reshape(B, heads, hd, kk, H, W)
    v_cols = F.unfold(v.reshape(B, heads * hd, H, W), ka, padding=ka // 2).reshape(B, heads, hd, kk, H, W)
    if position_bias is not None:
        k_cols = k_cols + position_bias.reshape(1, heads, 1, kk, 1, 1)
    attn = (q.unsqueeze(3) * k_cols).sum(2, keepdim=True).softmax(dim=3)
    return (attn * v_cols).sum(3)
