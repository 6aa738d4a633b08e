"""Helpers of ``scripts/build_shipped_models.sh``: the image folders the converter calibrates and is checked
on, and the manifest entries of the shipped files.

    python scripts/build_shipped_models.py photos OUT --seed 0 --crops 6        # real-photo crops (PNG)
    python scripts/build_shipped_models.py fmnist-train OUT --per-class 20       # Fashion-MNIST TRAIN images (PNG)
    python scripts/build_shipped_models.py fp16-weights FP32.onnx OUT.onnx       # weights stored as float16
    python scripts/build_shipped_models.py manifest FILE --name N --description D [--default]
        [--accuracy JSON | --measured ROWS.json | --agreement ROWS.json]

Photos are scikit-image's bundled real photos; crops are random (area 25-100 %, aspect 3/4-4/3, mirrored
half the time) from a fixed seed, so two seeds give two disjoint-by-construction sets (calibration and
evaluation). Fashion-MNIST calibration images come from the TRAIN split only, never the test split.
``fp16-weights`` stores every float32 Conv/Gemm/MatMul weight (biases stay float32) of a converter-written ONNX
file as float16 followed by a ``Cast`` to float32 (``slidelite.convert.int8_weights.store_int8_weights`` with
no layer large enough for int8): the file is half the size, the graph still computes in float32 (onnxruntime and the
numpy backend fold the casts once at load), and the metadata's precision becomes ``fp16``.
``manifest`` adds (or replaces) the entry of one shipped file in the ``manifest.json`` next to it (created
when missing, so a trial build into another folder is a complete registry): format, precision and
architecture are read from the file's own metadata, sha256 and size from the file, the accuracy from
``--accuracy``, from the row of ``--measured`` (``benchmarks/fmnist_accuracy.py --json``) naming the file, or
(the ImageNet default) the published top-1 plus the file's top-1 agreement with fp32 from the row of
``--agreement`` (``benchmarks/shipped_agreement.py --json``; refused under 99 %).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
#: The keys of a benchmark row that become the manifest's ``accuracy``.
ACCURACY_KEYS = ("dataset", "top1", "images", "backend")
#: The published ImageNet top-1 of EfficientNet-Lite0 (tensorflow/tpu), recorded with the measured agreement.
PUBLISHED_TOP1 = {"dataset": "ImageNet-1k val: published for EfficientNet-Lite0 (tensorflow/tpu), not re-measured here",
                  "top1": 0.751}
#: A shipped file must keep at least this top-1 agreement with fp32 (issue 4).
MIN_AGREEMENT = 0.99
#: Maximum side of a written crop (the models read 224 px; this keeps the folders small).
MAX_SIDE = 512


def real_photos() -> Dict[str, np.ndarray]:
    """scikit-image's bundled real photographs (greyscale ones included), by name."""
    from skimage import data

    loaders: Dict[str, Callable[[], np.ndarray]] = {
        "astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee, "rocket": data.rocket,
        "motorcycle_left": lambda: data.stereo_motorcycle()[0], "motorcycle_right": lambda: data.stereo_motorcycle()[1],
        "camera": data.camera, "coins": data.coins, "moon": data.moon, "page": data.page, "text": data.text,
        "clock": data.clock, "brick": data.brick, "grass": data.grass, "gravel": data.gravel,
        "hubble_deep_field": data.hubble_deep_field, "retina": data.retina,
        "immunohistochemistry": data.immunohistochemistry, "cell": data.cell,
    }
    return {name: load() for name, load in loaders.items()}


