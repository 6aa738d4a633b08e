"""The camera path: slidelite's classify call against MediaPipe Tasks' ImageClassifier on the same ``.tflite``
at every frame size, and what the fast preprocessing changes.

    .venv/bin/python benchmarks/camera_path.py [--runs 40] [--warmup 5] [--no-docs]

On the shipped default model ``efficientnet_lite0.tflite``. Two sections:

* **agreement**: scikit-image's photos at their native size, and fitted (centre crop to the aspect, bicubic)
  to 1920x1080 and 4032x3024, as RGB arrays and as JPEG bytes (quality 95): the input tensor of
  ``preprocessing="fast"`` against ``"exact"`` (max and mean absolute difference, in pixel levels for this
  model) and the classifier's top-1 and top-5 agreement between the two (this environment's backend);
* **speed**: one RGB frame per size (224x224 ... 4032x3024), and a JPEG file of it (``--no-jpeg``: not);
  ``Classifier.classify(frame)`` in this process
  with this environment's backend (LiteRT where installed, as for users) fast and exact on one thread, and fast
  with the Classifier's default threads (one per physical core), against MediaPipe's
  ``classify(mp.Image(SRGB, frame))`` (``mp.Image.create_from_file(path)`` for a JPEG) in a ``.venv-tflite`` child
  process (MediaPipe needs numpy < 2), which
  times each of its calls itself (wall and CPU) so the pipe is not counted. MediaPipe Tasks runs XNNPACK on one
  thread outside Android/iOS/web (``GetXnnpackDefaultNumThreads`` in its ``inference_calculator_utils.cc``)
  and has no Python option for it. One call per candidate per round, the order rotating every round; p50
  wall time, median CPU time (the calling process's, all threads: a shared machine's load delays calls but
  hardly changes the work they do), their ratios to MediaPipe, the preprocessing share of slidelite's calls
  (median of ``preprocess_ms / total``), the CPU time of the fast preprocessing alone with its share of the
  call's CPU, and whether the top-1 equals MediaPipe's.

Prints the CPU's SIMD features with the tables; writes ``benchmarks/results/camera_path.json`` and the
``camera-path`` section of ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

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

#: the slidelite candidates: (label, preprocessing, threads; None: the Classifier's default, one per physical core)
CANDIDATES = (("fast", "fast", 1), ("exact", "exact", 1), ("fast, default threads", "fast", None))


class MediaPipeWorker:
    """MediaPipe's ImageClassifier in a ``.venv-tflite`` child process (MediaPipe needs numpy < 2), called one
    classify at a time; the child times each call itself (wall and its process's CPU), so the pipe between
    the two processes is not in the numbers."""

    def __init__(self, photo_path: Path) -> None:
        if not TFLITE_PYTHON.is_file():
            raise SystemExit(f"{TFLITE_PYTHON} is missing: run scripts/setup_tflite.sh (MediaPipe lives there)")
        self._process = subprocess.Popen([str(TFLITE_PYTHON), __file__, "--mediapipe-worker", str(photo_path)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                         cwd=_common.ROOT)
        self.version = self._ask("version")

    def _ask(self, line: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(line + "\n")
        answer = self._process.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"the MediaPipe worker stopped (exit code {self._process.wait()})")
        return answer

    def use_frame(self, size: Tuple[int, int]) -> None:
        """Make the child classify the speed photo fitted to ``size`` (the same pixels as :func:`fitted` here)."""
        self._ask(f"frame {size[0]} {size[1]}")

    def use_jpeg(self, path: Path) -> None:
        """Make the child classify the JPEG file ``path``, decoding it in each call (``mp.Image.create_from_file``)."""
        self._ask(f"jpeg {path}")

    def classify(self) -> Tuple[float, float, int]:
        """One classify call in the child: (wall ms, CPU ms, top-1 index)."""
        wall, cpu, top = self._ask("classify").split()
        return float(wall), float(cpu), int(top)

    def close(self) -> None:
        """End the child."""
        self._ask("quit")
        self._process.wait()


def mediapipe_worker(photo_path: str) -> None:
    """The ``.venv-tflite`` side of :class:`MediaPipeWorker`: one command a line on stdin, one answer a line."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    image = Image.open(photo_path).convert("RGB")
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(MODEL)), max_results=5)
    frame = np.zeros((1, 1, 3), np.uint8)
    jpeg = ""
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "version":
                answer = mp.__version__
            elif command == "frame":
                frame, jpeg = np.ascontiguousarray(fitted(image, (int(args[0]), int(args[1])))), ""
                answer = "ok"
            elif command == "jpeg":
                jpeg, answer = line.split(" ", 1)[1].strip(), "ok"
            elif command == "classify":
                wall, cpu = time.perf_counter(), time.process_time()
                picture = (mp.Image.create_from_file(jpeg) if jpeg
                           else mp.Image(image_format=mp.ImageFormat.SRGB, data=frame))
                result = classifier.classify(picture)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                answer = f"{wall * 1000.0} {cpu * 1000.0} {result.classifications[0].categories[0].index}"
            else:
                answer = "bye"
            print(answer, flush=True)
            if command == "quit":
                return


