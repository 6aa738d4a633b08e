"""The TFLite route's speed work: the export layout (``slidelite.convert.tflite_graph``) computes exactly the
zoo's deployed function without the slow TFLite ops, the dynamic recipe stores large float constants as int8
behind DEQUANTIZE, and ``--int8-recipe`` names are per format (an ONNX recipe is refused for TFLite)."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from slidelite.convert import quantize, tflite_quantize
from slidelite.convert.tflite_export import export_tflite, image_input_adapter, nhwc_rgb_shape
from slidelite.convert.tflite_graph import ReshapePatchMerging, TapGemmSlideAttention, tflite_form
from slidelite.errors import UsageError
from slidelite.zoo import SlideAttention, create_model, reparameterize_model
from slidelite.zoo.slide_swin import PatchMerging
from tests._cli_fixtures import run_cli

pytestmark = pytest.mark.convert


def _ops(model: bytes):
    """[(op name, [input shapes], [input dtypes])] of a .tflite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = tree.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in graph.operators:
        code = tree.operatorCodes[op.opcodeIndex]
        inputs = [graph.tensors[t] for t in op.inputs if t >= 0]
        out.append((names[max(code.builtinCode, code.deprecatedBuiltinCode)], [list(t.shape) for t in inputs],
                    [t.type for t in inputs]))
    return out


@pytest.fixture(scope="module")
def micro_files(tmp_path_factory):
    """Random-init slide_swin_micro (seed 0), deployed, as fp32 TFLite in the zoo's form and in the TFLite layout."""
    torch.manual_seed(0)
    deployed = reparameterize_model(create_model("slide_swin_micro").eval())
    folder = tmp_path_factory.mktemp("layout")
    files = {}
    for name, module in (("zoo", deployed), ("tflite", tflite_form(deployed))):
        files[name] = export_tflite(image_input_adapter(module, (0.286,), (0.353,), 1), folder / f"{name}.tflite",
                                    nhwc_rgb_shape((28, 28)))
    return deployed, files


@pytest.mark.parametrize("dim, heads, qkv_bias, size", [(96, 3, True, (14, 14)), (96, 3, True, (7, 9)),
                                                      (96, 3, True, (56, 56)), (64, 1, False, (5, 8))])
def test_tap_gemm_slide_attention_equals_the_training_form(dim, heads, qkv_bias, size):
    """The TFLite rewrite equals the zoo's two-branch training form (float32, <= 1e-5), with a trained-like
    deformed shift and position term, with and without a qkv bias (Slide-PVT has none), on odd sizes too."""
    torch.manual_seed(1)
    attn = SlideAttention(dim, heads, qkv_bias=qkv_bias).eval()
    with torch.no_grad():
        for param in (attn.dep_conv1.weight, attn.dep_conv1.bias, attn.relative_position_bias_table):
            param.normal_(0, 0.2)  # not only one-hot kernels
        x = torch.randn(2, *size, dim)
        expected = attn(x)
        attn.reparameterize()
        got = TapGemmSlideAttention(attn)(x)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (5, 8)])
def test_reshape_patch_merging_equals_the_zoo_form(size):
    torch.manual_seed(2)
    merge = PatchMerging(16).eval()
    with torch.no_grad():
        merge.norm.weight.normal_(1, 0.3)
        merge.norm.bias.normal_(0, 0.3)
        x = torch.randn(1, *size, 16)
        assert torch.allclose(ReshapePatchMerging(merge)(x), merge(x), atol=1e-6)


def test_tflite_form_rewrites_a_copy_and_keeps_the_function(micro_files):
    deployed, _ = micro_files
    rewritten = tflite_form(deployed)
    kinds = collections.Counter(type(m).__name__ for m in rewritten.modules())
    assert kinds["TapGemmSlideAttention"] == 4 and kinds["ReshapePatchMerging"] == 2
    assert not any(isinstance(m, (SlideAttention, PatchMerging)) for m in rewritten.modules())
    assert sum(isinstance(m, SlideAttention) for m in deployed.modules()) == 4  # the original is untouched
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(rewritten(x), deployed(x), atol=1e-5)


def test_tflite_layout_runs_slide_attention_as_fully_connected_products(micro_files):
    """The TFLite layout's Slide attention is FULLY_CONNECTED products per tap (head_dim -> ka^2 and back), with no
    depthwise conv (the zoo's convolution form has them, so the check can fail) and no batch matmul with one
    batch per pixel and head (the zoo's earlier deployed form had them; neither file may). 3x3 depthwise convs
    only: the micro's 2x2 patch embedding of one channel is a depthwise conv in both."""
    _, files = micro_files
    for name, convolutions in (("zoo", True), ("tflite", False)):
        ops = _ops(files[name].read_bytes())
        depthwise = [s for op, s, _ in ops if op == "DEPTHWISE_CONV_2D" and s[1][1:3] == [3, 3]]
        per_pixel = [s for op, s, _ in ops if op == "BATCH_MATMUL" and s[0][0] >= 14 * 14]
        taps = [s for op, s, _ in ops if op == "FULLY_CONNECTED" and s[1][0] == 9]
        assert bool(depthwise) is convolutions and not per_pixel, name
        assert len(taps) == (0 if convolutions else 4 * 9), name


