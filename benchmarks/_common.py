"""Shared pieces of the scripts in ``benchmarks/``: build candidates (torch eager, ONNX Runtime, LiteRT,
numpy sgemm), time them interleaved with the engine of ``slidelite bench``, count FLOPs in an ONNX graph,
and publish the results (JSON, Markdown table, PNG plot, the section of ``docs/benchmarks.md``).

Every number a script prints or writes comes from one run of that script: candidates are timed
interleaved (A B C A B C …) so that the background load of a shared machine hits all of them alike, and
comparisons are printed as ratios measured in that run.

Call :func:`limit_threads` before numpy, torch or onnxruntime are imported.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOCS_FILE = ROOT / "docs" / "benchmarks.md"
PLOTS_DIR = ROOT / "docs" / "benchmarks"
CACHE_DIR = ROOT / "tmp" / "benchmark-exports"  # git-ignored
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Make BLAS/OpenMP use ``threads`` threads (numpy's sgemm, torch); call before importing them."""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)


# ----------------------------------------------------------------------------------------- candidates


def _target(label: str, run_once: Callable[[], Any], init_ms: Optional[float], model: Dict[str, Any], engine: Dict[str, Any],
            close: Callable[[], None] = lambda: None) -> Any:
    from slidelite.bench import Target, TargetSpec

    return Target(label=label, spec=TargetSpec(label), run_once=run_once, init_ms=init_ms, model=model,
                  backend=engine, close=close)


def runtime_target(label: str, path: Path, backend: str, threads: int, seed: int = 0) -> Any:
    """A model file run through slidelite's own backend (``onnxruntime`` or ``litert``) on a fixed input."""
    from slidelite.backends import create_backend
    from slidelite.bench import model_facts, random_input
    from slidelite.model_file import open_model_file

    model_file = open_model_file(path)
    start = time.perf_counter()
    engine = create_backend(model_file, backend, threads=threads)
    init_ms = (time.perf_counter() - start) * 1000.0
    tensor = random_input(engine.input_shape, engine.input_dtype, seed)
    facts = {"name": engine.name, "version": engine.version, "threads": engine.threads,
             "input_shape": list(tensor.shape), "input_dtype": engine.input_dtype}
    return _target(label, lambda: engine.run(tensor), init_ms, model_facts(model_file), facts, engine.close)


def classify_target(label: str, classifier: Any, image: Any) -> Any:
    """``classifier.classify(image)`` (a :class:`slidelite.Classifier`) as a candidate; the per-stage times of
    its timed calls (preprocess, inference, postprocess) land in the target's ``stages_ms``."""
    from slidelite.bench import _backend_facts, _classify_stages

    target = _target(label, lambda: classifier.classify(image), None, {},
                     _backend_facts(classifier.backend, classifier.options.threads), classifier.close)
    target.stage_reader = _classify_stages
    return target


def callable_target(label: str, run_once: Callable[[], Any], engine: Dict[str, Any],
                    close: Callable[[], None] = lambda: None) -> Any:
    """Any call as a candidate (another framework's classify, say); ``engine`` holds the facts reported for it."""
    return _target(label, run_once, None, {}, engine, close)


def torch_target(label: str, module: Any, input_shape: Sequence[int], threads: int, seed: int = 0) -> Any:
    """A PyTorch module in eager mode (eval, ``inference_mode``) on a fixed input."""
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(*input_shape, generator=generator)
    module = module.eval()

    def run() -> Any:
        with torch.inference_mode():
            return module(example)

    facts = {"name": "torch eager", "version": torch.__version__, "threads": torch.get_num_threads(),
             "input_shape": list(input_shape), "input_dtype": "float32"}
    return _target(label, run, None, {"format": "torch", "parameters": sum(p.numel() for p in module.parameters())},
                   facts)


