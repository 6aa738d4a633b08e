"""TFLite int8 recipes vs fp32 for Slide-Swin-T at 224 in LiteRT (XNNPACK), measured side by side in one run.

    .venv/bin/python benchmarks/tflite_int8.py [--model slide_swin_tiny] [--threads 2] [--runs 20]
                                               [--calib-images 16] [--extra-crops 64] [--layout tflite|zoo]
                                               [--work tmp/tflite-int8]

Steps: random-init model (seed 0), re-parameterized, in the converter's TFLite layout
(``slidelite.convert.tflite_graph``; ``--layout zoo`` keeps the zoo's deployed form, to measure what the
layout changes), behind the NHWC RGB 0..255 adapter, exported by the converter's own litert-torch step;
every int8 recipe of ``slidelite.convert.tflite_quantize`` applied with the same calibration images
(``--calib-images`` of the 36 scikit-image photos and crops, read through the runtime's preprocessing);
then, for fp32 and each recipe:

* size ratio; top-1 agreement and worst cosine vs fp32 on the HELD-OUT images only (the other photos and
  crops plus ``--extra-crops`` seeded random crops, none used for calibration), and the fp32 top-2 margin
  of every image whose top-1 changed (random-init logits have near-ties that any rounding flips);
* latency: whole-model p50, timed interleaved (fp32, recipe A, recipe B, fp32, ...) by ``slidelite.bench``;
* per-op profile: LiteRT's Python API has no op profiler, so each distinct operator (type, shapes,
  dtypes) is cut out into a one-op model with its real weights and quantization, run in LiteRT with the
  same threads (XNNPACK takes it when it supports it, else the built-in kernel runs, exactly as in the
  whole model), and its median time is multiplied by how often it occurs. The sum is shown next to the
  whole-model time: the gap is the cost of leaving and re-entering XNNPACK between partitions.

Files are cached in ``--work`` (git-ignored ``tmp/``), so a second run re-times without re-converting.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._common import cpu_simd  # noqa: E402


def export_fp32(model_name: str, path: Path, size: int, layout: str, weights: Optional[Path] = None) -> None:
    """``model_name`` (random init, seed 0, or ``weights``), re-parameterized, in ``layout``, NHWC adapter,
    litert-torch fp32 at ``path``."""
    import torch

    from slidelite.convert.tflite_export import export_tflite, image_input_adapter, nhwc_rgb_shape
    from slidelite.convert.tflite_graph import tflite_form
    from slidelite.zoo import create_model, get_pretrained_cfg, reparameterize_model

    torch.manual_seed(0)
    cfg = get_pretrained_cfg(model_name)
    module = create_model(model_name)
    if weights is not None:
        module.load_state_dict(torch.load(weights, weights_only=True))
    module = reparameterize_model(module.eval())
    module = tflite_form(module) if layout == "tflite" else module
    adapter = image_input_adapter(module, cfg.mean, cfg.std, cfg.input_size[0])
    export_tflite(adapter, path, nhwc_rgb_shape((size, size)))


def photo_inputs(folder: Path, size: int, crop_pct: float) -> np.ndarray:
    """(36, size, size, 3) float32 pixels of the sample photos and their crops, as the runtime prepares them."""
    from slidelite.convert.samples import write_sample_photos

    write_sample_photos(folder)
    return prepared_inputs(folder, size, crop_pct)


def write_random_crops(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` random square crops (side 30-90% of the shorter side, seeded) of the sample photos, as PNGs."""
    from PIL import Image

    from slidelite.convert.samples import PHOTOS, sample_photo

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(sample_photo(name)) for name in PHOTOS]
    for index in range(count):
        image = images[index % len(images)]
        side = int(min(image.size) * rng.uniform(0.3, 0.9))
        left, top = (int(rng.integers(0, n - side + 1)) for n in image.size)
        image.crop((left, top, left + side, top + side)).save(folder / f"crop{index:03d}.png")
    return folder


