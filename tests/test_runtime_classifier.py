"""slidelite.Classifier end to end with a real ONNX model: numbers checked against an independent numpy
computation (preprocessing and model math), batching, thread safety, options and every bad input."""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from slidelite import (Classifier, ClassifierOptions, ImageError, MetadataError, ModelError, UsageError)
from slidelite.backends.onnxruntime_backend import OnnxRuntimeBackend
from tests._runtime_fixtures import (LABELS, fixture_metadata, make_fixture_onnx, reference_forward,
                                     reference_preprocess, softmax)

PHOTOS = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut(),
          "rocket": data.rocket(), "motorcycle": data.stereo_motorcycle()[0]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runtime")
    for name, photo in PHOTOS.items():
        Image.fromarray(photo).save(path / f"{name}.jpg", quality=95)
    return path


@pytest.fixture(scope="module")
def model(folder) -> Path:
    return make_fixture_onnx(folder / "model.onnx")


def expected_scores(photo: np.ndarray, **variant) -> np.ndarray:
    """Independent pipeline: numpy/PIL preprocessing written in the test fixtures + the model in numpy."""
    real = reference_preprocess(Image.fromarray(photo))
    tensor = real[None] if variant.get("layout") == "NHWC" else real.transpose(2, 0, 1)[None]
    dtype = variant.get("dtype", "float32")
    if dtype != "float32":
        scale, zero = {"uint8": (0.02, 128), "int8": (0.02, 0)}[dtype]
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        tensor = np.clip(np.rint(tensor / scale) + zero, low, high)
    raw = reference_forward(tensor, **variant)
    if variant.get("output_dtype", "float32") != "float32":
        raw = (raw - 128) * 0.05
    return raw[0] if variant.get("output_kind") == "probabilities" else softmax(raw)[0]


@pytest.mark.parametrize("variant,tolerance", [
    ({}, 1e-5), ({"layout": "NHWC"}, 1e-5), ({"dtype": "uint8"}, 2e-3), ({"dtype": "int8", "layout": "NHWC"}, 2e-3),
    ({"output_kind": "probabilities"}, 1e-5), ({"output_dtype": "uint8"}, 0.02), ({"dynamic_batch": False}, 1e-5),
])
def test_scores_match_an_independent_computation(folder, variant, tolerance):
    path = make_fixture_onnx(folder / f"variant_{abs(hash(json.dumps(variant, sort_keys=True)))}.onnx", **variant)
    # the reference is timm's transform on the whole photo: the exact path (the fast one is checked against it
    # in test_runtime_preprocess.py)
    with Classifier.from_file(path, max_results=None, preprocessing="exact") as classifier:
        for name, photo in PHOTOS.items():
            result = classifier.classify(photo)
            got = np.zeros(len(LABELS))
            for category in result.categories:
                got[category.index] = category.score
                assert category.label == LABELS[category.index]
            np.testing.assert_allclose(got, expected_scores(photo, **variant), atol=tolerance, err_msg=name)
            assert [c.score for c in result.categories] == sorted((c.score for c in result.categories), reverse=True)


def test_grayscale_model_runs_on_colour_photos(folder):
    path = make_fixture_onnx(folder / "gray.onnx", color_mode="L")
    with Classifier.from_file(path, max_results=None) as classifier:
        result = classifier.classify(folder / "rocket.jpg")
    assert len(result.categories) == 10
    assert sum(c.score for c in result.categories) == pytest.approx(1.0)


def test_every_source_kind_gives_the_same_result(folder, model):
    path = folder / "chelsea.jpg"
    with Classifier.from_file(model) as classifier:
        by_path = classifier.classify(str(path))
        assert by_path.source == str(path)
        assert classifier.classify(path).source == str(path)
        for source in (path.read_bytes(), io.BytesIO(path.read_bytes()), Image.open(path),
                       np.asarray(Image.open(path))):
            result = classifier.classify(source)
            assert result.categories == by_path.categories and result.source is None


