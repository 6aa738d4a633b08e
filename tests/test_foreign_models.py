"""Model files made elsewhere, by the standard tools (see ``tests/_foreign_fixtures.py``): a float and a
uint8-quantized TFLite classifier carrying only tflite-support's standard ImageClassifier metadata classify as they
are, and MediaPipe's ImageClassifier agrees on every photo's top-1; a plain ``torch.onnx.export`` classifies after
``slidelite metadata embed``; broken or partial standard metadata gives one line."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from slidelite import Classifier
from slidelite.errors import MetadataError, ModelError
from slidelite.metadata_fields import MEDIAPIPE_DEFAULTS, resolve_metadata
from slidelite.model_file import STANDARD_TFLITE_ORIGIN, open_model_file
from slidelite.preprocess import prepare_input
from slidelite.signature import GraphSignature, TensorInfo
from slidelite.tflite_metadata import StandardMetadata, standard_layer
from tests._cli_fixtures import run_cli
from tests._foreign_fixtures import (PHOTO_NAMES, SIZE, TFLITE_MEAN, TFLITE_STD, WRITER_SCRIPT, label_of,
                                     make_plain_onnx, make_tflite_files, photo_paths, squashed, trained_cnn,
                                     write_labels)
from tests._tflite_fixtures import mediapipe_top1, run_in_tflite_venv

TFLITE_FLAGS = ["--mean", "0.5", "--std", "0.5", "--resize-mode", "squash", "--crop-pct", "1", "--interpolation",
                "bilinear"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The photos, the labels file, and the files of one trained CNN made by litert-torch, TFLite's quantizer,
    tflite-support's metadata writer and torch.onnx.export."""
    folder = tmp_path_factory.mktemp("foreign")
    photos = photo_paths(folder / "photos")
    module = trained_cnn(photos)
    files = make_tflite_files(folder, module, photos)
    files["onnx"] = make_plain_onnx(folder / "plain.onnx", module)
    embedded = folder / "fp32_md_embedded.tflite"
    shutil.copyfile(files["fp32_md"], embedded)
    run = run_cli(["metadata", "embed", embedded, "--in-place", "--crop-pct", "1"])
    assert run.exit_code == 0, run.stderr
    files["fp32_md_embedded"] = embedded
    return folder, photos, files


def assert_cli_classifies(model: Path, photos, *flags) -> None:
    """``slidelite classify --model MODEL FLAGS -k 1 PHOTOS`` names each photo's class."""
    run = run_cli(["classify", "--model", model, *flags, "-k", "1", *photos])
    assert run.exit_code == 0, run.stderr
    assert [line.split()[1] for line in run.stdout.splitlines()] == [label_of(p) for p in photos]


def top1(model: Path, photos, **options) -> dict:
    with Classifier.from_file(model, max_results=1, **options) as clf:
        return {str(p): clf.classify(p).categories[0] for p in photos}


