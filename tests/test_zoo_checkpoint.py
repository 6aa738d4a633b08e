"""Checkpoint loading: wrapper formats, prefixes, EMA, the official yacs config, refused pickles, clear mismatches."""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slidelite.errors import ModelError, SlideliteError
from slidelite.zoo import create_model, list_models
from slidelite.zoo.checkpoint import (ArgumentNeededError, CheckpointError, architecture_from_config,
                                      build_from_checkpoint, fitting_architectures, load_state_dict_into,
                                      read_checkpoint)
from slidelite.zoo.complexity import meta_model
from slidelite.zoo.shape_inference import (choose_img_size, find_architecture, fit_architecture, img_size_range,
                                           shapes_of)
from tests._zoo_fixtures import official_config, reference_state_dict, save_training_checkpoint

SMALL = dict(EMBED_DIM=16, DEPTHS=[1, 1, 1, 1], NUM_HEADS=[1, 2, 2, 4])
SMALL_ARGS = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), img_size=64, num_classes=10)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("slide_swin_tiny", **SMALL_ARGS).eval()


@pytest.fixture(scope="module")
def micro_state():
    torch.manual_seed(1)
    return create_model("slide_swin_micro").state_dict()


def _assert_same_weights(model, state):
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict", "model_ema"])
def test_wrapper_formats(tmp_path, micro_state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(micro_state if wrap == "raw" else {wrap: micro_state, "epoch": 7}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.source_format == ("state_dict" if wrap == "raw" else wrap)
    model = create_model("slide_swin_micro")
    load_state_dict_into(model, ckpt.state_dict, str(path))
    _assert_same_weights(model, micro_state)


def test_module_prefix_is_stripped(tmp_path, micro_state):
    path = tmp_path / "ddp.pth"
    torch.save({"model": {"module." + k: v for k, v in micro_state.items()}}, path)
    assert read_checkpoint(path).state_dict.keys() == micro_state.keys()


def test_ema_is_taken_only_when_asked(tmp_path, small_model):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in small_model.state_dict().items()}
    config = official_config(img_size=64, num_classes=10, **SMALL)
    path = save_training_checkpoint(tmp_path / "ema.pth", small_model, config, ema=ema, ddp=True)
    plain, _ = build_from_checkpoint(path)
    _assert_same_weights(plain, small_model.state_dict())
    averaged, ckpt = build_from_checkpoint(path, prefer_ema=True)
    assert ckpt.source_format == "state_dict_ema"
    _assert_same_weights(averaged, ema)


def test_prefer_ema_without_ema_is_an_error(tmp_path, micro_state):
    path = tmp_path / "no_ema.pth"
    torch.save({"model": micro_state}, path)
    assert "no EMA weights" in _error(read_checkpoint, path, prefer_ema=True)


def test_official_checkpoint_names_its_architecture(tmp_path, small_model):
    """A checkpoint saved like the official save_checkpoint (yacs CfgNode inside) rebuilds without a model name."""
    path = save_training_checkpoint(tmp_path / "ckpt_epoch_3.pth", small_model,
                                    official_config(img_size=64, num_classes=10, **SMALL))
    ckpt = read_checkpoint(path)
    assert ckpt.arch == "slide_swin_tiny"
    assert ckpt.overrides == dict(SMALL_ARGS, drop_path_rate=0.2, patch_size=4, in_chans=3, window_size=56,
                                  mlp_ratio=4.0, qkv_bias=True, qk_scale=None, ape=False, patch_norm=True, ka=3,
                                  num_slide_stages=2)
    assert ckpt.config["MODEL"]["SWIN"]["DEPTHS"] == [1, 1, 1, 1] and ckpt.config["DATA"]["IMG_SIZE"] == 64
    model, built = build_from_checkpoint(path)
    assert built.arch == "slide_swin_tiny" and len(built.sha256) == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), small_model(x))


@pytest.mark.parametrize("name", ["slide_swin_tiny", "slide_swin_small", "slide_swin_base"])
def test_official_configs_map_to_the_official_architectures(name):
    """The official yaml of each size designates that zoo model with exactly the official state_dict layout."""
    arch, overrides = architecture_from_config(_plain_dict(official_config(name)))
    assert arch == name
    layout = {k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
              for k, v in meta_model(arch, **overrides).state_dict().items()}
    assert layout == reference_state_dict(name)


def _plain_dict(node):
    return {k: _plain_dict(v) for k, v in node.items()} if isinstance(node, dict) else node


