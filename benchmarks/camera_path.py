"""The camera path: slidelite's classify call against MediaPipe Tasks' ImageClassifier on the same ``.tflite``
at every frame size, and what the fast preprocessing changes.

    .venv/bin/python benchmarks/camera_path.py [--runs 40] [--warmup 5] [--no-docs]

Both on the shipped default model ``efficientnet_lite0.tflite`` with one inference thread (``--threads``;
MediaPipe Tasks runs XNNPACK on one thread by default outside Android/iOS/web, ``GetXnnpackDefaultNumThreads``
in its ``inference_calculator_utils.cc``, and has no Python option for it).
Two sections:

* **agreement**: scikit-image's photos at their native size, and fitted (centre crop to the aspect, bicubic)
  to 1920x1080 and 4032x3024, as RGB arrays and as JPEG bytes (quality 95): the input tensor of
  ``preprocessing="fast"`` against ``"exact"`` (max and mean absolute difference, in pixel levels for this
  model) and the classifier's top-1 and top-5 agreement between the two (this environment's backend);
* **speed**, in a child process in ``.venv-tflite`` (MediaPipe needs numpy < 2; slidelite, imported from this
  checkout, runs there with its ``tflite`` backend): one RGB frame per size (224x224 ... 4032x3024), three
  candidates timed interleaved with the ``slidelite bench`` engine in that one process:
  ``Classifier.classify(frame)`` fast and exact, and MediaPipe's ``classify(mp.Image(SRGB, frame))``; p50
  latencies, their ratios (also from each candidate's fastest run), the CPU time of the calls (the process's,
  all threads; a shared machine's load delays calls but hardly changes the work they do), the preprocessing
  share of slidelite's classify calls (median of ``preprocess_ms / total`` over the timed calls, and from
  each stage's fastest run), and the CPU time of the fast preprocessing alone with its share of the call's CPU.

Prints the CPU's SIMD features with the tables; writes ``benchmarks/results/camera_path.json`` and the
``camera-path`` section of ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

MODEL = _common.ROOT / "slidelite" / "models" / "efficientnet_lite0.tflite"
TFLITE_PYTHON = _common.ROOT / ".venv-tflite" / "bin" / "python"
FRAME_SIZES = ((224, 224), (451, 300), (640, 480), (1280, 720), (1920, 1080), (4032, 3024))
AGREEMENT_SIZES = ((1920, 1080), (4032, 3024))
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
          "immunohistochemistry", "camera", "moon", "coins", "clock", "brick", "grass", "gravel", "cell")
SPEED_PHOTO = "astronaut"
JPEG_QUALITY = 95


def photo(name: str) -> Image.Image:
    """A scikit-image photo as an RGB image (grey ones replicated to three channels)."""
    from skimage import data

    pixels = getattr(data, name)()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels
    return Image.fromarray(np.asarray(pixels)).convert("RGB")


def fitted(image: Image.Image, size: Tuple[int, int]) -> np.ndarray:
    """``image`` centre-cropped to the aspect of ``size`` and resized to it (bicubic), as an RGB array."""
    return np.asarray(ImageOps.fit(image, size, Image.Resampling.BICUBIC))


def jpeg_bytes(frame: np.ndarray) -> bytes:
    """``frame`` encoded as a JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- agreement