@pytest.mark.slow
@pytest.mark.convert
def test_float_standard_metadata_becomes_slidelite_metadata(made):
    folder, photos, files = made
    model_file = open_model_file(files["fp32_md"])
    metadata = model_file.metadata
    assert model_file.metadata_origin == STANDARD_TFLITE_ORIGIN and model_file.metadata_error is None
    assert metadata.labels == PHOTO_NAMES
    assert (metadata.input.layout, metadata.input.height, metadata.input.width, metadata.input.dtype) == (
        "NHWC", SIZE, SIZE, "float32")
    assert metadata.output.kind == "probabilities"  # the graph ends in SOFTMAX
    assert model_file.metadata_sources["labels"] == "TFLite Metadata labels file 'labels.txt'"
    assert model_file.metadata_sources["mean"].startswith("TFLite Metadata NormalizationOptions (mean 127.5, std 127.5")
    tensor = prepare_input(photos[0], metadata)
    expected = (squashed(photos[0]).astype(np.float32) - TFLITE_MEAN) / TFLITE_STD
    np.testing.assert_allclose(tensor[0], expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.convert
def test_uint8_standard_metadata_feeds_raw_pixels(made):
    folder, photos, files = made
    metadata = open_model_file(files["uint8_md"]).metadata
    assert metadata.input.dtype == "uint8" and metadata.output.quantization is not None
    assert metadata.output.kind == "probabilities"  # SOFTMAX, then the uint8 output's QUANTIZE
    for photo in photos[:3]:
        assert np.array_equal(prepare_input(photo, metadata)[0], squashed(photo))


@pytest.mark.slow
@pytest.mark.convert
@pytest.mark.parametrize("name", ["fp32_md", "uint8_md", "fp32_md_embedded"])
def test_mediapipe_and_slidelite_agree_on_every_photo(made, name):
    folder, photos, files = made
    theirs = mediapipe_top1(files[name], photos)  # MediaPipe accepts the file as it is
    ours = top1(files[name], photos)
    for photo in photos:
        assert (theirs[str(photo)]["index"], theirs[str(photo)]["label"]) == (ours[str(photo)].index,
                                                                             ours[str(photo)].label), photo.name
        assert ours[str(photo)].label == label_of(photo), photo.name  # the classifier learnt the photos


@pytest.mark.slow
@pytest.mark.convert
def test_info_says_where_each_field_came_from(made):
    run = run_cli(["info", made[2]["uint8_md"]])
    assert run.exit_code == 0 and not run.error_lines, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("metadata:") and STANDARD_TFLITE_ORIGIN in line for line in lines)
    for expected in ("labels: TFLite Metadata labels file 'labels.txt'", "mean/std: uint8 input: raw pixels",
                     "crop_pct: default (as MediaPipe's ImageClassifier", "output_kind: the graph ends in a softmax"):
        assert any(line.startswith("field source:") and expected in line for line in lines), expected
    report = json.loads(run_cli(["info", "--json", made[2]["uint8_md"]]).stdout)
    assert report["metadata_origin"] == STANDARD_TFLITE_ORIGIN
    assert report["metadata_sources"]["labels"] == "TFLite Metadata labels file 'labels.txt'"


@pytest.mark.slow
@pytest.mark.convert
def test_a_plain_tflite_is_refused_in_one_line_then_classifies_with_flags(made):
    folder, photos, files = made
    refused = run_cli(["classify", "--model", files["fp32"], photos[0]])
    assert refused.exit_code == 1 and len(refused.error_lines) == 1 and "has no slidelite metadata" in refused.stderr
    assert_cli_classifies(files["fp32"], photos, "--labels", folder / "labels.txt", *TFLITE_FLAGS)


@pytest.mark.slow
@pytest.mark.convert
def test_a_plain_torch_onnx_export_classifies_after_embedding(made, tmp_path):
    folder, photos, files = made
    bare = files["onnx"]
    assert open_model_file(bare).metadata is None
    out = tmp_path / "embedded.onnx"
    run = run_cli(["metadata", "embed", bare, "--labels", folder / "labels.txt", *TFLITE_FLAGS, "-o", out])
    assert run.exit_code == 0, run.stderr
    assert "layout: model input shape" in run.stdout and "output_kind: the graph does not end in a softmax" in run.stdout
    assert open_model_file(bare).metadata is None, "the original is untouched"
    assert_cli_classifies(out, photos)


@pytest.mark.slow
@pytest.mark.convert
def test_a_plain_tflite_classifies_after_embedding(made, tmp_path):
    folder, photos, files = made
    out = tmp_path / "embedded.tflite"
    run = run_cli(["metadata", "embed", files["fp32"], "--labels", folder / "labels.txt", *TFLITE_FLAGS, "-o", out])
    assert run.exit_code == 0, run.stderr
    assert "output_kind: the graph ends in a softmax" in run.stdout and "layout: model input shape" in run.stdout
    model_file = open_model_file(out)
    assert model_file.metadata_origin == "slidelite metadata" and model_file.metadata.output.kind == "probabilities"
    assert {str(p): c.label for p, c in top1(out, photos).items()} == {str(p): label_of(p) for p in photos}


@pytest.mark.slow
@pytest.mark.convert
def test_score_calibration_is_reported_as_not_applied(made, tmp_path):
    folder, photos, files = made
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("".join("1.0,1.0,0.0\n" for _ in PHOTO_NAMES), encoding="utf-8")
    out = tmp_path / "calibrated.tflite"
    proc = run_in_tflite_venv(["-c", WRITER_SCRIPT, files["fp32"], out, folder / "labels.txt", TFLITE_MEAN, TFLITE_STD,
                               calibration])
    assert proc.returncode == 0, proc.stderr[-2000:]
    model_file = open_model_file(out)
    assert model_file.metadata is not None, model_file.metadata_error
    assert model_file.metadata_sources["score_calibration"] == "in the TFLite Metadata, not applied: scores are the " \
                                                               "model's own"
    info = run_cli(["info", out])
    assert "score_calibration: in the TFLite Metadata, not applied" in info.stdout


