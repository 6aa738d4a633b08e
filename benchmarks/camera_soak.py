"""Soak the camera app's LIVE_STREAM pipeline: 10,000 classified frames from a looping video, measuring
memory growth, errors, and how close the stream's frame rate comes to what the model alone allows.

    .venv/bin/python benchmarks/camera_soak.py [--frames 10000] [--model M] [--size 640x480] [--source-fps F]

The video (640x480 by default, like a Pi camera) is made from scikit-image's photos. It is paced like a
camera at three times the model's own rate (measured first, in a plain ``classify`` loop), so the source
is never the bottleneck and no core is burnt decoding frames that would be dropped anyway
(``--source-fps 0``: as fast as it decodes). It runs through the app itself
(``slidelite.apps.camera.run``, JSON lines to /dev/null). Numbers printed, all from this one run:

* anonymous RSS (``RssAnon``) after ``--warmup`` classified frames and at the last frame (growth goal:
  <= 5 MB), sampled every 1,000 frames;
* frames delivered / classified / dropped, errors (goal: 0), reopens;
* fps (classified frames / wall time) and the mean inference time (the model run, ``Timings.inference_ms``)
  in the same run; **efficiency = fps / (1 / inference time)** (goal: >= 0.95), i.e. the share of wall
  time the model is running: the pipeline prepares the next frame while the model runs, so only the
  hand-over, postprocessing and the outputs are left between two runs. For reference: fps against
  1 / the whole classify latency (preprocessing + inference + postprocessing) and against the standalone loop;
* the frame age (capture -> result) median over the first and the last 1,000 frames (it must not grow).

The model: ``--model``, else the shipped default model, else the tests' fixture ONNX classifier
(``tests/_runtime_fixtures.py``) at 224x224 input. Exit code 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the photo video and fixture model builders

RSS_GOAL_MB = 5.0
EFFICIENCY_GOAL = 0.95
AGE_WINDOW = 1000


def rss_anon_mb() -> float:
    """The process's anonymous resident memory (``RssAnon``: heap, arenas; what a leak grows).

    Total RSS also counts file-backed pages (shared libraries, the model file), which the kernel evicts
    and reloads under memory pressure; on a busy machine that moves RSS by tens of MB either way.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no RssAnon line (Linux >= 4.5 needed)")


def standalone_latency_ms(model: Optional[str], threads: Optional[int], frames: List[np.ndarray],
                          runs: int) -> float:
    """Mean latency of ``Classifier.classify`` on the video's frames in a plain loop (no pipeline)."""
    from slidelite import Classifier, ClassifierOptions

    with Classifier.create_from_options(ClassifierOptions(model=model, threads=threads)) as classifier:
        for frame in frames:  # warm-up
            classifier.classify(frame)
        start = time.perf_counter()
        for i in range(runs):
            classifier.classify(frames[i % len(frames)])
        return (time.perf_counter() - start) * 1000.0 / runs


def soak_model(model: Optional[str], workdir: Path) -> Tuple[Optional[str], str]:
    """The ``--model`` value to soak (None: the shipped default) and a description of it."""
    from slidelite import Classifier
    from slidelite.errors import ModelError

    if model:
        return model, model
    try:
        Classifier.default().close()
        return None, "the shipped default model"
    except ModelError:
        from _runtime_fixtures import make_fixture_onnx

        path = make_fixture_onnx(workdir / "fixture.onnx", size=224)
        return str(path), "tests' fixture ONNX classifier, 224x224 input (no shipped model yet)"


class Probe:
    """Called for each classified frame (after the app's own outputs): frame ages and RSS samples."""

    def __init__(self, frames: int, warmup: int) -> None:
        self.ages = np.zeros(frames)
        self.warmup = warmup
        self.count = 0
        self.rss_samples: List[tuple] = []
        self.rss_warm = 0.0

    def record(self, item) -> None:
        """Store this frame's age; sample RSS at the warm-up mark, every 1,000 frames and at the last one."""
        self.ages[self.count] = item.age_ms
        self.count += 1
        if self.count == self.warmup:
            gc.collect()
            self.rss_warm = rss_anon_mb()
        if self.count % 1000 == 0 or self.count == len(self.ages):
            self.rss_samples.append((self.count, rss_anon_mb()))