def agreement(classifier: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Fast vs exact preprocessing per (size, input kind): tensor differences and classifier agreement."""
    from slidelite.preprocess import prepare_input

    metadata = classifier.metadata
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for name in PHOTOS:
        image = photo(name)
        for size_name, frame in [("native", np.asarray(image))] + [
                (f"{w}x{h}", fitted(image, (w, h))) for w, h in AGREEMENT_SIZES]:
            for kind, source in (("array", frame), ("JPEG", jpeg_bytes(frame))):
                exact = prepare_input(source, metadata)
                fast = prepare_input(source, metadata, fast=True)
                groups.setdefault((size_name, kind), []).append(_compare(classifier, name, exact, fast))
    rows = []
    for (size_name, kind), items in groups.items():
        rows.append({
            "size": size_name, "input": kind, "photos": len(items),
            "max_abs_diff": max(i["max_abs_diff"] for i in items),
            "mean_abs_diff": float(np.mean([i["mean_abs_diff"] for i in items])),
            "top1_agree": sum(i["top1_same"] for i in items) / len(items),
            "top5_same_set": sum(i["top5_same_set"] for i in items) / len(items),
            "top5_overlap": float(np.mean([i["top5_overlap"] for i in items])),
        })
    return rows, {f"{s} {k}": v for (s, k), v in groups.items()}


def _compare(classifier: Any, name: str, exact: np.ndarray, fast: np.ndarray) -> Dict[str, Any]:
    diff = np.abs(exact.astype(np.float64) - fast.astype(np.float64))
    top_exact, top_fast = (np.argsort(-classifier.backend.run(t)[0])[:5] for t in (exact, fast))
    return {"photo": name, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "top1_same": bool(top_exact[0] == top_fast[0]), "top5_same_set": set(top_exact) == set(top_fast),
            "top5_overlap": len(set(top_exact) & set(top_fast)) / 5}


# ----------------------------------------------------------------------------------------------- speed


def speed(image: Image.Image, sizes: Sequence[Tuple[int, int]], threads: int, warmup: int,
          runs: int) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Per frame size: slidelite fast, slidelite exact and MediaPipe timed interleaved (in ``.venv-tflite``)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from slidelite import Classifier

    rows, reports = [], {}
    for size in sizes:
        frame = np.ascontiguousarray(fitted(image, size))
        targets = []
        for mode in ("fast", "exact"):
            classifier = Classifier.from_file(MODEL, preprocessing=mode, threads=threads)
            targets.append(_common.classify_target(f"slidelite {mode}", classifier, frame))
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(MODEL)), max_results=5)
        mediapipe = vision.ImageClassifier.create_from_options(options)
        targets.append(_common.callable_target(
            "MediaPipe", lambda: mediapipe.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)),
            {"name": "mediapipe", "version": mp.__version__}, mediapipe.close))
        cpu_ms = {target.label: _count_cpu_time(target) for target in targets}
        measured = _common.measure(targets, warmup, runs)
        shares = {t.label: _preprocess_share(t.stages_ms, np.median) for t in targets if t.stages_ms}
        least_disturbed = {t.label: _preprocess_share(t.stages_ms, np.min) for t in targets if t.stages_ms}
        cpu = {label: float(np.median(samples[1 + warmup:])) for label, samples in cpu_ms.items()}
        row = {"size": f"{size[0]}x{size[1]}"}
        for label, key in (("slidelite fast", "fast"), ("slidelite exact", "exact"), ("MediaPipe", "mediapipe")):
            row[f"{key}_ms"] = measured.row(label)["p50_ms"]
            row[f"{key}_cpu_ms"] = cpu[label]
        row["fast_pre_cpu_ms"] = _preprocess_cpu_ms(frame, runs)
        row["fast_pre_cpu_share"] = row["fast_pre_cpu_ms"] / cpu["slidelite fast"]
        row.update(fast_vs_mp=measured.ratio("slidelite fast", "MediaPipe"),
                   fast_vs_mp_min=measured.ratio("slidelite fast", "MediaPipe", "min_ms"),
                   fast_vs_mp_cpu=cpu["slidelite fast"] / cpu["MediaPipe"],
                   exact_vs_mp=measured.ratio("slidelite exact", "MediaPipe"),
                   fast_pre_share=shares["slidelite fast"], exact_pre_share=shares["slidelite exact"],
                   fast_pre_share_min=least_disturbed["slidelite fast"],
                   exact_pre_share_min=least_disturbed["slidelite exact"])
        rows.append(row)
        reports[row["size"]] = measured.report
        print(f"{row['size']}: fast {row['fast_ms']:.2f} ms, exact {row['exact_ms']:.2f} ms, MediaPipe "
              f"{row['mediapipe_ms']:.2f} ms; fast/MP {row['fast_vs_mp']:.2f} (CPU {row['fast_vs_mp_cpu']:.2f}), pre share fast "
              f"{row['fast_pre_share']:.1%} exact {row['exact_pre_share']:.1%}", file=sys.stderr, flush=True)
    return rows, reports


def speed_in_tflite_venv(sizes: Sequence[str], threads: int, warmup: int, runs: int) -> Dict[str, Any]:
    """Run :func:`speed` in ``.venv-tflite`` with slidelite imported from this checkout; its JSON document."""
    if not TFLITE_PYTHON.is_file():
        raise SystemExit(f"{TFLITE_PYTHON} is missing: run scripts/setup_tflite.sh (MediaPipe lives there)")
    with tempfile.TemporaryDirectory() as tmp:
        photo_path, out = Path(tmp) / "photo.png", Path(tmp) / "speed.json"
        photo(SPEED_PHOTO).save(photo_path)
        env = {**os.environ, "PYTHONPATH": str(_common.ROOT)}
        command = [str(TFLITE_PYTHON), __file__, "--speed-child", str(photo_path), str(out), "--runs", str(runs),
                   "--warmup", str(warmup), "--threads", str(threads), "--sizes", *sizes]
        subprocess.run(command, env=env, cwd=_common.ROOT, check=True)
        return json.loads(out.read_text(encoding="utf-8"))


def speed_child(photo_path: str, out: str, sizes: Sequence[str], threads: int, warmup: int, runs: int) -> None:
    """The ``.venv-tflite`` side: time the candidates and write the rows, reports and backend facts as JSON."""
    import slidelite
    from slidelite import Classifier

    with Classifier.from_file(MODEL, threads=threads) as classifier:
        backend = {"name": classifier.backend.name, "version": classifier.backend.version,
                   "threads": classifier.backend.threads}
    rows, reports = speed(Image.open(photo_path).convert("RGB"), [_size(text) for text in sizes], threads, warmup,
                          runs)
    document = {"slidelite": str(Path(slidelite.__file__).parent), "backend": backend, "rows": rows, "reports": reports}
    Path(out).write_text(json.dumps(document), encoding="utf-8")


def _size(text: str) -> Tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def _preprocess_cpu_ms(frame: np.ndarray, runs: int) -> float:
    """Median CPU time (this thread) of the fast preprocessing of ``frame`` alone, over ``runs`` calls."""
    from slidelite.model_file import open_model_file, read_metadata
    from slidelite.preprocess import prepare_input

    metadata = read_metadata(open_model_file(MODEL))
    samples = []
    for _ in range(runs + 1):
        start = time.thread_time()
        prepare_input(frame, metadata, fast=True)
        samples.append((time.thread_time() - start) * 1000.0)
    return float(np.median(samples[1:]))


def _count_cpu_time(target: Any) -> List[float]:
    """Make ``target`` record the process CPU time (ms, all threads) of each call; returns the list it fills."""
    samples: List[float] = []
    run = target.run_once

    def counted() -> Any:
        start = time.process_time()
        result = run()
        samples.append((time.process_time() - start) * 1000.0)
        return result

    target.run_once = counted
    return samples


def _preprocess_share(stages: Dict[str, List[float]], statistic: Callable[[np.ndarray], Any]) -> float:
    """Preprocessing's share of a classify call: ``statistic`` (median: of the per-call shares; min: from each
    stage's fastest run, the least disturbed by other jobs)."""
    pre, inference, post = (np.asarray(stages[k]) for k in ("preprocess", "inference", "postprocess"))
    if statistic is np.median:
        return float(np.median(pre / (pre + inference + post)))
    return float(statistic(pre) / (statistic(pre) + statistic(inference) + statistic(post)))


# ------------------------------------------------------------------------------------------------ main


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run both sections, print their tables, save the results and rewrite the docs section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed rounds per frame size (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="slidelite's inference threads (default 1)")
    parser.add_argument("--sizes", nargs="*", default=[f"{w}x{h}" for w, h in FRAME_SIZES], help="WxH frame sizes")
    parser.add_argument("--no-agreement", action="store_true", help="skip the agreement section")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--speed-child", nargs=2, metavar=("PHOTO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.speed_child:
        speed_child(*args.speed_child, args.sizes, args.threads, args.warmup, args.runs)
        return 0

    from slidelite import Classifier

    simd = _common.cpu_simd()
    print(f"CPU: {simd}", flush=True)
    agreement_rows: List[Dict[str, Any]] = []
    per_photo: Dict[str, Any] = {}
    if not args.no_agreement:
        with Classifier.from_file(MODEL, threads=args.threads) as classifier:
            agreement_rows, per_photo = agreement(classifier)
            engine = f"{classifier.backend.name} {classifier.backend.version}"
        print(f"agreement ({engine}):", flush=True)
    timed = speed_in_tflite_venv(args.sizes, args.threads, args.warmup, args.runs)
    agreement_table = _common.markdown_table(agreement_rows, [
        ("size", "photo size"), ("input", "input"), ("photos", "photos"), ("max_abs_diff", "max abs diff"),
        ("mean_abs_diff", "mean abs diff"), ("top1_agree", "top-1 agreement"), ("top5_same_set", "same top-5 set"),
        ("top5_overlap", "top-5 overlap")])
    speed_table = _common.markdown_table(timed["rows"], [
        ("size", "frame"), ("fast_ms", "slidelite fast p50 ms"), ("exact_ms", "slidelite exact p50 ms"),
        ("mediapipe_ms", "MediaPipe p50 ms"), ("fast_vs_mp", "fast / MediaPipe (p50)"),
        ("fast_vs_mp_min", "fast / MediaPipe (fastest runs)"), ("fast_cpu_ms", "fast CPU ms"),
        ("exact_cpu_ms", "exact CPU ms"), ("mediapipe_cpu_ms", "MediaPipe CPU ms"),
        ("fast_vs_mp_cpu", "fast / MediaPipe (CPU)"), ("exact_vs_mp", "exact / MediaPipe (p50)"),
        ("fast_pre_cpu_ms", "fast preprocessing CPU ms"), ("fast_pre_cpu_share", "its share of the fast call's CPU"),
        ("fast_pre_share", "preprocessing share, fast (median)"), ("fast_pre_share_min", "same, fastest runs"),
        ("exact_pre_share", "preprocessing share, exact (median)"), ("exact_pre_share_min", "same, fastest runs")])
    backend = timed["backend"]
    report = next(iter(timed["reports"].values()))
    context = (f"{_common.environment_line(report, backend['threads'])} slidelite (from {timed['slidelite']}): "
               f"{backend['name']} {backend['version']}; MediaPipe "
               f"{report['targets'][-1]['backend'].get('version')} with its defaults. CPU SIMD: {simd}.")
    print(f"\n{agreement_table}\n\n{speed_table}\n\n{context}")
    _common.save_json("camera_path", {"agreement": agreement_rows, "agreement_per_photo": per_photo,
                                      "speed": timed, "cpu_simd": simd})
    if not args.no_docs:
        body = ("`.venv/bin/python benchmarks/camera_path.py`\n\n"
                f"Fast against exact preprocessing:\n\n{agreement_table}\n\n"
                f"Classify calls on RGB frames, interleaved, {args.runs} rounds:\n\n{speed_table}\n\n{context}")
        _common.update_docs_section("camera-path", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
