"""The LiteRT and tflite-runtime backends on real converted files (random-init slide_swin_micro): interface
facts, XNNPACK threads, integer inputs, batches on batch-1 models, a bare .tflite without metadata
(clear message; ``slidelite info`` still shows its signature), broken files; tflite-runtime runs in
``.venv-tflite`` (it needs numpy<2) and gives the LiteRT top-1 on real photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slidelite.backends import create_backend
from slidelite.backends.litert_backend import LiteRTBackend
from slidelite.classifier import Classifier
from slidelite.convert.samples import write_sample_photos
from slidelite.errors import MetadataError, ModelError
from slidelite.model_file import open_model_file
from tests._cli_fixtures import run_cli
from tests._tflite_fixtures import convert_fp32_and_int8, run_in_tflite_venv

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """fp32, full-int8 ("int8") and dynamic-int8 micro files, the photo folder, and the fp32 flatbuffer without
    any metadata."""
    folder = tmp_path_factory.mktemp("backends")
    photos = folder / "photos"
    write_sample_photos(photos, crops=1)
    out = convert_fp32_and_int8(folder, photos, 5, model="slide_swin_micro", min_agreement=0.5, force=True,
                                recipes=("full-int8", "dynamic-int8"))
    bare = folder / "bare.tflite"
    data = out["fp32"].read_bytes()
    bare.write_bytes(data[:_flatbuffer_end(data)])
    return out, photos, bare


def _flatbuffer_end(data: bytes) -> int:
    """Where the appended metadata ZIP starts (its first local file header)."""
    return data.index(b"PK\x03\x04")


def test_litert_backend_facts(files):
    out, _, _ = files
    backend = create_backend(open_model_file(out["fp32"]), "litert", threads=2)
    assert isinstance(backend, LiteRTBackend) and backend.name == "litert" and backend.version.count(".") >= 1
    assert backend.thread_safe is False and backend.threads == 2
    assert backend.input_shape == (1, 28, 28, 3) and backend.input_dtype == "float32"
    assert backend.output_shape == (1, 10) and backend.input_quantization is None
    logits = backend.run(np.zeros((1, 28, 28, 3), np.float32))
    assert logits.shape == (1, 10) and logits.dtype == np.float32
    backend.close()
    with pytest.raises(ModelError, match="closed"):
        backend.run(np.zeros((1, 28, 28, 3), np.float32))


def test_batch_runs_image_by_image_on_batch_one_models(files):
    out, _, _ = files
    with create_backend(open_model_file(out["fp32"]), "litert", threads=1) as backend:
        batch = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 3)).astype(np.float32)
        together = backend.run(batch)
        one_by_one = np.concatenate([backend.run(batch[i:i + 1]) for i in range(3)])
        assert together.shape == (3, 10)
        np.testing.assert_array_equal(together, one_by_one)


def test_integer_input_is_quantized_from_the_tensor_parameters(files):
    out, _, _ = files
    with create_backend(open_model_file(out["int8"]), "litert", threads=2) as backend:
        assert backend.input_dtype == "uint8" and backend.input_quantization == (1.0, 0)
        pixels = np.random.default_rng(2).integers(0, 256, (1, 28, 28, 3))
        from_uint8 = backend.run(pixels.astype(np.uint8))
        from_float = backend.run(pixels.astype(np.float32))  # quantized here: round(x / 1) + 0
        np.testing.assert_array_equal(from_uint8, from_float)
        assert from_uint8.dtype == np.float32  # float logits out of the integer graph


def test_thread_count_reaches_the_interpreter(files):
    out, _, _ = files
    results = []
    for threads in (1, 2):
        with create_backend(open_model_file(out["fp32"]), "litert", threads=threads) as backend:
            assert backend.threads == threads
            results.append(backend.run(np.full((1, 28, 28, 3), 128, np.float32)))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_tflite_without_metadata_is_explained_and_info_shows_the_signature(files):
    _, photos, bare = files
    # the flatbuffer alone keeps its standard TFLite Metadata, which names a labels file the cut-off zip lost
    why = "the labels file 'labels.txt' that its TFLite Metadata names is not in the model's associated files"
    model = open_model_file(bare)
    assert model.metadata is None and why in model.metadata_error and "slidelite metadata embed" in model.metadata_error
    with pytest.raises(MetadataError, match="labels file 'labels.txt'"):
        Classifier.from_file(str(bare))
    run = run_cli(["classify", "-m", bare, next(photos.glob("*.png"))])
    assert run.exit_code == 1 and len(run.stderr.strip().splitlines()) == 1 and why in run.stderr
    info = run_cli(["info", bare])
    assert "[1, 28, 28, 3] float32" in info.stdout and "[1, 10]" in info.stdout


def test_broken_tflite_files_fail_in_one_line(tmp_path, files):
    out, _, _ = files
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(out["fp32"].read_bytes()[:4096])
    with pytest.raises(ModelError, match="truncated"):
        open_model_file(cut)
    scrambled = bytearray(out["fp32"].read_bytes()[:_flatbuffer_end(out["fp32"].read_bytes())])
    scrambled[8:64] = bytes(56)  # valid identifier, broken root table
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(scrambled))
    with pytest.raises(ModelError) as info:
        create_backend(open_model_file(bad), "litert", threads=1)
    assert "\n" not in str(info.value)


TFLITE_RUNTIME_SCRIPT = r"""
import json, sys
from slidelite.classifier import Classifier
from slidelite.errors import SlideliteError
out = {}
try:
    with Classifier.from_file(sys.argv[1], backend="tflite", max_results=1) as clf:
        out["backend"] = [clf.backend.name, clf.backend.version]
        for path in sys.argv[2:]:
            best = clf.classify(path).categories[0]
            out[path] = [best.index, best.score]