def prepared_inputs(folder: Path, size: int, crop_pct: float) -> np.ndarray:
    """The images directly in ``folder``, prepared by the runtime's preprocessing (NHWC pixels 0..255)."""
    from slidelite.convert.calibration import load_calibration_set
    from slidelite.metadata import InputSpec, ModelMetadata, OutputSpec, PreprocessSpec

    meta = ModelMetadata(name="bench", labels=("x",), input=InputSpec("input", size, size, "NHWC"),
                         preprocess=PreprocessSpec(crop_pct=crop_pct, mean=(0.0,), std=(1 / 255,)),
                         output=OutputSpec("logits"))
    return load_calibration_set(folder, meta).inputs


def logits(path: Path, inputs: np.ndarray, threads: int) -> np.ndarray:
    """LiteRT logits of every input (the runtime's backend; float inputs are quantized for uint8 models)."""
    from slidelite.backends.litert_backend import LiteRTBackend
    from slidelite.model_file import open_model_file

    backend = LiteRTBackend(open_model_file(path), threads)
    out = np.concatenate([backend.run(x[None]) for x in inputs])
    backend.close()
    return out


def agreement(ref: np.ndarray, got: np.ndarray) -> Tuple[float, float, List[float]]:
    """(top-1 agreement, worst cosine, ``ref``'s top-2 margin of each image whose top-1 changed) of ``got``."""
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    top2 = np.sort(ref, axis=1)[:, -2:]
    changed = ref.argmax(1) != got.argmax(1)
    return float(1.0 - changed.mean()), float(cos.min()), [float(m) for m in (top2[:, 1] - top2[:, 0])[changed]]


def whole_model_latency(paths: Dict[str, Path], threads: int, runs: int) -> Dict[str, float]:
    """p50 ms of each model, interleaved by ``slidelite.bench``."""
    from slidelite.bench import BenchSettings, TargetSpec, run_benchmark

    report = run_benchmark([TargetSpec(str(p), "litert") for p in paths.values()],
                           BenchSettings(warmup=3, runs=runs, threads=threads))
    return {label: t["latency_ms"]["p50"] for label, t in zip(paths, report["targets"])}


def trained_micro_check(work: Path, recipes: List[str], images: int, threads: int) -> None:
    """Top-1 agreement with fp32 (and accuracy) of every recipe on a TRAINED Slide-Swin: the shipped
    ``slide_swin_micro`` Fashion-MNIST weights, calibrated on 64 training images, evaluated on ``images`` test
    images (random-init logits have near-ties that any rounding flips; trained logits show the recipe's cost)."""
    from slidelite.convert.tflite_quantize import RECIPES, quantize_tflite
    from slidelite.zoo.recipes.fashion_mnist import load_split

    weights = ROOT / "model_zoo" / "weights" / "slide_swin_micro_fmnist.pth"
    train, _ = load_split("train")
    test, labels = load_split("test")
    tag = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]  # the cache follows the weights
    paths = {"fp32": work / f"micro-fmnist-{tag}-fp32.tflite"}
    if not paths["fp32"].is_file():
        export_fp32("slide_swin_micro", paths["fp32"], 28, "tflite", weights)
    for name in recipes:
        paths[name] = work / f"micro-fmnist-{tag}-{name}-c64.tflite"
        if not paths[name].is_file():
            quantize_tflite(paths["fp32"], paths[name], RECIPES[name], _rgb(train[:64 * 900:900]))
    out = {name: logits(path, _rgb(test[:images]), threads) for name, path in paths.items()}
    print(f"\ntrained slide_swin_micro (Fashion-MNIST weights, sha256 {tag}...), {images} test images, calibration 64 "
          "training images")
    print(f"{'model':<16}{'size x':>8}{'top-1 agree':>13}{'min cos':>9}{'accuracy':>10}")
    for name, got in out.items():
        agree, cos, _ = agreement(out["fp32"], got)
        size = paths[name].stat().st_size / paths["fp32"].stat().st_size
        print(f"{name:<16}{size:>8.3f}{agree:>13.4f}{cos:>9.4f}{(got.argmax(1) == labels[:images]).mean():>10.4f}")


