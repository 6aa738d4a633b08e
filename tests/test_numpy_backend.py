"""The pure-numpy backend: parity with onnxruntime on real exports, clear refusals, malformed files.

Models: the runtime fixture classifier (its variants, also checked against an independent float64
computation), every shipped float ONNX model, random-init re-parameterized ``slide_swin_micro``,
``slide_swin_tiny``, ``slide_pvt_tiny`` and ``slide_pvtv2_b1`` and the real ImageNet EfficientNet-Lite0 of
the zoo, each exported the converter's way (dynamo, opset 20, onnxslim) and the legacy way (TorchScript
exporter, opset 17, with and without onnxslim); one-node graphs for kernel options the exports do not
reach. Inputs are scikit-image's real photos.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from slidelite.backends import create_backend, is_available
from slidelite.backends.numpy_backend import NumpyBackend
from slidelite.errors import ModelError
from slidelite.model_file import ModelFile, open_model_file, read_metadata
from slidelite.models import list_shipped
from slidelite.preprocess import prepare_input
from tests._runtime_fixtures import make_fixture_onnx, reference_forward, reference_preprocess

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut(),
          "rocket": data.rocket(), "motorcycle": data.stereo_motorcycle()[0]}
MIN_COSINE = 0.99999
SAMPLES = sorted((ROOT / "slidelite" / "samples").iterdir())
SHIPPED_FLOAT_ONNX = [m for m in list_shipped()
                      if m.format == "onnx" and m.precision in ("fp32", "fp16", "int8-weights")]


def backends(path: Path) -> "tuple[NumpyBackend, object]":
    """The numpy backend and the onnxruntime backend on the same file."""
    model_file = open_model_file(path)
    return create_backend(model_file, "numpy", threads=1), create_backend(model_file, "onnxruntime", threads=1)


def assert_parity(path: Path, batch: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """Run both backends image by image; cosine >= 0.99999 per image; prints the max abs difference.

    Returns:
        the numpy backend's and onnxruntime's outputs, stacked.
    """
    numpy_backend, ort_backend = backends(path)
    assert isinstance(numpy_backend, NumpyBackend)
    outputs = []
    for x in batch:
        got, want = numpy_backend.run(x[None]), ort_backend.run(x[None])
        assert got.shape == want.shape and got.dtype == want.dtype
        cosine = float(got.ravel() @ want.ravel() / (np.linalg.norm(got) * np.linalg.norm(want)))
        print(f"{path.name}: cos={cosine:.8f} max|diff|={np.abs(got - want).max():.2e}")
        assert cosine >= MIN_COSINE
        outputs.append((got[0], want[0]))
    return np.stack([o[0] for o in outputs]), np.stack([o[1] for o in outputs])


def photo_batch(size: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875) -> np.ndarray:
    """The five RGB photos preprocessed timm-style to (5, 3, size, size) float32."""
    return np.stack([reference_preprocess(Image.fromarray(p), size, crop_pct, mean, std).transpose(2, 0, 1)
                     for p in PHOTOS.values()]).astype(np.float32)


def grey_batch(size: int = 28) -> np.ndarray:
    """The photos in greyscale, resized to (5, 1, size, size), Fashion-MNIST normalization."""
    grey = [np.asarray(Image.fromarray(p).convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32)
            for p in [data.camera(), *PHOTOS.values()][:5]]
    return ((np.stack(grey)[:, None] / 255.0 - 0.2860) / 0.3530).astype(np.float32)


# --------------------------------------------------------------------------------------------- exports

def _export(name: str, folder: Path, shape: "tuple[int, ...]") -> Dict[str, Path]:
    """``name`` from the zoo (re-parameterized), exported three ways; returns ``{way: path}``."""
    torch = pytest.importorskip("torch")
    onnxslim = pytest.importorskip("onnxslim")
    from slidelite.convert.onnx_export import export_onnx, simplify_onnx
    from slidelite.zoo import create_model, reparameterize_model

    torch.manual_seed(0)
    model = reparameterize_model(create_model(name).eval()).eval()
    paths = {way: folder / f"{name}_{way}.onnx" for way in ("dynamo20_slim", "legacy17", "legacy17_slim")}
    export_onnx(model, paths["dynamo20_slim"], shape)
    simplify_onnx(paths["dynamo20_slim"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), str(paths["legacy17"]), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx.save(onnxslim.slim(onnx.load(str(paths["legacy17"]))), str(paths["legacy17_slim"]))
    return paths


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Dict[str, Path]:
    return _export("slide_swin_micro", tmp_path_factory.mktemp("micro"), (1, 1, 28, 28))


@pytest.fixture(scope="module")
def effnet(tmp_path_factory) -> Dict[str, Path]:
    return _export("efficientnet_lite0_imagenet", tmp_path_factory.mktemp("effnet"), (1, 3, 224, 224))


def op_types(path: Path) -> List[str]:
    return sorted({node.op_type for node in onnx.load(str(path)).graph.node})


# --------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("variant", [{}, {"layout": "NHWC"}, {"color_mode": "L"}, {"dtype": "uint8"},
                                     {"output_kind": "probabilities"}, {"dynamic_batch": False}])
def test_fixture_model_matches_onnxruntime_and_float64_reference(tmp_path: Path, variant: dict) -> None:
    path = make_fixture_onnx(tmp_path / "fixture.onnx", **variant)
    if variant.get("color_mode") == "L":
        batch = grey_batch(32)
    else:
        batch = photo_batch(32)
    if variant.get("layout") == "NHWC":
        batch = batch.transpose(0, 2, 3, 1).copy()
    if variant.get("dtype") == "uint8":
        batch = np.clip(np.rint(batch / 0.02) + 128, 0, 255).astype(np.uint8)
    got, _ = assert_parity(path, batch)
    np.testing.assert_allclose(got, reference_forward(batch, **variant), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shipped", SHIPPED_FLOAT_ONNX, ids=lambda m: m.name)
def test_shipped_float_onnx_models_match_onnxruntime(shipped) -> None:
    """Every float-compute ONNX model in the wheel (fp32, or fp16/int8-stored weights computed in fp32), on the
    bundled samples and the photos, preprocessed by the runtime."""
    metadata = read_metadata(open_model_file(shipped.path))
    batch = np.stack([prepare_input(source, metadata)[0] for source in [*SAMPLES, *PHOTOS.values()]])
    logits, reference = assert_parity(shipped.path, batch)
    assert np.array_equal(logits.argmax(1), reference.argmax(1))


@pytest.mark.convert
@pytest.mark.parametrize("way", ["dynamo20_slim", "legacy17", "legacy17_slim"])
def test_slide_swin_micro_matches_onnxruntime(micro: Dict[str, Path], way: str) -> None:
    batch = grey_batch()
    assert_parity(micro[way], batch)
    rng = np.random.default_rng(1)
    assert_parity(micro[way], rng.standard_normal((2, 1, 28, 28)).astype(np.float32))


@pytest.mark.convert
def test_slide_swin_micro_graphs_use_the_documented_ops(micro: Dict[str, Path]) -> None:
    """The converter's graph uses native Gelu and LayerNormalization; the legacy one shape arithmetic."""
    assert {"Gelu", "LayerNormalization", "Conv", "Softmax"} <= set(op_types(micro["dynamo20_slim"]))
    assert {"Erf", "Shape", "Gather", "Unsqueeze", "ConstantOfShape"} <= set(op_types(micro["legacy17"]))


