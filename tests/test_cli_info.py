"""``slidelite info MODEL``: file facts, integrity against the manifest, backend, signature, metadata."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from slidelite import models
from tests._cli_fixtures import make_registry, run_cli, run_subprocess
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_fixture_onnx(tmp_path_factory.mktemp("info") / "model.onnx")


def _info_json(*args: object, env=None) -> tuple:
    run = run_cli(["info", "--json", *args], env=env)
    return run, (json.loads(run.stdout) if run.stdout else None)


def test_info_text(model: Path) -> None:
    run = run_cli(["info", model])
    assert run.exit_code == 0 and run.stderr == ""
    head, table = run.stdout.split("\n\ncan each backend run this file as it is? (checked by loading it)\n")
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in head.splitlines()}
    size = model.stat().st_size
    assert fields["file"] == str(model)
    assert fields["format"].startswith("onnx, ") and f"({size} bytes)" in fields["format"]
    assert fields["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert fields["backend"].startswith("onnxruntime ") and "installed for onnx: onnxruntime, numpy" in fields["backend"]
    assert "(auto: the first usable of onnxruntime, numpy;" in fields["backend"]
    rows = [line.split(None, 2) for line in table.splitlines()[1:]]
    assert [row[:2] for row in rows] == [["onnxruntime", "yes"], ["litert", "no"], ["tflite", "no"], ["numpy", "yes"]]
    assert rows[1][2] == rows[2][2] == "runs tflite files only" and rows[3][2].startswith("loads the file (numpy ")
    assert fields["input"] == "pixels [?, 3, 32, 32] float32"
    assert fields["output"] == "[?, 10]"
    assert fields["labels"] == "10: airplane, automobile, bird, cat, deer, ..."
    assert fields["input spec"] == "'pixels' NCHW 32x32 float32"
    assert fields["preprocess"].startswith("RGB, resize shorter_side, crop_pct 0.875, bicubic, mean [0.485, 0.456, 0.406]")
    assert fields["output spec"] == "'scores' logits"
    assert fields["name"] == "fixture_cnn (test fixture)"


def test_info_json(model: Path) -> None:
    run, report = _info_json(model)
    assert run.exit_code == 0 and run.stderr == ""
    assert report["path"] == str(model) and report["format"] == "onnx" and report["size"] == model.stat().st_size
    assert report["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert report["shipped"] is None and report["problems"] == []
    assert report["backend"]["name"] == "onnxruntime" and "onnxruntime" in report["backends_installed"]
    assert [(v["backend"], v["can_run"]) for v in report["backends"]] == [
        ("onnxruntime", True), ("litert", False), ("tflite", False), ("numpy", True)]
    assert report["signature"] == {"input": {"name": "pixels", "shape": [None, 3, 32, 32], "dtype": "float32"},
                                   "output": {"shape": [None, 10]}}
    expected = fixture_metadata()
    assert {k: report["metadata"][k] for k in ("schema", "schema_version", "name", "labels")} == {
        k: expected[k] for k in ("schema", "schema_version", "name", "labels")}
    assert report["metadata"]["preprocess"]["mean"] == expected["preprocess"]["mean"]


def test_info_nhwc_uint8_signature(tmp_path: Path) -> None:
    path = make_fixture_onnx(tmp_path / "q.onnx", layout="NHWC", dtype="uint8", dynamic_batch=False)
    run, report = _info_json(path)
    assert run.exit_code == 0, run.stderr
    assert report["signature"]["input"] == {"name": "pixels", "shape": [1, 32, 32, 3], "dtype": "uint8"}
    assert report["metadata"]["input"]["quantization"] == {"scale": 0.02, "zero_point": 128}
    text = run_cli(["info", path]).stdout
    assert "'pixels' NHWC 32x32 uint8, quantization scale 0.02 zero point 128" in text


@pytest.mark.parametrize("variant, fragment", [
    (dict(embed=False), "has no slidelite metadata"),
    (dict(num_classes=7), "metadata has 10 labels but the model output has 7 classes"),
    (dict(metadata={**fixture_metadata(), "schema_version": 2}), "metadata schema version 2 is not supported"),
])
def test_unusable_model_shows_signature_and_one_warning(tmp_path: Path, variant: dict, fragment: str) -> None:
    path = make_fixture_onnx(tmp_path / "m.onnx", **variant)
    run = run_cli(["info", path])
    assert run.exit_code == 0
    assert "input:" in run.stdout and "pixels [?, 3, 32, 32] float32" in run.stdout
    (line,) = run.error_lines
    assert line.startswith("warning: ") and fragment in line
    run, report = _info_json(path)
    assert run.exit_code == 0 and report["signature"]["input"]["name"] == "pixels"
    assert len(report["problems"]) == 1 and fragment in report["problems"][0]


@pytest.mark.parametrize("content, fragment", [
    (b"not a model at all\n" * 5, "not an ONNX or TFLite model file"),
    (b"", "zero-byte"),
])
def test_not_a_model_is_one_error_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    run = run_cli(["info", path])
    assert run.exit_code == 1 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith(f"error: {path}: ") and fragment in line


def test_truncated_model_subprocess(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(model.read_bytes()[:-300])
    run = run_subprocess(["info", path])
    assert run.exit_code == 1 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith(f"error: {path}: truncated ONNX model file")


def test_backend_that_cannot_run_the_format_is_a_usage_error(model: Path) -> None:
    run = run_cli(["info", "--backend", "litert", model])
    assert run.exit_code == 2 and run.stdout == ""
    (line,) = run.error_lines
    assert line.startswith(f"error: backend 'litert' cannot run onnx models ({model}); use one of: auto, onnxruntime")


def test_shipped_model_integrity(tmp_path: Path) -> None:
    path = make_fixture_onnx(tmp_path / "fixture.onnx")
    make_registry(tmp_path, [{"name": "fixture", "file": "fixture.onnx", "default": True}])
    env = {models.MODELS_DIR_ENV: str(tmp_path)}
    expected = hashlib.sha256(path.read_bytes()).hexdigest()

    run, report = _info_json("fixture", env=env)
    assert run.exit_code == 0, run.stderr
    assert report["shipped"] == {"name": "fixture", "sha256": expected, "sha256_matches": True}
    assert "(shipped model 'fixture': matches the manifest)" in run_cli(["info", "fixture"], env=env).stdout

    path.write_bytes(path.read_bytes()[:-1] + b"\x01")  # same size, one byte changed
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    run, report = _info_json(path, env=env)
    assert run.exit_code == 1
    assert report["shipped"] == {"name": "fixture", "sha256": expected, "sha256_matches": False}
    # the changed byte also breaks the embedded metadata (a warning); the integrity failure is the error
    assert [line for line in run.error_lines if line.startswith("error: ")] == run.error_lines[-1:]
    assert run.error_lines[-1] == (f"error: {path}: sha256 mismatch (expected {expected}, got {got}): "
                                   "the installed file is corrupt; reinstall slidelite")
    text = run_cli(["info", "fixture"], env=env)
    assert text.exit_code == 1 and "MISMATCH" in text.stdout


def test_unknown_model_name(tmp_path: Path) -> None:
    run = run_cli(["info", "no_such_model"], env={models.MODELS_DIR_ENV: str(tmp_path)})
    assert run.exit_code == 1
    assert run.error_lines == ["error: unknown model 'no_such_model': not a file and not a shipped model "
                               "(no models are shipped); see `slidelite models`"]
