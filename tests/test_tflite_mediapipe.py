"""MediaPipe Tasks' ImageClassifier (PyPI ``mediapipe``, run in ``.venv-tflite``) loads our fp32, full-int8 and
dynamic-int8 TFLite files with no option but the model path and gives the same top-1 label as the slidelite runtime on
real photos (each photo resized and cropped to the model input first, as the runtime does, so both see the
same pixels). MediaPipe reports the model's logits as scores (the graph ends in logits; no softmax)."""
from __future__ import annotations

from pathlib import Path

import pytest

from slidelite.classifier import Classifier
from slidelite.convert import PreprocessOverrides
from slidelite.convert.samples import write_sample_photos
from slidelite.model_file import open_model_file
from slidelite.zoo import create_model
from tests._tflite_fixtures import convert_fp32_and_int8, mediapipe_top1, model_sized_photos

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """An RGB slide_swin_micro (3 input channels, 28x28) as fp32, full-int8 and dynamic-int8 TFLite, plus photos. crop_pct 1:
    a photo already at the model size then reaches both classifiers untouched."""
    folder = tmp_path_factory.mktemp("mp")
    photos = folder / "photos"
    write_sample_photos(photos, crops=2)
    files = convert_fp32_and_int8(folder, photos, 3, lambda: create_model("slide_swin_micro", in_chans=3),
                                  recipes=("full-int8", "dynamic-int8"),
                                  min_agreement=0.8, name="micro_rgb",
                                  preprocess=PreprocessOverrides(input_size=(28, 28), crop_pct=1.0))
    return files, sorted(photos.glob("*.png")), folder


@pytest.mark.parametrize("precision", ["fp32", "full-int8", "dynamic-int8"])
def test_mediapipe_image_classifier_agrees_with_the_runtime(converted, precision):
    files, photos, folder = converted
    model = files[precision]
    crops = model_sized_photos(photos, open_model_file(model).metadata, folder / f"crops-{precision}")
    got = mediapipe_top1(model, crops)
    with Classifier.from_file(str(model), max_results=1) as clf:
        for crop in crops:
            ours = clf.classify(str(crop)).categories[0]
            theirs = got[str(crop)]
            assert (theirs["index"], theirs["label"]) == (ours.index, ours.label), crop.name