def sgemm_target(size: int, label: Optional[str] = None) -> Any:
    """numpy float32 ``size x size`` matrix product: the machine's practical dense-FLOP limit."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    facts = {"name": "numpy sgemm", "version": np.__version__, "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", 0))
             or None, "input_shape": [size, size], "input_dtype": "float32", "flops": 2 * size ** 3}
    return _target(label or f"sgemm {size}", lambda: np.matmul(a, b, out=out), None, {"format": "numpy"}, facts)


def matmul_onnx(size: int) -> Path:
    """A one-node ONNX graph ``X[size, size] @ W[size, size]`` (W a stored weight): the sgemm of ONNX Runtime's
    own kernels (MLAS), the ceiling an ONNX model can reach on this machine."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = CACHE_DIR / f"matmul-{size}.onnx"
    if not path.exists():
        weight = numpy_helper.from_array(np.random.default_rng(1).standard_normal((size, size), dtype=np.float32), "W")
        graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "sgemm",
                                  [helper.make_tensor_value_info("X", TensorProto.FLOAT, [size, size])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [size, size])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------- exports


def cache_path(name: str, suffix: str, module: Any) -> Path:
    """Where the export of ``module`` (zoo model ``name``) is kept: keyed by torch's version and the
    sources of the zoo classes it is built from and of the exporter and quantizer, so an export is
    re-used only while nothing that shapes it has changed."""
    import hashlib
    import inspect

    import torch

    sources = {Path(inspect.getsourcefile(cls)) for m in module.modules() for cls in type(m).__mro__
               if cls.__module__.startswith("slidelite.zoo")}  # base classes too: a subclass runs their forward
    sources |= {ROOT / "convert" / name for name in ("onnx_export.py", "quantize.py", "tflite_graph.py", "tflite_export.py")}
    digest = hashlib.sha256(torch.__version__.encode())
    for source in sorted(sources):
        digest.update(source.read_bytes())
    return CACHE_DIR / f"{name}-{digest.hexdigest()[:12]}{suffix}"


def _drop_stale(path: Path) -> None:
    """Delete older cached exports of the same model and kind as ``path`` (other source hashes)."""
    def key(file: Path) -> Tuple[str, str]:
        name, _, rest = file.name.rpartition("-")
        return name, rest[rest.find("."):]

    for old in path.parent.iterdir():
        if old != path and key(old) == key(path):
            old.unlink()


def publish_file(path: Path, write: Callable[[Path], Any]) -> Path:
    """Run ``write(partial)`` into a temporary name beside ``path``, then rename it to ``path`` and drop the
    older cached versions of the same file (so an interrupted export never looks finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"partial-{path.name}")
    write(partial)
    partial.replace(path)
    _drop_stale(path)
    return path


def export_onnx(module: Any, path: Path, input_shape: Tuple[int, int, int, int]) -> Path:
    """Export ``module`` (already re-parameterized if it should be) the way ``slidelite convert`` does:
    dynamo exporter at the converter's opset, then onnxslim. Re-uses the file when it exists."""
    from slidelite.convert.onnx_export import export_onnx as convert_export, simplify_onnx

    def write(partial: Path) -> None:
        convert_export(module, partial, input_shape)
        simplify_onnx(partial)

    return path if path.exists() else publish_file(path, write)


def quantize_onnx_int8(fp32: Path, path: Path, recipe: Optional[str] = None) -> Path:
    """int8 with the converter's default (or named) recipe; re-uses the file when it exists."""
    from slidelite.convert.quantize import DEFAULT_RECIPE, get_recipe, quantize_onnx

    recipe_spec = get_recipe(recipe or DEFAULT_RECIPE)
    return path if path.exists() else publish_file(path, lambda partial: quantize_onnx(fp32, partial, recipe_spec))


# --------------------------------------------------------------------------------------------- FLOPs


