"""Host-side helper of prove_aarch64.sh: which classifications to run, and the x86_64/aarch64 comparison.

    python tests/arm/proof_cases.py cases WORK [EXTRA.onnx ...]   # writes WORK/cases.txt (copies models into WORK)
    python tests/arm/proof_cases.py compare WORK TOLERANCE

A case is ``model|photo|aarch64 backend|x86_64 reference backend`` (model empty: the default model). With
shipped models (slidelite/models/manifest.json): the default model with ``auto`` on both sides, and every
float ONNX file (fp32, or fp16-stored weights) with onnxruntime and with numpy on aarch64, both against
x86_64 onnxruntime. Without any: the runtime tests' fixture ONNX classifier, the same two ways. Every EXTRA
ONNX file given (a model with slidelite metadata, e.g. fresh from ``slidelite convert``) is run the same
two ways too. Photos are the
bundled samples (the Fashion-MNIST ankle boot for the Fashion-MNIST models, else chelsea the cat).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]
INSIDE = "/opt/slidelite-proof"  # WORK as seen inside the arm64 root
Case = Tuple[str, str, str, str]


def _both_onnx_backends(model: str, photo: str) -> List[Case]:
    return [(model, photo, backend, "onnxruntime") for backend in ("onnxruntime", "numpy")]


def cases(work: Path, extra: List[Path]) -> List[Case]:
    """The classifications to run; copies ``extra`` (and the fixture model when nothing is shipped) into ``work``."""
    sys.path.insert(0, str(ROOT))
    from slidelite.models import list_shipped

    found: List[Case] = []
    for model in list_shipped():
        photo = "fashion_mnist_ankle_boot.png" if "fmnist" in model.name else "chelsea.jpg"
        if model.default:
            found.append(("", photo, "auto", "auto"))
        if model.format == "onnx" and model.precision in ("fp32", "fp16"):  # fp16: stored weights, fp32 compute
            found += _both_onnx_backends(model.file, photo)
    if not found:
        from tests._runtime_fixtures import make_fixture_onnx

        make_fixture_onnx(work / "fixture.onnx")
        found = _both_onnx_backends(f"{INSIDE}/fixture.onnx", "chelsea.jpg")
    for path in extra:
        shutil.copyfile(path, work / path.name)
        found += _both_onnx_backends(f"{INSIDE}/{path.name}", "chelsea.jpg")
    return list(dict.fromkeys(found))


def compare(work: Path, tolerance: float) -> bool:
    """Print one PASS/FAIL line per case: same top-5 labels and every score within ``tolerance``."""
    def load(name: str) -> Tuple[List[str], List[float]]:
        categories = json.loads((work / name).read_text())["categories"]
        return [c["label"] for c in categories], [c["score"] for c in categories]

    ok = True
    for n, line in enumerate((work / "cases.txt").read_text().splitlines(), 1):
        model, photo, backend, reference = line.split("|")
        labels, scores = load(f"case{n}.aarch64.json")
        ref_labels, ref_scores = load(f"case{n}.x86_64.json")
        diff = max(abs(a - b) for a, b in zip(scores, ref_scores))
        same = labels == ref_labels and diff <= tolerance
        ok &= same
        print(f"{model or 'default model'} on {photo}: aarch64 {backend} top-1 {labels[0]!r} {scores[0]:.6f} | "
              f"x86_64 {reference} top-1 {ref_labels[0]!r} {ref_scores[0]:.6f} | max score diff {diff:.1e} -> "
              f"{'PASS' if same else 'FAIL'}")
    return ok


def main(argv: List[str]) -> int:
    """``cases WORK [EXTRA.onnx ...]`` or ``compare WORK TOLERANCE``."""
    work = Path(argv[1])
    if argv[0] == "cases":
        found = cases(work, [Path(p) for p in argv[2:]])
        (work / "cases.txt").write_text("".join("|".join(case) + "\n" for case in found))
        return 0
    return 0 if compare(work, float(argv[2])) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
