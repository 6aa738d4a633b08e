"""Model files made elsewhere, for the tests of files without slidelite metadata: a tiny CNN trained on the spot to
tell the six bundled scikit-image photos apart (labels: the photo names), exported with the standard tools only:

* ``torch.onnx.export`` (NCHW, logits), no metadata;
* litert-torch (NHWC, ``(pixel - 127.5) / 127.5`` outside the graph, softmax at the end), fp32, and full-integer
  uint8 (uint8 input and output) with TFLite's post-training quantizer; then tflite-support's image classifier
  ``MetadataWriter`` (in ``.venv-tflite``) adds the standard TFLite Metadata, as Model Maker does (optionally with
  score calibration).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from tests._tflite_fixtures import run_in_tflite_venv

PHOTO_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "camera")
SIZE = 48
TFLITE_MEAN, TFLITE_STD = 127.5, 127.5  # NormalizationOptions on 0..255 pixels

WRITER_SCRIPT = r"""
import sys
from tflite_support import metadata_schema_py_generated as fb
from tflite_support.metadata_writers import image_classifier, metadata_info, writer_utils
model, out, labels, mean, std, *calibration = sys.argv[1:]
score_calibration = metadata_info.ScoreCalibrationMd(fb.ScoreTransformationType.IDENTITY, 0.0, calibration[0]) \
    if calibration else None
writer = image_classifier.MetadataWriter.create_for_inference(
    writer_utils.load_file(model), [float(mean)], [float(std)], [labels], score_calibration)
writer_utils.save_file(writer.populate(), out)
"""


def label_of(photo: Path) -> str:
    """The class of a sample photo: the scikit-image photo it is (a crop of)."""
    return next(name for name in PHOTO_NAMES if Path(photo).stem.startswith(name))


def squashed(photo: Path, size: int = SIZE) -> np.ndarray:
    """The photo resized to ``size`` x ``size`` (no crop, bilinear), RGB uint8 HWC."""
    from PIL import Image

    return np.asarray(Image.open(photo).convert("RGB").resize((size, size), Image.BILINEAR))


def make_cnn():
    """A small CNN classifier over the six photo classes; NHWC input normalized outside the graph, softmax at the
    end (``channels_last`` and ``softmax`` are attributes: the ONNX export takes NCHW and gives logits)."""
    import torch
    from torch import nn

    class TinyCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
            self.head = nn.Linear(32, len(PHOTO_NAMES))
            self.softmax, self.channels_last = True, True

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)
            logits = self.head(self.body(x).mean((2, 3)))
            return torch.softmax(logits, -1) if self.softmax else logits

    return TinyCnn()


def train(module, inputs: np.ndarray, photos: Sequence[Path], steps: int = 300):
    """Fit ``module`` (on its logits) to tell ``photos`` apart by :func:`label_of` (Adam, cross-entropy); eval mode."""
    import torch

    targets = torch.tensor([PHOTO_NAMES.index(label_of(p)) for p in photos])
    x = torch.from_numpy(inputs)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    softmax, module.softmax = module.softmax, False
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), targets).backward()
        optimizer.step()
    module.softmax = softmax
    return module.eval()


def tflite_inputs(photos: Sequence[Path]) -> np.ndarray:
    """NHWC float inputs of the model: ``(pixel - 127.5) / 127.5`` of the squashed photos."""
    return np.stack([(squashed(p).astype(np.float32) - TFLITE_MEAN) / TFLITE_STD for p in photos])


def trained_cnn(photos: Sequence[Path]):
    """:func:`make_cnn` (torch seed 0) trained on ``photos``."""
    import torch

    torch.manual_seed(0)
    return train(make_cnn(), tflite_inputs(photos), photos)


def write_labels(path: Path) -> Path:
    """The labels file: one photo name per line."""
    path.write_text("\n".join(PHOTO_NAMES) + "\n", encoding="utf-8")
    return path


def make_tflite_files(folder: Path, module, photos: Sequence[Path]) -> Dict[str, Path]:
    """``{fp32, uint8}`` plain .tflite files of ``module`` and ``{fp32_md, uint8_md}`` with the standard
    ImageClassifier metadata (labels: ``folder/labels.txt``)."""
    import litert_torch
    import torch

    files = {"fp32": folder / "fp32.tflite", "uint8": folder / "uint8.tflite"}
    litert_torch.convert(module, (torch.zeros(1, SIZE, SIZE, 3),)).export(str(files["fp32"]))
    files["uint8"].write_bytes(uint8_quantized(files["fp32"].read_bytes(), tflite_inputs(photos)))
    labels = write_labels(folder / "labels.txt")
    for name in ("fp32", "uint8"):
        files[f"{name}_md"] = folder / f"{name}_md.tflite"
        proc = run_in_tflite_venv(["-c", WRITER_SCRIPT, files[name], files[f"{name}_md"], labels, TFLITE_MEAN,
                                   TFLITE_STD])
        assert proc.returncode == 0, proc.stderr[-3000:]
    return files


def uint8_quantized(model: bytes, calibration: np.ndarray) -> bytes:
    """TFLite's post-training full-integer quantizer with uint8 input and output (what Model Maker ships)."""
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration_wrapper

    calibrator = calibration_wrapper.CalibrationWrapper(model, [], [])
    calibrator.Prepare([[1, *calibration.shape[1:]]])
    for sample in calibration:
        calibrator.FeedTensor([np.ascontiguousarray(sample[None], dtype=np.float32)])
    uint8 = np.dtype(np.uint8).num
    return bytes(calibrator.QuantizeModel(uint8, uint8, False, np.dtype(np.int8).num, np.dtype(np.int32).num,
                                          False, False))


def make_plain_onnx(path: Path, module) -> Path:
    """A plain ``torch.onnx.export`` of ``module`` taking NCHW and giving logits (dynamic batch), no metadata."""
    import torch

    module.softmax, module.channels_last = False, False
    try:
        torch.onnx.export(module, (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          dynamo=False)
    finally:
        module.softmax, module.channels_last = True, True
    return path


def photo_paths(folder: Path) -> List[Path]:
    """The six photos and two crops of each, written into ``folder``."""
    from slidelite.convert.samples import write_sample_photos

    return write_sample_photos(folder, crops=2)