def count_flops(path: Path) -> Dict[str, int]:
    """FLOPs (2 per multiply-add) of the MatMul, Gemm and Conv nodes of an ONNX graph, by op type.

    Shapes come from ONNX shape inference; a node whose shapes cannot be inferred raises ValueError
    instead of being counted as zero.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=False)
    graph = model.graph
    shapes: Dict[str, List[int]] = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    totals: Dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        try:
            out = shapes[node.output[0]]
            first, second = shapes[node.input[0]], shapes[node.input[1]]
        except KeyError as missing:
            raise ValueError(f"{path.name}: no inferred shape for {missing} of {node.op_type} {node.name}") from None
        if node.op_type == "Conv":  # weight (M, C/group, kh, kw)
            macs = _prod(out) * second[1] * _prod(second[2:])
        elif node.op_type == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            macs = _prod(out) * (first[0] if trans_a else first[1])
        else:
            macs = _prod(out) * first[-1]
        totals[node.op_type] = totals.get(node.op_type, 0) + 2 * macs
    return totals


def _prod(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


# ------------------------------------------------------------------------------------------- timing


@dataclass
class Measurement:
    """The outcome of :func:`measure`: the ``slidelite bench`` report and a row per candidate."""

    report: Dict[str, Any]
    rows: List[Dict[str, Any]]

    def row(self, label: str) -> Dict[str, Any]:
        """The row of candidate ``label``."""
        return next(r for r in self.rows if r["label"] == label)

    def ratio(self, slower: str, faster: str, stat: str = "p50_ms") -> float:
        """``stat`` (p50 by default) of ``slower`` over that of ``faster`` (how many times faster ``faster`` is)."""
        return self.row(slower)[stat] / self.row(faster)[stat]

    def round_ratio(self, slower: str, faster: str) -> float:
        """The median over the timed rounds of ``slower``'s latency / ``faster``'s in the same round (pairs runs
        made moments apart, so a load change between rounds cancels out)."""
        import numpy as np

        return float(np.median(np.array(self.row(slower)["samples_ms"]) / np.array(self.row(faster)["samples_ms"])))


def measure(targets: Sequence[Any], warmup: int, runs: int, min_seconds: float = 0.0,
            progress: bool = True) -> Measurement:
    """Time ``targets`` interleaved with the ``slidelite bench`` engine; return the report and summary rows."""
    from slidelite.bench import BenchSettings, build_report, device_facts, timed_rounds, warm_up

    settings = BenchSettings(warmup=warmup, runs=runs, min_seconds=min_seconds)
    load_before = [round(v, 2) for v in os.getloadavg()]
    try:
        warm_up(targets, settings)
        schedule = timed_rounds(targets, settings, _progress_printer(runs) if progress else None)
    finally:
        for target in targets:
            target.close()
    device = device_facts()
    device["loadavg_before"] = load_before
    report = build_report(targets, settings, schedule, device)
    rows = []
    for target, section in zip(targets, report["targets"]):
        stats = section["latency_ms"]
        rows.append({"label": section["label"], "engine": section["backend"].get("name"),
                     "p50_ms": stats["p50"], "mean_ms": stats["mean"], "p90_ms": stats["p90"],
                     "min_ms": stats["min"], "max_ms": stats["max"], "runs": stats["count"],
                     "first_ms": section["first_inference_ms"], "init_ms": section["init_ms"],
                     "samples_ms": list(target.samples_ms)})
    return Measurement(report, rows)


def _progress_printer(total: int) -> Callable[[int], None]:
    def show(done: int) -> None:
        print(f"\r  timed round {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return show


def op_profile(paths: Dict[str, Path], example: Any, threads: int, runs: int = 3, top: int = 8) -> Tuple[str, Dict]:
    """Where the time goes: ONNX Runtime's profiler (the converter's ``profile_op_types``) on each model,
    one after the other, as a Markdown table of the ``top`` op types (ms per run) and the raw profiles."""
    from slidelite.convert.report import profile_op_types

    profiles = {label: profile_op_types(path, example, threads, runs) for label, path in paths.items()}
    ops = sorted(set().union(*profiles.values()), key=lambda op: -max(p.get(op, 0.0) for p in profiles.values()))
    rows = [{"op": op, **{label: profile.get(op, 0.0) for label, profile in profiles.items()}} for op in ops[:top]]
    rows.append({"op": "all op types", **{label: sum(profile.values()) for label, profile in profiles.items()}})
    table = markdown_table(rows, [("op", "op type (ms per run)")] + [(label, label) for label in profiles])
    return table, profiles


# ------------------------------------------------------------------------------------------ publishing


def markdown_table(rows: Sequence[Dict[str, Any]], columns: Sequence[Tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``columns`` = [(key, header)]; floats get 4 significant digits."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "asimd", "asimddp", "i8mm", "sve", "sve2")


def simd_flags() -> str:
    """The CPU's vector-instruction features that decide these speeds (x86: AVX2, AVX-512, VNNI; Arm: NEON
    ``asimd``, dot product ``asimddp``, ``i8mm``, SVE), from ``/proc/cpuinfo`` ('' where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.M)
    present = set(match.group(1).split()) if match else set()
    return " ".join(f for f in SIMD_FLAGS if f in present)