def _without_archive(model: Path, out: Path) -> Path:
    """The TFLite file without its appended associated files (the metadata still names labels.txt)."""
    import zipfile

    data = model.read_bytes()
    with zipfile.ZipFile(model) as archive:
        start = min(info.header_offset for info in archive.infolist())
    out.write_bytes(data[:start])
    return out


def _damaged_metadata(model: Path, out: Path) -> Path:
    data = model.read_bytes()
    assert data.count(b"M001") == 1
    out.write_bytes(data.replace(b"M001", b"X001"))
    return out


def _five_labels(model: Path, out: Path) -> Path:
    labels = out.with_suffix(".txt")
    labels.write_text("\n".join(PHOTO_NAMES[:5]) + "\n", encoding="utf-8")
    plain = model.with_name(model.name.replace("_md", ""))
    proc = run_in_tflite_venv(["-c", WRITER_SCRIPT, plain, out, labels, TFLITE_MEAN, TFLITE_STD])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.convert
@pytest.mark.parametrize("damage, expected", [
    (_without_archive, "the labels file 'labels.txt' that its TFLite Metadata names is not in the model's associated "
                       "files"),
    (_damaged_metadata, "its standard TFLite Metadata is damaged (the TFLITE_METADATA buffer is not TFLite Metadata"),
    (_five_labels, "metadata has 5 labels but the model output has 6 classes"),
])
def test_broken_standard_metadata_is_one_line(made, tmp_path, damage, expected):
    folder, photos, files = made
    broken = damage(files["fp32_md"], tmp_path / "broken.tflite")
    run = run_cli(["classify", "--model", broken, photos[0]])
    assert run.exit_code == 1 and len(run.error_lines) == 1 and expected in run.stderr, run.stderr
    info = run_cli(["info", broken])
    assert info.exit_code == 0 and expected in info.stderr and re.search(r"^metadata:\s+none", info.stdout, re.M)
    labels = write_labels(tmp_path / "labels.txt")
    assert_cli_classifies(broken, photos[:3], "--labels", labels, *TFLITE_FLAGS)


@pytest.mark.slow
@pytest.mark.convert
def test_every_corrupted_byte_of_the_standard_metadata_is_handled(made, tmp_path):
    """Each byte of the TFLITE_METADATA flatbuffer set to 0xFF in turn: the file opens or is refused in one line."""
    data = made[2]["fp32_md"].read_bytes()
    start = data.index(b"M001") - 4
    outcomes = set()
    for pos in range(start, start + 600):
        broken = tmp_path / f"b{pos}.tflite"
        broken.write_bytes(data[:pos] + b"\xff" + data[pos + 1:])
        try:
            model_file = open_model_file(broken)
        except ModelError as exc:
            outcomes.add("refused")
            assert "\n" not in str(exc)
            continue
        finally:
            broken.unlink()
        outcomes.add("read" if model_file.metadata is not None else "no metadata")
        assert model_file.metadata is not None or "\n" not in model_file.metadata_error
    assert "no metadata" in outcomes  # some corruption is caught, not every byte is harmless


def test_float_input_without_normalization_options_names_the_flags():
    signature = GraphSignature(TensorInfo("image", (1, 32, 32, 3), "float32"), TensorInfo("scores", (1, 2), "float32"),
                               ends_in_softmax=False)
    layer = standard_layer(StandardMetadata(labels_file="labels.txt", color_space="RGB"), ("a", "b"), "float32")
    with pytest.raises(MetadataError, match="pass --mean and --std"):
        resolve_metadata(signature, [layer, MEDIAPIPE_DEFAULTS], "m.tflite")
    layer = standard_layer(StandardMetadata(labels_file="labels.txt", mean=(0.0,), std=(255.0,)), ("a", "b"), "float32")
    metadata, sources = resolve_metadata(signature, [layer, MEDIAPIPE_DEFAULTS], "m.tflite")
    assert (metadata.preprocess.mean, metadata.preprocess.std) == ((0.0,), (1.0,))
    assert metadata.output.kind == "logits" and sources["output_kind"] == "the graph does not end in a softmax"
