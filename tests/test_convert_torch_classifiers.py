"""Any torch classifier through ``--model module:attr``: the user's code failing in any way is one line; the input
size comes from the module (timm's pretrained_cfg, the zoo entry, a forward probe) or must be given; real
torchvision and timm model code (tests/_torch_classifiers.py, self-initialised weights) converts to ONNX and
TFLite, fp32 and int8, and ``slidelite classify`` gives torch's top-1 on real photos. int8 quantizes what the
graph holds: a CNN gets the conv recipe, and a file whose weights are mostly float is not labelled int8."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch

from slidelite.convert import ConversionJob
from slidelite.convert.errors import ConversionError
from slidelite.convert.int8_coverage import CONV, MATMUL, OTHER, choose_recipe
from slidelite.convert.load import load_model
from slidelite.convert.model_metadata import build_metadata
from slidelite.convert.report import speed_ratio
from slidelite.convert.user_model import ASSUMED_PREPROCESS
from slidelite.model_file import open_model_file
from slidelite.preprocess import prepare_input
from tests._cli_fixtures import ROOT, run_cli
from tests._convert_fixtures import photo_folder_fixture

pytestmark = pytest.mark.convert
FAST = ["-q", "--latency-runs", "0"]
FACTORIES = "tests._torch_classifiers"

photos = photo_folder_fixture(crops=1)

BROKEN_MODULES = {
    "raises_at_import": "raise RuntimeError('operator torchvision::nms does not exist')\n",
    "bad_syntax": "def factory(:\n    pass\n",
    "missing_dependency": "import no_such_dependency_xyz\n",
    "factories": textwrap.dedent("""
        import torch
        NOT_CALLABLE = 3
        def raises():
            raise ValueError("num_classes must be positive")
        def returns_dict():
            return {"weights": torch.zeros(1)}
        def not_a_classifier():
            return torch.nn.Conv2d(3, 4, 3)
        def one_channel():
            return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1),
                                       torch.nn.Flatten(), torch.nn.Linear(4, 3))
    """),
}


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> Path:
    """A folder of small user modules that fail in every way a factory can (put on sys.path by the tests)."""
    folder = tmp_path_factory.mktemp("user_code")
    for name, source in BROKEN_MODULES.items():
        (folder / f"{name}.py").write_text(source)
    return folder


@pytest.mark.parametrize("spec, code, fragments", [
    ("raises_at_import:f", 1, ["importing 'raises_at_import' failed: RuntimeError: operator torchvision::nms",
                               "raises_at_import.py:1"]),
    ("bad_syntax:factory", 1, ["importing 'bad_syntax' failed: SyntaxError"]),
    ("missing_dependency:f", 1, ["importing 'missing_dependency' failed: ModuleNotFoundError",
                                 "no_such_dependency_xyz"]),
    ("factories:raises", 1, ["calling raises() failed: ValueError: num_classes must be positive", "factories.py"]),
    ("factories:returns_dict", 1, ["returns_dict() returned a dict, not a torch.nn.Module"]),
    ("factories:NOT_CALLABLE", 1, ["'NOT_CALLABLE' is a int, not a torch.nn.Module or a factory"]),
    ("factories:not_a_classifier", 1, ["must return (batch, classes) scores"]),
    ("factories:raise_", 2, ["has no attribute 'raise_'", "did you mean raises"]),
    ("no_such_package_xyz.models:f", 2, ["cannot import module 'no_such_package_xyz.models'"]),
    ("factories:", 2, ["expected module:attr"]),
])
def test_user_code_failures_are_one_line(user_code, tmp_path, monkeypatch, spec, code, fragments):
    monkeypatch.syspath_prepend(str(user_code))
    run = run_cli(["convert", "--model", spec, "--img-size", "32", "-o", tmp_path / "m.onnx", *FAST])
    assert run.exit_code == code, (run.stdout, run.stderr)
    assert len(run.error_lines) == 1 and run.error_lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in run.error_lines[0], run.error_lines[0]
    assert list(tmp_path.iterdir()) == []


def test_torchvision_whose_compiled_ops_do_not_load_is_one_line(tmp_path):
    """The installed torchvision 0.28 (--no-deps) was built for another torch: importing it raises RuntimeError.
    A fresh process (no bare-package loader) gets one line, not the 69-line traceback."""
    run = subprocess.run([sys.executable, "-m", "slidelite", "convert", "--model",
                          "torchvision.models:mobilenet_v3_small", "-o", str(tmp_path / "m.onnx"), *FAST],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert lines[0].startswith("error: --model torchvision.models:mobilenet_v3_small: importing 'torchvision.models' "
                               "failed: RuntimeError: operator torchvision::nms does not exist"), lines[0]


def _load(model: str, **preprocess) -> object:
    from slidelite.convert.job import PreprocessOverrides

    return load_model(ConversionJob(output=Path("unused.onnx"), model=model,
                                    preprocess=PreprocessOverrides(**preprocess)))


def test_fixed_size_vit_without_config_is_probed():
    loaded = _load(f"{FACTORIES}:vit_tiny_64")
    assert loaded.input_size == (64, 64) and loaded.num_classes == 10 and loaded.channels == 3
    assert any("3x64x64: the only size the model accepts" in w for w in loaded.warnings), loaded.warnings
    assert ASSUMED_PREPROCESS in loaded.warnings


def test_timm_config_that_the_module_rejects_falls_back_to_the_probe():
    loaded = _load(f"{FACTORIES}:timm_deit_tiny_96")
    assert loaded.input_size == (96, 96)
    assert any("config says 3x224x224 but the module rejects it" in w for w in loaded.warnings), loaded.warnings
    assert loaded.preprocess.crop_pct == 0.9 and loaded.preprocess.interpolation == "bicubic"
    assert ASSUMED_PREPROCESS not in loaded.warnings


def test_timm_pretrained_cfg_gives_size_and_preprocessing():
    loaded = _load(f"{FACTORIES}:timm_resnet10t")
    module_cfg = loaded.module.pretrained_cfg
    assert loaded.input_size == tuple(module_cfg["input_size"][1:]) == (176, 176)
    assert loaded.preprocess.crop_pct == module_cfg["crop_pct"] and loaded.preprocess.mean == module_cfg["mean"]
    assert loaded.warnings == ()


def test_zoo_factory_named_as_module_attr_uses_its_registered_config():
    loaded = _load("slidelite.zoo.slide_swin:slide_swin_micro")
    assert loaded.input_size == (28, 28) and loaded.preprocess.color_mode == "L" and loaded.label_set == "fashion-mnist"


def test_size_agnostic_cnn_needs_img_size(tmp_path):
    run = run_cli(["convert", "--model", f"{FACTORIES}:resnet18", "-o", tmp_path / "m.onnx", *FAST])
    assert run.exit_code == 1 and len(run.error_lines) == 1, run.stderr
    assert "cannot tell the input size: the model accepts 3x224x224 and 3x64x64 inputs" in run.error_lines[0]
    assert "--img-size N" in run.error_lines[0] and list(tmp_path.iterdir()) == []
    assert _load(f"{FACTORIES}:resnet18", input_size=(80, 80)).input_size == (80, 80)


def test_given_size_that_the_module_rejects_is_one_line():
    with pytest.raises(ConversionError, match=r"does not accept a 3x200x200 input .*--img-size"):
        _load(f"{FACTORIES}:vit_tiny_64", input_size=(200, 200))


def test_one_channel_first_conv_means_greyscale(user_code, monkeypatch):
    monkeypatch.syspath_prepend(str(user_code))
    loaded = _load("factories:one_channel", input_size=(32, 32))
    assert loaded.preprocess.color_mode == "L" and loaded.channels == 1 and loaded.num_classes == 3


# ------------------------------------------------------------------------------------ real models end to end


def _torch_top1(model_name: str, size: Optional[str], images: List[Path]) -> Dict[str, int]:
    """torch's top-1 per photo, preprocessed by the runtime (exact path, as classify is run) as the NCHW ONNX
    metadata of the model says."""
    loaded = _load(f"{FACTORIES}:{model_name}", **({"input_size": (int(size), int(size))} if size else {}))
    metadata = build_metadata(loaded, tuple(f"class_{i}" for i in range(loaded.num_classes)))
    with torch.no_grad():
        return {str(p): int(loaded.module(torch.from_numpy(prepare_input(str(p), metadata))).argmax()) for p in images}


def _classify_top1(model: Path, images: List[Path]) -> Dict[str, int]:
    run = run_cli(["classify", "--model", model, "--json", "--top-k", "1", "--preprocessing", "exact", *images])
    assert run.exit_code == 0, run.stderr
    labels = open_model_file(model).metadata.labels
    return {doc["path"]: labels.index(doc["categories"][0]["label"])
            for doc in map(json.loads, run.stdout.splitlines())}


def _convert(model: str, out: Path, photos: Path, *extra: str) -> str:
    run = run_cli(["convert", "--model", f"{FACTORIES}:{model}", "--calib", photos, "-o", out, *FAST, *extra])
    assert run.exit_code == 0, run.stderr
    return run.stdout + run.stderr


def _check_classifies_like_torch(model_name: str, size: Optional[str], files: List[Path], photos: Path,
                                 min_agreement: float) -> None:
    """``slidelite classify`` on every file vs torch: the same top-1 for fp32, ``min_agreement`` for int8."""
    images = sorted(photos.iterdir())
    reference = _torch_top1(model_name, size, images)
    for path in files:
        got = _classify_top1(path, images)
        agree = np.mean([got[str(p)] == reference[str(p)] for p in images])
        floor = 1.0 if open_model_file(path).metadata.precision == "fp32" else min_agreement
        assert agree >= floor, (path.name, agree)


def _slow(*values):
    return pytest.param(*values, marks=pytest.mark.slow)


@pytest.mark.parametrize("model_name, size, fmt", [
    ("mobilenet_v3_small", "96", "onnx"),
    ("vit_tiny_64", None, "onnx"),
    ("vit_tiny_64", None, "tflite"),
    _slow("mobilenet_v3_small", "96", "tflite"),
    _slow("resnet18", "64", "onnx"),
    _slow("resnet18", "64", "tflite"),
    _slow("efficientnet_b0", "96", "onnx"),
    _slow("efficientnet_b0", "96", "tflite"),
    _slow("timm_convnext_atto", "64", "onnx"),
    _slow("timm_convnext_atto", "64", "tflite"),
    _slow("timm_deit_tiny_96", None, "onnx"),
    _slow("timm_deit_tiny_96", None, "tflite"),
])
def test_real_classifiers_convert_and_classify_like_torch(tmp_path, photos, model_name, size, fmt):
    """fp32 and int8 (the recipe the converter picks for the graph) of one format, with metadata; classify's
    top-1 equals torch's for fp32 and agrees on most photos for int8 (self-initialised weights)."""
    sizing = ["--img-size", size] if size else []
    files = []
    for int8 in (False, True):
        out = tmp_path / f"{model_name}{'-int8' if int8 else ''}.{fmt}"
        report = _convert(model_name, out, photos, "--format", fmt, *sizing, *(["--int8", "--force"] if int8 else []))
        meta = open_model_file(out).metadata
        assert meta.provenance.architecture == f"{FACTORIES}:{model_name}"
        assert meta.metrics["fp32_vs_torch_cosine"] >= 0.99999 and meta.labels[0] == "class_0"
        if int8:
            assert meta.precision == "int8" and meta.metrics["int8_weight_fraction"] >= 0.5, meta.metrics
            assert f"{meta.metrics['int8_recipe']} (chosen: " in report
        files.append(out)
    _check_classifies_like_torch(model_name, size, files, photos, min_agreement=0.75)