def cpu_simd() -> str:
    """The CPU's model and its SIMD features (:func:`simd_flags`), e.g. ``AMD EPYC (sse4_2 avx avx2 ...)``."""
    from slidelite.bench import cpu_model

    return f"{cpu_model()} ({simd_flags() or 'SIMD features unknown'})"


def environment_line(report: Dict[str, Any], threads: int) -> str:
    """One line saying where and under which load the numbers were measured."""
    device = report["device"]
    return (f"Measured {device['measured_at']} on {device['cpu_model']} ({device['machine']}, SIMD: {simd_line()}, "
            f"{device['cores_logical']} logical cores, {device['os']}), Python {device['python']}, "
            f"numpy {device['numpy']}, slidelite {device['slidelite']} (git {str(device['git_commit'])[:12]}); "
            f"{threads} threads, batch 1; 1-minute load average {device['loadavg_before'][0]:.2f} before / "
            f"{device['loadavg_after'][0]:.2f} after (other jobs share these cores).")


def simd_line() -> str:
    """The CPU's SIMD features that decide fp32/int8 kernel speed (AVX2/AVX-512/VNNI, NEON/dot product), with
    the converter's ``--target`` for this CPU: printed beside every table."""
    from slidelite.convert.targets import cpu_features, host_target

    return f"{' '.join(cpu_features()) or 'none read'} (target {host_target()})"


def plot_bars(path: Path, title: str, rows: Sequence[Dict[str, Any]]) -> Optional[Path]:
    """Horizontal bars of p50 with a p90 whisker per candidate; None (and a note) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print('note: no plot written (pip install "slidelite[plot]" for matplotlib)', file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [r["label"] for r in rows][::-1]
    p50 = [r["p50_ms"] for r in rows][::-1]
    whisker = [r["p90_ms"] - r["p50_ms"] for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.4), dpi=110)
    ax.barh(labels, p50, xerr=[[0] * len(rows), whisker], color="#4c72b0", capsize=3)
    for y, (value, extra) in enumerate(zip(p50, whisker)):
        ax.text(value + extra, y, f"  {value:.4g} ms", va="center", fontsize=8)
    ax.set_xlabel("latency per run (batch 1), p50 with a whisker to p90, ms")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(r["p90_ms"] for r in rows) * 1.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_json(name: str, document: Dict[str, Any]) -> Path:
    """Write ``benchmarks/results/NAME.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return path


def update_docs_section(name: str, body: str, doc: Path = DOCS_FILE) -> None:
    """Replace the text between ``<!-- BEGIN NAME -->`` and ``<!-- END NAME -->`` in ``doc`` (append if absent)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")