def main() -> int:
    """Run the soak and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000, help="classified frames to run (default 10000)")
    parser.add_argument("--warmup", type=int, default=500, help="frames before the RSS baseline (default 500)")
    parser.add_argument("--model", help="model file (default: shipped default, else the fixture model)")
    parser.add_argument("--size", default="640x480", help="video frame size WxH (default 640x480)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: runtime's)")
    parser.add_argument("--prepare-ahead", choices=("auto", "always", "never"), default="auto",
                        help="the pipeline's prepare-ahead setting (default auto)")
    parser.add_argument("--source-fps", type=float, default=None,
                        help="pace the video at this rate (default: 3x the model's standalone rate; "
                             "0: as fast as it decodes)")
    args = parser.parse_args()
    if args.frames < max(args.warmup + 1, 2 * AGE_WINDOW):
        parser.error(f"--frames must exceed --warmup and be at least {2 * AGE_WINDOW}")

    import _common
    from _camera_fixtures import make_video, photo_frames
    from slidelite.apps.camera import CameraConfig, run

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        video = make_video(workdir / "soak.mp4", frames_per_photo=30, size=(width, height))
        model, model_name = soak_model(args.model, workdir)
        alone_ms = standalone_latency_ms(model, args.threads, photo_frames(size=(width, height)), runs=200)
        source_fps = args.source_fps if args.source_fps is not None else round(3000.0 / alone_ms, 1)
        config = CameraConfig(source=str(video), model=model, threads=args.threads, headless=True, json=True,
                              loop=True, source_fps=source_fps, max_frames=args.frames,
                              prepare_ahead=args.prepare_ahead)
        probe = Probe(args.frames, args.warmup)
        cpu_start = time.process_time()
        with open(os.devnull, "w") as devnull:
            stats, failure = run(config, stdout=devnull, on_result=probe.record)
        cpu_s = time.process_time() - cpu_start

    summary = stats.summary()
    inference_s = summary["mean_inference_ms"] / 1000.0
    efficiency = summary["fps"] * inference_s
    rss_end = probe.rss_samples[-1][1]  # at the last frame, with the model and video still open
    growth = rss_end - probe.rss_warm
    first_age = float(np.median(probe.ages[:AGE_WINDOW]))
    last_age = float(np.median(probe.ages[probe.count - AGE_WINDOW:probe.count]))
    pace = f"paced at {source_fps:g} fps" if source_fps else "unpaced"
    print(f"CPU: {_common.cpu_simd()}; this process used {cpu_s:.1f} s of CPU in the {summary['elapsed_s']:.1f} s run "
          f"({cpu_s / summary['elapsed_s']:.2f} cores)")
    print(f"model: {model_name}; video {width}x{height}, looped, {pace}; threads {args.threads or 'default'}; "
          f"prepare ahead {args.prepare_ahead}; 1-minute load average {os.getloadavg()[0]:.2f} at the end")
    print(f"frames: delivered {stats.delivered}, classified {stats.classified}, dropped {stats.dropped}, "
          f"errors {stats.errors}, reopens {stats.reopens}, failure {failure}")
    print(f"time: {summary['elapsed_s']:.1f} s; fps {summary['fps']:.1f}; mean inference {summary['mean_inference_ms']:.2f} "
          f"ms, mean preprocessing + inference + postprocessing {summary['mean_latency_ms']:.2f} ms")
    print(f"efficiency fps / (1 / inference) = {summary['fps']:.1f} / {1 / inference_s:.1f} = {efficiency:.3f} "
          f"(goal >= {EFFICIENCY_GOAL})")
    print(f"inference thread: running the model {stats.inference_ms_total / 1000.0:.1f} s, waiting for a prepared "
          f"frame {stats.idle_s:.1f} s of {summary['elapsed_s']:.1f} s; frames prepared ahead {stats.prepared_ahead}")
    print(f"for reference: fps / (1 / classify latency) = {summary['fps'] * summary['mean_latency_ms'] / 1000:.3f}; "
          f"classify alone in a loop before the soak {alone_ms:.2f} ms = {1000 / alone_ms:.1f} fps; "
          f"stream fps / that = {summary['fps'] * alone_ms / 1000:.3f}")
    print(f"frame age median: first {AGE_WINDOW} frames {first_age:.2f} ms, last {AGE_WINDOW} {last_age:.2f} ms")
    print("RssAnon MB at frame: " + ", ".join(f"{n}: {mb:.1f}" for n, mb in probe.rss_samples))
    print(f"RssAnon growth after {args.warmup} warm-up frames: {probe.rss_warm:.1f} -> {rss_end:.1f} MB = "
          f"{growth:+.2f} MB (goal <= {RSS_GOAL_MB})")
    passed = (growth <= RSS_GOAL_MB and stats.errors == 0 and failure is None
              and stats.classified == args.frames and efficiency >= EFFICIENCY_GOAL)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
