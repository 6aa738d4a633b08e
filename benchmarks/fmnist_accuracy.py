"""Top-1 accuracy of shipped model files on the full Fashion-MNIST test split, measured with the runtime.

    python benchmarks/fmnist_accuracy.py slidelite/models/slide_swin_micro_fmnist.onnx [more files] \
        [--backend auto] [--json out.json]

With several files, each later file's line also says on how many test images its top-1 differs from the
first file's (e.g. int8 vs fp32: equal accuracies can hide flips that cancel out).

Every test image (10,000 uint8 28x28 arrays from Debian's ``dataset-fashion-mnist`` IDX files) goes
through :class:`slidelite.Classifier` exactly as a user's image would: the file's metadata drives the
preprocessing, the chosen backend (onnxruntime, numpy, litert, tflite) runs the model. No torch is
imported: the IDX reader of ``slidelite.zoo.recipes.fashion_mnist`` (numpy only) is loaded from its file
without importing ``slidelite.zoo`` (whose ``__init__`` imports torch).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple

import numpy as np

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
DATASET = "Fashion-MNIST test split"


def _idx_module() -> ModuleType:
    """``slidelite.zoo.recipes.fashion_mnist`` loaded from its file, so ``slidelite.zoo`` (torch) is not imported."""
    zoo = importlib.util.find_spec("slidelite.zoo")  # imports the runtime package only, not slidelite.zoo
    if zoo is None or not zoo.submodule_search_locations:
        raise ImportError("slidelite.zoo is not installed (needed for its Fashion-MNIST IDX reader)")
    path = Path(list(zoo.submodule_search_locations)[0]) / "recipes" / "fashion_mnist.py"
    spec = importlib.util.spec_from_file_location("_slidelite_fashion_mnist_idx", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def load_split(split: str, root: str = DEFAULT_ROOT) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of ``train`` or ``test``, read without torch."""
    return _idx_module().load_split(split, root)


def measure(model: Path, images: np.ndarray, labels: np.ndarray, backend: str = "auto",
            threads: Optional[int] = None) -> Dict[str, object]:
    """Classify every image with the runtime; return top-1 accuracy (fraction), counts and timing."""
    from slidelite import Classifier

    start = time.perf_counter()
    # the file is measured as it is: a rebuilt shipped file differs from the manifest until it is re-recorded
    with Classifier.from_file(model, backend=backend, threads=threads, max_results=1,
                              verify_checksum=False) as classifier:
        label_index = {label: i for i, label in enumerate(classifier.metadata.labels)}
        results = classifier.classify_batch(list(images), batch_size=256)
        backend_name = classifier.backend.name
    predicted = np.array([label_index[r.categories[0].label] for r in results])
    correct = int((predicted == labels).sum())
    return {"file": str(model), "dataset": DATASET, "backend": backend_name, "images": int(len(labels)), "correct": correct,
            "top1": correct / len(labels), "seconds": round(time.perf_counter() - start, 1),
            "predicted": predicted.tolist()}


def main() -> None:
    """Measure each file given on the command line and print one line per file (plus optional JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder of the Fashion-MNIST IDX .gz files")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as a JSON list")
    args = parser.parse_args()
    images, labels = load_split("test", args.root)
    rows: List[Dict[str, object]] = []
    for model in args.models:
        row = measure(model, images, labels, args.backend, args.threads)
        predicted = row.pop("predicted")
        if rows:
            row["differ_from_first"] = int(sum(a != b for a, b in zip(predicted, first)))
        else:
            first = predicted
        rows.append(row)
        differ = f", top-1 differs from {args.models[0].name} on {row['differ_from_first']}" if len(rows) > 1 else ""
        print(f"{model}: top-1 {100 * row['top1']:.2f}% ({row['correct']}/{row['images']}, "
              f"backend {row['backend']}, {row['seconds']} s{differ})", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