@pytest.mark.convert
@pytest.mark.slow
@pytest.mark.parametrize("way", ["dynamo20_slim", "legacy17_slim"])
def test_efficientnet_lite0_matches_onnxruntime_on_photos(effnet: Dict[str, Path], way: str) -> None:
    """The real ImageNet weights: same top-1 as onnxruntime on every photo, and chelsea is a cat."""
    logits, reference = assert_parity(effnet[way], photo_batch(224, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
    assert logits[0].argmax() in range(281, 286)  # ImageNet's cat classes


@pytest.mark.convert
@pytest.mark.slow
@pytest.mark.parametrize("name", ["slide_swin_tiny", "slide_pvt_tiny", "slide_pvtv2_b1"])
def test_imagenet_slide_models_match_onnxruntime(tmp_path: Path, name: str) -> None:
    """The 224x224 Slide models of the zoo (random init, re-parameterized), every export way."""
    paths = _export(name, tmp_path, (1, 3, 224, 224))
    for path in paths.values():
        assert_parity(path, photo_batch(224)[:2])


RNG = np.random.default_rng(7)
KERNEL_CASES = {  # name -> (node, runtime input, initializers): option combinations beyond the exports' own
    "conv_groups_dilation": (
        helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, dilations=[2, 1], strides=[2, 1], pads=[1, 0, 2, 1]),
        RNG.standard_normal((2, 4, 9, 8)), {"w": RNG.standard_normal((6, 2, 3, 2)), "b": RNG.standard_normal(6)}),
    "conv_same_upper": (helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 3], auto_pad="SAME_UPPER"),
                        RNG.standard_normal((1, 2, 8, 7)), {"w": RNG.standard_normal((3, 2, 4, 3))}),
    "conv_same_lower_depthwise": (
        helper.make_node("Conv", ["x", "w"], ["y"], group=2, strides=[2, 2], auto_pad="SAME_LOWER"),
        RNG.standard_normal((1, 2, 8, 7)), {"w": RNG.standard_normal((2, 1, 4, 4))}),
    "conv_depthwise_multiplier_stride2": (
        helper.make_node("Conv", ["x", "w"], ["y"], group=3, strides=[2, 2], pads=[2, 1, 1, 2], kernel_shape=[5, 3]),
        RNG.standard_normal((1, 3, 11, 10)), {"w": RNG.standard_normal((6, 1, 5, 3))}),
    "conv_1x1_stride2": (helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2]),
                         RNG.standard_normal((2, 5, 7, 7)), {"w": RNG.standard_normal((3, 5, 1, 1))}),
    "gemm_trans_alpha_beta": (helper.make_node("Gemm", ["x", "w", "c"], ["y"], transA=1, alpha=0.5, beta=2.0),
                              RNG.standard_normal((4, 3)), {"w": RNG.standard_normal((4, 5)), "c": RNG.standard_normal(5)}),
    "gather_nd_negative": (helper.make_node("GatherND", ["x", "i"], ["y"]), RNG.standard_normal((4, 5, 6)),
                           {"i": np.array([[0, -1], [3, 2]], np.int64)}),
    "slice_negative_step": (helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"]), RNG.standard_normal((3, 8, 5)),
                            {"s": np.array([-1, 4], np.int64), "e": np.array([-9, 1], np.int64),
                             "a": np.array([1, 2], np.int64), "st": np.array([-2, -1], np.int64)}),
    "pad_reflect": (helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect"), RNG.standard_normal((1, 2, 4, 5)),
                    {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}),
    "softmax_axis1": (helper.make_node("Softmax", ["x"], ["y"], axis=1), RNG.standard_normal((2, 7, 3)), {}),
    "layernorm_axis1": (helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=1, epsilon=1e-3),
                        RNG.standard_normal((2, 3, 4)), {"g": RNG.standard_normal((3, 4)), "b": RNG.standard_normal((3, 4))}),
    "gelu_tanh": (helper.make_node("Gelu", ["x"], ["y"], approximate="tanh"), RNG.standard_normal((3, 9)) * 3, {}),
    # exact Gelu over the tails and past one block of the blocked kernel
    "gelu_erf_wide": (helper.make_node("Gelu", ["x"], ["y"]), np.linspace(-12, 12, 3 * 65536 + 7).reshape(1, -1), {}),
}


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_kernel_options_match_onnxruntime(tmp_path: Path, case: str) -> None:
    """One-node graphs with attribute combinations (groups, dilation, auto_pad, negative steps/indices...)."""
    node, x, inits = KERNEL_CASES[case]
    x = x.astype(np.float32)
    tensors = [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k) for k, v in inits.items()]
    graph = helper.make_graph([node], case, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "op.onnx"))
    numpy_backend, ort_backend = backends(tmp_path / "op.onnx")
    got, want = numpy_backend.run(x), ort_backend.run(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gelu_erf_matches_math_erf() -> None:
    """The fast exact Gelu (Abramowitz & Stegun erfc) against float64 ``math.erf``: float32 accuracy."""
    import math

    from slidelite.backends._numpy_ops import erf, gelu_erf

    x = np.concatenate([np.linspace(-12, 12, 20001), [0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e30, -1e30]])
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    with np.errstate(all="ignore"):  # as the plan runs kernels: x * x overflows to inf for |x| = 1e30
        got, got64 = gelu_erf(x.astype(np.float32)), gelu_erf(x)
    assert got.dtype == np.float32 and got64.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got64, want, rtol=2e-6, atol=1e-6)
    visible = np.abs(want) > 1e-30  # float32 flushes the rest of the negative tail to (-)0
    assert np.array_equal(np.sign(got[visible]), np.sign(want[visible]))
    small = np.linspace(-6, 6, 2001)
    np.testing.assert_allclose(erf(small.astype(np.float32)), [math.erf(v) for v in small], atol=1e-6)


