"""The numpy backend's load-time rewrites (slidelite/backends/_onnx_fusion.py) and cache-blocked kernels:
each fused graph gives onnxruntime's result and really runs fewer / channels-last steps."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from slidelite.backends import create_backend
from slidelite.model_file import open_model_file

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(11)


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _save(path: Path, nodes: list, x_shape: List[int], inits: Dict[str, np.ndarray], outputs: List[str]) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _both(path: Path, x: np.ndarray):
    model_file = open_model_file(path)
    numpy_backend = create_backend(model_file, "numpy", threads=1)
    return numpy_backend, numpy_backend.run(x), create_backend(model_file, "onnxruntime", threads=1).run(x)


def _mobile_block(path: Path, extra_outputs: List[str]) -> Path:
    """Conv3x3 s2 + BatchNorm + ReLU6, depthwise 3x3 + BatchNorm + ReLU, 1x1 projection, residual Add with a
    constant per-channel Mul, spatial ReduceMean, then Flatten + Gemm (an NCHW-only consumer)."""
    c = 8
    bn = {f"{p}_{k}": v for p in ("bn1", "bn2") for k, v in
          (("s", RNG.uniform(0.5, 1.5, c)), ("b", RNG.uniform(-0.3, 0.3, c)), ("m", RNG.uniform(-0.5, 0.5, c)),
           ("v", RNG.uniform(0.5, 2.0, c)))}
    inits = {"w1": _f32(c, 3, 3, 3, scale=0.3), "w2": _f32(c, 1, 3, 3, scale=0.3), "b2": _f32(c),
             "w3": _f32(c, c, 1, 1, scale=0.3), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
             "cm": _f32(1, c, 1, 1), "axes": np.array([2, 3], np.int64), "fc": _f32(c, 5), "fb": _f32(5),
             **{k: v.astype(np.float32) for k, v in bn.items()}}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["n1"], epsilon=1e-3),
        helper.make_node("Clip", ["n1", "lo", "hi"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["n2"]),
        helper.make_node("Relu", ["n2"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3"], ["c3"]),
        helper.make_node("Mul", ["c3", "cm"], ["scaled"]),
        helper.make_node("Add", ["scaled", "a1"], ["res"]),
        helper.make_node("ReduceMean", ["res", "axes"], ["pooled"], keepdims=1),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fb"], ["y"]),
    ]
    return _save(path, nodes, ["N", 3, 15, 16], inits, ["y", *extra_outputs])


def test_cnn_block_is_folded_fused_and_channels_last(tmp_path: Path) -> None:
    backend, got, want = _both(_mobile_block(tmp_path / "block.onnx", []), _f32(2, 3, 15, 16))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    steps = backend._plan._steps
    ops = [s.node.op_type for s in steps]
    assert "BatchNormalization" not in ops and "Clip" not in ops and "Relu" not in ops
    assert [s.node.attributes.get("_layout") for s in steps if s.node.op_type == "Conv"] == ["NHWC"] * 3
    assert ops.count("Transpose") == 2  # into NHWC at the input, back to NCHW after the spatial mean


def test_channels_last_tensor_that_is_a_graph_output_comes_back_nchw(tmp_path: Path) -> None:
    """A fused conv's activation read by the graph output and by the next conv: both see NCHW values."""
    path = _mobile_block(tmp_path / "block.onnx", ["a1", "res"])
    x = _f32(1, 3, 15, 16)
    model_file = open_model_file(path)
    got = create_backend(model_file, "numpy", threads=1)._plan.run(x)
    import onnxruntime as ort

    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_matmul_bias_and_relu_fuse(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    path = _save(tmp_path / "mm.onnx", nodes, [2, 7, 16], {"w": _f32(16, 9), "b": _f32(9)}, ["y"])
    backend, got, want = _both(path, _f32(2, 7, 16))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [s.node.op_type for s in backend._plan._steps] == ["MatMul"]


@pytest.mark.parametrize("op, attrs, extra", [
    ("Gelu", {}, {}), ("Erf", {}, {}), ("Softmax", {"axis": -1}, {}),
    ("LayerNormalization", {"axis": -1}, {"g": _f32(96), "b": _f32(96)}),
    ("LayerNormalization", {"axis": 1}, {"g": _f32(3136, 96), "b": _f32(3136, 96)}),
])
def test_cache_blocked_kernels_match_onnxruntime_on_large_tensors(tmp_path: Path, op: str, attrs: dict,
                                                                  extra: Dict[str, np.ndarray]) -> None:
    """Tensors far larger than one block (65536 elements), as in Slide-Swin-T's first stage."""
    node = helper.make_node(op, ["x", *extra], ["y"], **attrs)
    path = _save(tmp_path / "op.onnx", [node], [1, 3136, 96], extra, ["y"])
    _, got, want = _both(path, _f32(1, 3136, 96, scale=2.0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32 means over up to 300k elements


def test_two_threads_split_products_bands_and_blocks_without_changing_results(tmp_path: Path) -> None:
    """threads=2: a product above the threading threshold is split by rows over two threads, depthwise bands
    and elementwise blocks are shared; the results equal onnxruntime's and the one-thread run's."""
    from slidelite.backends._blas_threads import PARALLEL_MIN_MACS

    nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], group=32, pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["d"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["m"]), helper.make_node("Gelu", ["m"], ["y"])]
    inits = {"dw": _f32(32, 1, 3, 3), "shape": np.array([1, 96 * 96, 32], np.int64), "w": _f32(32, 384, scale=0.2)}
    assert 96 * 96 * 32 * 384 >= PARALLEL_MIN_MACS
    path = _save(tmp_path / "par.onnx", nodes, [1, 32, 96, 96], inits, ["y"])
    x = _f32(1, 32, 96, 96)
    model_file = open_model_file(path)
    try:
        two = create_backend(model_file, "numpy", threads=2).run(x)
        one = create_backend(model_file, "numpy", threads=1).run(x)
    finally:
        from slidelite.backends._blas_threads import set_blas_threads

        set_blas_threads(1)
    want = create_backend(model_file, "onnxruntime", threads=1).run(x)
    np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(two, want, rtol=1e-4, atol=1e-4)


def test_depthwise_row_weights_per_width_match_onnxruntime(tmp_path: Path) -> None:
    """Depthwise convolutions (3x3 dilated, 5x5 with bias + ReLU6, 3x3 stride 2) repeat their weights along the
    output row once per input width; a stride-2 one reads its taps from phase images. Two widths through one
    loaded model give onnxruntime's results."""
    from slidelite.backends._numpy_conv_nhwc import ConvNhwc

    c = 24
    inits = {"w1": _f32(c, 1, 3, 3), "w2": _f32(c, 1, 5, 5), "b2": _f32(c), "w3": _f32(c, 1, 3, 3),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["d1"], group=c, pads=[2, 2, 2, 2], dilations=[2, 2]),
             helper.make_node("Conv", ["d1", "w2", "b2"], ["d2"], group=c, pads=[2, 2, 2, 2]),
             helper.make_node("Clip", ["d2", "lo", "hi"], ["a2"]),
             helper.make_node("Conv", ["a2", "w3"], ["y"], group=c, strides=[2, 2], pads=[1, 1, 1, 1])]
    path = _save(tmp_path / "dw.onnx", nodes, [1, c, 20, "W"], inits, ["y"])
    model_file = open_model_file(path)
    numpy_backend = create_backend(model_file, "numpy", threads=1)
    ort_backend = create_backend(model_file, "onnxruntime", threads=1)
    for width in (17, 30):
        x = _f32(1, c, 20, width)
        np.testing.assert_allclose(numpy_backend.run(x), ort_backend.run(x), rtol=1e-4, atol=1e-4)
    convs = [s.kernel for s in numpy_backend._plan._steps if isinstance(s.kernel, ConvNhwc)]
    assert [sorted(conv.depthwise_kernel._row_weights) for conv in convs] == [[17, 30], [17, 30], [9, 15]]


