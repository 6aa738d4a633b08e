"""TFLite route end to end on a random-init slide_swin_micro: fp32 (CLI) and int8 (both recipes, Python API)
files carry standard TFLite Metadata plus the slidelite JSON, pass the gates, and classify real photos with
the runtime like torch and like the ONNX file; every bad input is refused in one line without a file left."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from slidelite.classifier import Classifier
from slidelite.convert import ConversionJob, PreprocessOverrides, convert
from slidelite.convert.errors import CalibrationError, ConversionError, OutputPathError
from slidelite.convert.samples import write_sample_photos
from slidelite.convert.tflite import tflite_preprocess
from slidelite.metadata import TFLITE_METADATA_FILE
from slidelite.model_file import open_model_file
from slidelite.preprocess import prepare_input
from slidelite.zoo import create_model
from tests._cli_fixtures import run_cli
from tests._tflite_fixtures import run_in_tflite_venv

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_sample_photos(folder, crops=2)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "micro.pth"
    torch.save(create_model("slide_swin_micro").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, weights, photos):
    out = tmp_path_factory.mktemp("fp32") / "micro.tflite"
    run = run_cli(["convert", "--model", "slide_swin_micro", "--checkpoint", weights, "--format", "tflite",
                   "--calib", photos, "-o", out, "-q", "--latency-runs", "3"])
    return out, run


@pytest.fixture(scope="module")
def int8_results(tmp_path_factory, weights, photos):
    folder = tmp_path_factory.mktemp("int8")
    results = {}
    for recipe in ("full-int8", "dynamic-int8"):
        job = ConversionJob(output=folder / f"micro-{recipe}.tflite", model="slide_swin_micro", checkpoint=weights,
                            format="tflite", int8=True, calib=photos, int8_recipe=recipe, progress=False,
                            latency_runs=3, min_agreement=0.9)
        results[recipe] = convert(job)
    return results


def _torch_top1(weights: Path, photo: Path, metadata) -> int:
    """Top-1 of the torch model on the runtime's preprocessing of the ONNX-style (NCHW, normalized) input."""
    model = create_model("slide_swin_micro")
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        return int(model.eval()(torch.from_numpy(prepare_input(str(photo), metadata))).argmax())


def test_fp32_cli_writes_a_verified_file_with_tflite_metadata(fp32_run):
    out, run = fp32_run
    assert run.exit_code == 0, run.stderr
    assert "fp32 vs torch" in run.stdout and "latency" in run.stdout
    assert run.stderr.strip() == ""  # litert-torch/MLIR/XNNPACK native logs are held back
    model = open_model_file(out)
    meta = model.metadata
    assert model.format == "tflite" and meta.precision == "fp32"
    assert (meta.input.layout, meta.input.dtype, meta.input.height, meta.preprocess.color_mode) == ("NHWC", "float32", 28, "RGB")
    assert meta.preprocess.mean == (0.0,) and meta.preprocess.std == pytest.approx((1 / 255,))
    assert meta.labels[9] == "Ankle boot" and meta.metrics["fp32_vs_torch_cosine"] >= 0.99999
    with zipfile.ZipFile(out) as archive:  # the standard TFLite Metadata's associated files
        assert sorted(archive.namelist()) == ["labels.txt", TFLITE_METADATA_FILE]
        assert archive.read("labels.txt").decode().splitlines() == list(meta.labels)