def speed(image: Image.Image, sizes: Sequence[Tuple[int, int]], warmup: int, runs: int, worker: MediaPipeWorker,
          jpeg_dir: "Path | None" = None) -> List[Dict[str, Any]]:
    """Per frame size: the :data:`CANDIDATES` (this environment's backend, LiteRT by default) and MediaPipe, one
    call each per round in an order that rotates every round; wall and CPU time (this process's, all threads;
    the child's for MediaPipe) and each slidelite call's stage timings. The input is the RGB frame, or with
    ``jpeg_dir`` a JPEG file of it written there (quality 95), decoded in every call by both."""
    from slidelite import Classifier

    rows = []
    for size in sizes:
        frame: Any = np.ascontiguousarray(fitted(image, size))
        if jpeg_dir is None:
            worker.use_frame(size)
        else:
            path = jpeg_dir / f"{size[0]}x{size[1]}.jpg"
            path.write_bytes(jpeg_bytes(frame))
            frame = path
            worker.use_jpeg(path)
        classifiers = {label: Classifier.from_file(MODEL, preprocessing=mode, threads=threads)
                       for label, mode, threads in CANDIDATES}
        samples: Dict[str, List[Tuple[float, float]]] = {label: [] for label in [*classifiers, "MediaPipe"]}
        shares: Dict[str, List[float]] = {label: [] for label in classifiers}
        tops: Dict[str, int] = {}
        labels = list(samples)
        for round_index in range(warmup + runs):
            for label in labels[round_index % len(labels):] + labels[:round_index % len(labels)]:
                if label == "MediaPipe":
                    wall, cpu, tops[label] = worker.classify()
                else:
                    wall, cpu = time.perf_counter(), time.process_time()
                    result = classifiers[label].classify(frame)
                    wall, cpu = (time.perf_counter() - wall) * 1000.0, (time.process_time() - cpu) * 1000.0
                    timings, tops[label] = result.timings, result.top.index
                    if round_index >= warmup:
                        shares[label].append(timings.preprocess_ms / timings.total_ms)
                if round_index >= warmup:
                    samples[label].append((wall, cpu))
        threads = {label: c.backend.threads for label, c in classifiers.items()}
        engine = next(iter(classifiers.values())).backend
        for classifier in classifiers.values():
            classifier.close()
        wall_ms = {label: float(np.median([w for w, _ in values])) for label, values in samples.items()}
        cpu_ms = {label: float(np.median([c for _, c in values])) for label, values in samples.items()}
        row: Dict[str, Any] = {"size": f"{size[0]}x{size[1]}", "input": "array" if jpeg_dir is None else "JPEG file",
                               "engine": f"{engine.name} {engine.version}",
                               "default_threads": threads["fast, default threads"]}
        for label in samples:
            key = _key(label)
            row[f"{key}_ms"], row[f"{key}_cpu_ms"] = wall_ms[label], cpu_ms[label]
            if label != "MediaPipe":
                row[f"{key}_vs_mp"] = wall_ms[label] / wall_ms["MediaPipe"]
                row[f"{key}_vs_mp_cpu"] = cpu_ms[label] / cpu_ms["MediaPipe"]
                row[f"{key}_pre_share"] = float(np.median(shares[label]))
                row[f"{key}_top_is_mp"] = tops[label] == tops["MediaPipe"]
        row["fast_pre_cpu_ms"] = _preprocess_cpu_ms(frame, runs)
        row["fast_pre_cpu_share"] = row["fast_pre_cpu_ms"] / cpu_ms["fast"]
        rows.append(row)
        print(f"{row['size']} {row['input']}: fast {row['fast_ms']:.2f} ms (CPU {row['fast_cpu_ms']:.2f}), default threads "
              f"{row['fast_default_threads_ms']:.2f} ms (CPU {row['fast_default_threads_cpu_ms']:.2f}), MediaPipe "
              f"{row['mediapipe_ms']:.2f} ms (CPU {row['mediapipe_cpu_ms']:.2f}); fast/MP {row['fast_vs_mp']:.2f} "
              f"(CPU {row['fast_vs_mp_cpu']:.2f}), default threads/MP {row['fast_default_threads_vs_mp']:.2f}; "
              f"pre share fast {row['fast_pre_share']:.1%}, default threads {row['fast_default_threads_pre_share']:.1%}",
              file=sys.stderr, flush=True)
    return rows


def _key(label: str) -> str:
    return label.lower().replace(",", "").replace(" ", "_")


def _preprocess_cpu_ms(frame: Any, runs: int) -> float:
    """Median CPU time (this thread) of the fast preprocessing of ``frame`` (an array or a path) alone, over
    ``runs`` calls."""
    from slidelite.model_file import open_model_file, read_metadata
    from slidelite.preprocess import prepare_input

    metadata = read_metadata(open_model_file(MODEL))
    samples = []
    for _ in range(runs + 1):
        start = time.thread_time()
        prepare_input(frame, metadata, fast=True)
        samples.append((time.thread_time() - start) * 1000.0)
    return float(np.median(samples[1:]))