# --------------------------------------------------------------------------------------------- Slide attention

def _export_slide_attention(path: Path, dim: int, heads: int, ka: int, shape: tuple, dynamic_batch: bool,
                            form: str = "convolutions"):
    """A trained-looking (random, re-parameterized) Slide attention layer exported the converter's way, in the
    deployed all-convolution form or the earlier channel-first multiplier form; returns the path and the module."""
    torch = pytest.importorskip("torch")
    from model_zoo.slide_attention import SlideAttention, multiplier_form
    from slidelite.convert.onnx_export import export_onnx, simplify_onnx

    torch.manual_seed(ka * 100 + heads)
    layer = SlideAttention(dim, heads, ka).eval()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)  # non-zero biases, deformed kernels, positions
    layer.reparameterize()

    class Multiplier(torch.nn.Module):
        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return multiplier_form(layer, x)

    module = layer if form == "convolutions" else Multiplier().eval()
    export_onnx(module, path, shape, dynamic_batch=dynamic_batch)
    simplify_onnx(path)
    return path, module


@pytest.mark.convert
@pytest.mark.parametrize("form", ["convolutions", "multiplier"])
@pytest.mark.parametrize("dim,heads,ka,shape", [(64, 2, 3, (2, 9, 11, 64)), (48, 3, 5, (1, 12, 7, 48)),
                                                (96, 3, 3, (1, 56, 56, 96))], ids=["ka3-batch2", "ka5", "stage1"])
