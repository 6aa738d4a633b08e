"""Reproduce the speed claims of Slide-Transformer (Pan et al., CVPR 2023) on this machine.

Sections (each one run, candidates timed interleaved, batch 1, ``--threads`` threads, random weights):

- ``attention``: (1) Slide-Swin-T, re-parameterized and exported like ``slidelite convert`` does, vs the
  same network with Im2Col local attention (paper: Slide 3.7-3.9x faster on an iPhone 12; goal >= 3.5x);
  (2) Slide-Swin-T vs Swin-T with window attention (paper: about equal; goal <= 1.05x); (5) achieved
  GFLOP/s of the fp32 Slide-Swin-T (MatMul/Gemm/Conv FLOPs counted in its ONNX graph) over the GFLOP/s
  of a large numpy sgemm timed in the same rounds (goal >= 60%).
- ``pvt``: (3) Slide-PVT-T/S vs PVT-T/S (paper: faster at higher accuracy).
- ``engines``: (4) the same Slide-Swin-T in torch eager, ONNX Runtime fp32 and int8, LiteRT fp32 and int8
  (goals: ORT fp32 >= 2.5x faster than torch eager; int8 >= 1.5x faster than fp32 in each engine).

Usage::

    python benchmarks/paper_speed.py --section attention   # or pvt, engines, all
    python benchmarks/paper_speed.py --section engines --runs 30 --no-docs

Results: printed, written to ``benchmarks/results/paper_speed_<section>.json``, plotted to
``docs/benchmarks/paper_speed_<section>.png`` and written into ``docs/benchmarks.md`` (between the
section's BEGIN/END markers) unless ``--no-docs``.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402  (the benchmarks folder is not a package)

INPUT = (1, 3, 224, 224)
SGEMM_SIZE = 2048
DEFAULT_RUNS = {"attention": 30, "pvt": 40, "engines": 10}  # engines: torch eager is slow
GOALS = {"im2col": 3.5, "window": 1.05, "roofline": 0.60, "ort_vs_torch": 2.5, "int8": 1.5}


@functools.lru_cache(maxsize=None)
def zoo_module(name: str) -> Any:
    """Zoo model ``name`` with seeded random weights, eval mode, re-parameterized (a no-op without Slide)."""
    import torch
    from slidelite.zoo import create_model, reparameterize_model

    torch.manual_seed(0)
    return reparameterize_model(create_model(name).eval())


def onnx_fp32(name: str) -> Path:
    """The fp32 ONNX export of zoo model ``name`` (cached while its sources are unchanged)."""
    module = zoo_module(name)
    return common.export_onnx(module, common.cache_path(name, ".onnx", module), INPUT)


def ort_candidates(names: Dict[str, str], threads: int) -> Tuple[List[Any], Dict[str, float]]:
    """ONNX Runtime candidates for ``{label: zoo name}`` and the FLOPs of each exported graph (all
    exports made before anything is timed)."""
    paths = {label: onnx_fp32(name) for label, name in names.items()}
    flops = {label: float(sum(common.count_flops(path).values())) for label, path in paths.items()}
    return [common.runtime_target(label, path, "onnxruntime", threads) for label, path in paths.items()], flops


def litert_candidates(names: Dict[str, str], threads: int) -> List[Any]:
    """LiteRT fp32 candidates ``"<label> LiteRT"`` for ``{label: zoo name}``: the converter's TFLite export."""
    paths = {label: tflite_files(name, [])["fp32"] for label, name in names.items()}
    return [common.runtime_target(f"{label} LiteRT", path, "litert", threads) for label, path in paths.items()]


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims as measured here: the median over the timed rounds of the ratio within each
    round (judged against the goal: the two runs of a round are moments apart, so load changes between rounds
    cancel), the same figure from the p50 latencies, and from the fastest run of each candidate."""

    text: str
    value: float
    p50s: float
    best_runs: float
    goal: float
    higher_is_better: bool = True
    paper: str = "-"

    @property
    def status(self) -> str:
        """``met`` / ``NOT met`` and the goal."""
        met = self.value >= self.goal if self.higher_is_better else self.value <= self.goal
        return f"{'met' if met else 'NOT met'} (goal {'>=' if self.higher_is_better else '<='} {self.goal:g})"


def latency_claim(result: Any, text: str, slower: str, faster: str, goal: float, higher_is_better: bool = True,
                  paper: str = "-") -> Claim:
    """The claim "``faster`` is ``goal`` times faster than ``slower``" (latency of ``slower`` / ``faster``)."""
    return Claim(text, result.round_ratio(slower, faster), result.ratio(slower, faster),
                 result.ratio(slower, faster, "min_ms"), goal, higher_is_better, paper)


# ------------------------------------------------------------------------------------------- sections


def section_attention(args: argparse.Namespace) -> Dict[str, Any]:
    """Items 1, 2 and 5: Slide vs Im2Col vs window attention, and the fraction of sgemm throughput."""
    names = {"Slide-Swin-T": "slide_swin_tiny", "Slide-Swin-T Im2Col": "slide_swin_tiny_im2col",
             "Swin-T window": "swin_tiny_window"}
    targets, flops = ort_candidates(names, args.threads)
    litert = {label: name for label, name in names.items() if "Im2Col" not in label}  # unfold: no TFLite export
    targets += litert_candidates(litert, args.threads)
    sgemm, mlas = f"numpy sgemm {SGEMM_SIZE}", f"ORT MatMul {SGEMM_SIZE}"
    flops[sgemm] = flops[mlas] = 2.0 * SGEMM_SIZE ** 3
    targets += [common.sgemm_target(SGEMM_SIZE, sgemm),
                common.runtime_target(mlas, common.matmul_onnx(SGEMM_SIZE), "onnxruntime", args.threads)]
    result = common.measure(targets, args.warmup, args.runs)
    for row in result.rows:
        if row["label"] in flops:
            row["gflop"] = flops[row["label"]] / 1e9
            row["gflop_per_s"] = flops[row["label"]] / row["p50_ms"] / 1e6
    for row in result.rows:
        if row["label"] not in flops:
            continue
        row["of_numpy_sgemm"] = row["gflop_per_s"] / result.row(sgemm)["gflop_per_s"]
        row["of_ort_matmul"] = row["gflop_per_s"] / result.row(mlas)["gflop_per_s"]
    import numpy as np

    example = np.random.default_rng(0).standard_normal(INPUT, dtype=np.float32)
    profile, profiles = common.op_profile({label: onnx_fp32(name) for label, name in names.items()}, example,
                                          args.threads)
    fraction = {ceiling: tuple(ratio * flops["Slide-Swin-T"] / flops[ceiling] for ratio in (
                    result.round_ratio(ceiling, "Slide-Swin-T"), result.ratio(ceiling, "Slide-Swin-T"),
                    result.ratio(ceiling, "Slide-Swin-T", "min_ms")))
                for ceiling in (sgemm, mlas)}
    claims = [
        latency_claim(result, "1. Im2Col / Slide latency (Slide is this many times faster)", "Slide-Swin-T Im2Col",
                      "Slide-Swin-T", GOALS["im2col"], paper="3.7-3.9x on iPhone 12"),
        latency_claim(result, "2. Slide / Swin-T window latency", "Slide-Swin-T", "Swin-T window", GOALS["window"],
                      higher_is_better=False, paper="about 1x"),
        latency_claim(result, "2'. Slide / Swin-T window latency, LiteRT", "Slide-Swin-T LiteRT",
                      "Swin-T window LiteRT", GOALS["window"], higher_is_better=False, paper="about 1x"),
        Claim("5. Slide-Swin-T GFLOP/s / numpy sgemm GFLOP/s", *fraction[sgemm], GOALS["roofline"]),
        Claim("5'. Slide-Swin-T GFLOP/s / ORT MatMul GFLOP/s", *fraction[mlas], GOALS["roofline"]),
    ]
    extra = ("Where the time goes (ONNX Runtime's profiler, 3 runs per model, models profiled one after the "
             "other, so compare op types within a column more than across columns):\n\n" + profile)
    return {"measurement": result, "claims": claims, "extra": extra, "profiles": profiles,
            "columns": [("label", "candidate (fp32)"), ("engine", "engine"), ("p50_ms", "p50 ms"),
                        ("p90_ms", "p90 ms"), ("mean_ms", "mean ms"), ("gflop", "GFLOP"),
                        ("gflop_per_s", "GFLOP/s at p50"), ("of_numpy_sgemm", "of numpy sgemm"),
                        ("of_ort_matmul", "of ORT MatMul")]}


def section_pvt(args: argparse.Namespace) -> Dict[str, Any]:
    """Item 3: Slide-PVT-T/S vs PVT-T/S (ONNX Runtime fp32), with the paper's ImageNet top-1."""
    from slidelite.zoo import get_pretrained_cfg

    names = {"PVT-T": "pvt_tiny", "Slide-PVT-T": "slide_pvt_tiny", "PVT-S": "pvt_small",
             "Slide-PVT-S": "slide_pvt_small"}
    targets, flops = ort_candidates(names, args.threads)
    targets += litert_candidates(names, args.threads)
    result = common.measure(targets, args.warmup, args.runs)
    for row in result.rows:
        label = row["label"].removesuffix(" LiteRT")
        cfg = get_pretrained_cfg(names[label])
        row["engine"] = "LiteRT" if label != row["label"] else "ONNX Runtime"
        row["paper_top1"], row["paper_gflops"] = cfg.paper_top1, cfg.paper_gflops
        row["gflop"] = flops[label] / 1e9
    claims = [latency_claim(result, f"3. PVT-{size} / Slide-PVT-{size} latency (> 1: Slide faster)", f"PVT-{size}",
                            f"Slide-PVT-{size}", 1.0, paper=f"faster at higher top-1 "
                            f"({result.row(f'Slide-PVT-{size}')['paper_top1']} vs {result.row(f'PVT-{size}')['paper_top1']})")
              for size in ("T", "S")]
    claims += [latency_claim(result, f"3'. PVT-{size} / Slide-PVT-{size} latency, LiteRT", f"PVT-{size} LiteRT",
                             f"Slide-PVT-{size} LiteRT", 1.0, paper="faster") for size in ("T", "S")]
    return {"measurement": result, "claims": claims,
            "columns": [("label", "model (fp32)"), ("engine", "engine"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
                        ("mean_ms", "mean ms"), ("gflop", "GFLOP (graph)"), ("paper_gflops", "paper GFLOPs"),
                        ("paper_top1", "paper top-1 %")]}


def section_engines(args: argparse.Namespace) -> Dict[str, Any]:
    """Item 4: one model (Slide-Swin-T) in every engine and precision (int8: every converter recipe that
    needs no calibration data for ONNX, both TFLite recipes; the default recipe of each is marked)."""
    from slidelite.convert.quantize import DEFAULT_RECIPE
    from slidelite.convert.tflite_quantize import DEFAULT_RECIPE as TFLITE_DEFAULT, RECIPES as TFLITE_RECIPES

    name = "slide_swin_tiny"
    fp32 = onnx_fp32(name)
    int8 = common.quantize_onnx_int8(fp32, common.cache_path(name, ".int8.onnx", zoo_module(name)))
    ort_int8 = f"ONNX Runtime int8 {DEFAULT_RECIPE}"
    litert = {f"LiteRT {kind}": path for kind, path in tflite_files(name, list(TFLITE_RECIPES)).items()}
    targets = [common.torch_target("torch eager fp32", zoo_module(name), INPUT, args.threads),
               common.runtime_target("ONNX Runtime fp32", fp32, "onnxruntime", args.threads),
               common.runtime_target(ort_int8, int8, "onnxruntime", args.threads)]
    targets += [common.runtime_target(label, path, "litert", args.threads) for label, path in litert.items()]
    result = common.measure(targets, args.warmup, args.runs)
    claims = [("4a. torch eager / ORT fp32 latency", "torch eager fp32", "ONNX Runtime fp32", GOALS["ort_vs_torch"]),
              (f"4b. ORT fp32 / ORT int8 ({DEFAULT_RECIPE}, default) latency", "ONNX Runtime fp32", ort_int8,
               GOALS["int8"])]
    for recipe in TFLITE_RECIPES:
        default = ", default" if recipe == TFLITE_DEFAULT else ""
        claims.append((f"4c. LiteRT fp32 / LiteRT int8 ({recipe}{default}) latency", "LiteRT fp32",
                       f"LiteRT int8 {recipe}", GOALS["int8"]))
    claims = [latency_claim(result, *claim) for claim in claims]
    return {"measurement": result, "claims": claims,
            "columns": [("label", "Slide-Swin-T in"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
                        ("mean_ms", "mean ms"), ("first_ms", "first run ms"), ("init_ms", "init ms")]}


def tflite_files(name: str, recipes: List[str]) -> Dict[str, Path]:
    """``{"fp32": path, "int8 RECIPE": path, ...}``: ``.tflite`` files of ``name`` made with the converter's
    TFLite steps (its TFLite layout, NHWC RGB 0..255 input adapter, litert-torch export, int8 recipes calibrated
    on real photos)."""
    from slidelite.convert.tflite_export import export_tflite, image_input_adapter, nhwc_rgb_shape
    from slidelite.convert.tflite_graph import tflite_form
    from slidelite.convert.tflite_quantize import get_tflite_recipe, quantize_tflite
    from slidelite.zoo import get_pretrained_cfg

    module = zoo_module(name)
    cfg = get_pretrained_cfg(name)
    fp32 = common.cache_path(name, ".fp32.tflite", module)
    if not fp32.exists():
        adapter = image_input_adapter(tflite_form(module), cfg.mean, cfg.std, cfg.input_size[0])
        common.publish_file(fp32, lambda partial: export_tflite(adapter, partial, nhwc_rgb_shape(INPUT[2:])))
    files = {"fp32": fp32}
    for recipe in recipes:
        path = common.cache_path(name, f".int8-{recipe}.tflite", module)
        if not path.exists():
            spec = get_tflite_recipe(recipe)
            common.publish_file(path, lambda partial: quantize_tflite(fp32, partial, spec, calibration_pixels()))
        files[f"int8 {recipe}"] = path
    return files


def calibration_pixels(count: int = 8) -> Any:
    """(count, 224, 224, 3) float32 RGB pixels 0..255: scikit-image's photos, centre and corner crops."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    crops = []
    for photo in photos:
        image = Image.fromarray(photo).convert("RGB")
        side = min(image.size)
        for box in ((0, 0, side, side), (image.width - side, image.height - side, image.width, image.height)):
            crops.append(np.asarray(image.crop(box).resize(INPUT[2:], Image.BILINEAR), dtype=np.float32))
    return np.stack(crops[:count])


SECTIONS: Dict[str, Tuple[str, Callable[[argparse.Namespace], Dict[str, Any]]]] = {
    "attention": ("Slide vs Im2Col vs window attention, and the fraction of sgemm", section_attention),
    "pvt": ("Slide-PVT vs PVT", section_pvt),
    "engines": ("one model in every engine and precision", section_engines),
}


# ------------------------------------------------------------------------------------------- output


def publish(section: str, outcome: Dict[str, Any], args: argparse.Namespace, seconds: float) -> None:
    """Print the table and the claims; write JSON, the plot and the docs section."""
    result = outcome["measurement"]
    title, _ = SECTIONS[section]
    table = common.markdown_table(result.rows, outcome["columns"])
    claims = "\n".join(f"| {c.text} | {c.value:.3f} | {c.p50s:.3f} | {c.best_runs:.3f} | {c.status} | {c.paper} |"
                       for c in outcome["claims"])
    claims = ("| claim | measured (median of per-round ratios) | from the p50s | from the fastest runs | "
              "goal (judged on the per-round median) | paper |\n|---|---|---|---|---|---|\n" + claims)
    env = common.environment_line(result.report, args.threads)
    command = f"python benchmarks/paper_speed.py --section {section} --runs {args.runs} --warmup {args.warmup} " \
              f"--threads {args.threads}"
    extra = f"\n\n{outcome['extra']}" if outcome.get("extra") else ""
    print(f"\n== {section}: {title}\n{env}\n\n{table}\n\n{claims}{extra}\n\n(section ran {seconds:.0f} s)")
    common.save_json(f"paper_speed_{section}", {"command": command, "rows": result.rows, "claims": [asdict(c) for c in outcome["claims"]],
        "op_profiles_ms": outcome.get("profiles"), "report": result.report})
    plot = common.plot_bars(common.PLOTS_DIR / f"paper_speed_{section}.png",
                            f"{title} ({args.threads} threads, batch 1)", result.rows)
    if args.docs:
        image = f"\n\n![{section}](benchmarks/{plot.name})" if plot else ""
        body = (f"```sh\n{command}\n```\n\n{env} Timed runs per candidate: {args.runs} (interleaved), "
                f"warm-up {args.warmup}; section wall time {seconds:.0f} s (exports included when not cached)."
                f"\n\n{table}\n\n{claims}{image}{extra}")
        common.update_docs_section(f"paper_speed:{section}", body)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--runs", type=int, default=None,
                        help=f"timed rounds, each candidate once per round (default: {DEFAULT_RUNS})")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-docs", dest="docs", action="store_false", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    common.limit_threads(args.threads)
    for section in (SECTIONS if args.section == "all" else [args.section]):
        start = time.perf_counter()
        run = argparse.Namespace(**{**vars(args), "runs": args.runs or DEFAULT_RUNS[section]})
        outcome = SECTIONS[section][1](run)
        publish(section, outcome, run, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