def _rgb(gray: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 grey images as (N, H, W, 3) float32 RGB pixels (the graph's luma of grey RGB is the grey)."""
    return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)


# ------------------------------------------------------------------------------------------- op profile


def op_profile(path: Path, threads: int, runs: int = 5) -> List[Tuple[str, str, int, float]]:
    """``[(op type, input shapes, count, total ms)]`` over the graph, slowest first, from isolated one-op models
    (see the module docstring). Ops whose inputs are all constants (DEQUANTIZE of int8 weights) are left
    out: XNNPACK computes them once when the model is loaded."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    groups: Dict[tuple, List[int]] = collections.defaultdict(list)
    for index, op in enumerate(graph.operators):
        if all(_is_constant(model, graph.tensors[t]) for t in op.inputs if t >= 0):
            continue
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        key = (kind, " ".join("x".join(map(str, graph.tensors[t].shape if graph.tensors[t].shape is not None else ()))
                              for t in op.inputs if t >= 0 and not _is_constant(model, graph.tensors[t])))
        groups[key].append(index)
    timed = [(kind, shapes, len(members), _time_one_op(model, graph, members[0], threads, runs) * len(members))
             for (kind, shapes), members in groups.items()]
    return sorted(timed, key=lambda row: -row[3])


def per_kind(profile: List[Tuple[str, str, int, float]]) -> Dict[str, float]:
    """``{op type: total ms}`` of a profile."""
    totals: Dict[str, float] = collections.defaultdict(float)
    for kind, _, _, ms in profile:
        totals[kind] += ms
    return dict(totals)


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _time_one_op(model, graph, index: int, threads: int, runs: int) -> float:
    """Median ms of operator ``index`` alone: its constant inputs keep their buffers, the others become inputs."""
    import copy

    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    op = copy.deepcopy(graph.operators[index])
    used = [t for t in list(op.inputs) + list(op.outputs) if t >= 0]
    remap = {old: new for new, old in enumerate(dict.fromkeys(used))}
    buffers = [schema.BufferT()]
    tensors = []
    for old in remap:
        tensor = copy.copy(graph.tensors[old])
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is not None and len(data) and old not in op.outputs:
            buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        tensors.append(tensor)
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [remap[t] for t in op.inputs if t >= 0 and tensors[remap[t]].buffer == 0]
    sub.outputs = [remap[t] for t in op.outputs]
    op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
    op.outputs = [remap[t] for t in op.outputs]
    sub.operators = [op]
    one = schema.ModelT()
    one.version, one.operatorCodes, one.subgraphs, one.buffers = model.version, model.operatorCodes, [sub], buffers
    interpreter = Interpreter(model_content=bytes(flatbuffer_utils.convert_object_to_bytearray(one)), num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        value = (rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, detail["shape"]) if dtype.kind in "iu"
                 else rng.standard_normal(detail["shape"]))
        interpreter.set_tensor(detail["index"], value.astype(dtype))
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times[1:]))


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    """Parse options, build or reuse the files, measure, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="slide_swin_tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--extra-crops", type=int, default=64, help="held-out random crops for the agreement")
    parser.add_argument("--layout", choices=("tflite", "zoo"), default="tflite")
    parser.add_argument("--recipes", default=None, help="comma-separated recipe names (default: all)")
    parser.add_argument("--trained-images", type=int, default=2000,
                        help="Fashion-MNIST test images for the trained-micro agreement check (0: skip)")
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument("--groups", type=int, default=10, help="slowest op groups listed per model")
    parser.add_argument("--work", type=Path, default=ROOT / "tmp" / "tflite-int8")
    args = parser.parse_args()

    from slidelite.convert.tflite_quantize import RECIPES, quantize_tflite
    from slidelite.zoo import get_pretrained_cfg

    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {_load()}", flush=True)
    photos = photo_inputs(args.work / "photos", args.size, get_pretrained_cfg(args.model).crop_pct)
    chosen = np.linspace(0, len(photos) - 1, min(args.calib_images, len(photos))).round().astype(int)
    calibration = photos[chosen]
    held_out = np.delete(photos, chosen, axis=0)
    if args.extra_crops:
        extra = write_random_crops(args.work / f"random-crops-{args.extra_crops}", args.extra_crops)
        held_out = np.concatenate([held_out, prepared_inputs(extra, args.size, get_pretrained_cfg(args.model).crop_pct)])
    stem = f"{args.model}-{args.layout}"
    paths = {"fp32": args.work / f"{stem}-fp32.tflite"}
    started = time.perf_counter()
    if not paths["fp32"].is_file():
        export_fp32(args.model, paths["fp32"], args.size, args.layout)
    print(f"fp32 export: {time.perf_counter() - started:.0f} s", flush=True)
    recipes = args.recipes.split(",") if args.recipes else list(RECIPES)
    for name in recipes:
        paths[name] = args.work / f"{stem}-{name}-c{len(calibration)}.tflite"
        started = time.perf_counter()
        if not paths[name].is_file():
            quantize_tflite(paths["fp32"], paths[name], RECIPES[name], calibration)
        print(f"{name}: quantized in {time.perf_counter() - started:.0f} s", flush=True)

    ref = logits(paths["fp32"], held_out, args.threads)
    latency = whole_model_latency(paths, args.threads, args.runs)
    fp32_size = paths["fp32"].stat().st_size
    print(f"\n{args.model} {args.size}x{args.size}, {args.layout} layout, LiteRT {_litert_version()} XNNPACK, "
          f"{args.threads} threads, cpu: {cpu_simd()}\ncalibration: {len(calibration)} photos; agreement vs fp32 on "
          f"{len(held_out)} held-out images ({len(photos) - len(calibration)} photos/crops + {args.extra_crops} "
          f"random crops); load average after timing: {_load()}")
    print(f"{'model':<16}{'size MB':>9}{'size x':>8}{'p50 ms':>9}{'speed-up':>10}{'top-1 agree':>13}{'min cos':>9}"
          "  fp32 top-2 margin of the changed images")
    for name, path in paths.items():
        agree, cos, margins = agreement(ref, logits(path, held_out, args.threads)) if name != "fp32" else (1.0, 1.0, [])
        size = path.stat().st_size
        print(f"{name:<16}{size / 1e6:>9.1f}{size / fp32_size:>8.3f}{latency[name]:>9.1f}"
              f"{latency['fp32'] / latency[name]:>9.2f}x{agree:>13.3f}{cos:>9.4f}  "
              + " ".join(f"{m:.4f}" for m in sorted(margins)))
    top2 = np.sort(ref, axis=1)[:, -2:]
    print(f"fp32 top-2 margins: median {np.median(top2[:, 1] - top2[:, 0]):.4f}, logit std {ref.std():.3f}")
    if args.trained_images:
        trained_micro_check(args.work, recipes, args.trained_images, args.threads)

    detailed = {name: op_profile(path, args.threads, args.profile_runs) for name, path in paths.items()}
    profiles = {name: per_kind(rows) for name, rows in detailed.items()}
    kinds = sorted({k for p in profiles.values() for k in p}, key=lambda k: -max(p.get(k, 0) for p in profiles.values()))
    print("\nper-op profile (ms per inference, isolated one-op models; % of the column's sum)")
    print(f"{'op':<22}" + "".join(f"{name:>22}" for name in profiles))
    for kind in kinds[:16]:
        cells = [f"{p.get(kind, 0):>12.2f} ({100 * p.get(kind, 0) / sum(p.values()):>4.1f}%)" for p in profiles.values()]
        print(f"{kind:<22}" + "".join(f"{c:>22}" for c in cells))
    print(f"{'sum of ops':<22}" + "".join(f"{sum(p.values()):>22.1f}" for p in profiles.values()))
    print(f"{'whole model p50':<22}" + "".join(f"{latency[name]:>22.1f}" for name in profiles))
    for name, rows in detailed.items():
        print(f"\n{name}: slowest op groups (type, activation input shapes, count, total ms)")
        for kind, shapes, count, ms in rows[:args.groups]:
            inputs = shapes.split()
            shown = f"{len(inputs)} x {inputs[0]}" if len(inputs) > 3 and len(set(inputs)) == 1 else shapes
            print(f"  {ms:7.2f}  {count:>3}x {kind:<20} {shown}")
    print(f"\nload average at the end: {_load()}")


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def _litert_version() -> str:
    import ai_edge_litert

    return getattr(ai_edge_litert, "__version__", "?")


if __name__ == "__main__":
    main()