def test_tflite_layout_matches_the_zoo_form_in_litert(micro_files):
    from slidelite.backends.litert_backend import LiteRTBackend
    from slidelite.model_file import open_model_file

    _, files = micro_files
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 3)).astype(np.float32)
    out = {}
    for name, path in files.items():
        backend = LiteRTBackend(open_model_file(path), 2)
        out[name] = np.concatenate([backend.run(p[None]) for p in pixels])
        backend.close()
    np.testing.assert_allclose(out["tflite"], out["zoo"], rtol=1e-4, atol=1e-5)


def test_slide_pvt_tflite_layout_matches_the_zoo_in_litert(tmp_path):
    """Slide-PVT (one head in its first Slide stage, no qkv bias) in the TFLite layout converts and LiteRT
    matches the zoo's deployed model in torch (a 4-D product with one head once failed TFLite conversion)."""
    from slidelite.backends.litert_backend import LiteRTBackend
    from slidelite.model_file import open_model_file

    torch.manual_seed(3)
    deployed = reparameterize_model(create_model("slide_pvt_tiny", depths=(1, 1, 1, 1), img_size=64).eval())
    rewritten = tflite_form(deployed)
    assert sum(isinstance(m, TapGemmSlideAttention) for m in rewritten.modules()) == 2
    path = export_tflite(image_input_adapter(rewritten, (0.5,) * 3, (0.25,) * 3, 3), tmp_path / "pvt.tflite",
                         nhwc_rgb_shape((64, 64)))
    pixels = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    backend = LiteRTBackend(open_model_file(path), 2)
    got = backend.run(pixels)
    backend.close()
    with torch.no_grad():
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255 - 0.5) / 0.25
        expected = deployed(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_large_float_constants_become_int8_behind_dequantize(micro_files, tmp_path):
    """The micro's window-attention position bias (1, 8, 16, 16) is stored per head as int8; LiteRT's output
    barely moves and the float constant is gone from the file."""
    from ai_edge_litert.interpreter import Interpreter

    _, files = micro_files
    model = files["tflite"].read_bytes()
    smaller = tflite_quantize.int8_float_constants(model, min_elements=2048)
    assert tflite_quantize.int8_float_constants(model, min_elements=10 ** 9) == model
    ops = _ops(smaller)
    dequantized = [s for op, s, _ in ops if op == "DEQUANTIZE"]
    assert [1, 8, 16, 16] in [s[0] for s in dequantized] and len(smaller) < len(model) - 3 * 2048
    pixels = np.random.default_rng(1).uniform(0, 255, (1, 28, 28, 3)).astype(np.float32)
    outs = []
    for content in (model, smaller):
        interpreter = Interpreter(model_content=content, num_threads=2)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
        interpreter.invoke()
        outs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).ravel())
    cosine = outs[0] @ outs[1] / (np.linalg.norm(outs[0]) * np.linalg.norm(outs[1]))
    assert cosine > 0.9999 and not np.array_equal(outs[0], outs[1])


def test_weights_of_convolutions_and_matmuls_stay_with_the_quantizer(micro_files):
    """Even with no size threshold, only constants read by element-wise ops get a DEQUANTIZE: a dequantized
    conv/FC weight would be a run-time input to XNNPACK (slow)."""
    from ai_edge_litert.tools import flatbuffer_utils

    _, files = micro_files
    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(
        tflite_quantize.int8_float_constants(files["tflite"].read_bytes(), min_elements=1)))
    ops = _ops(flatbuffer_utils.convert_object_to_bytearray(tree))
    graph = tree.subgraphs[0]
    dequantized = {op.outputs[0] for op, (name, _, _) in zip(graph.operators, ops) if name == "DEQUANTIZE"}
    readers = {name for op, (name, _, _) in zip(graph.operators, ops) if dequantized & set(op.inputs)}
    assert dequantized and readers <= {"ADD", "SUB", "MUL"}


def test_each_format_has_its_own_default_recipe():
    assert tflite_quantize.get_tflite_recipe(None).name == tflite_quantize.DEFAULT_RECIPE == "dynamic-int8"
    assert quantize.get_recipe(None).name == quantize.DEFAULT_RECIPE == "dynamic-matmul"
    with pytest.raises(UsageError, match="for --format tflite; choose one of: dynamic-int8, full-int8"):
        tflite_quantize.get_tflite_recipe("dynamic-matmul")


@pytest.mark.parametrize("fmt, recipe, valid", [("tflite", "dynamic-matmul", "dynamic-int8"),
                                                ("onnx", "full-int8", "dynamic-matmul")])
def test_a_recipe_of_the_other_format_is_a_usage_error(tmp_path, fmt, recipe, valid):
    """The bug: ``--format tflite --int8-recipe dynamic-matmul`` (an ONNX name) silently wrote full-int8."""
    photos = tmp_path / "photos"
    from slidelite.convert.samples import write_sample_photos

    write_sample_photos(photos, crops=0)
    out = tmp_path / f"m.{fmt}"
    run = run_cli(["convert", "--model", "slide_swin_micro", "--format", fmt, "--int8", "--calib", photos,
                   "--int8-recipe", recipe, "-o", out, "-q"])
    assert run.exit_code == 2 and f"unknown --int8-recipe '{recipe}'" in run.stderr and valid in run.stderr
    assert "Traceback" not in run.stderr and not out.exists()
