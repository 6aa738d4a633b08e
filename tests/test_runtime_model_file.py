"""slidelite.model_file and slidelite.backends: format detection, bad model files, metadata, the registry."""
from __future__ import annotations

import importlib.abc
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from slidelite.backends import (BACKEND_NAMES, BACKENDS, FORMAT_TARGETS, INSTALL_DOC_HINT, available_backends, create_backend,
                                physical_cores, resolve_threads)
from slidelite.backends._onnx_reader import ProtobufError, iter_fields, model_metadata_props
from slidelite.errors import BackendUnavailableError, MetadataError, ModelError, UsageError
from slidelite.model_file import check_signature, open_model_file, read_metadata
from tests._runtime_fixtures import fixture_metadata, make_fixture_onnx, make_tflite_like


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return make_fixture_onnx(tmp_path_factory.mktemp("m") / "model.onnx")


class BlockEngines(importlib.abc.MetaPathFinder):
    """Makes the named modules look uninstalled (as on a board without them), for this test only."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names or fullname in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}")
        return None


@pytest.fixture
def block(monkeypatch):
    def install(*names):
        monkeypatch.setattr(sys, "meta_path", [BlockEngines(names), *sys.meta_path])
        for name in list(sys.modules):
            if name.split(".")[0] in names or name in names:
                monkeypatch.delitem(sys.modules, name)
    return install


# ---- ONNX files ---------------------------------------------------------------------------------------------

def test_onnx_model_file(onnx_model):
    model = open_model_file(onnx_model)
    assert (model.format, model.size, model.metadata_error) == ("onnx", onnx_model.stat().st_size, None)
    assert read_metadata(model).labels[3] == "cat"
    import hashlib
    assert model.sha256 == hashlib.sha256(onnx_model.read_bytes()).hexdigest()


def test_metadata_is_read_without_onnx_and_matches_onnx(onnx_model):
    import onnx
    props = {p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}
    assert model_metadata_props(onnx_model.read_bytes()) == props
    assert json.loads(props["slidelite.metadata"]) == fixture_metadata()


def test_protobuf_reader_walks_fields():
    # field 1 varint 150, field 2 "hi", field 3 fixed32 7
    buf = bytes([0x08, 0x96, 0x01, 0x12, 0x02]) + b"hi" + bytes([0x1D, 7, 0, 0, 0])
    assert list(iter_fields(buf)) == [(1, 0, 150), (2, 2, (5, 7)), (3, 5, 7)]
    with pytest.raises(ProtobufError) as exc:
        list(iter_fields(buf[:6]))
    assert exc.value.truncated


def test_not_a_model(tmp_path):
    for name, content in [("text.onnx", b"hello, I am not a model\n"), ("photo.tflite", b"\xff\xd8\xff\xe0" * 100),
                          ("tiny.onnx", b"\x00")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ModelError, match=f"^{path}: not an ONNX or TFLite model file$"):
            open_model_file(path)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_onnx(tmp_path, onnx_model, keep):
    data = onnx_model.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match=f"^{path}: truncated ONNX model file"):
        open_model_file(path)


@pytest.mark.parametrize("make,words", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b""), "zero-byte file: pass an .onnx or .tflite model file"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: None, "missing file"),
])
def test_unusable_paths(tmp_path, make, words):
    path = tmp_path / "model.onnx"
    make(path)
    with pytest.raises(ModelError) as exc:
        open_model_file(path)
    assert str(exc.value).startswith(f"{path}: ") and words in str(exc.value)


def test_onnx_without_metadata(tmp_path):
    model = open_model_file(make_fixture_onnx(tmp_path / "bare.onnx", embed=False))
    assert model.metadata is None
    with pytest.raises(MetadataError, match="bare.onnx has no slidelite metadata: pass --labels, --mean, --std .* `slidelite metadata embed`"):
        read_metadata(model)


def test_unknown_schema_version_says_upgrade(tmp_path):
    doc = fixture_metadata()
    doc["schema_version"] = 2
    model = open_model_file(make_fixture_onnx(tmp_path / "future.onnx", metadata=doc))
    with pytest.raises(MetadataError, match="schema version 2 is not supported.*pip install -U slidelite"):
        read_metadata(model)


def test_invalid_metadata_json(tmp_path):
    path = make_fixture_onnx(tmp_path / "m.onnx", metadata={"schema": "slidelite.metadata"})
    with pytest.raises(MetadataError, match="schema_version"):
        read_metadata(open_model_file(path))


# ---- TFLite files -------------------------------------------------------------------------------------------

def test_tflite_metadata_from_the_appended_zip(tmp_path):
    doc = fixture_metadata(layout="NHWC", dtype="int8")
    model = open_model_file(make_tflite_like(tmp_path / "m.tflite", metadata=doc))
    assert model.format == "tflite"
    assert read_metadata(model).input.quantization.zero_point == 0
    assert read_metadata(model).to_dict()["input"] == doc["input"]


def test_tflite_without_metadata(tmp_path):
    model = open_model_file(make_tflite_like(tmp_path / "bare.tflite"))
    with pytest.raises(MetadataError, match="has no slidelite metadata"):
        read_metadata(model)


@pytest.mark.parametrize("keep", [12, 100, -1])
def test_truncated_tflite(tmp_path, keep):
    data = make_tflite_like(tmp_path / "m.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[:keep])
    with pytest.raises(ModelError, match=f"^{path}: truncated TFLite model file"):
        open_model_file(path)


# ---- backends -------------------------------------------------------------------------------------------------

def test_registry_matches_the_documented_table():
    assert BACKEND_NAMES == ("onnxruntime", "litert", "tflite", "numpy")
    assert BACKENDS["onnxruntime"][:3] == ("slidelite.backends.onnxruntime_backend:OnnxRuntimeBackend", ("onnx",), "onnx")
    assert BACKENDS["litert"][:3] == ("slidelite.backends.litert_backend:LiteRTBackend", ("tflite",), "litert")
    assert BACKENDS["tflite"][:3] == ("slidelite.backends.tflite_backend:TFLiteRuntimeBackend", ("tflite",), "tflite")
    assert BACKENDS["numpy"][:3] == ("slidelite.backends.numpy_backend:NumpyBackend", ("onnx", "tflite"), None)
    assert FORMAT_TARGETS == {("numpy", "tflite"): "slidelite.backends.numpy_tflite_backend:NumpyTFLiteBackend"}


def test_onnxruntime_is_the_auto_choice_for_onnx(onnx_model):
    assert available_backends("onnx")[0] == "onnxruntime"
    with create_backend(open_model_file(onnx_model), threads=1) as backend:
        assert backend.name == "onnxruntime" and backend.thread_safe
        assert (backend.input_shape, backend.input_dtype, backend.output_shape) == ((None, 3, 32, 32), "float32",
                                                                                    (None, 10))
        assert backend.run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)


def test_onnxruntime_session_settings(onnx_model):
    backend = create_backend(open_model_file(onnx_model), "onnxruntime", threads=3)
    options = backend._session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    import onnxruntime as ort
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_auto_falls_back_to_numpy_for_tflite_without_an_engine(tmp_path, block):
    from tests.corpus.tflite_model import make_tflite_classifier

    model = open_model_file(make_tflite_classifier(tmp_path / "model.tflite"))
    block("ai_edge_litert", "tflite_runtime")
    assert available_backends("tflite") == ["numpy"]
    backend = create_backend(model)
    assert type(backend).__name__ == "NumpyTFLiteBackend" and backend.name == "numpy"


def test_missing_tflite_engine_names_the_extra(tmp_path, block):
    block("ai_edge_litert", "tflite_runtime", "slidelite.backends.numpy_backend")
    model = open_model_file(make_tflite_like(tmp_path / "model.tflite"))
    assert available_backends("tflite") == []
    with pytest.raises(BackendUnavailableError) as exc:
        create_backend(model)
    assert str(exc.value) == f'no backend for {model.path}: pip install "slidelite[litert]" ({INSTALL_DOC_HINT})'


def test_missing_onnx_engine_names_the_extra(onnx_model, block):
    block("onnxruntime", "slidelite.backends.numpy_backend")
    with pytest.raises(BackendUnavailableError) as exc:
        create_backend(open_model_file(onnx_model))
    assert str(exc.value) == f'no backend for {onnx_model}: pip install "slidelite[onnx]" ({INSTALL_DOC_HINT})'


def test_importing_the_registry_does_not_import_engines():
    import subprocess
    code = "import sys, slidelite.backends, slidelite.model_file; print(sorted(m for m in ('onnxruntime', " \
           "'ai_edge_litert', 'tflite_runtime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name,error,words", [
    ("nope", UsageError, "unknown backend 'nope': choose one of auto, onnxruntime, litert, tflite, numpy"),
    ("litert", UsageError, "backend 'litert' cannot run onnx models"),
])
def test_bad_backend_names(onnx_model, name, error, words):
    with pytest.raises(error, match=words):
        create_backend(open_model_file(onnx_model), name)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "4"])
def test_bad_thread_counts(onnx_model, threads):
    with pytest.raises(UsageError, match="threads must be a positive integer"):
        create_backend(open_model_file(onnx_model), threads=threads)


def test_default_threads_are_physical_cores():
    cores = physical_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert resolve_threads(None) == cores and resolve_threads(2) == 2


def test_onnxruntime_load_failure_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("NoSuchOperator", ["x"], ["y"], domain="no.such.domain")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("no.such.domain", 1)])
    path = tmp_path / "weird.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError) as exc:
        create_backend(open_model_file(path))
    assert str(exc.value).startswith(f"{path}: onnxruntime cannot load the model (") and "\n" not in str(exc.value)


# ---- metadata vs the loaded model ------------------------------------------------------------------------------

def test_label_count_mismatch_names_both_numbers(tmp_path):
    doc = fixture_metadata(labels=[f"class{i}" for i in range(12)])
    model = open_model_file(make_fixture_onnx(tmp_path / "m.onnx", metadata=doc))
    with create_backend(model) as backend, pytest.raises(MetadataError) as exc:
        check_signature(read_metadata(model), backend, model.name)
    assert str(exc.value) == f"{model.path}: metadata has 12 labels but the model output has 10 classes"


@pytest.mark.parametrize("change,words", [
    (lambda d: d["input"].update(height=64, width=64), "metadata input NCHW [3, 64, 64] does not match the model "
                                                      "input shape [?, 3, 32, 32]"),
    (lambda d: d["input"].update(layout="NHWC"), "does not match the model input shape"),
    (lambda d: d["input"].update(dtype="uint8", quantization={"scale": 0.02, "zero_point": 128}),
     "metadata input dtype uint8 does not match the model's float32"),
])
def test_input_mismatch(tmp_path, change, words):
    doc = fixture_metadata()
    change(doc)
    model = open_model_file(make_fixture_onnx(tmp_path / "m.onnx", metadata=doc))
    with create_backend(model) as backend, pytest.raises(MetadataError, match=words.replace("[", r"\[").replace("?", r"\?")):
        check_signature(read_metadata(model), backend, model.name)
