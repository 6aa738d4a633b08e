"""``--target``: the deployment CPU picks the int8 recipe (convert/targets.py), detected from /proc/cpuinfo text."""
from __future__ import annotations

from pathlib import Path

import pytest

from slidelite.convert import ConversionJob
from slidelite.convert.quantize import RECIPES
from slidelite.convert.int8_coverage import CONV, MATMUL, choose_recipe
from slidelite.convert.targets import TARGETS, cpu_features, host_target, resolve_target, target_recipe
from slidelite.convert.tflite_quantize import RECIPES as TFLITE_RECIPES
from slidelite.errors import UsageError
from slidelite.model_file import open_model_file
from tests._cli_fixtures import run_cli
from tests._convert_fixtures import photo_folder_fixture

photos = photo_folder_fixture(crops=0)

XEON_AVX2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
XEON_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n"
A72 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
A76 = "processor\t: 0\nFeatures\t: fp asimd asimddp\n"


@pytest.mark.parametrize("cpuinfo, machine, expected", [
    (XEON_AVX2, "x86_64", "x86-avx2"), (XEON_VNNI, "x86_64", "x86-vnni"), ("flags : sse2\n", "x86_64", "generic"),
    (A72, "aarch64", "arm64"), (A76, "aarch64", "arm64-dotprod"), ("", "riscv64", "generic")])
def test_host_target_from_cpu_flags(cpuinfo, machine, expected):
    assert host_target(cpuinfo, machine) == expected


def test_cpu_features_lists_only_simd_flags_in_a_fixed_order():
    assert cpu_features(XEON_VNNI) == ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert cpu_features(A76) == ["asimd", "asimddp"]


def test_every_target_names_existing_recipes():
    for target in TARGETS.values():
        assert target.onnx_recipe in RECIPES and target.tflite_recipe in TFLITE_RECIPES


def test_avx2_keeps_7_bit_weights_and_vnni_uses_8_bit():
    assert RECIPES[TARGETS["x86-avx2"].onnx_recipe].reduce_range
    assert not RECIPES[TARGETS["x86-vnni"].onnx_recipe].reduce_range


def test_target_recipe_is_the_matmul_default_and_says_why():
    recipe, reason = target_recipe(ConversionJob(output=Path("m.onnx"), int8=True, target="x86-vnni"))
    assert recipe == "dynamic-matmul-8bit" and "VNNI" in reason
    recipe, why = target_recipe(ConversionJob(output=Path("m.tflite"), format="tflite", int8=True, target="arm64"))
    assert recipe == "dynamic-int8" and "XNNPACK" in why


def test_explicit_recipe_wins_and_no_target_changes_nothing():
    job = ConversionJob(output=Path("m.onnx"), int8=True, target="x86-vnni", int8_recipe="static-qdq-matmul")
    recipe, reason = target_recipe(job)
    assert recipe is None and "given" in reason
    assert target_recipe(ConversionJob(output=Path("m.onnx"), int8=True)) == (None, "")


def test_a_conv_graph_keeps_the_conv_recipe_whatever_the_target():
    """The target picks among MatMul recipes; a graph that is mostly convolution still gets the conv recipe."""
    default, _ = target_recipe(ConversionJob(output=Path("m.onnx"), int8=True, target="x86-vnni"))
    assert choose_recipe(None, default, "onnx", {CONV: 900, MATMUL: 100}).name == "static-qdq-conv"
    assert choose_recipe(None, default, "onnx", {CONV: 100, MATMUL: 900}).name == "dynamic-matmul-8bit"


def test_auto_reads_this_machine():
    target, how = resolve_target("auto")
    assert target.name == host_target() and how.startswith("auto: this CPU is")


def test_unknown_target_is_a_usage_error_listing_the_choices():
    with pytest.raises(UsageError, match="x86-avx2, x86-vnni, arm64, arm64-dotprod, generic, auto"):
        resolve_target("x86-sse")


@pytest.mark.convert
def test_cli_target_picks_the_recipe_and_the_report_says_why(tmp_path, photos):
    """A real conversion: --target x86-vnni (no --int8-recipe) writes a dynamic-matmul-8bit int8 file."""
    out = tmp_path / "m.int8.onnx"
    run = run_cli(["convert", "--model", "slide_swin_micro", "--int8", "--calib", photos, "--target", "x86-vnni",
                   "-o", out, "-q", "--latency-runs", "0"])
    assert run.exit_code == 0, run.stderr
    assert "dynamic-matmul-8bit for target x86-vnni (for MatMul-heavy graphs): VNNI" in run.stdout
    assert open_model_file(out).metadata.metrics["int8_recipe"] == "dynamic-matmul-8bit"


@pytest.mark.convert
def test_cli_unknown_target_is_one_line_and_writes_nothing(tmp_path, photos):
    run = run_cli(["convert", "--model", "slide_swin_micro", "--int8", "--calib", photos, "--target", "x86-sse",
                   "-o", tmp_path / "m.onnx", "-q"])
    assert run.exit_code == 2 and len(run.error_lines) == 1 and "Traceback" not in run.stderr
    assert "unknown --target 'x86-sse'" in run.error_lines[0]
    assert not list(tmp_path.iterdir())
