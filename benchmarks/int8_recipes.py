"""int8 recipes for the ONNX converter, measured side by side in ONE run: for each recipe of
``slidelite.convert.quantize.RECIPES`` vs the fp32 file, latency ratio (interleaved timing through slidelite's
onnxruntime backend), size ratio, top-1 agreement and worst-image cosine on real photos and crops, plus an
onnxruntime per-op-type profile of every file, so the choice of the default recipe is explained by numbers.

    .venv/bin/python benchmarks/int8_recipes.py                 # Slide-Swin-T 224, random init, 2 threads
    .venv/bin/python benchmarks/int8_recipes.py --checkpoint ckpt.pth --runs 60

The result table and the command are written into docs/converter.md (section int8-recipes) and
benchmarks/results/int8_recipes.json. Runs in a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, environment_line, limit_threads, markdown_table, save_json, update_docs_section  # noqa: E402

DOC = ROOT / "docs" / "converter.md"
TOP_OPS = 6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="slide_swin_tiny", help="zoo name or module:attr")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained weights (default: random init)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=60, help="timed rounds (each round runs every model once)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument("--crops", type=int, default=5, help="crops per photo (6 photos): 36 images by default")
    parser.add_argument("--recipes", default=None, help="comma-separated subset of the recipes (default: all)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/converter.md")
    return parser.parse_args()


def stage(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)


def main() -> int:
    args = parse_args()
    limit_threads(args.threads)
    import torch

    from benchmarks._common import measure, runtime_target
    from slidelite.convert import ConversionJob, prepare
    from slidelite.convert.pipeline import int8_onnx
    from slidelite.convert.model_metadata import build_metadata
    from slidelite.convert.onnx_export import embed_metadata, export_onnx, onnx_logits, simplify_onnx
    from slidelite.convert.quantize import DEFAULT_RECIPE, RECIPES, get_recipe
    from slidelite.convert.report import profile_op_types
    from slidelite.convert.samples import write_sample_photos
    from slidelite.convert.verify import compare_logits

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    names = args.recipes.split(",") if args.recipes else list(RECIPES)
    recipes = [get_recipe(name) for name in names]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slidelite-int8-") as work:
        folder = Path(work)
        write_sample_photos(folder / "photos", crops=args.crops)
        job = ConversionJob(model=args.model, checkpoint=args.checkpoint, output=folder / "unused.onnx",
                            calib=folder / "photos", progress=False)
        loaded, metadata, images = prepare(job)
        stage(f"loaded {loaded.architecture}, {len(images)} photos", start)
        fp32 = export_onnx(loaded.module, folder / "fp32.onnx", loaded.input_shape(1))
        simplify_onnx(fp32)
        embed_metadata(fp32, metadata)
        stage("exported fp32", start)
        reference = onnx_logits(fp32, images.inputs, args.threads)
        files = {"fp32": fp32}
        rows = [{"label": "fp32", "recipe": "fp32 (no quantization)", "size_mb": fp32.stat().st_size / 1e6,
                 "size_ratio": 1.0, "agreement": 1.0, "cosine": 1.0, "quantize_s": 0.0}]
        for recipe in recipes:
            t0 = time.perf_counter()
            (folder / recipe.name).mkdir()
            out = int8_onnx(recipe, fp32, loaded, images, metadata.input.name, folder / recipe.name, job)
            seconds = time.perf_counter() - t0
            embed_metadata(out, build_metadata(loaded, metadata.labels, precision="int8"))
            parity = compare_logits(reference, onnx_logits(out, images.inputs, args.threads))
            files[recipe.name] = out
            rows.append({"label": recipe.name + (" (default)" if recipe.name == DEFAULT_RECIPE else ""),
                         "recipe": recipe.summary, "size_mb": out.stat().st_size / 1e6,
                         "size_ratio": out.stat().st_size / fp32.stat().st_size, "agreement": parity.top1_agreement,
                         "cosine": parity.cosine, "quantize_s": seconds})
            stage(f"quantized {recipe.name} in {seconds:.0f} s", start)
        timing = measure([runtime_target(label, path, "onnxruntime", args.threads) for label, path in files.items()],
                         warmup=args.warmup, runs=args.runs, progress=False)
        stage("timed (interleaved)", start)
        for row, label in zip(rows, files):
            row["p50_ms"] = timing.row(label)["p50_ms"]
            row["speedup"] = timing.ratio("fp32", label)
        profiles = {label: profile_op_types(path, images.inputs[:1], args.threads, args.profile_runs)
                    for label, path in files.items()}
        stage("profiled", start)
    document = {"model": loaded.architecture, "checkpoint": str(args.checkpoint or "random init"),
                "images": len(images), "threads": args.threads, "rows": rows, "profiles": profiles,
                "bench": timing.report, "default_recipe": DEFAULT_RECIPE}
    save_json("int8_recipes", document)
    body = render(document, timing.report, args)
    print(body)
    if not args.no_docs:
        update_docs_section("int8-recipes", body, doc=DOC)
    stage("done", start)
    return 0


def render(document: dict, report: dict, args: argparse.Namespace) -> str:
    """The Markdown section: command, environment, the recipe table and the op-type profiles."""
    command = "python benchmarks/int8_recipes.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    table = markdown_table(document["rows"], [
        ("label", "recipe"), ("p50_ms", "p50 ms"), ("speedup", "speed-up vs fp32"), ("size_mb", "MB"),
        ("size_ratio", "size vs fp32"), ("agreement", "top-1 agreement"), ("cosine", "worst cosine"),
        ("quantize_s", "quantize s")])
    profile_rows = []
    for label, ops in document["profiles"].items():
        total = sum(ops.values()) or 1.0
        shown = ", ".join(f"{op} {ms:.1f} ms ({100 * ms / total:.0f}%)" for op, ms in list(ops.items())[:TOP_OPS])
        profile_rows.append({"label": label, "total": total, "ops": shown})
    profile = markdown_table(profile_rows, [("label", "file"), ("total", "kernel ms/run"),
                                            ("ops", f"top {TOP_OPS} op types (share of kernel time)")])
    return "\n\n".join([
        f"`{command.strip()}` — {document['model']} ({document['checkpoint']}), batch 1, {document['images']} "
        "real photos and crops (scikit-image samples) for calibration and agreement; agreement and cosine are "
        f"against the fp32 ONNX file; p50 of {args.runs} interleaved rounds (each round runs every file once, "
        "through slidelite's onnxruntime backend).",
        environment_line(report, document["threads"]),
        table,
        "Per-op-type kernel time (onnxruntime profiler, after its graph fusions; "
        f"{args.profile_runs} runs each, not interleaved):",
        profile,
    ])


if __name__ == "__main__":
    sys.exit(main())
