"""The pure-numpy backend against LiteRT on the shipped ``.tflite`` files, timed interleaved.

    .venv/bin/python benchmarks/numpy_tflite.py [--threads 2] [--runs 30] [--warmup 3] [--no-docs]

Models: every ``.tflite`` in ``slidelite/models`` (EfficientNet-Lite0 with int8/float16 weights behind
DEQUANTIZE, Slide-Swin micro fp32 and dynamic-int8). Per model, LiteRT (XNNPACK, ``num_threads``) and the numpy
backend run one after the other in every round (the ``slidelite bench`` engine), so the shared machine's
background load hits both alike; the printed ratio is numpy p50 / LiteRT p50 from this one run, beside the
ratio of the fastest runs (min) and of the CPU time per inference (``time.process_time``, all threads, measured
interleaved in ``--cpu-runs`` extra rounds): on a loaded machine a run of several milliseconds is preempted more
often than a sub-millisecond one, so the p50 ratio overstates the gap there and the CPU-time ratio shows the work.
BLAS threads are limited with the environment before numpy is imported. The CPU's SIMD flags are printed beside
the ratios.

Writes ``benchmarks/results/numpy_tflite-tN.json`` and the ``numpy-tflite-tN`` section of docs/install.md
(N: the thread count).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (limit_threads must run before numpy is imported)


def main(argv: "list[str] | None" = None) -> int:
    """Run the comparison and print one line per model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cpu-runs", type=int, default=10, help="interleaved rounds timed in CPU time")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/install.md")
    args = parser.parse_args(argv)
    _common.limit_threads(args.threads)
    from slidelite import models

    flags = _common.simd_flags()
    print(f"CPU SIMD flags: {flags or 'unknown'}", flush=True)
    rows, reports = [], {}
    for shipped in (m for m in models.list_shipped() if m.format == "tflite"):
        name = shipped.file
        targets = [_common.runtime_target(f"{name} {engine}", shipped.path, engine, args.threads)
                   for engine in ("litert", "numpy")]
        litert_cpu, numpy_cpu = cpu_ms_per_run(targets, args.cpu_runs)
        result = _common.measure(targets, warmup=args.warmup, runs=args.runs)
        litert, numpy_row = result.row(f"{name} litert"), result.row(f"{name} numpy")
        row = {"model": name, "litert_p50_ms": litert["p50_ms"], "numpy_p50_ms": numpy_row["p50_ms"],
               "ratio": result.ratio(f"{name} numpy", f"{name} litert"),
               "min_ratio": numpy_row["min_ms"] / litert["min_ms"], "litert_cpu_ms": litert_cpu,
               "numpy_cpu_ms": numpy_cpu, "cpu_ratio": numpy_cpu / litert_cpu, "numpy_init_ms": numpy_row["init_ms"],
               "litert_init_ms": litert["init_ms"], "runs": numpy_row["runs"]}
        rows.append(row)
        reports[name] = result.report
        print(f"{name}: LiteRT {row['litert_p50_ms']:.2f} ms, numpy {row['numpy_p50_ms']:.2f} ms (p50, batch 1, "
              f"{args.threads} threads) -> numpy is {row['ratio']:.2f}x LiteRT (min {row['min_ratio']:.2f}x, "
              f"CPU time {row['cpu_ratio']:.2f}x) [SIMD: {flags}]", flush=True)

    _common.save_json(f"numpy_tflite-t{args.threads}", {"threads": args.threads, "simd_flags": flags, "rows": rows, "reports": reports})
    table = _common.markdown_table(rows, [
        ("model", "shipped .tflite"), ("litert_p50_ms", "LiteRT p50 ms"), ("numpy_p50_ms", "numpy p50 ms"),
        ("ratio", "numpy / LiteRT"), ("min_ratio", "min / min"), ("litert_cpu_ms", "LiteRT CPU ms"),
        ("numpy_cpu_ms", "numpy CPU ms"), ("cpu_ratio", "CPU / CPU"), ("litert_init_ms", "LiteRT load ms"), ("numpy_init_ms", "numpy load ms"),
        ("runs", "runs")])
    body = (f"{table}\n\n{_common.environment_line(next(iter(reports.values())), args.threads)} CPU SIMD flags: "
            f"{flags or 'unknown'}. Command: `.venv/bin/python benchmarks/numpy_tflite.py --threads {args.threads} "
            f"--runs {args.runs}`.")
    print(body)
    if not args.no_docs:
        _common.update_docs_section(f"numpy-tflite-t{args.threads}", body, _common.ROOT / "docs" / "install.md")
    return 0


def cpu_ms_per_run(targets: "list", rounds: int) -> "tuple[float, ...]":
    """Mean CPU time (all threads of the process) per inference of each target, timed in interleaved rounds."""
    totals = [0.0] * len(targets)
    for _ in range(max(rounds, 1)):
        for position, target in enumerate(targets):
            start = time.process_time()
            target.run_once()
            totals[position] += time.process_time() - start
    return tuple(total * 1000.0 / max(rounds, 1) for total in totals)


if __name__ == "__main__":
    sys.exit(main())
