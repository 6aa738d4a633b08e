"""Users' checkpoints convert: every checkpoint format (raw state_dict, ``model`` / ``state_dict`` wrappers, DDP
``module.`` prefixes, EMA, timm ``{'state_dict', 'arch', 'args'}``, DeiT/PVT ``{'model', 'args'}``, official yacs)
x {zoo name given, nothing given}, with the architecture's arguments (classes, training size, widths, depths,
heads) read from the weights. Each file's outputs match the torch model that was saved; its metadata has the
head's classes and the training size. Bad input is one line and exit 1; Ctrl-C inside the exporter exits 130.

Models are small (16-wide Slide-Swin-T layouts at 64 px, Slide-PVT/PVTv2 with 16..64 channels) and random.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Optional

import click
import numpy as np
import pytest
import torch

from slidelite.convert import ConversionJob, convert
from slidelite.convert.errors import CheckpointLoadError
from slidelite.convert.onnx_export import onnx_logits
from slidelite.model_file import open_model_file
from slidelite.zoo import create_model
from slidelite.zoo.shape_inference import choose_img_size
from tests._cli_fixtures import ROOT, run_cli, run_subprocess
from tests._zoo_fixtures import official_config, save_training_checkpoint, wrap_state_dict

pytestmark = pytest.mark.convert
FAST = ["-q", "--latency-runs", "0"]
SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), img_size=64, num_classes=10)
SWIN_YACS = dict(EMBED_DIM=16, DEPTHS=[1, 1, 1, 1], NUM_HEADS=[1, 2, 2, 4])
PVT = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), img_size=96, num_classes=7)
LABELS = [f"kind {i}" for i in range(10)]


def _model(name: str, seed: int = 0, **args: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **args).eval()


@pytest.fixture(scope="module")
def swin() -> torch.nn.Module:
    """A fine-tuned Slide-Swin-T layout: 16 wide, one block per stage, trained at 64 px on 10 classes."""
    return _model("slide_swin_tiny", **SWIN)


def _ema_of(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v * 0.9 + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}


def _save(folder: Path, fmt: str, model: torch.nn.Module) -> Path:
    """Save ``model`` as checkpoint format ``fmt`` in ``folder``."""
    path = folder / f"{fmt}.pth"
    state = model.state_dict()
    layouts = {"raw": "state_dict", "wrapped": "model+epoch", "ddp": "ddp", "ema": "ema"}  # ema: with --ema
    if fmt in layouts:
        torch.save(wrap_state_dict(layouts[fmt], state, _ema_of(model) if fmt == "ema" else None), path)
    elif fmt == "timm":
        args = argparse.Namespace(model="slide_swin_tiny", num_classes=10, img_size=None, input_size=None, lr=5e-4)
        torch.save({"epoch": 3, "arch": "slide_swin_tiny", "state_dict": state, "args": args, "version": 2}, path)
    elif fmt == "deit":
        args = argparse.Namespace(model="my_slide_swin", input_size=64, nb_classes=10, lr=5e-4)
        torch.save({"model": state, "args": args, "epoch": 3, "optimizer": {}}, path)
    elif fmt == "official":
        config = official_config("slide_swin_tiny", img_size=64, num_classes=10, **SWIN_YACS)
        save_training_checkpoint(path, model, config)
    return path


def _outputs_match(path: Path, model: torch.nn.Module, shape) -> None:
    """The file's logits equal the saved torch model's on random images of the file's input shape."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32))
    with torch.no_grad():
        expected = model(x).numpy()
    got = onnx_logits(path, x.numpy(), 1)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def _convert(tmp_path: Path, checkpoint: Path, model: Optional[str] = None, **job: Any):
    out = tmp_path / f"{checkpoint.stem}-{model or 'auto'}.onnx"
    result = convert(ConversionJob(output=out, checkpoint=checkpoint, model=model, progress=False, latency_runs=0,
                                   **job))
    return out, result


FORMATS = ["raw", "wrapped", "ddp", "ema", "timm", "deit", "official"]


@pytest.mark.slow
@pytest.mark.parametrize("given", ["slide_swin_tiny", None])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_checkpoint_format_converts_with_and_without_a_model_name(tmp_path, swin, fmt, given):
    ckpt = _save(tmp_path, fmt, swin)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out, result = _convert(tmp_path, ckpt, given, labels=labels, ema=True if fmt == "ema" else None)
    meta = open_model_file(out).metadata
    assert meta.provenance.architecture == "slide_swin_tiny"
    assert (meta.input.height, meta.input.width) == (64, 64) and meta.labels == tuple(LABELS)
    _outputs_match(out, swin, (3, 64, 64))
    rows = dict(result.origin)
    assert "num_classes=10" in rows["model"] and "embed_dim=16" in rows["model"]
    assert rows["weights"].startswith(f"{ckpt}: ") and "weights" in result.report


