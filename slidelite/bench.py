"""Latency benchmark engine behind ``slidelite bench``.

Follows the conventions of TF Lite's ``benchmark_model`` and ``onnxruntime_perf_test``: model load
(init) time and the first inference are reported apart from the steady state; warm-up runs are not
timed; timed runs continue until both the run count and the minimum duration are reached. Several
targets (models and/or backends) are timed *interleaved* (A B A B …) so that a noisy machine slows
all of them alike and their ratios stay honest.

The report (:func:`build_report`) is one JSON document: per target the model facts (sha256, format,
precision, input), the backend (name, version, threads), init / first-inference / warm-up times,
latency statistics (min, mean, std, p50, p90, p99, max), throughput and the raw samples; plus the
process's peak RSS and the device facts (machine, CPU model, cores, OS, Python, slidelite version, git
commit, load average before and after).
"""
from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from .errors import SlideliteError, UsageError
from .options import BACKENDS

REPORT_SCHEMA = "slidelite.bench"
REPORT_SCHEMA_VERSION = 1
DEFAULT_WARMUP = 5
DEFAULT_RUNS = 50
SAMPLE_IMAGE = Path(__file__).resolve().parent / "samples" / "chelsea.jpg"
PROGRESS_AFTER_S = 2.0


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs, in milliseconds (percentiles by linear interpolation)."""

    count: int
    min: float
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        """Summarize ``samples_ms`` (at least one sample)."""
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no samples to summarize")
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(count=int(values.size), min=float(values.min()), mean=float(values.mean()),
                   std=float(values.std()), p50=float(p50), p90=float(p90), p99=float(p99),
                   max=float(values.max()))

    @property
    def throughput(self) -> float:
        """Inferences per second at the mean latency (one stream, batch 1)."""
        return 1000.0 / self.mean if self.mean > 0 else math.inf


@dataclass(frozen=True)
class BenchSettings:
    """What to time and for how long.

    Attributes:
        warmup: untimed runs after the first inference.
        runs: minimum number of timed runs; None means 1 when ``min_seconds`` is set, else
            :data:`DEFAULT_RUNS`.
        min_seconds: keep timing until at least this long has passed (and ``runs`` are done).
        threads: intra-op threads for every target (None: the backend default, physical cores).
        with_preprocess: time the full classify path (decode, preprocess, inference, postprocess)
            on ``image`` instead of the bare inference on a fixed random tensor.
        image: the photo for ``with_preprocess`` (None: the bundled sample photo).
    """

    warmup: int = DEFAULT_WARMUP
    runs: Optional[int] = None
    min_seconds: float = 0.0
    threads: Optional[int] = None
    with_preprocess: bool = False
    image: Optional[str] = None

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.runs is not None and self.runs < 1:
            raise UsageError(f"--runs must be >= 1, got {self.runs}")
        if not (self.min_seconds >= 0 and math.isfinite(self.min_seconds)):
            raise UsageError(f"--min-seconds must be a finite number >= 0, got {self.min_seconds}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")

    @property
    def min_runs(self) -> int:
        """The minimum number of timed runs actually used."""
        if self.runs is not None:
            return self.runs
        return 1 if self.min_seconds > 0 else DEFAULT_RUNS

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form, with the effective run count."""
        out = asdict(self)
        out["runs"] = self.min_runs
        out["image"] = str(self.image_path) if self.with_preprocess else None
        return out

    @property
    def image_path(self) -> Path:
        """The photo classified when ``with_preprocess`` is on."""
        return Path(self.image) if self.image else SAMPLE_IMAGE


@dataclass(frozen=True)
class TargetSpec:
    """One thing to benchmark: a model (file, shipped name or None for the default) on a backend."""

    model: Optional[str] = None
    backend: str = "auto"

    @classmethod
    def parse(cls, text: Optional[str], default_backend: str = "auto") -> "TargetSpec":
        """``MODEL`` or ``MODEL@BACKEND`` (an ``@`` inside a path is kept when no backend follows it)."""
        if text is None:
            return cls(None, default_backend)
        model, sep, backend = text.rpartition("@")
        if sep and backend in BACKENDS and model:
            return cls(model, backend)
        if sep and model and "/" not in backend and not Path(text).exists():
            raise UsageError(f"{text}: unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}")
        return cls(text, default_backend)

    @property
    def label(self) -> str:
        """Short name shown in tables: ``model`` or ``model@backend``."""
        name = Path(self.model).name if self.model else "default"
        return name if self.backend == "auto" else f"{name}@{self.backend}"


