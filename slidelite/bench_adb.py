"""Android latency through ``adb``: push a ``.tflite`` model, run LiteRT's ``benchmark_model`` on the
device and parse its output into the same JSON report as ``slidelite bench``.

``benchmark_model`` is the C++ tool of ``tensorflow/lite/tools/benchmark`` (TF Lite) and
``litert/tools`` (LiteRT). Its output is log text; :func:`parse_benchmark_output` reads every published
variant: plain or ``INFO:``-prefixed lines, the per-phase statistics lines
(``count=… first=… curr=… min=… max=… avg=… std=…`` with optional ``p5= median= p95=``), the summary
``Inference timings in us: …``, the memory-footprint lines, and LiteRT's ``BENCHMARK RESULTS`` block.
The operator-profiling tables (``Timings (microseconds): count=…``) are never mistaken for run
statistics.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .errors import SlideliteError

DEFAULT_REMOTE_DIR = "/data/local/tmp"
DEFAULT_BINARY = f"{DEFAULT_REMOTE_DIR}/benchmark_model"
ADB_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 1800.0

# Android system properties recorded as device facts (report key -> property).
DEVICE_PROPERTIES = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "soc": "ro.soc.model",
    "board": "ro.board.platform",
    "abi": "ro.product.cpu.abi",
    "android_release": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
}

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_STATS = re.compile(
    rf"\bcount=(?P<count>\d+)(?: first=(?P<first>{_NUM}))? curr=(?P<curr>{_NUM})(?:\(all same\))?"
    rf"(?: min=(?P<min>{_NUM}) max=(?P<max>{_NUM}) avg=(?P<avg>{_NUM}) std=(?P<std>{_NUM}))?"
    rf"(?: p5=(?P<p5>{_NUM}) median=(?P<median>{_NUM}) p95=(?P<p95>{_NUM}))?"
)
_OP_PROFILE_STATS = ("Timings (microseconds):", "Memory (bytes):")
_PHASE = re.compile(rf"Running benchmark for at least (\d+) iterations and at least ({_NUM}) seconds")
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"
)
_MEMORY_DELTA = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=({_NUM}) overall=({_NUM})"
)
_PATTERNS = {
    "peak_mb": re.compile(rf"(?:Overall peak memory footprint \(MB\) via periodic monitoring:|Peak memory:)\s+({_NUM})"),
    "session_ms": re.compile(rf"Initialized session in ({_NUM}) ?ms"),
    "model_size_mb": re.compile(rf"The input model file size \(MB\): ({_NUM})"),
    "threads": re.compile(r"(?:^|\s)Num threads: \[(-?\d+)\]"),
    "graph": re.compile(r"(?:^|\s)Graph: \[(.*)\]"),
    "version": re.compile(r"Tensorflow Version\s*:\s*(\S+)"),
    # LiteRT's "BENCHMARK RESULTS" block (milliseconds, two decimals).
    "litert_init_ms": re.compile(rf"Model initialization:\s+({_NUM}) ms"),
    "litert_first_ms": re.compile(rf"Warmup \(first\):\s+({_NUM}) ms"),
    "litert_warmup_ms": re.compile(rf"Warmup \(avg\):\s+({_NUM}) ms \((\d+) runs\)"),
    "litert_mean_ms": re.compile(rf"Inference \(avg\):\s+({_NUM}) ms \((\d+) runs\)"),
    "litert_min_ms": re.compile(rf"Inference \(min\):\s+({_NUM}) ms"),
    "litert_max_ms": re.compile(rf"Inference \(max\):\s+({_NUM}) ms"),
    "litert_std_ms": re.compile(rf"Inference \(std\):\s+({_NUM})"),
    "litert_init_mb": re.compile(rf"Init footprint:\s+({_NUM}) MB"),
    "litert_overall_mb": re.compile(rf"Overall footprint:\s+({_NUM}) MB"),
}
_DELEGATE_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\)")
_DELEGATE_CREATED = re.compile(r"Created TensorFlow Lite (?:(\w+) delegate for \w+|delegate for (\w+))")
_FAILURE = re.compile(r"(?:ERROR: .*|Failed to .*|Benchmarking failed.*)$")


class AdbError(SlideliteError):
    """``adb`` is missing, no device answers, or a command on the device failed."""


class BenchmarkOutputError(SlideliteError):
    """``benchmark_model`` reported a failure or printed no timings that can be parsed."""


@dataclass(frozen=True)
class PhaseStats:
    """One ``count=… first=… curr=… min=… max=… avg=… std=…`` line, in milliseconds.

    ``min``/``max``/``mean``/``std`` are None when the phase ran once (``count=1 curr=…``) or all runs
    took the same time; ``p5``/``median``/``p95`` only exist in 2024+ builds.
    """

    count: int
    first: float
    last: float
    min: Optional[float] = None
    max: Optional[float] = None
    mean: Optional[float] = None
    std: Optional[float] = None
    p5: Optional[float] = None
    median: Optional[float] = None
    p95: Optional[float] = None


@dataclass
class BenchmarkModelResult:
    """Everything :func:`parse_benchmark_output` found in one ``benchmark_model`` output (times in ms)."""

    tool: str = "tflite"
    init_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    warmup_mean_ms: Optional[float] = None
    warmup: Optional[PhaseStats] = None
    inference: Optional[PhaseStats] = None
    requested_runs: Optional[int] = None
    init_footprint_mb: Optional[float] = None
    overall_footprint_mb: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    model_size_mb: Optional[float] = None
    threads: Optional[int] = None
    graph: Optional[str] = None
    tflite_version: Optional[str] = None
    delegates: List[str] = field(default_factory=list)
    delegated_nodes: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def parse_benchmark_output(text: str, source: str = "benchmark_model") -> BenchmarkModelResult:
    """Parse the console output of ``benchmark_model`` (TF Lite 2.x or LiteRT).

    Args:
        text: stdout and stderr of one run, in any order of interleaving.
        source: names the output in error messages (e.g. the device serial).

    Raises:
        BenchmarkOutputError: the tool reported a failure, or no inference timings were printed.
    """
    lines = [line.rstrip("\r") for line in text.splitlines()]
    result = BenchmarkModelResult()
    phases = _phase_stats(lines)
    if phases:
        result.inference = phases[-1][1]
        result.requested_runs = phases[-1][0]
        result.warmup = phases[-2][1] if len(phases) > 1 else None
    found = {key: _last_match(pattern, lines) for key, pattern in _PATTERNS.items()}
    summary = _last_match(_SUMMARY, lines)
    if result.inference is None and summary is None and found["litert_mean_ms"] is None:
        raise BenchmarkOutputError(f"{source}: {_failure_reason(lines)}")
    if found["litert_init_ms"] is not None:
        result.tool = "litert"
    _fill_timings(result, summary, found)
    _fill_memory(result, _last_match(_MEMORY_DELTA, lines), found)
    _fill_facts(result, found, lines)
    return result


def _phase_stats(lines: Sequence[str]) -> List[tuple]:
    """(requested runs, stats) per benchmark phase, in order; skips operator-profiling tables."""
    phases: List[tuple] = []
    requested: Optional[int] = None
    loose: List[PhaseStats] = []
    for line in lines:
        marker = _PHASE.search(line)
        if marker:
            requested = int(marker.group(1))
            continue
        match = _STATS.search(line)
        if not match or any(tag in line for tag in _OP_PROFILE_STATS):
            continue
        stats = _stats_from_match(match)
        if requested is not None:
            phases.append((requested, stats))
            requested = None
        else:
            loose.append(stats)
    # Output published without its "Running benchmark for at least …" markers (an excerpt):
    # the last statistics line is the timed phase, the one before it the warm-up.
    return phases or [(None, stats) for stats in loose[-2:]]


def _stats_from_match(match: "re.Match[str]") -> PhaseStats:
    us = {key: (float(value) if value is not None else None) for key, value in match.groupdict().items()}
    ms = {key: (value / 1000.0 if value is not None else None) for key, value in us.items() if key != "count"}
    count = int(us["count"] or 0)
    last = ms["curr"]
    first = ms["first"] if ms["first"] is not None else last
    if ms["min"] is None:  # one run, or every run took the same time
        ms.update(min=last, max=last, avg=last, std=0.0)
    return PhaseStats(count=count, first=first, last=last, min=ms["min"], max=ms["max"], mean=ms["avg"],
                      std=ms["std"], p5=ms["p5"], median=ms["median"], p95=ms["p95"])


def _last_match(pattern: "re.Pattern[str]", lines: Sequence[str]) -> Optional["re.Match[str]"]:
    found = None
    for line in lines:
        match = pattern.search(line)
        if match:
            found = match
    return found


def _number(match: Optional["re.Match[str]"], group: int = 1, scale: float = 1.0) -> Optional[float]:
    return float(match.group(group)) * scale if match else None


def _fill_timings(result: BenchmarkModelResult, summary: Optional["re.Match[str]"], found: Dict[str, Any]) -> None:
    if summary:
        result.init_ms, result.first_inference_ms, result.warmup_mean_ms = (
            float(summary.group(i)) / 1000.0 for i in (1, 2, 3))
    else:
        session = found["session_ms"] or found["litert_init_ms"]
        result.init_ms = _number(session)
        result.first_inference_ms = (result.warmup.first if result.warmup else _number(found["litert_first_ms"]))
        result.warmup_mean_ms = result.warmup.mean if result.warmup else _number(found["litert_warmup_ms"])
    if result.inference is None:  # LiteRT block only (two-decimal milliseconds)
        mean = _number(found["litert_mean_ms"])
        result.inference = PhaseStats(
            count=int(found["litert_mean_ms"].group(2)), first=mean, last=mean,
            min=_number(found["litert_min_ms"]), max=_number(found["litert_max_ms"]), mean=mean,
            std=_number(found["litert_std_ms"]))


def _fill_memory(result: BenchmarkModelResult, delta: Optional["re.Match[str]"], found: Dict[str, Any]) -> None:
    if delta:
        result.init_footprint_mb, result.overall_footprint_mb = float(delta.group(1)), float(delta.group(2))
    else:
        result.init_footprint_mb = _number(found["litert_init_mb"])
        result.overall_footprint_mb = _number(found["litert_overall_mb"])
    result.peak_memory_mb = _number(found["peak_mb"])


def _fill_facts(result: BenchmarkModelResult, found: Dict[str, Any], lines: Sequence[str]) -> None:
    result.model_size_mb = _number(found["model_size_mb"])
    result.threads = int(found["threads"].group(1)) if found["threads"] else None
    result.graph = found["graph"].group(1) if found["graph"] else None
    result.tflite_version = found["version"].group(1) if found["version"] else None
    for line in lines:
        created = _DELEGATE_CREATED.search(line)
        replacing = _DELEGATE_REPLACING.search(line)
        name = (created.group(1) or created.group(2)) if created else None
        if name and name not in result.delegates:
            result.delegates.append(name)
        if replacing:
            result.delegated_nodes = f"{replacing.group(1)}/{replacing.group(2)} ({replacing.group(3)})"


def _failure_reason(lines: Sequence[str]) -> str:
    failures = [match.group(0).strip() for match in map(_FAILURE.search, lines) if match]
    if failures:
        first_error = next((line for line in failures if line.startswith("ERROR")), failures[0])
        return f"benchmark_model failed: {first_error.removeprefix('ERROR: ')} ({failures[-1]})"
    tail = next((line.strip() for line in reversed(lines) if line.strip()), "no output at all")
    return f"benchmark_model printed no inference timings (last line: {tail!r}); check the model and flags"


# ----------------------------------------------------------------------------------------------- adb


@dataclass(frozen=True)
class AdbSettings:
    """How to run ``benchmark_model`` on the device.

    Attributes:
        serial: the device (``adb -s``); None uses the only attached device.
        binary: a host file to push as ``benchmark_model``, or a path on the device; None looks for
            :data:`DEFAULT_BINARY`, then ``benchmark_model`` on the device's PATH.
        threads: ``--num_threads`` (None: the tool's default).
        warmup: ``--warmup_runs``; runs: ``--num_runs``; min_seconds: ``--min_secs``.
        use_xnnpack: ``--use_xnnpack=true`` (the CPU delegate LiteRT applies by default).
        affinity: a ``taskset`` CPU mask (e.g. ``f0`` for the big cores), None for no pinning.
        extra_args: more ``benchmark_model`` flags passed through unchanged.
        remote_dir: where the model (and a pushed binary) go on the device.
    """

    serial: Optional[str] = None
    binary: Optional[str] = None
    threads: Optional[int] = None
    warmup: int = 1
    runs: int = 50
    min_seconds: float = 0.0
    use_xnnpack: bool = True
    affinity: Optional[str] = None
    extra_args: Sequence[str] = ()
    remote_dir: str = DEFAULT_REMOTE_DIR


class Adb:
    """Runs ``adb`` commands against one device and keeps the exact command lines it ran."""

    def __init__(self, serial: Optional[str] = None, executable: str = "adb") -> None:
        found = shutil.which(executable)
        if found is None:
            raise AdbError(
                "adb: not found on PATH; install Android platform-tools (e.g. apt-get install adb) "
                "and connect a device with USB debugging on")
        self.executable = found
        self.serial = serial
        self.commands: List[List[str]] = []

    def __call__(self, *args: str, timeout: float = ADB_TIMEOUT_S, check: bool = True) -> str:
        """Run ``adb [-s SERIAL] ARGS…``; return stdout and stderr together."""
        argv = ["adb"] + (["-s", self.serial] if self.serial else []) + list(args)
        self.commands.append(argv)
        try:
            proc = subprocess.run([self.executable] + argv[1:], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise AdbError(f"adb {' '.join(args[:2])}: no answer within {timeout:.0f} s; "
                           f"check the device connection (adb devices)") from None
        output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            detail = next((line for line in reversed(output.splitlines()) if line.strip()), "no output")
            device = f" on {self.serial}" if self.serial else ""
            raise AdbError(f"adb {' '.join(args[:2])}{device} failed (exit {proc.returncode}): {detail.strip()}")
        return output

    def shell(self, *words: str, timeout: float = ADB_TIMEOUT_S, check: bool = True) -> str:
        """Run a command on the device; every word is shell-quoted for the device's ``sh``."""
        return self(*(["shell"] + [shlex.quote(word) for word in words]), timeout=timeout, check=check)


def device_facts(adb: Adb) -> Dict[str, Any]:
    """Model, SoC, ABI and Android version of the device (``getprop``), plus its serial."""
    script = "; ".join(f"getprop {prop}" for prop in DEVICE_PROPERTIES.values())
    values = adb("shell", script).splitlines()
    facts: Dict[str, Any] = {"serial": adb.serial}
    for key, value in zip(DEVICE_PROPERTIES, values + [""] * len(DEVICE_PROPERTIES)):
        facts[key] = value.strip() or None
    return facts


def locate_binary(adb: Adb, binary: Optional[str], remote_dir: str) -> str:
    """The device path of ``benchmark_model``: push a host file, or check a device path exists."""
    if binary and os.path.isfile(binary):
        remote = f"{remote_dir}/benchmark_model"
        adb("push", binary, remote)
        adb.shell("chmod", "755", remote)
        return remote
    candidates = [binary] if binary else [DEFAULT_BINARY, "benchmark_model"]
    for candidate in candidates:
        probe = (["test", "-x", candidate] if "/" in candidate else ["command", "-v", candidate])
        answer = adb("shell", " ".join(shlex.quote(w) for w in probe) + " && echo found", check=False)
        if "found" in answer.split():
            return candidate
    raise AdbError(
        f"benchmark_model not found on the device (looked for {', '.join(candidates)}); download LiteRT's "
        f"android_aarch64_benchmark_model and pass --benchmark-binary PATH")


def benchmark_command(binary: str, remote_model: str, settings: AdbSettings) -> List[str]:
    """The ``benchmark_model`` command line run on the device."""
    words = (["taskset", settings.affinity] if settings.affinity else []) + [binary, f"--graph={remote_model}"]
    if settings.threads is not None:
        words.append(f"--num_threads={settings.threads}")
    words += [f"--warmup_runs={settings.warmup}", "--warmup_min_secs=0", f"--num_runs={settings.runs}",
              f"--min_secs={settings.min_seconds:g}", f"--use_xnnpack={'true' if settings.use_xnnpack else 'false'}"]
    return words + list(settings.extra_args)


def run_on_device(model_path: Path, settings: AdbSettings, adb: Optional[Adb] = None) -> Dict[str, Any]:
    """Push ``model_path`` to the device, run ``benchmark_model`` and return the parsed result.

    Returns:
        ``{"device": facts, "result": BenchmarkModelResult, "commands": [...], "output": text}``.

    Raises:
        AdbError: adb is missing, the device or the binary cannot be reached, a command failed.
        BenchmarkOutputError: the tool failed on the device or printed no timings.
    """
    model_path = Path(model_path)
    if model_path.suffix.lower() != ".tflite":
        raise AdbError(f"{model_path}: --adb runs LiteRT's benchmark_model, which needs a .tflite model; "
                       f"convert it with: slidelite convert --format tflite")
    adb = adb or Adb(settings.serial)
    facts = device_facts(adb)
    binary = locate_binary(adb, settings.binary, settings.remote_dir)
    remote_model = f"{settings.remote_dir}/{model_path.name}"
    adb("push", str(model_path), remote_model)
    try:
        output = adb.shell(*benchmark_command(binary, remote_model, settings), timeout=RUN_TIMEOUT_S, check=False)
    finally:
        adb.shell("rm", "-f", remote_model, check=False)
    where = f"{model_path.name} on {settings.serial or facts.get('model') or 'the device'}"
    result = parse_benchmark_output(output, source=where)
    return {"device": facts, "result": result, "commands": adb.commands, "output": output}


def adb_report(model_file: Any, outcome: Dict[str, Any], settings: AdbSettings) -> Dict[str, Any]:
    """The ``slidelite bench`` JSON report of a :func:`run_on_device` outcome.

    Percentiles that ``benchmark_model`` does not print (p90, p99; p50 before 2024 builds) are None,
    never estimated. Times are in ms; the raw tool output is kept under ``benchmark_model_output``.
    """
    from .bench import REPORT_SCHEMA, REPORT_SCHEMA_VERSION, device_facts, model_facts
    from . import __version__

    result: BenchmarkModelResult = outcome["result"]
    timed = result.inference
    latency = {"count": timed.count, "min": timed.min, "mean": timed.mean, "std": timed.std, "p50": timed.median,
               "p90": None, "p99": None, "max": timed.max, "p5": timed.p5, "p95": timed.p95}
    target = {
        "label": Path(model_file.path).name,
        "model": model_facts(model_file),
        "backend": {"name": f"benchmark_model ({result.tool})", "version": result.tflite_version,
                    "threads_requested": settings.threads, "threads": result.threads or settings.threads,
                    "delegates": result.delegates, "delegated_nodes": result.delegated_nodes,
                    "affinity": settings.affinity},
        "init_ms": result.init_ms,
        "first_inference_ms": result.first_inference_ms,
        "warmup": {"count": result.warmup.count if result.warmup else None, "mean_ms": result.warmup_mean_ms},
        "latency_ms": latency,
        "throughput_per_s": 1000.0 / timed.mean if timed.mean else None,
        "memory_mb": {"init_footprint": result.init_footprint_mb, "overall_footprint": result.overall_footprint_mb,
                      "peak": result.peak_memory_mb},
        "samples_ms": [],
    }
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": f"slidelite bench {__version__} --adb",
        "mode": "inference",
        "includes_preprocessing": False,
        "settings": {"warmup": settings.warmup, "runs": settings.runs, "min_seconds": settings.min_seconds,
                     "threads": settings.threads, "with_preprocess": False, "image": None,
                     "use_xnnpack": settings.use_xnnpack, "extra_args": list(settings.extra_args)},
        "interleaved": False,
        "schedule": [],
        "targets": [target],
        "peak_rss_mb": result.peak_memory_mb,
        "device": {"runner": "adb", **outcome["device"]},
        "host": device_facts(),
        "adb_commands": outcome["commands"],
        "benchmark_model_output": outcome["output"],
    }
