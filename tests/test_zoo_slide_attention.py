"""Slide attention against straightforward local-attention implementations of the same math, in both forms."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slidelite.zoo import SlideAttention
from slidelite.zoo.baselines import Im2ColConv2d, Im2ColSlideAttention
from slidelite.zoo.slide_attention import unfold_local_attention
from tests._zoo_fixtures import randomize_slide_branches

CASES = [  # (dim, heads, ka, H, W)
    (8, 2, 3, 5, 7),
    (12, 3, 5, 6, 4),
    (16, 1, 3, 1, 9),
]


def _qkv(attn: SlideAttention, x: torch.Tensor):
    """q (scaled), k, v as (B, heads, head_dim, H, W) from the official (head, q/k/v, d) qkv layout."""
    B, H, W, C = x.shape
    f = attn.qkv(x).reshape(B, H, W, attn.num_heads, 3, attn.head_dim).permute(4, 0, 3, 5, 1, 2)
    return f[0] * attn.scale, f[1], f[2]


def _shifted_reference(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ka: int) -> torch.Tensor:
    """Depthwise ka x ka 'same' conv with ka^2 outputs per channel, by explicit zero padding and slicing.

    t: (B, heads, d, H, W); weight: (d * ka^2, 1, ka, ka); returns (B, heads, d, ka^2, H, W).
    """
    B, heads, d, H, W = t.shape
    p = ka // 2
    padded = F.pad(t, (p, p, p, p))
    shifted = torch.stack([padded[..., a:a + H, b:b + W] for a in range(ka) for b in range(ka)], dim=3)
    kernel = weight.reshape(d, ka * ka, ka * ka)                      # (d, output j, offset o)
    out = torch.einsum("djo,bhdoxy->bhdjxy", kernel, shifted)
    return out + bias.reshape(1, 1, d, ka * ka, 1, 1)


def _reference(attn: SlideAttention, x: torch.Tensor) -> torch.Tensor:
    """Local attention written out: keys/values of each neighbour, position term on keys, softmax, weighted sum."""
    q, k, v = _qkv(attn, x)
    weight = attn.dep_conv.weight + attn.dep_conv1.weight
    bias = attn.dep_conv.bias + attn.dep_conv1.bias
    ks = _shifted_reference(k, weight, bias, attn.ka) + attn.relative_position_bias_table
    vs = _shifted_reference(v, weight, bias, attn.ka)
    logits = (q.unsqueeze(3) * ks).sum(2)                              # (B, heads, ka^2, H, W)
    out = (logits.softmax(dim=2).unsqueeze(2) * vs).sum(3)            # (B, heads, d, H, W)
    B, H, W, C = x.shape
    return attn.proj(out.reshape(B, C, H, W).permute(0, 2, 3, 1))


def _module(cls, dim, heads, ka, seed=0):
    torch.manual_seed(seed)
    return randomize_slide_branches(cls(dim, heads, ka).double().eval(), seed)


@pytest.mark.parametrize("cls", [SlideAttention, Im2ColSlideAttention])
@pytest.mark.parametrize("dim, heads, ka, H, W", CASES)
def test_both_forms_equal_the_written_out_local_attention(cls, dim, heads, ka, H, W):
    attn = _module(cls, dim, heads, ka)
    x = torch.randn(2, H, W, dim, dtype=torch.float64)
    with torch.no_grad():
        expected = _reference(attn, x)
        trained = attn(x)
        attn.reparameterize()
        deployed = attn(x)
    assert (trained - expected).abs().max() < 1e-10
    assert (deployed - expected).abs().max() < 1e-10


@pytest.mark.parametrize("dim, heads, ka, H, W", CASES)
def test_pure_shift_equals_unfold_local_attention(dim, heads, ka, H, W):
    """Without the deformed branch and shift biases, Slide attention is Im2Col local attention (F.unfold)."""
    attn = _module(SlideAttention, dim, heads, ka)
    with torch.no_grad():
        attn.dep_conv1.weight.zero_()
        attn.dep_conv1.bias.zero_()
        attn.dep_conv.bias.zero_()
    x = torch.randn(2, H, W, dim, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = _qkv(attn, x)
        table = attn.relative_position_bias_table.reshape(heads, ka * ka)
        out = unfold_local_attention(q, k, v, ka, table)
        expected = attn.proj(out.reshape(2, dim, H, W).permute(0, 2, 3, 1))
        trained = attn(x)
        attn.reparameterize()
        deployed = attn(x)
    assert (trained - expected).abs().max() < 1e-10
    assert (deployed - expected).abs().max() < 1e-10


def test_zero_padding_at_the_border():
    """A corner query sees zero keys/values outside the map: with a zero query all ka^2 logits are equal."""
    attn = _module(SlideAttention, 4, 1, 3)
    with torch.no_grad():
        attn.dep_conv1.weight.zero_()
        attn.dep_conv1.bias.zero_()
        attn.dep_conv.bias.zero_()
        attn.qkv.weight[:4].zero_()          # q rows of the single head
        attn.qkv.bias.zero_()
        attn.proj.weight.copy_(torch.eye(4, dtype=torch.float64))
        attn.proj.bias.zero_()
        x = torch.randn(1, 3, 3, 4, dtype=torch.float64)
        v = attn.qkv(x)[..., 8:12]
        out = attn(x)
    # uniform weights 1/9 over the 4 in-map neighbours of the corner (the other 5 are zero padding)
    assert torch.allclose(out[0, 0, 0], v[0, :2, :2].reshape(4, 4).sum(0) / 9)


@pytest.mark.parametrize("ka, channels, multiplier", [(3, 4, 9), (5, 2, 25), (3, 6, 1)])
def test_im2col_conv_equals_conv(ka, channels, multiplier):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels * multiplier, ka, padding=ka // 2, groups=channels).double()
    x = torch.randn(2, channels, 7, 5, dtype=torch.float64)
    im2col = Im2ColConv2d.from_conv(conv)
    assert im2col.weight is conv.weight
    with torch.no_grad():
        assert (im2col(x) - conv(x)).abs().max() < 1e-12


def test_im2col_conv_refuses_other_convolutions():
    with pytest.raises(ValueError, match="depthwise"):
        Im2ColConv2d.from_conv(torch.nn.Conv2d(4, 8, 3, padding=1))
    with pytest.raises(ValueError, match="depthwise"):
        Im2ColConv2d.from_conv(torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4))


def test_im2col_attention_keeps_im2col_after_reparameterize():
    attn = _module(Im2ColSlideAttention, 8, 2, 3)
    attn.reparameterize()
    assert isinstance(attn.k_conv, Im2ColConv2d) and isinstance(attn.v_conv, Im2ColConv2d)
    assert not any(type(m) is torch.nn.Conv2d for m in attn.modules())


def test_reparameterize_is_idempotent_and_drops_training_parameters():
    attn = _module(SlideAttention, 8, 2, 3)
    x = torch.randn(1, 4, 4, 8, dtype=torch.float64)
    attn.reparameterize()
    with torch.no_grad():
        first = attn(x)
        attn.reparameterize()
        assert torch.equal(first, attn(x))
    names = {n for n, _ in attn.named_parameters()}
    assert not any(n.startswith(("dep_conv", "relative_position")) for n in names)


def test_training_form_gives_the_two_branch_sum_and_its_gradients():
    """The one-convolution training form equals dep_conv(k) + dep_conv1(k) in value AND in gradients."""
    attn = _module(SlideAttention, 16, 2, 3).train()
    x = torch.randn(2, 6, 5, 16, dtype=torch.float64)
    fused = attn(x)
    fused.square().sum().backward()
    fused_grads = {n: p.grad.clone() for n, p in attn.named_parameters() if p.grad is not None}
    attn.zero_grad()
    two_branch = Im2ColSlideAttention.from_slide_attention(attn).double().train()  # each branch separately
    separate = two_branch(x)
    separate.square().sum().backward()
    assert (fused - separate).abs().max() < 1e-10
    for name, param in two_branch.named_parameters():
        if param.grad is not None:
            assert (fused_grads[name] - param.grad).abs().max() < 1e-9, name
    assert set(fused_grads) == {n for n, p in two_branch.named_parameters() if p.grad is not None}
    assert "dep_conv1.weight" in fused_grads and "dep_conv.weight" not in fused_grads


@pytest.mark.parametrize("dim, heads, H, W", [(96, 3, 14, 14), (32, 1, 7, 9)])
def test_deployed_form_in_onnx_runtime_equals_the_training_form_float32(dim, heads, H, W, tmp_path):
    """The deployed form, exported the converter's way and run in ONNX Runtime (the deploy engine), stays
    within 1e-5 of the zoo's two-branch training form in float32 at Slide-Swin-T's stage-1 width; every product
    is a convolution with a constant kernel (what ONNX Runtime's NCHWc layout needs): q|k|v and proj 1x1,
    ka^2 multiplier-1 depthwise convs each for k and v, the head sums and copies grouped 1x1 convs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from slidelite.convert.onnx_export import export_onnx, simplify_onnx

    torch.manual_seed(0)
    attn = randomize_slide_branches(SlideAttention(dim, heads).eval(), 0)
    x = torch.randn(1, H, W, dim)
    with torch.no_grad():
        trained = attn(x).numpy()
        attn.reparameterize()
    path = tmp_path / "attn.onnx"
    export_onnx(attn, path, tuple(x.shape))
    simplify_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    deployed = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(deployed - trained).max() <= 1e-5
    graph = onnx.load(str(path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert all(node.input[1] in weights for node in convs)
    groups = [next((a.i for a in node.attribute if a.name == "group"), 1) for node in convs]
    shapes = [weights[node.input[1]].shape for node in convs]
    assert sum(g == dim and s == (dim, 1, 3, 3) for g, s in zip(groups, shapes)) == 2 * 9
    assert shapes.count((dim, dim, 1, 1)) == 4  # q, k, v, proj
    assert len(convs) == 4 + 4 * 9
    assert not {"MatMul", "Gemm"} & {node.op_type for node in graph.node}


def test_deployed_form_runs_k_and_v_as_separate_channel_first_depthwise_convs():
    """Structure of the deployed form: one C -> C*ka^2 depthwise conv each for k (position term in its bias)
    and v, sharing the merged kernel; the training-only parameters are gone."""
    attn = _module(SlideAttention, 12, 3, 3)
    table = attn.relative_position_bias_table.detach().reshape(3, 1, 9).clone()
    attn.reparameterize()
    for conv in (attn.k_conv, attn.v_conv):
        assert (conv.in_channels, conv.out_channels, conv.groups) == (12, 108, 12)
    assert torch.equal(attn.k_conv.weight, attn.v_conv.weight)
    difference = (attn.k_conv.bias - attn.v_conv.bias).reshape(3, 4, 9)
    assert torch.allclose(difference, table.expand(3, 4, 9))
