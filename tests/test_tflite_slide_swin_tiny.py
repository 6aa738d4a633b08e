"""Slide-Swin-T (random init, 224x224) converts to fp32 and both int8 recipes through the CLI: the fp32 gate
passes; ``--int8`` alone gives the default dynamic-int8 (float pixels in, at most 0.27x the fp32 size: the
issue's size goal); ``--int8-recipe full-int8`` is integer with uint8 pixels in and float logits out; the
runtime classifies a real photo with all three. Slow: three litert-torch exports of a 28M-parameter model."""
from __future__ import annotations

import pytest

from slidelite.classifier import Classifier
from slidelite.convert.samples import write_sample_photos
from slidelite.model_file import open_model_file
from tests._cli_fixtures import run_cli

pytestmark = [pytest.mark.convert, pytest.mark.slow]


def test_slide_swin_tiny_fp32_and_both_int8_recipes(tmp_path):
    photos = tmp_path / "photos"
    write_sample_photos(photos, crops=0)
    files = {name: tmp_path / f"tiny-{name}.tflite" for name in ("fp32", "default", "full-int8")}
    common = ["convert", "--model", "slide_swin_tiny", "--format", "tflite", "--calib", photos, "-q", "--latency-runs", "2"]
    run = run_cli([*common, "-o", files["fp32"]])
    assert run.exit_code == 0, run.stderr
    # random-init Slide-Swin-T has nearly tied logits, so top-1 agreement on six photos is a coarse measure:
    # the gate is lowered, the cosine is checked instead (benchmarks/tflite_int8.py measures agreement)
    for name, extra in (("default", []), ("full-int8", ["--int8-recipe", "full-int8"])):
        run8 = run_cli([*common, "--int8", *extra, "-o", files[name], "--min-agreement", "0.5"])
        assert run8.exit_code == 0, run8.stderr
        assert ("calibration image" in run8.stderr) is (name == "full-int8")  # six photos: calibration warning
    meta, dyn, full = (open_model_file(files[n]).metadata for n in ("fp32", "default", "full-int8"))
    assert meta.metrics["fp32_vs_torch_cosine"] >= 0.99999 and meta.input.height == 224
    assert dyn.metrics["int8_recipe"] == "dynamic-int8" and dyn.input.dtype == "float32"
    assert dyn.metrics["int8_vs_torch_cosine"] > 0.999
    assert files["default"].stat().st_size <= 0.27 * files["fp32"].stat().st_size
    assert full.metrics["int8_recipe"] == "full-int8" and full.input.dtype == "uint8"
    assert full.metrics["int8_vs_torch_cosine"] > 0.98
    assert files["full-int8"].stat().st_size < 0.3 * files["fp32"].stat().st_size
    photo = str(photos / "chelsea.png")
    for path in files.values():
        with Classifier.from_file(str(path)) as clf:
            assert len(clf.classify(photo).categories) == 5