def test_batch_run_equals_single_runs_and_is_thread_safe(tmp_path: Path) -> None:
    path = make_fixture_onnx(tmp_path / "fixture.onnx")
    backend = create_backend(open_model_file(path), "numpy", threads=1)
    assert backend.thread_safe and backend.dynamic_batch and backend.input_shape == (None, 3, 32, 32)
    batch = photo_batch(32)
    whole = backend.run(batch)
    singles = np.concatenate([backend.run(x[None]) for x in batch])
    np.testing.assert_allclose(whole, singles, rtol=1e-5, atol=1e-6)
    results: Dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = backend.run(batch[i:i + 1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batch))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(np.concatenate([results[i] for i in range(len(batch))]), singles)


def test_wrong_input_is_refused_in_one_line(tmp_path: Path) -> None:
    path = make_fixture_onnx(tmp_path / "fixture.onnx")
    backend = create_backend(open_model_file(path), "numpy", threads=1)
    with pytest.raises(ModelError, match=r"input must be float32 \[\?, 3, 32, 32\], got float32 \[1, 3, 28, 28\]"):
        backend.run(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(ModelError, match="got float64"):
        backend.run(np.zeros((1, 3, 32, 32)))


# --------------------------------------------------------------------------------------------- refusals

def _tiny_model(path: Path, nodes: list, opset: int = 17, inits: "list | None" = None) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_unsupported_op_is_refused_naming_it(tmp_path: Path) -> None:
    path = _tiny_model(tmp_path / "model.onnx", [helper.make_node("LpNormalization", ["x"], ["y"], name="norm")])
    model_file = open_model_file(path)
    assert create_backend(model_file, "onnxruntime", threads=1).run(np.ones((1, 4), np.float32)).shape == (1, 4)
    with pytest.raises(ModelError) as caught:
        create_backend(model_file, "numpy", threads=1)
    assert str(caught.value) == (f"{path}: node 'norm' uses ONNX op 'LpNormalization' which the numpy backend does "
                                 'not implement; install onnxruntime: pip install "slidelite[onnx]"')


def test_contrib_domain_op_and_old_opset_are_refused(tmp_path: Path) -> None:
    contrib = _tiny_model(tmp_path / "contrib.onnx", [helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")])
    with pytest.raises(ModelError, match="uses ONNX op 'com.microsoft.Gelu' which the numpy backend"):
        create_backend(open_model_file(contrib), "numpy", threads=1)
    old = _tiny_model(tmp_path / "old.onnx", [helper.make_node("Relu", ["x"], ["y"])], opset=11)
    with pytest.raises(ModelError, match="uses ONNX opset 11, the numpy backend runs opsets 13-23"):
        create_backend(open_model_file(old), "numpy", threads=1)


def test_broken_graphs_are_model_errors(tmp_path: Path) -> None:
    dangling = _tiny_model(tmp_path / "dangling.onnx", [helper.make_node("Add", ["x", "nowhere"], ["y"])])
    with pytest.raises(ModelError, match="reads 'nowhere', which nothing produces"):
        create_backend(open_model_file(dangling), "numpy", threads=1)
    cycle = _tiny_model(tmp_path / "cycle.onnx", [helper.make_node("Add", ["x", "b"], ["a"]),
                                                  helper.make_node("Relu", ["a"], ["b"]),
                                                  helper.make_node("Identity", ["a"], ["y"])])
    with pytest.raises(ModelError, match="has a cycle"):
        create_backend(open_model_file(cycle), "numpy", threads=1)
    bad_shape = _tiny_model(tmp_path / "bad_reshape.onnx",
                            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                            inits=[numpy_helper.from_array(np.array([3, 5], np.int64), "shape")])
    backend = create_backend(open_model_file(bad_shape), "numpy", threads=1)
    with pytest.raises(ModelError, match=r"inference failed at node '' \(Reshape\)"):
        backend.run(np.ones((1, 4), np.float32))


def test_inconsistent_initializer_is_a_model_error(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.dims[:] = [5]  # 4 floats of raw_data for a 5-element shape
    path = _tiny_model(tmp_path / "model.onnx", [helper.make_node("Add", ["x", "w"], ["y"])], inits=[weight])
    with pytest.raises(ModelError, match="shape \\[5\\] needs 20 bytes, raw_data has 16"):
        create_backend(open_model_file(path), "numpy", threads=1)


@pytest.mark.parametrize("content, message", [(b"", "the file is empty"), (b"not a model at all", "not a valid ONNX"),
                                              (None, "cannot read the model file")])
def test_unreadable_files_are_one_line_model_errors(tmp_path: Path, content: "bytes | None", message: str) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as caught:
        NumpyBackend(ModelFile(path=path, format="onnx", size=len(content or b""), metadata=None), threads=1)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.fixture(scope="module")
def fixture_bytes(tmp_path_factory) -> bytes:
    return make_fixture_onnx(tmp_path_factory.mktemp("fuzz") / "fixture.onnx").read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)),
                                                     max_size=6))