def test_fp32_tflite_metadata_fields(fp32_run):
    """Name, description, version, licence, image properties, scalar normalization and TENSOR_AXIS_LABELS,
    read back with tflite-support's MetadataDisplayer (in .venv-tflite)."""
    out, _ = fp32_run
    script = (
        "import sys, json\n"
        "from tflite_support import metadata\n"
        "d = json.loads(metadata.MetadataDisplayer.with_model_file(sys.argv[1]).get_metadata_json())\n"
        "print(json.dumps(d))\n")
    proc = run_in_tflite_venv(["-c", script, out])
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["name"] == "slide_swin_micro" and "slidelite" in doc["version"] and doc["license"].startswith("MIT")
    assert doc["description"] and doc["author"] == "slidelite"
    assert [f["name"] for f in doc["associated_files"]] == [TFLITE_METADATA_FILE]
    image = doc["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["content"]["content_properties"]["color_space"] == "RGB"
    norm = image["process_units"][0]["options"]
    assert norm["mean"] == [0.0] and norm["std"] == [1.0]
    labels = doc["subgraph_metadata"][0]["output_tensor_metadata"][0]["associated_files"]
    assert labels[0]["name"] == "labels.txt" and labels[0]["type"] == "TENSOR_AXIS_LABELS"
    assert "stats" not in doc["subgraph_metadata"][0]["output_tensor_metadata"][0]  # logits: no 0..1 range


def test_runtime_matches_torch_and_onnx_on_real_photos(fp32_run, weights, photos, tmp_path):
    out, _ = fp32_run
    onnx = tmp_path / "micro.onnx"
    run = run_cli(["convert", "--model", "slide_swin_micro", "--checkpoint", weights, "--calib", photos, "-o", onnx,
                   "-q", "--latency-runs", "0"])
    assert run.exit_code == 0, run.stderr
    files = sorted(photos.glob("*.png"))
    # exact preprocessing: the same tensor torch gets from prepare_input (the fast path is tested on its own)
    with Classifier.from_file(str(out), preprocessing="exact") as tfl, \
            Classifier.from_file(str(onnx), preprocessing="exact") as ref:
        assert tfl.backend.name == "litert" and not tfl.backend.thread_safe
        onnx_meta = open_model_file(onnx).metadata
        for photo in files:
            got, want = tfl.classify(str(photo)), ref.classify(str(photo))
            assert got.categories[0].index == want.categories[0].index, photo.name
            assert got.categories[0].score == pytest.approx(want.categories[0].score, abs=2e-3)
            assert got.categories[0].index == _torch_top1(weights, photo, onnx_meta)


def test_full_int8_is_integer_with_uint8_pixels_and_float_logits(int8_results, photos):
    result = int8_results["full-int8"]
    meta = open_model_file(result.output).metadata
    assert meta.precision == "int8" and meta.input.dtype == "uint8"
    assert (meta.input.quantization.scale, meta.input.quantization.zero_point) == (1.0, 0)
    assert meta.metrics["int8_recipe"] == "full-int8" and meta.metrics["int8_vs_torch_top1_agreement"] >= 0.9
    assert result.sizes["int8"] < 0.5 * result.sizes["fp32"]
    assert set(result.latency_ms) == {"fp32", "int8"} and "int8" in result.report
    assert any("calibration image" in w for w in result.warnings)  # 18 photos < 32: warned, still written
    with Classifier.from_file(str(result.output)) as clf:
        assert clf.backend.input_dtype == "uint8"
        tensor = prepare_input(str(next(photos.glob("*.png"))), meta)
        assert tensor.dtype == np.uint8 and tensor.shape == (1, 28, 28, 3)
        assert len(clf.classify(str(next(photos.glob("*.png")))).categories) == 5  # max_results default


def test_dynamic_int8_keeps_float_io_and_agrees(int8_results):
    result = int8_results["dynamic-int8"]
    meta = open_model_file(result.output).metadata
    assert meta.precision == "int8" and meta.input.dtype == "float32" and meta.input.quantization is None
    assert result.int8_agreement["top1_agreement"] >= 0.9 and result.int8_agreement["cosine"] > 0.99
    assert result.sizes["int8"] < 0.5 * result.sizes["fp32"]


def test_grayscale_model_takes_rgb_with_luma_folded_in(fp32_run):
    """slide_swin_micro is a 1-channel model; its TFLite input is RGB (MediaPipe refuses other colour spaces)
    and the graph applies Pillow's L weights, so a grey image gives the same logits in RGB or replicated L."""
    out, _ = fp32_run
    with Classifier.from_file(str(out), max_results=10) as clf:
        rng = np.random.default_rng(1)
        rgb = rng.integers(0, 256, (28, 28, 3)).astype(np.uint8)
        luma = (rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
        grey = np.repeat(luma[..., None], 3, axis=2).astype(np.float32)
        a = clf.backend.run(rgb[None].astype(np.float32))
        b = clf.backend.run(grey[None])
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_tflite_preprocess_keeps_resize_and_crop():
    from slidelite.convert.job import LoadedModel
    from slidelite.metadata import PreprocessSpec

    loaded = LoadedModel(module=None, architecture="x", input_size=(28, 28), num_classes=10,
                         preprocess=PreprocessSpec(color_mode="L", crop_pct=1.0, interpolation="bilinear",
                                                   mean=(0.286,), std=(0.353,)))
    spec = tflite_preprocess(loaded)
    assert (spec.color_mode, spec.crop_pct, spec.interpolation, spec.mean) == ("RGB", 1.0, "bilinear", (0.0,))


# ----------------------------------------------------------------------------------------------- bad input


class _Inverts(torch.nn.Module):
    """A block using an op with no TFLite lowering (matrix inverse)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x[:, :, :4, :4] + 4 * torch.eye(4))


class _Unlowerable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _Inverts()
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean((2, 3)))


def test_unlowerable_op_is_named_with_its_module(tmp_path, photos):
    out = tmp_path / "bad.tflite"
    job = ConversionJob(output=out, module=_Unlowerable(), format="tflite", calib=photos, progress=False,
                        latency_runs=0, max_calib_images=2, preprocess=PreprocessOverrides(input_size=(64, 64)))
    with pytest.raises(ConversionError) as info:
        convert(job)
    message = str(info.value)
    assert "linalg_inv" in message and "block: _Inverts" in message and "\n" not in message
    assert not out.exists() and not list(tmp_path.glob(".bad.tflite*"))


def test_output_collisions_are_refused(tmp_path, weights, photos):
    existing = tmp_path / "taken.tflite"
    existing.write_bytes(b"keep me")
    run = run_cli(["convert", "--model", "slide_swin_micro", "--format", "tflite", "--calib", photos, "-o", existing, "-q"])
    assert run.exit_code == 1 and "already exists" in run.stderr and existing.read_bytes() == b"keep me"
    assert len(run.stderr.strip().splitlines()) == 1
    with pytest.raises(OutputPathError, match="is the --checkpoint file"):
        convert(ConversionJob(output=weights, model="slide_swin_micro", checkpoint=weights, format="tflite",
                              overwrite=True, progress=False))
    assert weights.stat().st_size > 1000


def test_calibration_folder_without_images_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="holds no image files"):
        convert(ConversionJob(output=tmp_path / "m.tflite", model="slide_swin_micro", format="tflite", int8=True,
                              calib=empty, progress=False))
    assert not (tmp_path / "m.tflite").exists()


def test_int8_needs_calib_and_a_known_recipe(tmp_path, photos):
    run = run_cli(["convert", "--model", "slide_swin_micro", "--format", "tflite", "--int8", "-o", tmp_path / "a.tflite"])
    assert run.exit_code == 1 and "--calib" in run.stderr
    run = run_cli(["convert", "--model", "slide_swin_micro", "--format", "tflite", "--int8", "--calib", photos,
                   "--int8-recipe", "static-qdq-all", "-o", tmp_path / "b.tflite"])
    assert run.exit_code == 2 and "full-int8" in run.stderr and "dynamic-int8" in run.stderr


def test_metadata_writer_python_is_checked_before_the_model_is_loaded(tmp_path):
    """A missing or tflite-support-less writer Python is reported before any slow step: even before the (here
    missing) checkpoint is read; one line naming the command that sets it up."""
    missing_ckpt, out = tmp_path / "missing.pth", tmp_path / "m.tflite"
    run = run_cli(["convert", missing_ckpt, "--format", "tflite", "--tflite-support-python", tmp_path / "nope",
                   "-o", out, "-q"])
    assert run.exit_code == 1 and run.error_lines == [
        f"error: --tflite-support-python {tmp_path / 'nope'} does not exist; point it at a Python with tflite-support"]
    run = run_cli(["convert", missing_ckpt, "--format", "tflite", "-o", out, "-q"],
                  env={"SLIDELITE_TFLITE_SUPPORT_PYTHON": sys.executable})
    assert run.exit_code == 1 and len(run.error_lines) == 1, run.stderr
    assert f"{sys.executable} has no tflite-support; install it: {sys.executable} -m pip install" in run.stderr
    assert "scripts/setup_tflite.sh" in run.stderr and not out.exists()