def test_result_and_timings(folder, model):
    with Classifier.from_file(model, max_results=3) as classifier:
        result = classifier.classify(folder / "coffee.jpg")
    assert len(result.categories) == 3 and result.top == result.categories[0]
    t = result.timings
    assert t.preprocess_ms > 0 and t.inference_ms > 0 and t.postprocess_ms > 0
    assert t.total_ms == pytest.approx(t.preprocess_ms + t.inference_ms + t.postprocess_ms)
    assert json.loads(json.dumps(result.to_dict()))["categories"][0]["label"] == result.top.label


@pytest.mark.parametrize("dynamic", [True, False])
def test_classify_batch_equals_classify(folder, dynamic):
    path = make_fixture_onnx(folder / f"batch_{dynamic}.onnx", dynamic_batch=dynamic)
    images = [folder / f"{name}.jpg" for name in PHOTOS]
    with Classifier.from_file(path, max_results=None) as classifier:
        assert classifier.backend.dynamic_batch is dynamic
        single = [classifier.classify(image) for image in images]
        batched = classifier.classify_batch(images, batch_size=2)
    assert [r.source for r in batched] == [str(i) for i in images]
    for one, many in zip(single, batched):
        assert [c.index for c in one.categories] == [c.index for c in many.categories]
        np.testing.assert_allclose([c.score for c in one.categories], [c.score for c in many.categories], atol=1e-6)
        assert many.timings.inference_ms > 0


def test_classify_batch_reports_the_bad_image(folder, model, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with Classifier.from_file(model) as classifier, pytest.raises(ImageError, match="bad.jpg: not an image file"):
        classifier.classify_batch([folder / "chelsea.jpg", bad])


def test_thread_safe_results_equal_sequential(folder, model):
    images = [folder / f"{name}.jpg" for name in PHOTOS]
    with Classifier.from_file(model, max_results=None, threads=1) as classifier:
        expected = {str(i): classifier.classify(i).categories for i in images}

        def work(worker: int):
            return [(str(images[(worker + k) % len(images)]), classifier.classify(images[(worker + k) % len(images)]))
                    for k in range(50)]

        with ThreadPoolExecutor(4) as pool:
            outcomes = [item for chunk in pool.map(work, range(4)) for item in chunk]
    assert len(outcomes) == 200
    for source, result in outcomes:
        assert result.categories == expected[source]


class SingleThreadedOnnx(OnnxRuntimeBackend):
    """The onnxruntime backend declared not thread-safe, recording how many threads are inside run()."""

    thread_safe = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inside = self.most_inside = 0
        self.guard = threading.Lock()

    def run(self, tensor):
        with self.guard:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.002)
        try:
            return super().run(tensor)
        finally:
            with self.guard:
                self.inside -= 1


def test_a_lock_serializes_backends_that_are_not_thread_safe(folder, model):
    from slidelite.model_file import open_model_file, read_metadata

    model_file = open_model_file(model)
    backend = SingleThreadedOnnx(model_file, 1)
    classifier = Classifier(ClassifierOptions(model=str(model)), model_file, read_metadata(model_file), backend)
    with classifier, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: classifier.classify(PHOTOS["chelsea"]), range(40)))
    assert backend.most_inside == 1


def test_filters_from_options(folder, model):
    image = folder / "astronaut.jpg"
    with Classifier.from_file(model, max_results=None) as classifier:
        everything = classifier.classify(image).categories
    best = everything[0].score
    with Classifier.from_file(model, max_results=None, score_threshold=best) as classifier:
        assert classifier.classify(image).categories == everything[:1]
    keep = [everything[5].label, everything[2].label]
    with Classifier.from_file(model, category_allowlist=keep) as classifier:
        assert classifier.classify(image).categories == [everything[2], everything[5]]
    with Classifier.from_file(model, max_results=2, category_denylist=[everything[0].label]) as classifier:
        assert classifier.classify(image).categories == everything[1:3]


