"""Step 7: latency measured side by side (interleaved runs in one process) and the short report table."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping

import numpy as np

if TYPE_CHECKING:
    from .job import ConversionResult


def measure_latency(models: Mapping[str, Path], example: np.ndarray, threads: int = 2, runs: int = 20,
                    warmup: int = 3) -> Dict[str, float]:
    """Median latency (ms) of each ONNX model on ``example``, timing the models in turn within every round
    (interleaved), so load changes on a shared machine hit all of them alike."""
    from .onnx_export import onnx_session

    sessions = {label: onnx_session(path, threads) for label, path in models.items()}
    feeds = {label: {s.get_inputs()[0].name: example} for label, s in sessions.items()}
    times: Dict[str, List[float]] = {label: [] for label in sessions}
    for round_index in range(warmup + runs):
        for label, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds[label])
            if round_index >= warmup:
                times[label].append((time.perf_counter() - start) * 1e3)
    return {label: float(np.median(values)) for label, values in times.items()}


def profile_op_types(path: Path, example: np.ndarray, threads: int = 2, runs: int = 5) -> Dict[str, float]:
    """Mean milliseconds per run spent in each op type (onnxruntime's profiler, after its graph fusions),
    sorted by time. Op types are the kernels that actually ran (e.g. ``DynamicQuantizeMatMul``, ``QGemm``)."""
    import json
    import os
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="slidelite-profile-") as folder:
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: example}
        for _ in range(runs + 1):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as handle:
            events = json.load(handle)
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    timed_from = run_starts[1] if len(run_starts) > 1 else 0  # the first run (allocations) is a warm-up
    totals: Dict[str, float] = {}
    for event in events:
        if (event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
                and event["ts"] >= timed_from):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3 / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def speed_ratio(fp32_ms: float, int8_ms: float) -> str:
    """``int8 1.79x faster`` or ``int8 1.05x slower`` (never a ratio under 1 called faster)."""
    if int8_ms <= fp32_ms:
        return f"int8 {fp32_ms / int8_ms:.2f}x faster"
    return f"int8 {int8_ms / fp32_ms:.2f}x slower"


def format_report(result: "ConversionResult", warnings: bool = True) -> str:
    """A short plain-text table: how the model was built and which weights were used, sizes, fp32 parity vs torch,
    int8 agreement, latency fp32 vs int8, and (unless ``warnings`` is False: the CLI prints them on stderr) the
    warnings."""
    rows = [("output", str(result.output)), *result.origin, ("precision", result.metadata.precision)]
    rows.append(("size fp32", _mb(result.sizes["fp32"])))
    if "int8" in result.sizes:
        rows.append(("size int8", f"{_mb(result.sizes['int8'])} ({result.sizes['int8'] / result.sizes['fp32']:.2f}x fp32)"))
    p = result.fp32_parity
    rows.append(("fp32 vs torch", f"cos {p['cosine']:.7f}, max rel err {p['max_rel_err']:.1e}, top-1 "
                                  f"{p['top1_agreement']:.3f} ({p['images']} images)"))
    if result.int8_recipe:
        rows.append(("int8 recipe", result.int8_recipe))
    if result.int8_agreement:
        a = result.int8_agreement
        rows.append(("int8 vs torch", f"top-1 agreement {a['top1_agreement']:.3f}, cos {a['cosine']:.4f} "
                                      f"({a['images']} images)"))
    if result.recipe_reason:
        rows.append(("int8 target", result.recipe_reason))
    lat = result.latency_ms
    if lat:
        text = ", ".join(f"{label} {ms:.1f} ms" for label, ms in lat.items())
        if "int8" in lat and "fp32" in lat:
            text += f" ({speed_ratio(lat['fp32'], lat['int8'])})"
        rows.append(("latency (median, interleaved)", text))
    rows += [("warning", w) for w in result.warnings] if warnings else []
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