# ------------------------------------------------------------------------------------ int8 that means int8


def test_recipe_choice_follows_the_weights():
    cnn = {CONV: 11_000_000, MATMUL: 500_000, OTHER: 9_000}
    transformer = {CONV: 35_000, MATMUL: 560_000, OTHER: 4_000}
    assert choose_recipe(None, "dynamic-matmul", "onnx", cnn).name == "static-qdq-conv"
    assert choose_recipe(None, "dynamic-int8", "tflite", cnn).name == "dynamic-int8-conv"
    assert choose_recipe(None, "dynamic-matmul", "onnx", transformer).name == "dynamic-matmul"
    assert choose_recipe(None, "dynamic-matmul", "onnx", cnn).reason == "96% of the weights are convolution"
    named = choose_recipe("dynamic-matmul", "dynamic-matmul", "onnx", cnn)
    assert named.name == "dynamic-matmul" and named.reason == ""
    assert named.precision("int8", 0.04) == "mixed" and named.precision("int8", 0.97) == "int8"
    assert named.precision("int8-weights", 0.3) == "mixed" and named.precision("fp32", 0.0) == "fp32"
    assert named.warning(0.97) is None
    assert named.warning(0.04) == ("int8 recipe dynamic-matmul left most weights float: only 4% are int8, so the file "
                                   "is labelled precision 'mixed', not int8; --int8-recipe static-qdq-conv quantizes "
                                   "the convolutions (96% of the weights)")


