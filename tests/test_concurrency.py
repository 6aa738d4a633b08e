"""One :class:`~slidelite.Classifier` shared by 4 threads x 500 calls gives exactly the sequential results.

Run for every installed backend: onnxruntime and numpy on the fixture ONNX classifier, LiteRT on the fixture
TFLite classifier (LiteRT's interpreter is not thread-safe, so the classifier serializes its calls; the
others run concurrently). Inputs are eight different real photos (arrays of several sizes and modes) so a
result handed to the wrong caller would show; every 10th call is a ``classify_batch`` of two images.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from PIL import Image

from slidelite import Classifier
from slidelite.backends import is_available
from tests._cli_fixtures import skimage_photo
from tests._runtime_fixtures import make_fixture_onnx

THREADS, CALLS = 4, 500
MODELS = {"onnxruntime": "onnx", "numpy": "onnx", "litert": "tflite", "tflite": "tflite"}
INSTALLED = [name for name in MODELS if is_available(name)]


def _images() -> List[np.ndarray]:
    """Eight distinct small images: crops of real photos in RGB, greyscale and RGBA, several sizes."""
    images = []
    for i, name in enumerate(["chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "camera"]):
        photo = Image.fromarray(skimage_photo(name)).resize((48 + 8 * i, 40 + 4 * i))
        images.append(np.asarray(photo))
    images.append(np.asarray(Image.fromarray(images[0]).convert("RGBA")))
    images.append(np.ascontiguousarray(images[2][::-1, ::-1]))
    return images


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("concurrency")
    found = {"onnx": make_fixture_onnx(folder / "model.onnx")}
    if "litert" in INSTALLED or "tflite" in INSTALLED:
        from tests.corpus.tflite_model import make_tflite_classifier

        found["tflite"] = make_tflite_classifier(folder / "model.tflite")
    return found


def _key(result) -> Tuple[Tuple[int, str, float], ...]:
    return tuple((c.index, c.label, c.score) for c in result.categories)


@pytest.mark.parametrize("backend", INSTALLED)
def test_shared_classifier_matches_sequential_results(models: dict, backend: str) -> None:
    images = _images()
    with Classifier.from_file(Path(models[MODELS[backend]]), backend=backend, max_results=None, threads=2) as clf:
        assert clf.backend.name == backend
        expected = [_key(clf.classify(image)) for image in images]
        assert len({key[0] for key in expected}) >= 4  # different photos score differently: a mix-up would show
        # a batch is compared with the same batch run sequentially (batched BLAS may round differently)
        pairs = {(a, b): [_key(r) for r in clf.classify_batch([images[a], images[b]])]
                 for a in range(len(images)) for b in range(len(images))}
        start = threading.Barrier(THREADS)

        def worker(thread: int) -> List[str]:
            start.wait()
            problems = []
            for call in range(CALLS):
                first, second = (thread * 7 + call) % len(images), (thread + 3 * call) % len(images)
                if call % 10 == 9:
                    got = [_key(r) for r in clf.classify_batch([images[first], images[second]])]
                    want = pairs[first, second]
                else:
                    got, want = [_key(clf.classify(images[first]))], [expected[first]]
                if got != want:
                    problems.append(f"thread {thread} call {call}: image {first}: not the sequential result")
            return problems

        with ThreadPoolExecutor(THREADS) as pool:
            problems = [p for chunk in pool.map(worker, range(THREADS)) for p in chunk]
    assert problems == []
