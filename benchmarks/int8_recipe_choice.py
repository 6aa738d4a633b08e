"""Which int8 recipe fits which graph: for CNNs (torchvision ResNet-18, MobileNetV3-Small) and a transformer
(slide_swin_micro), every ONNX int8 recipe side by side in ONE run — size ratio, share of weights stored int8,
speed ratio vs fp32 (interleaved timing through slidelite's onnxruntime backend), top-1 agreement and worst
cosine vs fp32 on real photos — and the recipe the converter picks when ``--int8-recipe`` is not given
(:func:`slidelite.convert.int8_coverage.choose_recipe`).

    .venv/bin/python benchmarks/int8_recipe_choice.py            # ~10 min on 2 shared cores
    .venv/bin/python benchmarks/int8_recipe_choice.py --weight-only   # also the (slow: GPTQ) weight-only recipe

Random-init / self-initialised weights (tests/_torch_classifiers.py; no downloads). The table goes into
docs/converter.md (section int8-recipe-choice) and benchmarks/results/int8_recipe_choice.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import (ROOT, cpu_simd, environment_line, limit_threads, markdown_table,  # noqa: E402
                                save_json, update_docs_section)

DOC = ROOT / "docs" / "converter.md"
MODELS = (("tests._torch_classifiers:resnet18", 224), ("tests._torch_classifiers:mobilenet_v3_small", 224),
          ("slide_swin_micro", None))
RECIPES = ("dynamic-matmul", "static-qdq-all", "static-qdq-conv")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40, help="timed rounds (each round runs every file once)")
    parser.add_argument("--crops", type=int, default=3, help="crops per photo (6 photos): 24 images by default")
    parser.add_argument("--weight-only", action="store_true", help="also measure the weight-only recipe (slow)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/converter.md")
    return parser.parse_args()


def measure_model(model: str, size, recipes, folder: Path, args: argparse.Namespace):
    """Rows (one per file: fp32 and each recipe) for one model, timed interleaved; and the bench report."""
    from benchmarks._common import measure, runtime_target
    from slidelite.convert import ConversionJob, PreprocessOverrides, prepare
    from slidelite.convert.calibration import ImageFolderReader
    from slidelite.convert.int8_coverage import choose_recipe, onnx_int8_fraction, onnx_weight_shares
    from slidelite.convert.onnx_export import export_onnx, onnx_logits, simplify_onnx
    from slidelite.convert.pipeline import int8_weight_onnx
    from slidelite.convert.quantize import DEFAULT_RECIPE, get_recipe, quantize_onnx
    from slidelite.convert.report import profile_op_types
    from slidelite.convert.verify import compare_logits

    job = ConversionJob(model=model, output=folder / "unused.onnx", calib=folder / "photos", progress=False,
                        preprocess=PreprocessOverrides(input_size=(size, size) if size else None))
    loaded, metadata, images = prepare(job)
    fp32 = export_onnx(loaded.module, folder / "fp32.onnx", loaded.input_shape(1))
    simplify_onnx(fp32)
    shares = onnx_weight_shares(fp32)
    chosen = choose_recipe(None, DEFAULT_RECIPE, "onnx", shares)
    reference = onnx_logits(fp32, images.inputs, args.threads)
    name = model.split(":")[-1]
    files = {"fp32": fp32}
    rows = [{"model": name, "recipe": "fp32", "size_ratio": 1.0, "int8_share": 0.0, "agreement": 1.0, "cosine": 1.0}]
    for recipe in map(get_recipe, recipes):
        if recipe.int8_storage:
            out = int8_weight_onnx(loaded, images.inputs, folder, job).rename(folder / f"{recipe.name}.onnx")
        else:
            reader = ImageFolderReader(images, metadata.input.name) if recipe.static else None
            out = quantize_onnx(fp32, folder / f"{recipe.name}.onnx", recipe, reader)
        parity = compare_logits(reference, onnx_logits(out, images.inputs, args.threads))
        files[recipe.name] = out
        rows.append({"model": name, "recipe": recipe.name + (" (auto)" if recipe.name == chosen.name else ""),
                     "size_ratio": out.stat().st_size / fp32.stat().st_size, "int8_share": onnx_int8_fraction(out),
                     "agreement": parity.top1_agreement, "cosine": parity.cosine})
    timing = measure([runtime_target(label, path, "onnxruntime", args.threads) for label, path in files.items()],
                     warmup=3, runs=args.runs, progress=False)
    example = images.inputs[:1]
    for row, (label, path) in zip(rows, files.items()):
        row["kernel_ms"] = sum(profile_op_types(path, example, args.threads, runs=5).values())
        row["p50_ms"] = timing.row(label)["p50_ms"]
        speed = timing.ratio("fp32", label)
        row["speed"] = f"{speed:.2f}x faster" if speed >= 1 else f"{1 / speed:.2f}x slower"
    rows[0]["recipe"] = f"fp32 ({loaded.input_size[0]} px; weights {_shares_text(shares)}; auto: {chosen.name})"
    return rows, timing.report


def _shares_text(shares) -> str:
    total = sum(shares.values()) or 1
    return ", ".join(f"{kind} {100 * count / total:.0f}%" for kind, count in shares.items())


def main() -> int:
    args = parse_args()
    limit_threads(args.threads)
    import torch

    from slidelite.convert.samples import write_sample_photos

    torch.set_num_threads(args.threads)
    recipes = RECIPES + (("weight-only",) if args.weight_only else ())
    rows, report, start = [], None, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slidelite-int8-choice-") as work:
        write_sample_photos(Path(work) / "photos", crops=args.crops)
        for model, size in MODELS:
            folder = Path(work) / model.replace(":", "_")
            folder.mkdir()
            (folder / "photos").symlink_to(Path(work) / "photos")
            torch.manual_seed(0)
            model_rows, report = measure_model(model, size, recipes, folder, args)
            rows += model_rows
            print(f"[{time.perf_counter() - start:6.0f} s] {model}", file=sys.stderr, flush=True)
    save_json("int8_recipe_choice", {"rows": rows, "bench": report, "cpu": cpu_simd()})
    table = markdown_table(rows, [("model", "model"), ("recipe", "recipe"), ("p50_ms", "p50 ms"),
                                  ("speed", "int8 vs fp32"),
                                  ("kernel_ms", "kernel ms (profiler)"), ("size_ratio", "size vs fp32"),
                                  ("int8_share", "weights int8"), ("agreement", "top-1 agreement"),
                                  ("cosine", "worst cosine")])
    body = "\n\n".join([
        "`python benchmarks/int8_recipe_choice.py` — self-initialised weights, batch 1, 24 real photos and crops "
        "(scikit-image) for calibration and agreement (vs the fp32 ONNX file); p50 of "
        f"{args.runs} interleaved rounds through slidelite's onnxruntime backend; kernel ms: onnxruntime's "
        f"profiler, sum over op types, 5 runs (not interleaved). CPU: {cpu_simd()}.",
        environment_line(report, args.threads), table])
    print(body)
    if not args.no_docs:
        update_docs_section("int8-recipe-choice", body, doc=DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