def test_slide_attention_chain_is_one_fused_step_matching_onnxruntime_and_torch(
        tmp_path: Path, dim: int, heads: int, ka: int, shape: tuple, form: str) -> None:
    """Both deployed forms the converter has written (all convolutions: per-offset depthwise convs and grouped 1x1
    convs of ones; channel-first: two depthwise convs with ka^2 outputs per channel), each with its written-out
    softmax, run as one step, at one and two threads, with onnxruntime's and the zoo layer's results."""
    import torch

    from slidelite.backends._blas_threads import set_blas_threads

    path, module = _export_slide_attention(tmp_path / "slide.onnx", dim, heads, ka, shape,
                                           dynamic_batch=shape[0] > 1, form=form)
    x = _f32(*shape)
    numpy_backend, got, want = _both(path, x)
    ops = numpy_backend._plan.op_types
    assert ops.count("SlideAttention") == 1
    assert not {"Exp", "ReduceMax", "ReduceSum", "Concat", "Slice"} & set(ops)
    assert ops.count("Conv") == (4 if form == "convolutions" else 0)  # qkv and proj as 1x1 convs
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # float32 sums in another order
    with torch.no_grad():
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)
    try:
        two = create_backend(open_model_file(path), "numpy", threads=2).run(x)
    finally:
        set_blas_threads(1)
    np.testing.assert_allclose(two, got, rtol=1e-6, atol=1e-6)


@pytest.mark.convert
@pytest.mark.parametrize("form", ["convolutions", "multiplier"])
def test_slide_attention_chain_with_an_outside_reader_is_left_unfused(tmp_path: Path, form: str) -> None:
    """When an intermediate of the chain is also a graph output, the chain stays as the file wrote it (and still
    gives onnxruntime's results)."""
    path, _ = _export_slide_attention(tmp_path / "slide.onnx", 32, 2, 3, (1, 6, 5, 32), dynamic_batch=False, form=form)
    model = onnx.load(str(path))
    exp = next(node for node in model.graph.node if node.op_type == "Exp")
    model.graph.output.append(helper.make_tensor_value_info(exp.output[0], TensorProto.FLOAT, None))
    onnx.save(model, str(path))
    x = _f32(1, 6, 5, 32)
    numpy_backend, got, want = _both(path, x)
    assert "SlideAttention" not in numpy_backend._plan.op_types and "Exp" in numpy_backend._plan.op_types
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
