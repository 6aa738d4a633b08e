"""Top-1 agreement of candidate model files with a reference file on a folder of real photos, with the runtime.

    python benchmarks/shipped_agreement.py REFERENCE.onnx CANDIDATE[@BACKEND]... --images DIR [--json OUT]

Every image of ``DIR`` is classified by the reference (fp32) and by each candidate (int8, fp16 weights,
another format) through :class:`slidelite.Classifier`, each file with its own metadata's preprocessing.
Printed per candidate: agreement (fraction of images with the same top-1 label), the number that differ,
and how close the reference's top-1 was to its runner-up on those images (a flip on a near tie is a
smaller error than a flip on a confident prediction). This decides whether an int8 file may replace the
fp32 one (``scripts/build_shipped_models.sh default``; threshold 99 %).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def predictions(model: str, images: Sequence[Path], backend: str = "auto") -> Tuple[List[str], np.ndarray, str]:
    """Top-1 labels, top-1 minus top-2 probability margins, and the backend used, for ``images``."""
    from slidelite import Classifier

    # files are compared as they are (a rebuilt shipped file differs from the manifest until re-recorded)
    with Classifier.from_file(model, backend=backend, max_results=2, threads=1, verify_checksum=False) as classifier:
        results = [classifier.classify(path).categories for path in images]
        name = classifier.backend.name
    labels = [r[0].label for r in results]
    margins = np.array([r[0].score - r[1].score for r in results])
    return labels, margins, name


def compare(reference: str, candidates: Sequence[str], images: Sequence[Path]) -> List[Dict[str, object]]:
    """One row per candidate (``path`` or ``path@backend``): agreement with the reference and the flips."""
    ref_labels, ref_margins, ref_backend = predictions(reference, images)
    rows = []
    for spec in candidates:
        path, _, backend = spec.partition("@")
        labels, _, used = predictions(path, images, backend or "auto")
        flips = [i for i, (a, b) in enumerate(zip(ref_labels, labels)) if a != b]
        rows.append({"reference": reference, "reference_backend": ref_backend, "candidate": path, "backend": used,
                     "images": len(images), "differ": len(flips), "agreement": 1 - len(flips) / len(images),
                     "flip_margins": [round(float(ref_margins[i]), 3) for i in flips],
                     "flipped": [images[i].name for i in flips]})
    return rows


def main() -> None:
    """Compare each candidate with the reference and print one line per candidate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("candidates", nargs="+", help="model files, optionally FILE@BACKEND")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = compare(args.reference, args.candidates, images)
    for row in rows:
        margins = row["flip_margins"]
        near = sum(m < 0.05 for m in margins)  # type: ignore[union-attr]
        print(f"{row['candidate']} ({row['backend']}) vs {row['reference']} ({row['reference_backend']}): "
              f"top-1 agreement {100 * row['agreement']:.1f}% ({row['differ']} of {row['images']} differ; "
              f"{near} of them where the reference's top-2 margin < 0.05)", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