def random_crops(photo: np.ndarray, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``count`` random crops of ``photo``: area 25-100 %, aspect 3/4-4/3, mirrored half the time."""
    height, width = photo.shape[:2]
    for _ in range(count):
        area = rng.uniform(0.25, 1.0) * height * width
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        crop_h = int(min(height, round(np.sqrt(area / aspect))))
        crop_w = int(min(width, round(np.sqrt(area * aspect))))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        crop = photo[top:top + crop_h, left:left + crop_w]
        yield crop[:, ::-1] if rng.random() < 0.5 else crop


def _save(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(np.ascontiguousarray(array))
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    image.save(path)


def write_photos(out: Path, seed: int, crops: int, full: bool) -> int:
    """Write ``crops`` random crops of every photo (and the full photos when ``full``) as PNG; return the count."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = 0
    for name, photo in real_photos().items():
        if full:
            _save(photo, out / f"{name}.png")
            written += 1
        for index, crop in enumerate(random_crops(photo, crops, rng)):
            _save(crop, out / f"{name}_s{seed}_{index:02d}.png")
            written += 1
    return written


def write_fmnist_train(out: Path, per_class: int, root: str) -> int:
    """Write the first ``per_class`` TRAIN images of each class as 28x28 greyscale PNG; return the count."""
    from fmnist_accuracy import load_split  # benchmarks/ (torch-free IDX reader)

    images, labels = load_split("train", root)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for cls in range(int(labels.max()) + 1):
        for index in np.flatnonzero(labels == cls)[:per_class]:
            Image.fromarray(images[index], mode="L").save(out / f"train_{index:05d}_c{cls}.png")
            written += 1
    return written


def fp16_weights(source: Path, target: Path) -> int:
    """Write ``source`` with its Conv/Gemm/MatMul weights stored as float16 + ``Cast``; return how many were cast."""
    import dataclasses

    from slidelite.convert.int8_weights import store_int8_weights
    from slidelite.convert.onnx_export import embed_metadata
    from slidelite.model_file import open_model_file, read_metadata

    counts = store_int8_weights(source, target, min_elements=sys.maxsize)  # every weight under the int8 size
    metadata = read_metadata(open_model_file(source))
    metrics = {**metadata.metrics, "weights": "float16, cast to float32 at load (compute fp32)"}
    embed_metadata(target, dataclasses.replace(metadata, precision="fp16", metrics=metrics))
    return counts["float16"]


def manifest_entry(path: Path, name: str, description: str, default: bool, accuracy: Dict[str, object],
                   license_name: str) -> Dict[str, object]:
    """The manifest entry of the shipped file ``path`` (format, precision, architecture read from its metadata)."""
    from slidelite.model_file import open_model_file, read_metadata
    from slidelite.models import sha256_of

    metadata = read_metadata(open_model_file(path))
    return {"name": name, "file": path.name, "format": path.suffix.lstrip("."), "precision": metadata.precision,
            "sha256": sha256_of(path), "size": path.stat().st_size, "default": default,
            "architecture": metadata.provenance.architecture, "description": description, "accuracy": accuracy,
            "license": license_name or metadata.provenance.license}


def measured_accuracy(rows_file: Path, model: Path) -> Dict[str, object]:
    """The accuracy of ``model`` from a ``benchmarks/fmnist_accuracy.py --json`` file (its row by file name)."""
    rows = json.loads(rows_file.read_text(encoding="utf-8"))
    row = next((r for r in rows if Path(r["file"]).name == model.name), None)
    if row is None:
        raise SystemExit(f"{rows_file}: no measurement of {model.name}")
    return {key: row[key] for key in ACCURACY_KEYS}


def agreement_accuracy(rows_file: Path, model: Path) -> Dict[str, object]:
    """The published top-1 plus ``model``'s measured agreement with fp32 (its first row in a
    ``benchmarks/shipped_agreement.py --json`` file); exits when the agreement is under :data:`MIN_AGREEMENT`."""
    rows = json.loads(rows_file.read_text(encoding="utf-8"))
    row = next((r for r in rows if Path(r["candidate"]).resolve() == model.resolve()), None)
    if row is None:
        raise SystemExit(f"{rows_file}: no measurement of {model}")
    if row["agreement"] < MIN_AGREEMENT:
        raise SystemExit(f"{model}: top-1 agreement {row['agreement']:.4f} with fp32 is under {MIN_AGREEMENT}")
    return {**PUBLISHED_TOP1, "agreement_vs_fp32": round(row["agreement"], 4), "agreement_images": row["images"]}


def update_manifest(entry: Dict[str, object], manifest: Path) -> None:
    """Replace the entry of the same file (or append it), keeping the manifest's order; create it if missing."""
    document = (json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file()
                else {"manifest_version": 1, "models": []})
    models = document["models"]
    index = next((i for i, m in enumerate(models) if m["file"] == entry["file"]), None)
    if index is None:
        models.append(entry)
    else:
        models[index] = entry
    manifest.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    photos = sub.add_parser("photos", help="random crops of scikit-image's real photos")
    photos.add_argument("out", type=Path)
    photos.add_argument("--seed", type=int, required=True)
    photos.add_argument("--crops", type=int, default=6, help="crops per photo")
    photos.add_argument("--full", action="store_true", help="also write each full photo")
    fmnist = sub.add_parser("fmnist-train", help="Fashion-MNIST TRAIN images as PNG (calibration)")
    fmnist.add_argument("out", type=Path)
    fmnist.add_argument("--per-class", type=int, default=20)
    fmnist.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    half = sub.add_parser("fp16-weights", help="store an ONNX file's float32 weights as float16 (+ Cast)")
    half.add_argument("source", type=Path)
    half.add_argument("target", type=Path)
    entry = sub.add_parser("manifest", help="add/replace a shipped file's manifest entry")
    entry.add_argument("file", type=Path)
    entry.add_argument("--name", required=True)
    entry.add_argument("--description", required=True)
    entry.add_argument("--default", action="store_true")
    entry.add_argument("--accuracy", default="{}", help="JSON object of the numbers to record")
    entry.add_argument("--measured", type=Path, default=None, help="benchmarks/fmnist_accuracy.py --json output")
    entry.add_argument("--agreement", type=Path, default=None, help="benchmarks/shipped_agreement.py --json output")
    entry.add_argument("--license", default="")
    return parser.parse_args()


def main() -> None:
    """Dispatch the sub-command."""
    args = _parse()
    if args.command == "photos":
        print(f"{args.out}: {write_photos(args.out, args.seed, args.crops, args.full)} images")
    elif args.command == "fmnist-train":
        print(f"{args.out}: {write_fmnist_train(args.out, args.per_class, args.root)} images")
    elif args.command == "fp16-weights":
        count = fp16_weights(args.source, args.target)
        print(f"{args.target}: {count} weights stored as float16 ({args.target.stat().st_size} B)")
    else:
        if args.agreement:
            accuracy = agreement_accuracy(args.agreement, args.file)
        else:
            accuracy = measured_accuracy(args.measured, args.file) if args.measured else json.loads(args.accuracy)
        record = manifest_entry(args.file, args.name, args.description, args.default, accuracy, args.license)
        manifest = args.file.parent / "manifest.json"
        update_manifest(record, manifest)
        print(f"{manifest}: {record['file']} {record['precision']} {record['size']} B sha256 {record['sha256'][:12]}")


if __name__ == "__main__":
    main()
