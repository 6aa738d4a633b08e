"""Shared helpers of the TFLite tests: converted micro models, and the second environment ``.venv-tflite``
(numpy<2: tflite-runtime, tflite-support, MediaPipe Tasks; made by ``scripts/setup_tflite.sh``).

MediaPipe is driven in that environment by :data:`MEDIAPIPE_SCRIPT`: ``ImageClassifier`` created from the
model file with no option but the model path, each photo given as an ``mp.Image``; it prints one JSON line.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TFLITE_PYTHON = REPO / ".venv-tflite" / "bin" / "python"

MEDIAPIPE_SCRIPT = r"""
import json, sys
import numpy as np
from PIL import Image
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision

classifier = vision.ImageClassifier.create_from_options(
    vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=sys.argv[1])))
out = {}
for path in sys.argv[2:]:
    pixels = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
    result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
    best = max(result.classifications[0].categories, key=lambda c: c.score)
    out[path] = {"label": best.category_name, "score": float(best.score), "index": best.index}
classifier.close()
print(json.dumps(out))
"""


def run_in_tflite_venv(args: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``.venv-tflite/bin/python ARGS`` from the repository root (text output captured)."""
    assert TFLITE_PYTHON.is_file(), f"{TFLITE_PYTHON} is missing: run scripts/setup_tflite.sh"
    return subprocess.run([str(TFLITE_PYTHON), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, check=False)


def mediapipe_top1(model: Path, images: Sequence[Path]) -> Dict[str, Dict[str, object]]:
    """MediaPipe Tasks' ImageClassifier top-1 ``{label, score, index}`` per image path."""
    proc = run_in_tflite_venv(["-c", MEDIAPIPE_SCRIPT, model, *images])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_sized_photos(photos: Sequence[Path], metadata, folder: Path) -> List[Path]:
    """Each photo resized and centre-cropped to the model input exactly as the runtime does, saved as PNG
    (MediaPipe's own resize differs from timm's; giving it the crop isolates the model from the resize)."""
    from PIL import Image

    from slidelite.preprocess import resize_and_crop

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for photo in photos:
        target = folder / f"{Path(photo).stem}.png"
        resize_and_crop(Image.open(photo).convert("RGB"), metadata).save(target)
        out.append(target)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def convert_fp32_and_int8(folder: Path, photos: Path, seed: int, make_module: Optional[Callable[[], Any]] = None,
                          recipes: Sequence[str] = ("full-int8",), **job: Any) -> Dict[str, Path]:
    """Convert the same random-init model (torch seed ``seed``; ``make_module()`` or the job's zoo ``model``) to
    ``fp32.tflite`` and, per int8 recipe, ``<recipe>.tflite`` in ``folder`` with ``photos`` as calibration/validation
    set. Keys: ``fp32``, then ``int8`` for the first recipe and each recipe's name."""
    import torch

    from slidelite.convert import ConversionJob, convert

    out = {}
    for name, recipe in (("fp32", None), *((r, r) for r in recipes)):
        torch.manual_seed(seed)
        module = make_module() if make_module is not None else None
        out[name] = convert(ConversionJob(output=folder / f"{name}.tflite", module=module, format="tflite",
                                          int8=recipe is not None, int8_recipe=recipe, calib=photos, progress=False,
                                          latency_runs=0, **job)).output
    out["int8"] = out[recipes[0]]
    return out
