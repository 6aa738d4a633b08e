"""The pure-numpy backend against onnxruntime, side by side on the same ONNX files, timed interleaved.

    .venv/bin/python benchmarks/numpy_backend.py [--threads 2 1] [--runs 30] [--warmup 3] [--no-tiny] [--no-docs]

Models: every ``.onnx`` file shipped in the wheel (``slidelite/models``: the default EfficientNet-Lite0 with
int8-stored weights, the Fashion-MNIST ``slide_swin_micro``) and Slide-Swin-T fp32 (random-init,
re-parameterized ``slide_swin_tiny``, exported the converter's way: dynamo exporter, opset 20, onnxslim;
cached in tmp/), unless ``--no-tiny``. Per model, the two backends run one after the other in every round
(the ``slidelite bench`` engine), so the shared machine's background load hits both alike; the printed
ratio is numpy p50 / onnxruntime p50 from this one run. Both get ``threads``: onnxruntime as
``intra_op_num_threads``, the numpy backend as its BLAS thread count (set through ctypes at load; the
environment variables are set too, before numpy is imported). The CPU's SIMD features as numpy detects
them are printed beside the ratios.

Writes ``benchmarks/results/numpy_backend.json`` and the ``numpy-backend`` section of docs/install.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (limit_threads must run before numpy is imported)

MODELS = {  # name -> (zoo architecture, input shape, re-parameterize): exported here
    "slide_swin_tiny": ("slide_swin_tiny", (1, 3, 224, 224), True),
}


EXPLANATION = """\
Where the numpy backend's time goes (per-op CPU time, one thread). EfficientNet-Lite0 is all convolution: the
depthwise ones about half (one einsum over all taps' strided windows, a row's columns and channels as one
contiguous axis; strided ones read column phase images) and the 1x1 OpenBLAS GEMMs on skinny matrices about 40%
(bias and ReLU6 applied per block of rows as they are computed). Its products alone, replayed without anything
else, already take about 1.8x onnxruntime's whole run (the last table column): that is OpenBLAS and numpy's
einsum against onnxruntime's MLAS kernels, a floor no plan in numpy gets under. Slide-Swin-T is GEMMs at OpenBLAS
speed (about half), the fused Slide attention (16%: per head, the logits as one (pixels, 10*hd) @ (10*hd, 9)
product of q times the 9 shifted keys, the output as attn @ [W_v | b_v] and one einsum with the shifted values,
instead of two depthwise convolutions with 9 outputs per channel), Gelu (12%, exact, through an
Abramowitz-Stegun erfc), the window attention's MatMuls, LayerNormalization and Softmax. The micro model's
28x28 maps make every op small: there the time is numpy's per-call overhead (its products alone are a third of
onnxruntime's run). With more than one thread the numpy backend splits products from 4M multiply-adds (by rows,
with their bias and activation), depthwise rows, attention row bands and the blocked elementwise kernels over
its threads; the other kernels run on one core, while onnxruntime parallelizes every op. On this 2-core VM other
jobs share the cores (see the load average): that hurts whichever engine waits on a second thread, and the
wall-clock p50 of the shortest runs (the micro model) swings several-fold between runs, which is why the
one-thread CPU time is given too."""


def exported(name: str) -> Path:
    """The cached fp32 ONNX export of model ``name`` (made on first use)."""
    import torch

    from slidelite.zoo import create_model, reparameterize_model

    architecture, shape, reparameterize = MODELS[name]
    torch.manual_seed(0)
    module = create_model(architecture).eval()
    if reparameterize:
        module = reparameterize_model(module).eval()
    return _common.export_onnx(module, _common.cache_path(name, ".fp32.onnx", module), shape)


def cpu_time_p50(targets: list, warmup: int, runs: int) -> "list[float]":
    """Per target, the p50 CPU time (ms) of one run on the calling thread, the targets interleaved per round.

    At one thread both engines compute on the caller's thread, so this is the work each does, without the
    waits for a core that a loaded machine adds to the wall-clock p50 (those grow faster than linearly with
    the run's length: a longer run spans more of the scheduler's time slices)."""
    import time

    import numpy as np

    times: "list[list[float]]" = [[] for _ in targets]
    for round_ in range(warmup + runs):
        for target, samples in zip(targets, times):
            start = time.thread_time()
            target.run_once()
            if round_ >= warmup:
                samples.append((time.thread_time() - start) * 1000.0)
    for target in targets:
        target.close()
    return [float(np.median(samples)) for samples in times]


def products_alone_cpu_ms(path: Path, warmup: int, runs: int) -> float:
    """p50 CPU time (ms, one thread) of only the matrix products and depthwise einsums that the numpy backend's
    plan makes in one run of ``path``: every ``np.matmul``/``np.einsum`` call is recorded with its operands during
    a run, then the recorded calls alone are replayed. No numpy backend can skip these products (short of a
    faster BLAS), so their time over onnxruntime's whole run is a floor under the numpy / onnxruntime ratio."""
    import time

    import numpy as np

    from slidelite.backends import create_backend
    from slidelite.backends._blas_threads import set_blas_threads
    from slidelite.model_file import open_model_file

    backend = create_backend(open_model_file(str(path)), "numpy", threads=1)
    set_blas_threads(1)
    feed = np.random.default_rng(0).random(
        [d if isinstance(d, int) and d > 0 else 1 for d in backend.input_shape]).astype(np.float32)
    calls: "list[tuple]" = []
    originals = {"matmul": np.matmul, "einsum": np.einsum}

    def recorder(name: str):
        def call(*args, **kwargs):
            calls.append((originals[name], args, kwargs))
            return originals[name](*args, **kwargs)
        return call

    backend.run(feed)
    np.matmul, np.einsum = recorder("matmul"), recorder("einsum")
    try:
        backend.run(feed)
    finally:
        np.matmul, np.einsum = originals["matmul"], originals["einsum"]
    samples = []
    for round_ in range(warmup + runs):
        start = time.thread_time()
        for function, args, kwargs in calls:
            function(*args, **kwargs)
        if round_ >= warmup:
            samples.append((time.thread_time() - start) * 1000.0)
    backend.close()
    return float(np.median(samples))


