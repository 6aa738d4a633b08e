"""Host-side helper of the ARM proofs (prove_aarch64.sh, prove_numpy_arm.sh): which classifications to
run, running one and recording its result, and the ARM/x86_64 comparison.

    python tests/arm/proof_cases.py cases WORK [EXTRA.onnx ...]   # prove_aarch64.sh's cases -> WORK/cases.txt
    python tests/arm/proof_cases.py numpy-cases WORK              # prove_numpy_arm.sh's cases -> WORK/cases.txt
    python tests/arm/proof_cases.py record OUT.json CMD ...       # run CMD, keep its JSON (or its error line)
    python tests/arm/proof_cases.py compare WORK TOLERANCE ARCH   # one PASS/FAIL line per case and reference

A case is ``model|photo|ARM backend|x86_64 reference backends`` (model empty: the default model; references
comma-separated). Its results are ``case{n}.{ARCH}.json`` and ``case{n}.x86_64.{reference}.json``.

``cases`` (engines installed on aarch64): with shipped models (slidelite/models/manifest.json), the default
model with ``auto`` on both sides, and every float ONNX file (fp32, or fp16-stored weights) with onnxruntime
and with numpy on aarch64, both against x86_64 onnxruntime. Without any: the runtime tests' fixture ONNX
classifier, the same two ways. Every EXTRA ONNX file given (a model with slidelite metadata, e.g. fresh from
``slidelite convert``) is run the same two ways too.

``numpy-cases`` (no engine installed on the ARM side, so ``auto`` can only be the numpy backend): the
default model, and every shipped file, ``.onnx`` and ``.tflite``, with ``auto`` on ARM against x86_64's
numpy backend and x86_64's engine (onnxruntime for ``.onnx``, LiteRT for ``.tflite``).

Photos: chelsea the cat (bundled) for ImageNet models; for the Fashion-MNIST models the bundled ankle boot
(test image 0 of Fashion-MNIST) and, when Debian's ``dataset-fashion-mnist`` is installed, test image 1
written out as PNG.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]
INSIDE = "/opt/slidelite-proof"  # WORK as seen inside the ARM root
FMNIST_TEST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
ENGINE_FOR = {"onnx": "onnxruntime", "tflite": "litert"}
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


def numpy_cases(work: Path) -> List[Case]:
    """The cases of the numpy-only proof; writes Fashion-MNIST test image 1 into ``work`` when Debian has it."""
    sys.path.insert(0, str(ROOT))
    from slidelite.models import list_shipped

    fmnist = ["fashion_mnist_ankle_boot.png"]
    if Path(FMNIST_TEST).is_dir():
        from PIL import Image

        from slidelite.zoo.recipes.fashion_mnist import load_split

        images, _ = load_split("test", FMNIST_TEST)
        Image.fromarray(images[1]).save(work / "fashion_mnist_test_1.png")
        fmnist.append("fashion_mnist_test_1.png")
    found: List[Case] = [("", "chelsea.jpg", "auto", "numpy")]
    for model in list_shipped():
        for photo in fmnist if "fmnist" in model.name else ["chelsea.jpg"]:
            found.append((model.file, photo, "auto", f"numpy,{ENGINE_FOR[model.format]}"))
    return found


def record(out: Path, command: List[str]) -> int:
    """Run ``command``; write its stdout JSON to ``out`` (or ``{"error": last stderr line}``) plus the wall time."""
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True)
    wall = round(time.monotonic() - started, 2)
    if run.returncode == 0:
        result = {**json.loads(run.stdout), "wall_s": wall}
    else:
        lines = [line for line in run.stderr.splitlines() if line.strip()] or [f"exit code {run.returncode}"]
        result = {"error": lines[-1], "wall_s": wall}
    out.write_text(json.dumps(result))
    print(result.get("error") or json.dumps(result["categories"]), f"(wall {wall} s)")
    return 0


def compare(work: Path, tolerance: float, arch: str) -> bool:
    """Print one PASS/FAIL line per case and reference: same top-5 labels and every score within ``tolerance``."""
    def load(name: str) -> Tuple[List[str], List[float], str, float]:
        result = json.loads((work / name).read_text())
        categories = result.get("categories", [])
        return ([c["label"] for c in categories], [c["score"] for c in categories], result.get("error", ""),
                result.get("wall_s", 0.0))

    ok = True
    for n, line in enumerate((work / "cases.txt").read_text().splitlines(), 1):
        model, photo, backend, references = line.split("|")
        labels, scores, error, wall = load(f"case{n}.{arch}.json")
        for reference in references.split(","):
            ref_labels, ref_scores, ref_error, _ = load(f"case{n}.x86_64.{reference}.json")
            head = f"{model or 'default model'} on {photo}: {arch} {backend} ({wall:.1f} s)"
            if error or ref_error:
                ok = False
                print(f"{head} | x86_64 {reference} -> FAIL ({arch}: {_short(error) or 'ran'}; x86_64: "
                      f"{_short(ref_error) or 'ran'})")
                continue
            diff = max(abs(a - b) for a, b in zip(scores, ref_scores))
            allowed = HYBRID_SCORE_TOLERANCE if reference != "numpy" and _hybrid(model) else tolerance
            same = labels == ref_labels and diff <= allowed
            ok &= same
            print(f"{head} top-1 {labels[0]!r} {scores[0]:.6f} | x86_64 {reference} top-1 {ref_labels[0]!r} "
                  f"{ref_scores[0]:.6f} | max score diff {diff:.1e}"
                  + (f" (hybrid int8 vs the engine: within {allowed:g})" if allowed != tolerance else "")
                  + f" -> {'PASS' if same else 'FAIL'}")
    return ok


#: scores of a file with hybrid (dynamic-range int8) ops against the engine: both quantize each activation row on the
#: fly, so a float difference in the last bit upstream (numpy's and XNNPACK's summation orders) can move a row by one
#: int8 step (tests/test_numpy_tflite.py allows 2e-2 on such logits; seen here: 2.6e-4 on a score). The ARM side and
#: x86_64's numpy backend, which compute alike, are still held to TOLERANCE.
HYBRID_SCORE_TOLERANCE = 5e-3


def _hybrid(model: str) -> bool:
    """Whether shipped ``model`` (a file name; empty: the default model) is a ``.tflite`` with hybrid int8 ops."""
    from slidelite.backends._tflite_reader import has_hybrid_ops
    from slidelite.models import list_shipped

    path = next((Path(m.path) for m in list_shipped() if model and m.file == model), None)
    return path is not None and path.suffix == ".tflite" and has_hybrid_ops(path)


def _short(error: str) -> str:
    """An error line without the link to docs/install.md and the folder of the model file."""
    error = re.sub(r" \(which backend installs on which platform: \S+\)", "", error)
    return re.sub(r"/\S*/([^/\s]+\.(onnx|tflite))", r"\1", error)


def main(argv: List[str]) -> int:
    """``cases WORK [EXTRA.onnx ...]``, ``numpy-cases WORK``, ``record OUT CMD ...`` or ``compare WORK TOLERANCE ARCH``."""
    work = Path(argv[1])
    if argv[0] == "record":
        return record(work, argv[2:])
    if argv[0] == "compare":
        return 0 if compare(work, float(argv[2]), argv[3]) else 1
    found = cases(work, [Path(p) for p in argv[2:]]) if argv[0] == "cases" else numpy_cases(work)
    (work / "cases.txt").write_text("".join("|".join(case) + "\n" for case in found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