def test_corrupted_files_load_or_raise_model_error(tmp_path: Path, fixture_bytes: bytes, cut: int,
                                                   edits: list) -> None:
    """Truncated or byte-flipped files never crash, hang or raise anything but ModelError."""
    blob = bytearray(fixture_bytes[:len(fixture_bytes) - cut % len(fixture_bytes)])
    for position, value in edits:
        blob[position % len(blob)] = value
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(bytes(blob))
    model_file = ModelFile(path=path, format="onnx", size=len(blob), metadata=None)  # bypass open's own checks
    try:
        backend = NumpyBackend(model_file, threads=1)
        backend.run(np.zeros((1, 3, 32, 32), np.dtype(backend.input_dtype)))
    except ModelError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


# --------------------------------------------------------------------------------------------- without onnxruntime

def test_auto_falls_back_to_numpy_when_onnxruntime_is_missing(tmp_path: Path) -> None:
    """With onnxruntime (and onnx, torch) unimportable, ``classify`` picks the numpy backend by itself and
    gives the same scores as onnxruntime does."""
    assert is_available("numpy")
    model = make_fixture_onnx(tmp_path / "fixture.onnx")
    sample = ROOT / "slidelite" / "samples" / "chelsea.jpg"
    blocker = textwrap.dedent("""
        import importlib.abc, sys
        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("onnxruntime", "onnx", "torch"):
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Blocker())
        from slidelite.cli import main
        main(sys.argv[1:])
    """)
    args = ["classify", "--model", str(model), "--json", "--top-k", "3", str(sample)]
    blocked = subprocess.run([sys.executable, "-c", blocker, *args], capture_output=True, text=True, cwd=ROOT)
    normal = subprocess.run([sys.executable, "-m", "slidelite", *args, "--backend", "onnxruntime"],
                            capture_output=True, text=True, cwd=ROOT)
    assert blocked.returncode == 0 and normal.returncode == 0, blocked.stderr + normal.stderr
    got, want = json.loads(blocked.stdout), json.loads(normal.stdout)
    assert [c["label"] for c in got["categories"]] == [c["label"] for c in want["categories"]]
    np.testing.assert_allclose([c["score"] for c in got["categories"]], [c["score"] for c in want["categories"]],
                               atol=1e-5)