def test_raw_state_dict_without_a_name_reports_what_it_inferred(tmp_path, swin):
    out, result = _convert(tmp_path, _save(tmp_path, "raw", swin))
    _outputs_match(out, swin, (3, 64, 64))
    rows = dict(result.origin)
    assert rows["model"].startswith("slide_swin_tiny (") and "img_size=64 (weights: 52-67 fit)" in rows["model"]
    assert "depths=1,1,1,1 (weights)" in rows["model"] and "num_heads=1,2,2,4 (weights)" in rows["model"]
    assert open_model_file(out).metadata.labels[9] == "class_9"


@pytest.mark.slow
def test_ema_weights_are_an_option_and_the_report_names_them(tmp_path, swin):
    ckpt = _save(tmp_path, "ema", swin)  # main weights: _ema_of(swin); EMA weights: swin's own
    out, result = _convert(tmp_path, ckpt, "slide_swin_tiny", ema=True)
    _outputs_match(out, swin, (3, 64, 64))
    assert dict(result.origin)["weights"] == f"{ckpt}: state_dict_ema (EMA weights); the file also holds model, " \
                                            "not used (--no-ema takes them)"
    run = run_cli(["convert", ckpt, "-o", tmp_path / "main.onnx", *FAST])
    assert run.exit_code == 0, run.stderr
    assert "the file also holds state_dict_ema, not used (--ema takes them)" in run.stdout
    main = _model("slide_swin_tiny", **SWIN)
    main.load_state_dict(_ema_of(swin))
    _outputs_match(tmp_path / "main.onnx", main, (3, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("name, args", [("slide_pvt_tiny", PVT), ("slide_pvtv2_b1", PVT)])
def test_pvt_families_fine_tuned_convert_from_the_weights(tmp_path, name, args):
    model = _model(name, **args)
    ckpt = tmp_path / "ft.pth"
    torch.save({"model": model.state_dict(), "epoch": 9}, ckpt)
    out, result = _convert(tmp_path, ckpt)
    assert result.metadata.provenance.architecture == name and len(result.metadata.labels) == 7
    # PVT's position embeddings fix the size; PVTv2 has none: its weights fit any size and the default is used
    size = 96 if name == "slide_pvt_tiny" else 224
    assert (result.metadata.input.height, result.metadata.input.width) == (size, size)
    _outputs_match(out, model, (3, size, size))
    assert "embed_dims=16,32,40,64 (weights)" in dict(result.origin)["model"]


@pytest.mark.slow
def test_official_checkpoint_builds_from_type_whatever_its_name(tmp_path, swin):
    config = official_config("slide_swin_tiny", img_size=64, num_classes=10, **SWIN_YACS)
    config.defrost()
    config.MODEL.NAME = "my_run_42"
    config.freeze()
    ckpt = save_training_checkpoint(tmp_path / "ckpt_epoch_9.pth", swin, config)
    out, result = _convert(tmp_path, ckpt)
    assert result.metadata.provenance.architecture == "slide_swin_tiny"
    assert "embed_dim=16 (config)" in dict(result.origin)["model"]
    _outputs_match(out, swin, (3, 64, 64))


@pytest.mark.slow
def test_explicit_num_classes_and_img_size_build_the_model(tmp_path):
    out = tmp_path / "m.onnx"
    run = run_cli(["convert", "--model", "slide_swin_micro", "--num-classes", "4", "--img-size", "64",
                   "--model-arg", "window_size=4", "-o", out, *FAST])
    assert run.exit_code == 0, run.stderr
    meta = open_model_file(out).metadata
    assert len(meta.labels) == 4 and (meta.input.height, meta.input.width) == (64, 64)
    assert "img_size=64, num_classes=4, window_size=4; random weights" in run.stdout


def test_img_size_given_for_a_size_the_weights_do_not_determine(tmp_path):
    """Micro's window-7 stage caps its table, so weights trained at 64 px fit any size from 52 up: the size must
    be given (the default, 28, does not fit), and once given the file is built at it."""
    model = _model("slide_swin_micro", img_size=64, num_classes=3)
    ckpt = tmp_path / "micro64.pth"
    torch.save(model.state_dict(), ckpt)
    run = run_cli(["convert", ckpt, "-o", tmp_path / "m.onnx", *FAST])
    _refused(run, "img_size is not determined by the weights", "pass --img-size N")
    run = run_cli(["convert", ckpt, "--img-size", "64", "-o", tmp_path / "m.onnx", *FAST])
    assert run.exit_code == 0, run.stderr
    _outputs_match(tmp_path / "m.onnx", model, (1, 64, 64))
    assert choose_img_size((52, None), 28) is None and choose_img_size((52, 67), 224) == 64


def _refused(run, *fragments: str, code: int = 1) -> None:
    assert run.exit_code == code, (run.stdout, run.stderr)
    assert len(run.error_lines) == 1 and run.error_lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in run.error_lines[0], run.error_lines[0]


@pytest.fixture(scope="module")
def swin_raw(tmp_path_factory, swin) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt"), "raw", swin)


def test_options_that_contradict_the_weights_are_one_line(tmp_path, swin_raw):
    out = ["-o", tmp_path / "m.onnx", *FAST]
    _refused(run_cli(["convert", swin_raw, "--num-classes", "5", *out]),
             "num_classes=5 (given) does not fit the weights: their head has num_classes=10", "--num-classes")
    _refused(run_cli(["convert", swin_raw, "--model", "slide_swin_tiny", "--img-size", "224", *out]),
             "img_size 224 (given) does not fit the weights", "fit img_size 52-67", "--img-size")
    _refused(run_cli(["convert", swin_raw, "--model-arg", "embed_dim=32", *out]),
             "embed_dim=32 (given) does not fit the weights: their shapes give embed_dim=16", "--model-arg embed_dim")
    _refused(run_cli(["convert", swin_raw, "--ema", *out]), "no EMA weights")
    _refused(run_cli(["convert", swin_raw, "--model-arg", "embed_dim", *out]), "expected KEY=VALUE", code=2)
    _refused(run_cli(["convert", "--model", "slidelite.zoo:slide_swin_micro", "--num-classes", "3", *out]),
             "set zoo model arguments", code=2)
    assert os.listdir(tmp_path) == []


def test_the_hint_does_not_name_the_model_given(tmp_path, swin_raw):
    run = run_cli(["convert", swin_raw, "--model", "slide_pvt_tiny", "-o", tmp_path / "m.onnx", *FAST])
    _refused(run, "does not fit PyramidVisionTransformer", "the weights fit slide_swin_tiny (")
    assert "slide_pvt_tiny" not in run.error_lines[0].partition("; the weights fit")[2]


def test_labels_must_match_the_head(tmp_path, swin_raw):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    _refused(run_cli(["convert", swin_raw, "--labels", labels, "-o", tmp_path / "m.onnx", *FAST]),
             f"{labels}: 3 labels for a model with 10 outputs (its head)")


@pytest.mark.slow
def test_labels_with_a_byte_order_mark_and_duplicates(tmp_path, swin_raw):
    labels = tmp_path / "bom.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8-sig")
    out = tmp_path / "m.onnx"
    run = run_cli(["convert", swin_raw, "--labels", labels, "-o", out, *FAST])
    assert run.exit_code == 0, run.stderr
    assert open_model_file(out).metadata.labels[0] == "kind 0"
    twice = tmp_path / "dup.txt"
    twice.write_text("\n".join(LABELS[:9] + ["kind 3"]) + "\n")
    _refused(run_cli(["convert", swin_raw, "--labels", twice, "-o", tmp_path / "d.onnx", *FAST]),
             f"{twice}: label 'kind 3' is on lines 4 and 10", "--allow-duplicate-labels")
    run = run_cli(["convert", swin_raw, "--labels", twice, "--allow-duplicate-labels", "-o", tmp_path / "d.onnx",
                   *FAST])
    assert run.exit_code == 0, run.stderr


@pytest.mark.slow
def test_positional_checkpoint_and_default_output_as_in_the_docs(tmp_path, swin_raw):
    """docs/zoo.md: ``slidelite convert ckpt.pth`` writes ``ckpt.onnx`` in the current folder."""
    work = tmp_path / "work"
    work.mkdir()
    run = run_subprocess(["convert", swin_raw, *FAST], cwd=work)
    assert run.exit_code == 0, run.stderr
    assert os.listdir(work) == [f"{swin_raw.stem}.onnx"]
    run = run_subprocess(["convert", swin_raw, "--checkpoint", swin_raw, *FAST], cwd=work)
    assert run.exit_code == 2 and "give the checkpoint once" in run.stderr


def test_api_errors_name_the_flag(tmp_path, swin_raw):
    with pytest.raises(CheckpointLoadError, match=r"num_classes=3 \(given\).*pass --num-classes N"):
        convert(ConversionJob(output=tmp_path / "m.onnx", checkpoint=swin_raw, model_args={"num_classes": 3},
                              progress=False))


INTERRUPT_DURING_LAZY_IMPORT = textwrap.dedent("""
    import importlib.abc, sys

    class InterruptOnce(importlib.abc.MetaPathFinder):
        fired = False

        def find_spec(self, name, path=None, target=None):
            if name == "torch._dynamo.eval_frame" and not InterruptOnce.fired:
                InterruptOnce.fired = True  # Ctrl-C while torch.onnx.export imports torch._dynamo lazily
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, InterruptOnce())
    from slidelite.cli import main
    main(["convert", "--model", "slide_swin_micro", "-o", sys.argv[1], "-q", "--latency-runs", "0"])
""")


def test_ctrl_c_while_the_exporter_imports_exits_130(tmp_path):
    """Ctrl-C inside torch's lazy import of torch._dynamo made the exporter raise AttributeError ("module
    'torch._dynamo' has no attribute 'exc'") while handling it, and the export failed with exit 1."""
    run = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_LAZY_IMPORT, str(tmp_path / "m.onnx")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert (run.returncode, run.stderr.strip()) == (130, "error: interrupted")
    assert os.listdir(tmp_path) == []


def _documented_convert_commands() -> list:
    """``slidelite convert ...`` commands of docs/converter.md, docs/zoo.md, docs/tflite.md and README.md (code
    blocks with their line continuations, and inline code), without placeholders (``...``)."""
    commands = []
    for doc in ("docs/converter.md", "docs/zoo.md", "docs/tflite.md", "README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)).replace("\\\n", " ")
        lines = [line.split(" #")[0].lstrip("$ ") for line in blocks.splitlines()]
        lines += re.findall(r"`(slidelite convert (?:-|\S+\.pth)[^`]*)`", text)  # inline commands, not messages
        commands += [(doc, line) for line in lines
                     if line.startswith("slidelite convert ") and "..." not in line and "--help" not in line]
    return commands


def test_documented_convert_commands_parse():
    """Every documented ``slidelite convert`` command line is accepted by the command's parser (the positional
    checkpoint of docs/zoo.md included); the one with a checkpoint only runs end to end above."""
    from slidelite.cli import main

    command = main.get_command(click.Context(main), "convert")
    commands = _documented_convert_commands()
    assert any(line.split()[2:3] == ["ckpt.pth"] for _, line in commands)  # docs/zoo.md's form
    for doc, line in commands:
        with command.make_context("convert", shlex.split(line)[2:]) as ctx:
            assert ctx.params["checkpoint_file"] or ctx.params["checkpoint"] or ctx.params["model"], (doc, line)
    assert len(commands) >= 12


@pytest.mark.slow
def test_grayscale_weights_need_their_normalization(tmp_path):
    """in_chans=1 weights of an RGB zoo model (named: unnamed, the grayscale micro layout fits them better): the
    3-value ImageNet mean/std cannot apply; once given, the file takes grayscale images."""
    model = _model("slide_swin_tiny", **dict(SWIN, in_chans=1))
    ckpt = tmp_path / "gray.pth"
    torch.save(model.state_dict(), ckpt)
    _refused(run_cli(["convert", ckpt, "--model", "slide_swin_tiny", "-o", tmp_path / "g.onnx", *FAST]),
             "the weights take 1 input channel(s) where the pretrained configuration has 3",
             "pass --mean and --std with 1 value(s) each")
    run = run_cli(["convert", ckpt, "--model", "slide_swin_tiny", "--mean", "0.5", "--std", "0.25", "-o",
                   tmp_path / "g.onnx", *FAST])
    assert run.exit_code == 0, run.stderr
    meta = open_model_file(tmp_path / "g.onnx").metadata
    assert meta.preprocess.color_mode == "L" and meta.preprocess.mean == (0.5,)
    _outputs_match(tmp_path / "g.onnx", model, (1, 64, 64))
