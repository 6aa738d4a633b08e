"""The camera pipeline's prepare-ahead settings against each other: how much of the wall time the model runs.

    .venv/bin/python benchmarks/camera_overlap.py [--frames 600] [--rounds 6] [--threads N] [--no-docs]

Short LIVE_STREAM runs of the camera app (``slidelite.apps.camera.run``, JSON lines to /dev/null) on the
same looping 640x480 photo video, paced at ``--source-fps`` (150 by default: faster than the model, like the
soak), with the shipped default model; one run per setting per round, the order reversed every other round,
so the machine's load falls on all of them alike. Per setting, medians over the rounds: the efficiency
``fps * mean inference time`` (the share of wall time the model is running; the soak's goal is >= 0.95),
fps, mean inference ms, the inference thread's wait for a prepared frame per frame, and the share of frames
prepared ahead. Prints the CPU's SIMD features and the load; writes ``benchmarks/results/camera_overlap.json``
and the ``camera-overlap`` section of ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

sys.path.insert(0, str(_common.ROOT / "tests"))  # the photo video builder

SETTINGS = ("never", "auto", "always")


def one_run(video: Path, setting: str, frames: int, threads: Optional[int], source_fps: float) -> Dict[str, float]:
    """One stream of ``frames`` classified frames with ``prepare_ahead=setting``; its numbers."""
    from slidelite.apps.camera import CameraConfig, run

    config = CameraConfig(source=str(video), threads=threads, headless=True, json=True, loop=True,
                          source_fps=source_fps, max_frames=frames, prepare_ahead=setting)
    cpu = time.process_time()
    with open(os.devnull, "w") as devnull:
        stats, failure = run(config, stdout=devnull)
    cpu = time.process_time() - cpu
    if failure is not None or stats.errors:
        raise SystemExit(f"{setting}: the stream failed ({failure}, {stats.errors} errors)")
    summary = stats.summary()
    return {"efficiency": summary["fps"] * summary["mean_inference_ms"] / 1000.0, "fps": summary["fps"],
            "inference_ms": summary["mean_inference_ms"], "idle_ms_per_frame": stats.idle_s * 1000.0 / stats.classified,
            "ahead_share": stats.prepared_ahead / stats.classified, "cores_used": cpu / stats.elapsed_s}


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run the rounds, print the table, save it and rewrite the docs section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600, help="classified frames per run (default 600)")
    parser.add_argument("--rounds", type=int, default=6, help="runs per setting (default 6)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    parser.add_argument("--source-fps", type=float, default=150.0, help="video pace (default 150)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)

    from _camera_fixtures import make_video

    simd = _common.cpu_simd()
    print(f"CPU: {simd}", flush=True)
    load_before = os.getloadavg()[0]
    samples: Dict[str, List[Dict[str, float]]] = {setting: [] for setting in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "overlap.mp4", frames_per_photo=30, size=(640, 480))
        for round_index in range(args.rounds):
            for setting in SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]:
                numbers = one_run(video, setting, args.frames, args.threads, args.source_fps)
                samples[setting].append(numbers)
                print(f"round {round_index + 1} {setting}: " + ", ".join(f"{k} {v:.3f}" for k, v in numbers.items())
                      + f"; load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    rows: List[Dict[str, Any]] = []
    for setting, runs in samples.items():
        row: Dict[str, Any] = {"prepare_ahead": setting}
        row.update({key: float(np.median([run[key] for run in runs])) for key in runs[0]})
        row["efficiency_min"] = min(run["efficiency"] for run in runs)
        rows.append(row)
    table = _common.markdown_table(rows, [
        ("prepare_ahead", "prepare ahead"), ("efficiency", "efficiency (median)"), ("efficiency_min", "lowest"),
        ("fps", "fps"), ("inference_ms", "mean inference ms"), ("idle_ms_per_frame", "waiting for a frame, ms/frame"),
        ("ahead_share", "frames prepared ahead"), ("cores_used", "cores used (process CPU / wall)")])
    threads = args.threads or "default"
    context = (f"{args.rounds} rounds of {args.frames} frames per setting, 640x480 video paced at "
               f"{args.source_fps:g} fps, shipped default model, inference threads {threads}; 1-minute load average "
               f"{load_before:.2f} before / {os.getloadavg()[0]:.2f} after (other jobs share these cores); "
               f"CPU {simd}; measured {time.strftime('%Y-%m-%dT%H:%M:%S%z')}.")
    print(f"\n{table}\n\n{context}")
    _common.save_json("camera_overlap", {"rows": rows, "samples": samples, "cpu_simd": simd, "context": context})
    if not args.no_docs:
        _common.update_docs_section("camera-overlap", f"`.venv/bin/python benchmarks/camera_overlap.py`\n\n{table}\n\n"
                                                      f"{context}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