def test_one_pixel_image(model, tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(path)
    with Classifier.from_file(model) as classifier:
        assert len(classifier.classify(path).categories) == 5


def test_a_bad_image_does_not_break_the_classifier(folder, model, tmp_path):
    bad = tmp_path / "cut.jpg"
    bad.write_bytes((folder / "chelsea.jpg").read_bytes()[:3000])
    with Classifier.from_file(model) as classifier:
        with pytest.raises(ImageError, match=f"^{bad}: truncated image data$"):
            classifier.classify(bad)
        assert classifier.classify(folder / "chelsea.jpg").top is not None


def test_max_image_pixels_option(folder, model):
    with Classifier.from_file(model, max_image_pixels=1000) as classifier, pytest.raises(ImageError, match="too large"):
        classifier.classify(folder / "chelsea.jpg")


def test_properties_and_close(model):
    classifier = Classifier.from_file(model, threads=2)
    assert classifier.metadata.name == "fixture_cnn" and classifier.model_file.format == "onnx"
    assert classifier.backend.name == "onnxruntime" and classifier.backend.threads == 2
    assert "onnxruntime" in repr(classifier)
    with classifier:
        pass
    with pytest.raises(UsageError, match="closed"):
        classifier.classify(PHOTOS["chelsea"])
    classifier.close()


def test_default_model_from_the_shipped_registry(model, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDELITE_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="no default model is installed"):
        Classifier.default()
    (tmp_path / "fixture.onnx").write_bytes(model.read_bytes())
    entry = {"name": "fixture", "file": "fixture.onnx", "format": "onnx", "precision": "fp32", "default": True,
             "sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "size": model.stat().st_size}
    (tmp_path / "manifest.json").write_text(json.dumps({"manifest_version": 1, "models": [entry]}))
    with Classifier.default(max_results=1) as classifier:
        assert classifier.model_file.path.name == "fixture.onnx"
        assert len(classifier.classify(PHOTOS["coffee"]).categories) == 1
    with Classifier.create_from_options(ClassifierOptions(model="fixture")) as classifier:
        assert classifier.metadata.name == "fixture_cnn"


# ---- bad models and options: one clear error each -----------------------------------------------------------

def bad_metadata(change):
    doc = fixture_metadata()
    change(doc)
    return doc


@pytest.mark.parametrize("build,error,words", [
    (lambda p: p.write_text("I am a text file"), ModelError, "not an ONNX or TFLite model file"),
    (lambda p: p.write_bytes(make_fixture_onnx(p).read_bytes()[:1500]), ModelError, "truncated ONNX model file"),
    (lambda p: make_fixture_onnx(p, embed=False), MetadataError, "has no slidelite metadata"),
    (lambda p: make_fixture_onnx(p, metadata=bad_metadata(lambda d: d.update(labels=["a", "b", "c"]))),
     MetadataError, "metadata has 3 labels but the model output has 10 classes"),
    (lambda p: make_fixture_onnx(p, metadata=bad_metadata(lambda d: d.update(schema_version=7))),
     MetadataError, "schema version 7 is not supported"),
    (lambda p: None, ModelError, "not found"),
])
def test_bad_models(tmp_path, build, error, words):
    path = tmp_path / "model.onnx"
    build(path)
    with pytest.raises(error) as exc:
        Classifier.from_file(path)
    assert words in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("options,words", [
    (dict(backend="tensorrt"), "unknown backend 'tensorrt'"),
    (dict(threads=0), "threads must be a positive integer, got 0"),
    (dict(threads=-1), "threads must be a positive integer, got -1"),
    (dict(category_allowlist=["cat"], category_denylist=["dog"]), "mutually exclusive"),
    (dict(category_allowlist=["cat", "unicorn"]), "'unicorn'"),
    (dict(max_image_pixels=0), "max_image_pixels must be a positive integer"),
])
def test_bad_options(model, options, words):
    with pytest.raises(UsageError, match=words) as exc:
        Classifier.from_file(model, **options)
    assert exc.value.exit_code == 2


def test_options_are_checked_before_the_model_is_opened(tmp_path):
    with pytest.raises(UsageError, match="unknown backend"):
        Classifier.from_file(tmp_path / "does-not-exist.onnx", backend="nope")