def test_threads_split_large_products_and_set_numpy_blas_threads(tmp_path: Path) -> None:
    """``threads`` reaches numpy's OpenBLAS (this environment's numpy wheel bundles OpenBLAS): it stays at one
    thread (never raised: its threads spin after a call); a large product by a matrix is split by rows, a large
    batched product by its batch, over ``threads`` threads; small products run on one."""
    from slidelite.backends import _blas_threads

    path = make_fixture_onnx(tmp_path / "fixture.onnx")
    a = np.ones((512, 256), np.float32)
    b = np.ones((256, _blas_threads.PARALLEL_MIN_MACS // (512 * 256)), np.float32)
    assert _blas_threads._function(_blas_threads._SETTERS) is not None, "numpy's OpenBLAS was not found"
    original = np.matmul
    try:
        for threads in (2, 3, 1):
            create_backend(open_model_file(path), "numpy", threads=threads)
            assert _blas_threads.requested_blas_threads() == threads and _blas_threads.blas_threads() == 1
            seen: list = []
            np.matmul = lambda x, y, **kw: (seen.append((x.shape[0], _blas_threads.blas_threads())),  # type: ignore
                                            original(x, y, **kw))[1]
            np.testing.assert_array_equal(_blas_threads.blas_matmul(a, b), original(a, b))
            assert sorted(seen) == [(512 * i // threads - 512 * (i - 1) // threads, 1) for i in range(1, threads + 1)]
            seen.clear()
            batch_a, batch_b = np.stack([a] * 6), np.stack([b] * 6)
            np.testing.assert_array_equal(_blas_threads.blas_matmul(batch_a, batch_b), original(batch_a, batch_b))
            assert sorted(seen) == [(6 * i // threads - 6 * (i - 1) // threads, 1) for i in range(1, threads + 1)]
            seen.clear()
            _blas_threads.blas_matmul(a[:8], b)  # small: one call, on one thread
            np.matmul = original
            assert seen == [(8, 1)] and _blas_threads.blas_threads() == 1
    finally:
        np.matmul = original
        _blas_threads.set_blas_threads(1)