except SlideliteError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


@pytest.mark.parametrize("model, tolerance", [("fp32", 1e-4), ("dynamic-int8", 2e-3)])
def test_tflite_runtime_backend_matches_litert(files, model, tolerance):
    """Same top-1 and score in tflite-runtime 2.14 as in LiteRT. dynamic-int8: the two runtimes quantize the
    activations differently (hence the tolerance); with per-channel weights tflite-runtime's scores were wrong."""
    out, photos, _ = files
    images = sorted(str(p) for p in photos.glob("*.png"))
    proc = run_in_tflite_venv(["-c", TFLITE_RUNTIME_SCRIPT, out[model], *images])
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert theirs["backend"] == ["tflite", "2.14.0"]
    with Classifier.from_file(str(out[model])) as clf:
        for image in images:
            best = clf.classify(image).categories[0]
            assert theirs[image][0] == best.index and theirs[image][1] == pytest.approx(best.score, abs=tolerance)


def test_tflite_runtime_refuses_int8_ops_it_would_abort_on(files):
    """tflite-runtime 2.14 aborts the process on some int8 ADD/SUB requantizations; the backend refuses first
    (or runs the model when none is present)."""
    out, photos, _ = files
    image = str(next(photos.glob("*.png")))
    proc = run_in_tflite_venv(["-c", TFLITE_RUNTIME_SCRIPT, out["int8"], image])
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in theirs:
        assert "would abort on int8" in theirs["error"] and "litert" in theirs["error"]
    else:
        with Classifier.from_file(str(out["int8"])) as clf:
            assert theirs[image][0] == clf.classify(image).categories[0].index


PER_CHANNEL_HYBRID_SCRIPT = """
import sys
from slidelite.backends import create_backend
from slidelite.errors import ModelError
from slidelite.model_file import open_model_file
try:
    create_backend(open_model_file(sys.argv[1]), "tflite", threads=1)
    print("loaded")
except ModelError as exc:
    print("refused:", exc)
"""


def test_tflite_runtime_refuses_per_channel_dynamic_range_fc(files, tmp_path):
    """tflite-runtime 2.14 computes a hybrid FULLY_CONNECTED with per-channel int8 weights wrongly (silently); a
    file made that way (ai-edge-quantizer's stock dynamic-range recipe) is refused, LiteRT runs it, and the
    converter's own dynamic-int8 file (per-tensor weights) still loads."""
    from ai_edge_quantizer import quantizer, recipe

    from slidelite.convert.tflite_quantize import pack_buffers_inline

    out, _, bare = files
    entries = [dict(entry, operation="FULLY_CONNECTED") for entry in recipe.dynamic_wi8_afp32()]
    assert str(entries[0]["op_config"]["weight_tensor_config"]["granularity"]).endswith("CHANNELWISE")
    per_channel = tmp_path / "per_channel_hybrid.tflite"
    per_channel.write_bytes(pack_buffers_inline(bytes(quantizer.Quantizer(bytearray(bare.read_bytes()),
                                                                          entries).quantize().quantized_model)))
    litert = create_backend(open_model_file(per_channel), "litert", threads=1)
    assert litert.run(np.zeros((1, 28, 28, 3), np.float32)).shape == (1, 10)
    lines = {}
    for name, path in (("per-channel", per_channel), ("dynamic-int8", out["dynamic-int8"])):
        proc = run_in_tflite_venv(["-c", PER_CHANNEL_HYBRID_SCRIPT, path])
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines[name] = proc.stdout.strip().splitlines()[-1]
    assert lines["per-channel"].startswith("refused:") and "per-channel int8 weights wrongly" in lines["per-channel"]
    assert "litert" in lines["per-channel"] and lines["dynamic-int8"] == "loaded"