@pytest.mark.parametrize("fp32_ms, int8_ms, text", [(10.0, 5.0, "int8 2.00x faster"), (10.0, 10.5, "int8 1.05x slower"),
                                                    (10.0, 10.0, "int8 1.00x faster")])
def test_latency_ratio_says_slower_when_slower(fp32_ms, int8_ms, text):
    assert speed_ratio(fp32_ms, int8_ms) == text


def test_cnn_int8_quantizes_its_convolutions_and_a_matmul_recipe_is_not_called_int8(tmp_path, photos):
    """ResNet-18: the default int8 is the conv recipe (>= 90% of the weights int8, ~0.26x the size); the MatMul
    recipe forced on it leaves ~4% int8, so the file says precision 'mixed' and the run warns."""
    auto, forced = tmp_path / "auto.onnx", tmp_path / "forced.onnx"
    report = _convert("resnet18", auto, photos, "--img-size", "64", "--int8", "--force")
    meta = open_model_file(auto).metadata
    assert meta.precision == "int8" and meta.metrics["int8_recipe"] == "static-qdq-conv"
    assert meta.metrics["int8_weight_fraction"] > 0.9
    assert "int8 recipe    static-qdq-conv (chosen: 96% of the weights are convolution); 100% of the weights int8" in report
    report = _convert("resnet18", forced, photos, "--img-size", "64", "--int8", "--int8-recipe", "dynamic-matmul")
    meta = open_model_file(forced).metadata
    assert meta.precision == "mixed" and meta.metrics["int8_weight_fraction"] < 0.1
    assert "warning: int8 recipe dynamic-matmul left most weights float: only 4% are int8" in report
    assert "--int8-recipe static-qdq-conv quantizes the convolutions" in report
    assert forced.stat().st_size > 3 * auto.stat().st_size
