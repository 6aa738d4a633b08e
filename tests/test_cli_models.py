"""The shipped-model registry (``slidelite.models``) and ``slidelite models``.

Resolution and checksum verification are tested on a temporary registry (a manifest plus real fixture
models); the packaged manifest itself is checked for integrity, whatever it lists.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from slidelite import models
from slidelite.backends import available_backends
from slidelite.cli._common import format_accuracy, human_size
from slidelite.errors import ModelError
from tests._cli_fixtures import SAMPLE, make_registry, run_cli
from tests._runtime_fixtures import make_fixture_onnx


@pytest.fixture()
def registry(tmp_path: Path) -> Path:
    """A registry with a default model shipped as .onnx and (a stand-in) .tflite, and a second model."""
    make_fixture_onnx(tmp_path / "fixture.onnx")
    (tmp_path / "fixture.tflite").write_bytes(b"stand-in bytes: only the checksum is read here")
    make_fixture_onnx(tmp_path / "grey.onnx", color_mode="L")
    return make_registry(tmp_path, [
        {"name": "fixture", "file": "fixture.onnx", "default": True},
        {"name": "fixture", "file": "fixture.tflite", "default": True, "precision": "int8"},
        {"name": "grey", "file": "grey.onnx"},
    ])


def test_packaged_manifest_is_consistent() -> None:
    """Every model the wheel's manifest lists exists with its recorded size and sha256; at most one default name."""
    shipped = models.list_shipped()
    for model in shipped:
        assert model.path.parent == Path(models.__file__).parent
        assert model.path.stat().st_size == model.size, model.file
        assert models.sha256_of(model.path) == model.sha256, model.file
        assert model.format in ("onnx", "tflite") and model.path.suffix == f".{model.format}"
    assert len({m.name for m in shipped if m.default}) <= 1


def test_list_shipped_reads_the_manifest(registry: Path) -> None:
    shipped = models.list_shipped(registry)
    assert [(m.name, m.format, m.precision, m.default) for m in shipped] == [
        ("fixture", "onnx", "fp32", True), ("fixture", "tflite", "int8", True), ("grey", "onnx", "fp32", False)]
    assert shipped[0].path == registry / "fixture.onnx"
    assert shipped[0].size == (registry / "fixture.onnx").stat().st_size
    assert shipped[0].to_dict()["accuracy"] == {"top1": 0.5, "dataset": "fixture"}


def test_default_and_names_resolve_by_format_preference(registry: Path) -> None:
    expected = "fixture.tflite" if available_backends("tflite") else "fixture.onnx"
    assert models.resolve_model(None, directory=registry).name == expected
    assert models.resolve_model("fixture", directory=registry).name == expected
    assert models.resolve_model("fixture", "onnxruntime", directory=registry).name == "fixture.onnx"
    assert models.resolve_model("fixture", "litert", directory=registry).name == "fixture.tflite"
    assert models.resolve_model("fixture.tflite", directory=registry).name == "fixture.tflite"
    assert models.resolve_model("grey", "litert", directory=registry).name == "grey.onnx"  # the only format