# ------------------------------------------------------------------------------------------------ main


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run both sections, print their tables, save the results and rewrite the docs section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed rounds per frame size (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--sizes", nargs="*", default=[f"{w}x{h}" for w, h in FRAME_SIZES], help="WxH frame sizes")
    parser.add_argument("--no-agreement", action="store_true", help="skip the agreement section")
    parser.add_argument("--no-jpeg", action="store_true", help="time RGB frames only, not JPEG files of them")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--mediapipe-worker", metavar="PHOTO", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mediapipe_worker:
        mediapipe_worker(args.mediapipe_worker)
        return 0

    from slidelite import Classifier
    from slidelite.bench import device_facts

    simd = _common.cpu_simd()
    print(f"CPU: {simd}", flush=True)
    agreement_rows: List[Dict[str, Any]] = []
    per_photo: Dict[str, Any] = {}
    if not args.no_agreement:
        with Classifier.from_file(MODEL, threads=1) as classifier:
            agreement_rows, per_photo = agreement(classifier)
            engine = f"{classifier.backend.name} {classifier.backend.version}"
        print(f"agreement ({engine}):", flush=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "photo.png"
        photo(SPEED_PHOTO).save(photo_path)
        worker = MediaPipeWorker(photo_path)
        speed_photo, sizes = Image.open(photo_path).convert("RGB"), [_size(text) for text in args.sizes]
        try:
            rows = speed(speed_photo, sizes, args.warmup, args.runs, worker)
            if not args.no_jpeg:
                rows += speed(speed_photo, sizes, args.warmup, args.runs, worker, jpeg_dir=Path(tmp))
        finally:
            worker.close()
    device = {**device_facts(), "loadavg_before": load_before}
    agreement_table = _common.markdown_table(agreement_rows, [
        ("size", "photo size"), ("input", "input"), ("photos", "photos"), ("max_abs_diff", "max abs diff"),
        ("mean_abs_diff", "mean abs diff"), ("top1_agree", "top-1 agreement"), ("top5_same_set", "same top-5 set"),
        ("top5_overlap", "top-5 overlap")])
    speed_table = _common.markdown_table(rows, [
        ("size", "frame"), ("input", "input"), ("fast_ms", "fast p50 ms"), ("fast_default_threads_ms", "fast, default threads p50 ms"),
        ("exact_ms", "exact p50 ms"), ("mediapipe_ms", "MediaPipe p50 ms"),
        ("fast_vs_mp", "fast / MP (p50)"), ("fast_vs_mp_cpu", "fast / MP (CPU)"),
        ("fast_default_threads_vs_mp", "fast, default threads / MP (p50)"),
        ("fast_default_threads_vs_mp_cpu", "fast, default threads / MP (CPU)"),
        ("exact_vs_mp", "exact / MP (p50)"), ("exact_vs_mp_cpu", "exact / MP (CPU)"),
        ("fast_cpu_ms", "fast CPU ms"), ("mediapipe_cpu_ms", "MP CPU ms"),
        ("fast_pre_share", "pre share, fast"), ("fast_default_threads_pre_share", "pre share, fast, default threads"),
        ("exact_pre_share", "pre share, exact"), ("fast_pre_cpu_ms", "fast pre CPU ms"),
        ("fast_pre_cpu_share", "its share of the fast call's CPU"), ("fast_top_is_mp", "same top-1 as MP")])
    context = (f"{_common.environment_line({'device': device}, 1)} slidelite: {rows[0]['engine']} (fast and exact: "
               f"1 thread; default threads: {rows[0]['default_threads']}); MediaPipe {worker.version} with its "
               f"defaults (1 XNNPACK thread), in `.venv-tflite`, timed inside its own process. CPU SIMD: {simd}.")
    print(f"\n{agreement_table}\n\n{speed_table}\n\n{context}")
    _common.save_json("camera_path", {"agreement": agreement_rows, "agreement_per_photo": per_photo,
                                      "speed": rows, "device": device, "cpu_simd": simd})
    if not args.no_docs:
        body = ("`.venv/bin/python benchmarks/camera_path.py`\n\n"
                f"Fast against exact preprocessing:\n\n{agreement_table}\n\n"
                "Classify calls on RGB frames and on JPEG files of them (quality 95, decoded in every call, by "
                "MediaPipe with `mp.Image.create_from_file`), interleaved (the order rotates every round), "
                f"{args.runs} rounds; "
                "p50 wall time, CPU time (median, the calling process's, all threads), the preprocessing share "
                f"(median over the calls of `preprocess_ms / total_ms`):\n\n{speed_table}\n\n{context}")
        _common.update_docs_section("camera-path", body)
    return 0


def _size(text: str) -> Tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


if __name__ == "__main__":
    sys.exit(main())