def test_yacs_config_loads_without_yacs_installed(tmp_path, small_model):
    path = save_training_checkpoint(tmp_path / "cfg.pth", small_model, official_config(**SMALL))
    script = (
        "import sys; sys.modules['yacs'] = None; sys.modules['yacs.config'] = None\n"
        "from slidelite.zoo.checkpoint import read_checkpoint\n"
        f"ckpt = read_checkpoint({str(path)!r})\n"
        "print(ckpt.arch, ckpt.config['MODEL']['SLIDE']['KA'], type(ckpt.config).__name__)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["slide_swin_tiny", "3", "dict"]


class _RunsShell:
    """A pickle payload: unpickling it naively runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, small_model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": small_model.state_dict(), "config": _RunsShell(marker)}, path)
    message = _error(read_checkpoint, path)
    assert "refused" in message and "system" in message and str(path) in message
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        build_from_checkpoint(path, "slide_swin_tiny", **SMALL_ARGS)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: a naive load runs it
    assert marker.exists()


@pytest.mark.parametrize("payload", ["eval", "legacy_pickle"])
def test_other_code_running_pickles_are_refused(tmp_path, payload):
    path = tmp_path / "evil.bin"
    if payload == "eval":
        torch.save({"model": {"w": torch.zeros(1)}, "args": _CallsEval()}, path)
    else:  # a plain pickle (no torch zip container) at torch.save's protocol
        marker = tmp_path / "pwned"
        path.write_bytes(pickle.dumps({"model": _RunsShell(marker)}, protocol=2))
    assert "refused" in _error(read_checkpoint, path)
    assert not (tmp_path / "pwned").exists()


def test_argparse_args_of_pvt_checkpoints(tmp_path, micro_state):
    """DeiT/PVT training checkpoints store argparse ``args``: allowed (inert) and read for the architecture."""
    path = tmp_path / "pvt.pth"
    args = argparse.Namespace(model="pvt_v2_b1", input_size=224, nb_classes=1000, lr=5e-4, output_dir=Path("out"))
    torch.save({"model": micro_state, "args": args, "epoch": 299}, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.arch, ckpt.overrides) == ("pvtv2_b1", {"img_size": 224, "num_classes": 1000})
    assert ckpt.config["lr"] == 5e-4 and ckpt.config["output_dir"] == Path("out")


def test_raw_state_dict_architecture_is_inferred_from_its_keys(tmp_path, micro_state):
    path = tmp_path / "weights.pth"
    torch.save(micro_state, path)
    model, ckpt = build_from_checkpoint(path)
    assert ckpt.arch == "slide_swin_micro" and ckpt.config is None
    _assert_same_weights(model, micro_state)


def test_baselines_do_not_make_the_inference_ambiguous():
    """slide_swin_tiny_im2col shares slide_swin_tiny's keys; the architecture is preferred over the baseline."""
    state = meta_model("slide_swin_tiny").state_dict()
    assert fitting_architectures(state) == ["slide_swin_tiny", "slide_swin_tiny_im2col"]


def test_wrong_architecture_names_the_one_that_fits(tmp_path, micro_state):
    path = tmp_path / "micro.pth"
    torch.save({"state_dict": micro_state}, path)
    message = _error(build_from_checkpoint, path, "slide_swin_tiny", **SMALL_ARGS)
    assert "embed_dim=16, depths=1,1,1,1, num_heads=1,2,2,4 (given) does not fit the weights" in message
    assert "their shapes give embed_dim=32, depths=2,2,2, num_heads=2,4,8" in message
    assert "the weights fit slide_swin_micro as it is" in message
    message = _error(build_from_checkpoint, path, "slide_pvt_tiny")
    assert "does not fit PyramidVisionTransformer" in message
    assert "missing key(s)" in message and "unexpected key(s)" in message
    assert "the weights fit slide_swin_micro" in message


def test_wrong_shapes_are_listed_with_both_shapes(micro_state):
    bad = dict(micro_state, **{"head.weight": torch.zeros(7, 128), "head.bias": torch.zeros(7)})
    message = _error(load_state_dict_into, create_model("slide_swin_micro"), bad, "bad.pth")
    assert message.startswith("bad.pth: ") and "2 shape mismatch(es)" in message
    assert "head.weight (7, 128) vs (10, 128)" in message
    assert "the weights fit slide_swin_micro (num_classes=7 (weights)" in message
    wide = dict(micro_state, **{"norm.weight": torch.zeros(7), "head.weight": torch.zeros(10, 7)})
    message = _error(load_state_dict_into, create_model("slide_swin_micro"), wide, "wide.pth")
    assert "no registered architecture fits" in message and "closest: slide_swin_micro" in message


def test_unexpected_and_missing_keys_are_counted(micro_state):
    bad = dict(micro_state, extra=torch.zeros(1))
    del bad["norm.weight"]
    message = _error(load_state_dict_into, create_model("slide_swin_micro"), bad, "x.pth")
    assert "1 missing key(s) (norm.weight)" in message and "1 unexpected key(s) (extra)" in message


def test_non_tensor_values_are_rejected(tmp_path, micro_state):
    path = tmp_path / "odd.pth"
    torch.save({"model": dict(micro_state, step=3)}, path)
    assert "entry 'step' is a int, not a tensor" in _error(read_checkpoint, path)


@pytest.mark.parametrize("content, expected", [
    ({"epoch": 3, "note": "hello"}, "no weights found"),
    ([torch.zeros(1)], "holds a list"),
    ({}, "no weights found"),
    ({"model": {}}, "state_dict is empty"),
])
def test_files_without_weights(tmp_path, content, expected):
    path = tmp_path / "x.pth"
    torch.save(content, path)
    assert expected in _error(read_checkpoint, path)


def test_unreadable_files(tmp_path, micro_state):
    assert "no such checkpoint file" in _error(read_checkpoint, tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    assert "not a readable PyTorch checkpoint" in _error(read_checkpoint, junk)
    good = tmp_path / "good.pth"
    torch.save(micro_state, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable PyTorch checkpoint" in _error(read_checkpoint, truncated)


def test_unknown_model_name_and_unbuildable_config(tmp_path, micro_state):
    path = tmp_path / "w.pth"
    torch.save(micro_state, path)
    assert "unknown model 'slide_swin_tinny'" in _error(build_from_checkpoint, path, "slide_swin_tinny")
    cfg_path = save_training_checkpoint(tmp_path / "cfg.pth", create_model("slide_swin_micro"),
                                        official_config(**SMALL))
    assert "cannot build pvt_tiny" in _error(build_from_checkpoint, cfg_path, "pvt_tiny")


def test_checkpoint_error_is_a_slidelite_model_error():
    assert issubclass(CheckpointError, ModelError) and issubclass(CheckpointError, SlideliteError)


# -- constructor arguments from the shapes (meta device: no weights are built) -----------------------------------

INFERRED = [
    ("slide_swin_tiny", dict(num_classes=10, img_size=160)),
    ("slide_swin_tiny", dict(in_chans=1, embed_dim=24, depths=(1, 1, 3, 1), num_heads=(1, 2, 3, 6), img_size=96)),
    ("slide_swin_micro", dict(num_classes=5, mlp_ratio=2.0, qkv_bias=False)),
    ("swin_tiny_window", dict(num_classes=3, patch_norm=False)),
    ("slide_pvt_tiny", dict(num_classes=10, img_size=160, embed_dims=(32, 64, 160, 256), ka=5)),
    ("pvt_tiny", dict(num_classes=10, sr_ratios=(4, 2, 2, 1), mlp_ratios=(4, 4, 4, 4))),
    ("slide_pvtv2_b1", dict(num_classes=10, depths=(1, 2, 1, 1), patch_size=2)),
    ("slide_pvtv2_b2", dict(num_slide_stages=3, num_heads=(1, 2, 4, 8))),
]


@pytest.mark.parametrize("name, args", INFERRED)
def test_arguments_the_shapes_determine_are_inferred(name, args):
    """Whatever the changed arguments, the weights' shapes give them back, under the model's name or none."""
    shapes = shapes_of(meta_model(name, **args).state_dict())
    fit = fit_architecture(name, shapes)
    assert fit is not None and fit.arguments == args and all(fit.sources[k].startswith("weights") for k in args)
    assert find_architecture(shapes, list_models()) == fit


def test_img_size_range_and_choice():
    shapes = shapes_of(meta_model("slide_swin_tiny", img_size=160).state_dict())
    assert img_size_range("slide_swin_tiny", {}, shapes) == (148, 163)  # stage-3 table: ceil(img / 16) == 10
    assert choose_img_size((148, 163), 224) == 160 and choose_img_size((200, 250), 224) == 224
    assert choose_img_size((148, 151), 224) == 148 and choose_img_size((193, None), 100) is None
    shapes = shapes_of(meta_model("pvtv2_b1").state_dict())
    assert img_size_range("pvtv2_b1", {}, shapes) == (1, None)  # no position embedding: any size


def test_given_arguments_that_contradict_the_shapes_are_named(tmp_path, micro_state):
    path = tmp_path / "micro.pth"
    torch.save(micro_state, path)
    with pytest.raises(ArgumentNeededError) as info:
        build_from_checkpoint(path, num_classes=3)
    assert info.value.argument == "num_classes"
    assert "num_classes=3 (given) does not fit the weights: their head has num_classes=10" in str(info.value)


def test_timm_style_checkpoint_names_its_arch(tmp_path, micro_state):
    path = tmp_path / "timm.pth.tar"
    args = argparse.Namespace(model="slide_swin_micro", num_classes=10, input_size=[1, 28, 28], img_size=None)
    torch.save({"epoch": 3, "arch": "slide_swin_micro", "state_dict": micro_state, "args": args,
                "state_dict_ema": micro_state}, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.arch, ckpt.overrides) == ("slide_swin_micro", {"num_classes": 10, "in_chans": 1, "img_size": 28})
    assert (ckpt.source_format, ckpt.unused_weights) == ("state_dict", "state_dict_ema")
    assert read_checkpoint(path, prefer_ema=True).unused_weights == "state_dict"
    torch.save({"state_dict_ema": micro_state}, path)
    assert "holds only EMA weights" in _error(read_checkpoint, path, prefer_ema=False)