@dataclass
class Target:
    """A loaded target ready to be timed; ``run_once`` performs one inference (or one classify).

    ``init_ms`` is the measured load time (None when the caller did not measure one); ``model`` and
    ``backend`` are the facts reported for it.
    """

    label: str
    spec: TargetSpec
    run_once: Callable[[], Any]
    init_ms: Optional[float]
    model: Dict[str, Any]
    backend: Dict[str, Any]
    close: Callable[[], None] = lambda: None
    stage_reader: Optional[Callable[[Any], Dict[str, float]]] = None
    first_inference_ms: float = float("nan")
    warmup_ms: List[float] = field(default_factory=list)
    samples_ms: List[float] = field(default_factory=list)
    stages_ms: Dict[str, List[float]] = field(default_factory=dict)

    def timed_call(self) -> float:
        """Run once; return the wall time in ms (and collect per-stage times when available)."""
        start = time.perf_counter()
        result = self.run_once()
        elapsed = (time.perf_counter() - start) * 1000.0
        if self.stage_reader is not None:
            for stage, value in self.stage_reader(result).items():
                self.stages_ms.setdefault(stage, []).append(value)
        return elapsed


# ------------------------------------------------------------------------------------------- loading


def load_target(spec: TargetSpec, settings: BenchSettings, label: Optional[str] = None) -> Target:
    """Load ``spec`` (timing the load as init time) and prepare its ``run_once``.

    Raises:
        SlideliteError: the model cannot be found or loaded, or no backend can run it.
    """
    from .model_file import open_model_file
    from .models import resolve_model

    path = resolve_model(spec.model, spec.backend)
    model_file = open_model_file(path)
    if settings.with_preprocess:
        target = _load_classifier(spec, settings, path)
    else:
        target = _load_backend(spec, settings, model_file)
    target.label = label or spec.label
    target.model = model_facts(model_file)
    return target


def _load_backend(spec: TargetSpec, settings: BenchSettings, model_file: Any) -> Target:
    from .backends import create_backend

    start = time.perf_counter()
    backend = create_backend(model_file, spec.backend, threads=settings.threads)
    init_ms = (time.perf_counter() - start) * 1000.0
    tensor = random_input(backend.input_shape, backend.input_dtype)
    facts = {**_backend_facts(backend, settings.threads), "input_used": list(tensor.shape)}
    return Target(label=spec.label, spec=spec, run_once=lambda: backend.run(tensor), init_ms=init_ms,
                  model={}, backend=facts, close=backend.close)


def _load_classifier(spec: TargetSpec, settings: BenchSettings, path: Path) -> Target:
    from .classifier import Classifier
    from .options import ClassifierOptions

    start = time.perf_counter()
    classifier = Classifier.create_from_options(
        ClassifierOptions(model=str(path), backend=spec.backend, threads=settings.threads))
    init_ms = (time.perf_counter() - start) * 1000.0
    image_text = str(settings.image_path)
    return Target(label=spec.label, spec=spec, run_once=lambda: classifier.classify(image_text),
                  init_ms=init_ms, model={}, backend=_backend_facts(classifier.backend, settings.threads),
                  close=classifier.close, stage_reader=_classify_stages)


def _classify_stages(result: Any) -> Dict[str, float]:
    timings = result.timings
    return {"preprocess": timings.preprocess_ms, "inference": timings.inference_ms,
            "postprocess": timings.postprocess_ms}


