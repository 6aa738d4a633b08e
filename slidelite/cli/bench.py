"""``slidelite bench [MODEL]...``: model latency, the way ``benchmark_model`` and ``onnxruntime_perf_test``
report it (init, first inference, warm-up, percentiles, throughput, peak RSS).

- ``slidelite bench`` times the embedded default model; ``slidelite bench model.onnx`` a file.
- ``--compare A B C``: several ``MODEL`` or ``MODEL@BACKEND`` timed interleaved (A B C A B C …) in one run,
  with ratios against the first; the only honest comparison on a busy machine.
- ``--with-preprocess`` times the full classify path (decode, preprocess, inference, postprocess) on a
  real photo (``--image``, default: the bundled sample photo).
- ``--adb`` runs LiteRT's ``benchmark_model`` on an Android device and reports the same fields.
- ``--json`` prints the report (device facts included); ``--plot out.png`` draws the distributions.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from ..bench import (BenchSettings, TargetSpec, plot_latencies, require_plotting, run_benchmark)
from ..errors import UsageError
from ._common import (EXIT_INPUT_FAILED, backend_option, echo_json, error_boundary, human_size, json_option,
                      print_error, threads_option)


@click.command("bench")
@click.argument("models", nargs=-1, metavar="[MODEL[@BACKEND]]...")
@click.option("--compare", is_flag=True,
              help="Time several MODEL[@BACKEND] interleaved (A B A B ...) and print ratios vs the first.")
@backend_option
@threads_option
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed warm-up runs.")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs (default 50; 1 when only --min-seconds is given).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Keep timing until at least this many seconds have passed.")
@click.option("--with-preprocess", is_flag=True,
              help="Time the full classify path on a real photo (decode, preprocess, inference, postprocess).")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Photo for --with-preprocess (implies it). Default: the bundled sample photo.")
@json_option
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="OUT.png", help='Draw the latency distributions (needs pip install "slidelite[plot]").')
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on long runs (default: when stderr is a terminal).")
@click.option("--adb", is_flag=True, help="Run LiteRT's benchmark_model on an Android device over adb.")
@click.option("--serial", default=None, metavar="S", help="adb device serial (--adb; default: the only device).")
@click.option("--benchmark-binary", default=None, metavar="PATH",
              help="benchmark_model to use (--adb): a host file to push, or a path on the device.")
@click.option("--adb-affinity", default=None, metavar="MASK", help="Pin to CPUs with taskset MASK (--adb).")
@click.option("--adb-arg", "adb_args", multiple=True, metavar="FLAG",
              help="Extra benchmark_model flag, e.g. --adb-arg=--use_gpu=true (--adb; repeatable).")
@error_boundary
def command(models: Tuple[str, ...], compare: bool, backend: str, threads: Optional[int], warmup: int,
            runs: Optional[int], min_seconds: float, with_preprocess: bool, image: Optional[str], as_json: bool,
            plot_path: Optional[str], progress: Optional[bool], adb: bool, serial: Optional[str],
            benchmark_binary: Optional[str], adb_affinity: Optional[str], adb_args: Tuple[str, ...]) -> int:
    """Benchmark model latency: init, first run, warm-up, min/mean/std/p50/p90/p99/max, throughput, peak RSS.

    MODEL is a model file or a shipped model name (default: the embedded default model); append
    @BACKEND (onnxruntime, litert, tflite, numpy) to choose the engine per model with --compare.
    """
    _check_usage(models, compare, adb, serial, benchmark_binary, adb_affinity, adb_args)
    if plot_path is not None:
        require_plotting()  # fail before timing anything
    if adb:
        report = _adb_report(models, threads, warmup, runs, min_seconds, serial, benchmark_binary, adb_affinity,
                             adb_args)
        failed = False
    else:
        settings = BenchSettings(warmup=warmup, runs=runs, min_seconds=min_seconds, threads=threads,
                                 with_preprocess=with_preprocess or image is not None, image=image)
        specs = [TargetSpec.parse(text, backend) for text in models] or [TargetSpec(None, backend)]
        errors: List[str] = []

        def report_error(exc: Exception) -> None:
            print_error(str(exc))
            errors.append(str(exc))

        show = sys.stderr.isatty() if progress is None else progress
        report = run_benchmark(specs, settings, _progress_bar if show else None, report_error)
        failed = bool(errors)
    if plot_path is not None:
        plot_latencies(report, plot_path)
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))
        if plot_path is not None:
            click.echo(f"plot: {plot_path}")
    return EXIT_INPUT_FAILED if failed else 0


def _check_usage(models: Sequence[str], compare: bool, adb: bool, *adb_only: Any) -> None:
    if len(models) > 1 and not compare:
        raise UsageError(f"{len(models)} models given: pass --compare to time them interleaved, or give one MODEL")
    if compare and len(models) < 2:
        raise UsageError("--compare needs at least two MODEL[@BACKEND] arguments")
    if adb and compare:
        raise UsageError("--adb times one model on the device; it cannot be combined with --compare")
    if not adb and any(adb_only):
        raise UsageError("--serial, --benchmark-binary, --adb-affinity and --adb-arg only apply with --adb")


def _progress_bar(total: int) -> Any:
    return click.progressbar(length=total, label="timing", file=sys.stderr)


def _adb_report(models: Sequence[str], threads: Optional[int], warmup: int, runs: Optional[int],
                min_seconds: float, serial: Optional[str], binary: Optional[str], affinity: Optional[str],
                extra_args: Sequence[str]) -> Dict[str, Any]:
    from ..bench_adb import AdbSettings, adb_report, run_on_device
    from ..model_file import open_model_file
    from ..models import resolve_model

    path = resolve_model(models[0] if models else None, backend="litert")  # a .tflite for the device
    model_file = open_model_file(path)
    settings = AdbSettings(serial=serial, binary=binary, threads=threads, warmup=warmup,
                           runs=runs if runs is not None else (1 if min_seconds else 50), min_seconds=min_seconds,
                           affinity=affinity, extra_args=tuple(extra_args))
    return adb_report(model_file, run_on_device(path, settings), settings)


# ------------------------------------------------------------------------------------------ text output


def _ms(value: Optional[float]) -> str:
    """Milliseconds with 4 significant digits (``206.4``, ``3.481``, ``0.01234``); ``-`` when unknown."""
    return "-" if value is None else f"{value:.4g}"


def format_report(report: Dict[str, Any]) -> str:
    """The human-readable report: one block per target, then ratios (when several) and the device."""
    lines: List[str] = []
    targets = report["targets"]
    what = ("full classify path (decode + preprocess + inference + postprocess) on "
            f"{report['settings']['image']}" if report["includes_preprocessing"] else
            "inference only, fixed random input, batch 1")
    lines.append(f"slidelite bench: {what}")
    if report["interleaved"]:
        lines.append(f"targets timed interleaved ({' '.join(report['schedule'][:len(targets)])} ...)")
    for target in targets:
        lines += [""] + _target_lines(target)
    if "ratios" in report:
        lines += ["", f"ratios vs {targets[0]['label']} (p50; > 1 is slower):"]
        for row in report["ratios"][1:]:
            speed = "slower" if row["p50_ratio"] >= 1 else "faster"
            factor = row["p50_ratio"] if row["p50_ratio"] >= 1 else 1 / row["p50_ratio"]
            lines.append(f"  {row['label']:<28} {row['p50_ratio']:6.3f}  ({factor:.2f}x {speed}; "
                         f"mean ratio {row['mean_ratio']:.3f})")
    if report.get("peak_rss_mb") is not None:
        where = "on the device" if report["device"].get("runner") == "adb" else "of this process"
        lines += ["", f"peak RSS {where}: {report['peak_rss_mb']:.1f} MiB"]
    lines.append(_device_line(report["device"]))
    return "\n".join(lines)


def _target_lines(target: Dict[str, Any]) -> List[str]:
    model, backend, stats = target["model"], target["backend"], target["latency_ms"]
    precision = model.get("precision") or "unknown precision"
    size = "x".join(str(v) for v in model["input_size"]) if model.get("input_size") else "input size unknown"
    engine = f"{backend['name']} {backend.get('version') or ''}".strip()
    lines = [f"{target['label']}: {engine}, threads {backend.get('threads') or 'default'}, {precision}, {size}",
             f"  model        {model['path']} ({human_size(model['size_bytes'])}, sha256 {model['sha256'][:16]}...)",
             f"  init         {_ms(target['init_ms'])} ms",
             f"  first run    {_ms(target['first_inference_ms'])} ms",
             f"  warm-up      {target['warmup']['count']} runs, mean {_ms(target['warmup']['mean_ms'])} ms",
             f"  timed runs   {stats['count']}",
             f"  latency ms   min {_ms(stats['min'])}  mean {_ms(stats['mean'])} (std {_ms(stats['std'])})  "
             f"p50 {_ms(stats['p50'])}  p90 {_ms(stats['p90'])}  p99 {_ms(stats['p99'])}  max {_ms(stats['max'])}",
             f"  throughput   {target['throughput_per_s']:.4g} inferences/s (batch 1, one stream)"]
    stages = target.get("stages_mean_ms")
    if stages:
        lines.append("  stages ms    mean " + "  ".join(f"{k} {_ms(v)}" for k, v in stages.items()))
    memory = target.get("memory_mb")
    if memory:
        lines.append(f"  memory MB    init {_ms(memory['init_footprint'])}  overall {_ms(memory['overall_footprint'])}"
                     f"  peak {_ms(memory['peak'])}")
    return lines


def _device_line(device: Dict[str, Any]) -> str:
    if device.get("runner") == "adb":
        return (f"device: {device.get('manufacturer') or ''} {device.get('model') or 'Android device'} "
                f"(SoC {device.get('soc') or device.get('board') or '?'}, {device.get('abi') or '?'}, "
                f"Android {device.get('android_release') or '?'}) via adb"
                + (f" -s {device['serial']}" if device.get("serial") else ""))
    load = device.get("loadavg_before")
    return (f"device: {device['machine']}, {device.get('cpu_model') or 'CPU ?'}, {device['cores_physical']} physical / "
            f"{device['cores_logical']} logical cores, {device['os']}, Python {device['python']}"
            + (f", load average {load[0]:.2f} before" if load else ""))
