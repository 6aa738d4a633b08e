"""State_dict layouts: Slide-Swin equals the official listing exactly; PVT/PVTv2 use the official PVT names."""
from __future__ import annotations

import pytest
import torch

from slidelite.zoo.complexity import meta_model
from tests._zoo_fixtures import reference_state_dict


def _layout(model: torch.nn.Module) -> dict:
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, reference", [
    ("slide_swin_tiny", "slide_swin_tiny"),
    ("slide_swin_small", "slide_swin_small"),
    ("slide_swin_base", "slide_swin_base"),
    ("slide_swin_tiny_im2col", "slide_swin_tiny"),
])
def test_slide_swin_state_dict_equals_official(name, reference):
    expected = reference_state_dict(reference)
    assert list(_layout(meta_model(name)).items()) == list(expected.items())


def test_swin_window_baseline_has_swin_t_layout():
    layout = _layout(meta_model("swin_tiny_window"))
    assert layout["layers.0.blocks.0.attn.relative_position_bias_table"] == ((169, 3), "float32")
    assert layout["layers.2.blocks.5.attn.relative_position_index"] == ((49, 49), "int64")
    assert not any("dep_conv" in k for k in layout)


# Shapes taken from the official whai362/PVT classification code (pvt.py / pvt_v2.py) at 224 x 224.
PVT_TINY_KEYS = {
    "patch_embed1.proj.weight": (64, 3, 4, 4), "patch_embed1.norm.weight": (64,), "pos_embed1": (1, 3136, 64),
    "patch_embed2.proj.weight": (128, 64, 2, 2), "pos_embed2": (1, 784, 128), "pos_embed3": (1, 196, 320),
    "pos_embed4": (1, 50, 512), "cls_token": (1, 1, 512), "norm.weight": (512,), "head.weight": (1000, 512),
    "block1.0.attn.q.weight": (64, 64), "block1.0.attn.kv.weight": (128, 64), "block1.0.attn.sr.weight": (64, 64, 8, 8),
    "block1.0.attn.norm.weight": (64,), "block1.1.mlp.fc1.weight": (512, 64), "block3.1.attn.sr.weight": (320, 320, 2, 2),
    "block4.1.attn.kv.bias": (1024,), "block4.1.mlp.fc2.weight": (512, 2048),
}
PVTV2_B1_KEYS = {
    "patch_embed1.proj.weight": (64, 3, 7, 7), "patch_embed2.proj.weight": (128, 64, 3, 3), "norm1.weight": (64,),
    "norm4.bias": (512,), "block1.0.mlp.dwconv.dwconv.weight": (512, 1, 3, 3), "block2.1.attn.sr.weight": (128, 128, 4, 4),
    "block4.0.attn.q.weight": (512, 512), "head.weight": (1000, 512),
}


def test_pvt_keys_follow_the_official_code():
    layout = {k: s for k, (s, _) in _layout(meta_model("pvt_tiny")).items()}
    assert {k: layout.get(k) for k in PVT_TINY_KEYS} == PVT_TINY_KEYS
    assert not any(".attn.sr." in k for k in layout if k.startswith("block4."))
    # 4 patch embeds x 4, 4 pos embeds, cls/norm/head 5, 8 blocks x 14, SR conv + norm in the 6 blocks of stages 1-3
    assert len(layout) == 16 + 4 + 5 + 8 * 14 + 6 * 4


def test_pvtv2_keys_follow_the_official_code():
    layout = {k: s for k, (s, _) in _layout(meta_model("pvtv2_b1")).items()}
    assert {k: layout.get(k) for k in PVTV2_B1_KEYS} == PVTV2_B1_KEYS
    assert not any("pos_embed" in k or "cls_token" in k for k in layout)


@pytest.mark.parametrize("plain, slide", [("pvt_tiny", "slide_pvt_tiny"), ("pvtv2_b2", "slide_pvtv2_b2")])
def test_slide_pvt_differs_only_in_stage_1_2_attention(plain, slide):
    a, b = _layout(meta_model(plain)), _layout(meta_model(slide))
    changed = {k.split(".attn.")[0] for k in set(a) ^ set(b)}
    assert changed and all(k.startswith(("block1.", "block2.")) for k in changed)
    assert all(a[k] == b[k] for k in set(a) & set(b))
    assert b["block1.0.attn.qkv.weight"] == ((192, 64), "float32")
    assert b["block2.0.attn.relative_position_bias_table"] == ((1, 2, 1, 9, 1, 1), "float32")