def random_input(shape: Sequence[Any], dtype: str, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random tensor of ``shape`` (symbolic or unknown dimensions become 1) and ``dtype``."""
    dims = tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return rng.standard_normal(dims).astype(kind)
    info = np.iinfo(kind)
    return rng.integers(info.min, int(info.max) + 1, size=dims, dtype=kind)


def model_facts(model_file: Any) -> Dict[str, Any]:
    """Path, format, size, sha256 and (from the slidelite metadata, when present) name, precision, input size."""
    metadata = model_file.metadata
    facts: Dict[str, Any] = {
        "path": str(model_file.path), "format": model_file.format, "size_bytes": model_file.size,
        "sha256": model_file.sha256, "name": None, "precision": None, "input_size": None,
    }
    if metadata is not None:
        facts.update(name=metadata.name, precision=metadata.precision,
                     input_size=[metadata.input.height, metadata.input.width])
    return facts


def _backend_facts(backend: Any, threads: Optional[int]) -> Dict[str, Any]:
    return {
        "name": backend.name, "version": backend.version, "threads_requested": threads, "threads": backend.threads,
        "input_name": backend.input_name, "input_shape": list(backend.input_shape),
        "input_dtype": str(backend.input_dtype),
    }


# ------------------------------------------------------------------------------------------- running


def warm_up(targets: Sequence[Target], settings: BenchSettings) -> None:
    """Time the first inference of every target, then run ``settings.warmup`` interleaved warm-up rounds."""
    for target in targets:
        target.first_inference_ms = target.timed_call()
    for _ in range(settings.warmup):
        for target in targets:
            target.warmup_ms.append(target.timed_call())
    for target in targets:
        target.stages_ms.clear()  # per-stage times are collected for the timed runs only


def timed_rounds(targets: Sequence[Target], settings: BenchSettings,
                 progress: Optional[Callable[[int], None]] = None) -> List[str]:
    """Timed rounds A B A B … until both ``settings.min_runs`` rounds and ``settings.min_seconds`` are reached.

    ``progress`` (if given) is called with the number of completed rounds.

    Returns:
        The labels in the exact order the timed runs were executed.
    """
    schedule: List[str] = []
    rounds = 0
    start = time.perf_counter()
    while rounds < settings.min_runs or time.perf_counter() - start < settings.min_seconds:
        for target in targets:
            target.samples_ms.append(target.timed_call())
            schedule.append(target.label)
        rounds += 1
        if progress is not None:
            progress(rounds)
    return schedule


def expected_rounds(targets: Sequence[Target], settings: BenchSettings) -> "tuple[int, float]":
    """(rounds, seconds) the timed phase should take, estimated from the warm-up (or first) latencies."""
    per_round_s = sum(float(np.median(t.warmup_ms)) if t.warmup_ms else t.first_inference_ms
                      for t in targets) / 1000.0
    rounds = settings.min_runs
    if per_round_s > 0 and settings.min_seconds > rounds * per_round_s:
        rounds = int(math.ceil(settings.min_seconds / per_round_s))
    return rounds, rounds * per_round_s


# ------------------------------------------------------------------------------------------- reports


def target_report(target: Target) -> Dict[str, Any]:
    """The JSON section of one target: model, backend, times, statistics, throughput, samples."""
    stats = LatencyStats.from_samples(target.samples_ms)
    return {
        "label": target.label,
        "model": target.model,
        "backend": target.backend,
        "init_ms": target.init_ms,
        "first_inference_ms": target.first_inference_ms,
        "warmup": {"count": len(target.warmup_ms),
                   "mean_ms": float(np.mean(target.warmup_ms)) if target.warmup_ms else None},
        "latency_ms": asdict(stats),
        "throughput_per_s": stats.throughput,
        "stages_mean_ms": {stage: float(np.mean(values)) for stage, values in target.stages_ms.items()},
        "samples_ms": list(target.samples_ms),
    }


def build_report(targets: Sequence[Target], settings: BenchSettings, schedule: Sequence[str],
                 device: Dict[str, Any]) -> Dict[str, Any]:
    """The complete report; with several targets it carries ratios against the first one."""
    sections = [target_report(t) for t in targets]
    report: Dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": f"slidelite bench {__version__}",
        "mode": "classify" if settings.with_preprocess else "inference",
        "includes_preprocessing": settings.with_preprocess,
        "settings": settings.to_dict(),
        "interleaved": len(targets) > 1,
        "schedule": list(schedule),
        "targets": sections,
        "peak_rss_mb": peak_rss_mb(),
        "device": device,
    }
    if len(sections) > 1:
        report["ratios"] = ratios(sections)
    return report


def ratios(sections: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Latency of every target over the first one (p50 and mean); > 1 means slower than the first."""
    base = sections[0]["latency_ms"]
    out = []
    for section in sections:
        stats = section["latency_ms"]
        out.append({"label": section["label"], "vs": sections[0]["label"],
                    "p50_ratio": stats["p50"] / base["p50"], "mean_ratio": stats["mean"] / base["mean"]})
    return out


def run_benchmark(specs: Sequence[TargetSpec], settings: BenchSettings,
                  progress_factory: Optional[Callable[[int], Any]] = None,
                  on_error: Optional[Callable[[SlideliteError], None]] = None) -> Dict[str, Any]:
    """Load every target, time them interleaved and return the report.

    Args:
        specs: the targets, the first one being the reference of the ratios.
        settings: warm-up, runs, duration, threads, preprocessing.
        progress_factory: for long runs (more than :data:`PROGRESS_AFTER_S` expected): called with the
            expected number of rounds, returns a context manager whose ``update(n)`` advances by ``n``.
        on_error: called with the error of a target that cannot be loaded, which is then skipped
            (None: the error is raised).

    Raises:
        SlideliteError: no target could be loaded (or one failed and ``on_error`` is None).
    """
    if not specs:
        raise UsageError("nothing to benchmark: give a model (or none for the default model)")
    if settings.with_preprocess and not settings.image_path.is_file():
        raise UsageError(f"{settings.image_path}: --image not found; pass a photo file (jpg, png, ...)")
    load_before = _loadavg()
    targets: List[Target] = []
    try:
        for spec, label in zip(specs, unique_labels(specs)):
            try:
                targets.append(load_target(spec, settings, label))
            except SlideliteError as exc:
                if on_error is None:
                    raise
                on_error(exc)
        if not targets:
            raise BenchmarkError("no model could be loaded; nothing was timed")
        warm_up(targets, settings)
        rounds, seconds = expected_rounds(targets, settings)
        if progress_factory is None or seconds < PROGRESS_AFTER_S:
            schedule = timed_rounds(targets, settings)
        else:
            with progress_factory(rounds) as bar:
                done = [0]

                def advance(completed: int) -> None:
                    bar.update(completed - done[0])
                    done[0] = completed

                schedule = timed_rounds(targets, settings, advance)
    finally:
        for target in targets:
            target.close()
    device = device_facts()
    device["loadavg_before"] = load_before
    return build_report(targets, settings, schedule, device)


def _loadavg() -> Optional[List[float]]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def unique_labels(specs: Sequence[TargetSpec]) -> List[str]:
    """Labels of ``specs``, made unique with ``#2``, ``#3`` … suffixes."""
    seen: Dict[str, int] = {}
    labels = []
    for spec in specs:
        seen[spec.label] = seen.get(spec.label, 0) + 1
        labels.append(spec.label if seen[spec.label] == 1 else f"{spec.label}#{seen[spec.label]}")
    return labels


# ------------------------------------------------------------------------------------------- device


def peak_rss_mb() -> Optional[float]:
    """Peak resident set size of this process in MiB (``getrusage``), None where unsupported."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def cpu_model() -> Optional[str]:
    """The CPU's marketing name (x86 ``model name``, ARM board ``Model``/``Hardware``), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            fields = {}
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        fields = {}
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    if sys.platform == "darwin":
        return _command_output(["sysctl", "-n", "machdep.cpu.brand_string"])
    return platform.processor() or None


def git_commit() -> Optional[str]:
    """The git commit of the slidelite checkout (``+dirty`` when modified), None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    commit = _command_output(["git", "-C", str(root), "rev-parse", "HEAD"])
    if commit is None:
        return None
    dirty = _command_output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return commit + ("+dirty" if dirty else "")


def _command_output(argv: List[str]) -> Optional[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def device_facts() -> Dict[str, Any]:
    """Where the numbers were measured: machine, CPU, cores, OS, Python, slidelite, git, load."""
    from .backends import physical_cores

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical_cores(),
        "cores_usable": affinity,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "slidelite": __version__,
        "git_commit": git_commit(),
        "loadavg_after": _loadavg(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def require_plotting() -> Any:
    """Import matplotlib (Agg backend) or raise a one-line error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailableError(
            'plotting needs matplotlib, which is not installed: pip install "slidelite[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class BenchmarkError(SlideliteError):
    """Nothing could be benchmarked."""


class PlotUnavailableError(SlideliteError):
    """``--plot`` was asked for but matplotlib is not installed."""

    exit_code = 2


def plot_latencies(report: Dict[str, Any], out_path: str) -> None:
    """Draw the latency distribution of every target (box plot + samples) into a PNG file."""
    plt = require_plotting()
    targets = report["targets"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(targets) + 2), 4.0), dpi=120)
    data = [t["samples_ms"] for t in targets]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(targets) + 1), [t["label"] for t in targets], rotation=15, ha="right")
    rng = np.random.default_rng(0)
    for index, samples in enumerate(data, start=1):
        ax.scatter(index + rng.uniform(-0.15, 0.15, len(samples)), samples, s=6, alpha=0.4)
    ax.set_ylabel("latency per run (ms)")
    mode = "classify (with preprocessing)" if report["includes_preprocessing"] else "inference"
    ax.set_title(f"slidelite bench: {mode}, {report['settings']['runs']}+ runs")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