def shipped_onnx() -> "dict[str, Path]":
    """The ``.onnx`` files in the wheel, by manifest name."""
    from slidelite.models import list_shipped

    return {m.name: Path(m.path) for m in list_shipped() if m.format == "onnx"}


def main(argv: "list[str] | None" = None) -> int:
    """Run the comparison and print one line per model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="thread counts, one table row each")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-tiny", action="store_true", help="leave out Slide-Swin-T (the slowest model)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/install.md")
    args = parser.parse_args(argv)
    _common.limit_threads(max(args.threads))

    paths = shipped_onnx()
    if not args.no_tiny:
        paths["slide_swin_tiny (fp32)"] = exported("slide_swin_tiny")  # all exports happen before any timing
    flags = _common.simd_flags()
    print(f"CPU SIMD: {flags}", flush=True)
    rows, reports = [], {}
    for threads in args.threads:
        for name, path in paths.items():
            targets = [_common.runtime_target(f"{name} {engine} {threads}t", path, engine, threads)
                       for engine in ("onnxruntime", "numpy")]
            result = _common.measure(targets, warmup=args.warmup, runs=args.runs, progress=False)
            ort, numpy_row = result.row(f"{name} onnxruntime {threads}t"), result.row(f"{name} numpy {threads}t")
            row = {"model": name, "threads": threads, "onnxruntime_p50_ms": ort["p50_ms"],
                   "numpy_p50_ms": numpy_row["p50_ms"],
                   "ratio": result.ratio(f"{name} numpy {threads}t", f"{name} onnxruntime {threads}t"),
                   "numpy_init_ms": numpy_row["init_ms"], "onnxruntime_init_ms": ort["init_ms"],
                   "runs": numpy_row["runs"]}
            if threads == 1:
                cpu = cpu_time_p50([_common.runtime_target(f"{name} {engine} cpu", path, engine, 1)
                                    for engine in ("onnxruntime", "numpy")], args.warmup, args.runs)
                floor = products_alone_cpu_ms(path, args.warmup, args.runs)
                row.update(onnxruntime_cpu_p50_ms=cpu[0], numpy_cpu_p50_ms=cpu[1], cpu_ratio=cpu[1] / cpu[0],
                           products_cpu_ms=floor, products_ratio=floor / cpu[0])
            rows.append(row)
            reports[f"{name} {threads}t"] = result.report
            print(f"{name}: onnxruntime {row['onnxruntime_p50_ms']:.2f} ms, numpy {row['numpy_p50_ms']:.2f} ms "
                  f"(p50, batch 1, {threads} thread(s)) -> numpy is {row['ratio']:.2f}x slower"
                  + (f"; CPU time {row['cpu_ratio']:.2f}x, its matrix products alone {row['products_ratio']:.2f}x"
                     if "cpu_ratio" in row else "") + f" [SIMD: {flags}]",
                  flush=True)

    _common.save_json("numpy_backend", {"threads": args.threads, "simd": flags, "rows": rows, "reports": reports})
    table = _common.markdown_table(rows, [
        ("model", "model (ONNX)"), ("threads", "threads"), ("onnxruntime_p50_ms", "onnxruntime p50 ms"),
        ("numpy_p50_ms", "numpy p50 ms"), ("ratio", "numpy / onnxruntime"),
        ("onnxruntime_init_ms", "onnxruntime load ms"), ("numpy_init_ms", "numpy load ms"), ("runs", "runs")])
    cpu_rows = [row for row in rows if "cpu_ratio" in row]
    cpu_table = _common.markdown_table(cpu_rows, [
        ("model", "model (ONNX), 1 thread"), ("onnxruntime_cpu_p50_ms", "onnxruntime CPU ms (p50)"),
        ("numpy_cpu_p50_ms", "numpy CPU ms (p50)"), ("cpu_ratio", "numpy / onnxruntime (CPU time)"),
        ("products_cpu_ms", "numpy's products alone, CPU ms"), ("products_ratio", "products alone / onnxruntime")])
    threads_args = " ".join(str(t) for t in args.threads)
    body = (f"{table}\n\n{_common.environment_line(next(iter(reports.values())), max(args.threads))} "
            f"CPU SIMD (numpy's detection): {flags}. "
            f"Command: `.venv/bin/python benchmarks/numpy_backend.py --threads {threads_args} --runs {args.runs}"
            f"{' --no-tiny' if args.no_tiny else ''}`.\n\n"
            + (f"The work itself, at one thread: CPU time of the calling thread per run (interleaved the same "
               f"way, after the timed rounds), which leaves out the waits for a core:\n\n{cpu_table}\n\n"
               if cpu_rows else "") + EXPLANATION)
    print(body)
    if not args.no_docs:
        _common.update_docs_section("numpy-backend", body, _common.ROOT / "docs" / "install.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