def test_an_existing_file_wins_over_a_name(registry: Path, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cwd").mkdir()
    make_fixture_onnx(tmp_path / "cwd" / "grey", seed=3)
    monkeypatch.chdir(tmp_path / "cwd")
    assert models.resolve_model("grey", directory=registry) == Path("grey")


def test_environment_variable_points_the_registry(registry: Path, monkeypatch) -> None:
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(registry))
    assert models.resolve_model("grey") == registry / "grey.onnx"


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_a_damaged_shipped_file_is_refused(registry: Path, damage: str) -> None:
    path = registry / "grey.onnx"
    data = path.read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    assert models.resolve_model("grey", directory=registry) == path
    changed = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:] if damage == "tamper" else data[: len(data) // 2]
    path.write_bytes(changed)
    with pytest.raises(ModelError) as caught:
        models.resolve_model("grey", directory=registry)
    got = hashlib.sha256(changed).hexdigest()
    assert str(caught.value) == (f"{path}: sha256 mismatch (expected {expected}, got {got}): "
                                 "the installed file is corrupt; reinstall slidelite")
    # a shipped file passed by path is verified too
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.resolve_model(str(path), directory=registry)
    assert models.resolve_model("grey", directory=registry, verify_checksum=False) == path


def test_verification_is_cached_per_file_state(registry: Path) -> None:
    path = registry / "grey.onnx"
    models.resolve_model("grey", directory=registry)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    assert models._VERIFIED[key] == hashlib.sha256(path.read_bytes()).hexdigest()
    models._VERIFIED[key] = "0" * 64  # the cached digest is what the next resolution trusts
    with pytest.raises(ModelError, match="expected .*, got 0{64}"):
        models.resolve_model("grey", directory=registry)
    del models._VERIFIED[key]


def test_missing_shipped_file(registry: Path) -> None:
    (registry / "grey.onnx").unlink()
    with pytest.raises(ModelError, match=r"grey.onnx: shipped model file is missing: .*reinstall slidelite"):
        models.resolve_model("grey", directory=registry)


def test_unknown_name_lists_the_shipped_names(registry: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        models.resolve_model("resnet", directory=registry)
    assert str(caught.value) == ("unknown model 'resnet': not a file and not a shipped model "
                                 "(shipped models: fixture, grey); see `slidelite models`")
    with pytest.raises(ModelError, match=r"^nowhere/model.onnx: model file not found"):
        models.resolve_model("nowhere/model.onnx", directory=registry)
    with pytest.raises(ModelError, match="is a directory"):
        models.resolve_model(str(tmp_path), directory=registry)


def test_no_default_installed(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        models.resolve_model(None, directory=tmp_path)
    assert str(caught.value) == models.NO_DEFAULT_MESSAGE
    make_fixture_onnx(tmp_path / "a.onnx")
    make_registry(tmp_path, [{"name": "a", "file": "a.onnx"}])
    with pytest.raises(ModelError, match="no default model is installed"):
        models.resolve_model(None, directory=tmp_path)


@pytest.mark.parametrize("manifest", ['{"models": {}}', "not json", '{"models": [{"name": "x"}]}'])
def test_a_broken_manifest_is_one_clear_error(tmp_path: Path, manifest: str) -> None:
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(ModelError, match="manifest.*reinstall slidelite"):
        models.list_shipped(tmp_path)
    run = run_cli(["models"], env={models.MODELS_DIR_ENV: str(tmp_path)})
    assert run.exit_code == 1 and len(run.error_lines) == 1 and run.error_lines[0].startswith("error: ")


def test_classify_uses_the_default_and_refuses_a_tampered_one(registry: Path) -> None:
    env = {models.MODELS_DIR_ENV: str(registry)}
    run = run_cli(["classify", "--backend", "onnxruntime", "--json", SAMPLE], env=env)
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["path"] == str(SAMPLE)
    path = registry / "fixture.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    run = run_cli(["classify", "--backend", "onnxruntime", SAMPLE], env=env)
    assert run.exit_code == 1 and run.stdout == ""
    assert len(run.error_lines) == 1
    assert run.error_lines[0].startswith(f"error: {path}: sha256 mismatch (expected ")


def test_classify_without_a_default_says_so(tmp_path: Path) -> None:
    run = run_cli(["classify", SAMPLE], env={models.MODELS_DIR_ENV: str(tmp_path)})
    assert run.exit_code == 1 and run.stdout == ""
    assert run.error_lines == [f"error: {models.NO_DEFAULT_MESSAGE}"]


def test_models_command_lists_shipped_and_zoo(registry: Path) -> None:
    env = {models.MODELS_DIR_ENV: str(registry)}
    run = run_cli(["models", "--json"], env=env)
    assert run.exit_code == 0, run.stderr
    document = json.loads(run.stdout)
    assert [m["file"] for m in document["shipped"]] == ["fixture.onnx", "fixture.tflite", "grey.onnx"]
    first = document["shipped"][0]
    assert first["path"] == str(registry / "fixture.onnx")
    assert first["sha256"] == hashlib.sha256((registry / "fixture.onnx").read_bytes()).hexdigest()
    assert first["size"] == (registry / "fixture.onnx").stat().st_size
    assert first["precision"] == "fp32" and first["accuracy"]["top1"] == 0.5 and first["default"] is True
    assert document["zoo"] == list(models.ZOO_ARCHITECTURES)

    text = run_cli(["models"], env=env)
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    row = next(line for line in lines if line.startswith("*fixture") and "tflite" in line)
    tflite_size = (registry / "fixture.tflite").stat().st_size
    assert row.split()[:3] == ["*fixture", "tflite", "int8"] and f" {human_size(tflite_size)} " in row
    assert "top1=0.5 (fixture)" in row
    assert any(str(registry / "grey.onnx") in line for line in lines)
    assert any("slide_swin_tiny" in line for line in lines)


def test_models_command_with_nothing_shipped(tmp_path: Path) -> None:
    run = run_cli(["models"], env={models.MODELS_DIR_ENV: str(tmp_path)})
    assert run.exit_code == 0
    assert "No models are shipped" in run.stdout and "slide_swin_tiny" in run.stdout


@pytest.mark.convert
def test_zoo_names_match_the_zoo_registry() -> None:
    """The static list `slidelite models` prints (no torch) must equal the zoo's registry."""
    import slidelite.zoo as zoo

    assert list(models.ZOO_ARCHITECTURES) == zoo.list_models(), (
        "update ZOO_ARCHITECTURES in slidelite/models/__init__.py to slidelite.zoo.list_models()")


def test_classify_picks_the_format_of_the_requested_backend(registry: Path) -> None:
    """--backend litert selects the shipped .tflite file (here a stand-in, so it fails naming that file);
    --backend onnxruntime selects the .onnx file, whatever is installed."""
    env = {models.MODELS_DIR_ENV: str(registry)}
    run = run_cli(["classify", "--backend", "litert", SAMPLE], env=env)
    assert run.exit_code == 1 and len(run.error_lines) == 1
    assert str(registry / "fixture.tflite") in run.error_lines[0]
    run = run_cli(["classify", "--backend", "onnxruntime", "--model", "fixture", SAMPLE], env=env)
    assert run.exit_code == 0, run.stderr


def test_accuracy_counts_print_as_integers() -> None:
    text = format_accuracy({"dataset": "Fashion-MNIST test split", "top1": 0.924, "images": 10000})
    assert text == "top1=0.924 images=10000 (Fashion-MNIST test split)"
