"""One Slide attention layer, and Slide-Swin-T, in each deployable formulation vs Swin's 7x7 window attention,
per engine.

Candidates (all the same function, checked against the zoo's training form before timing; random weights with
a random deformed branch):

- ``convolutions`` -- the zoo's deployed form (:meth:`slidelite.zoo.SlideAttention.reparameterize`), what the
  ONNX route exports: q|k|v and proj as 1x1 convs, per neighbour a multiplier-1 depthwise conv of k and of v,
  the head sums and copies as grouped 1x1 convs (ONNX Runtime runs all of it in its NCHWc layout).
- ``tap-gemm`` -- the TFLite route's rewrite (``convert/tflite_graph.py``): per kernel tap a shifted slice,
  the product with q and a (head_dim -> ka^2) GEMM shared by the heads; the weighted sum likewise.
- ``multiplier`` -- the earlier deployed form (:func:`slidelite.zoo.slide_attention.multiplier_form`): one
  multiplier-ka^2 depthwise conv each for k and v, element-wise products and sums.
- ``per-offset`` -- the earlier TFLite rewrite: a multiplier-1 depthwise conv per offset in NHWC, SUM over
  head_dim, CONCATENATION of the logits, SOFTMAX.
- ``window`` -- Swin's window attention at the same shape (partition, qkv, attention, proj, reverse).

Every candidate is exported as the converter does (ONNX: dynamo export + onnxslim; TFLite: litert-torch, with
the TFLite route's patch-merging rewrite in whole models) and timed interleaved; the tables give p50 latency
and the p50 of the per-round ratio to ``window`` (Swin-T in ``--whole-model``).

Usage::

    python benchmarks/slide_attention_forms.py [--runs 40] [--threads 2] [--engines onnxruntime,litert] [--no-docs]
    python benchmarks/slide_attention_forms.py --whole-model [--runs 40] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402  (the benchmarks folder is not a package)

STAGES = {"stage 1 (56x56, C 96)": (96, 3, 56), "stage 2 (28x28, C 192)": (192, 6, 28)}


def _forms() -> Dict[str, Any]:
    """``{name: factory(deployed SlideAttention) -> nn.Module}`` (imports torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from slidelite.convert.tflite_graph import TapGemmSlideAttention
    from slidelite.zoo.slide_attention import multiplier_form

    class Form(nn.Module):
        """A deployed Slide attention behind ``forward`` (so the TFLite route does not rewrite it)."""

        def __init__(self, attn: Any, forward: Any) -> None:
            super().__init__()
            self.attn, self.run = attn, forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.run(self.attn, x)

    class PerOffset(nn.Module):
        """The earlier TFLite rewrite: per offset j, multiplier-1 depthwise convs of k and v (NHWC out), the
        logit as MUL + SUM over head_dim, CONCATENATION, SOFTMAX, the weighted sum accumulated offset by offset."""

        def __init__(self, attn: Any) -> None:
            super().__init__()
            C, kk, ka = attn.dim, attn.ka * attn.ka, attn.ka
            self.attn, self.qkv, self.proj = attn, attn.qkv, attn.proj
            convs = (attn.k_conv, attn.v_conv)
            weight = torch.cat([conv.weight.detach() for conv in convs]).reshape(2 * C, kk, 1, ka, ka)
            bias = torch.cat([conv.bias.detach() for conv in convs]).reshape(2 * C, kk)
            self.register_buffer("weight", weight.transpose(0, 1).contiguous())  # (kk, 2C, 1, ka, ka)
            self.register_buffer("bias", bias.transpose(0, 1).contiguous())      # (kk, 2C)

        def _shifted(self, x: torch.Tensor, lo: int, hi: int) -> List[torch.Tensor]:
            x = x[:, lo:hi]
            return [F.conv2d(x, self.weight[j, lo:hi], self.bias[j, lo:hi], padding=self.attn.ka // 2,
                             groups=hi - lo).permute(0, 2, 3, 1) for j in range(self.attn.ka ** 2)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, H, W, C = x.shape
            heads, hd, kk, N = self.attn.num_heads, self.attn.head_dim, self.attn.ka ** 2, B * H * W
            qkv = self.qkv(x)
            q, kv = qkv[..., :C], qkv[..., C:].permute(0, 3, 1, 2)
            keys, values = self._shifted(kv, 0, C), self._shifted(kv, C, 2 * C)
            logits = torch.cat([(k * q).reshape(N, heads, hd).sum(-1, keepdim=True) for k in keys], -1)
            attn = logits.softmax(-1)
            out = sum(attn[..., j:j + 1] * values[j].reshape(N, heads, hd) for j in range(kk))
            return self.proj(out.reshape(B, H, W, C))

    return {"convolutions": lambda attn: Form(attn, type(attn)._forward_deployed), "tap-gemm": TapGemmSlideAttention,
            "multiplier": lambda attn: Form(attn, multiplier_form), "per-offset": PerOffset}


def _window(dim: int, heads: int) -> Any:
    from torch import nn

    from slidelite.zoo.slide_swin import SwinTransformerBlock

    class WindowLayer(nn.Module):
        """Swin's (unshifted) 7x7 window attention with partition and reverse, on (B, H, W, C)."""

        def __init__(self) -> None:
            super().__init__()
            self.block = SwinTransformerBlock(dim, heads, 7, 0, is_slide=False)

        def forward(self, x: Any) -> Any:
            return self.block._window_attention(x)

    return WindowLayer().eval()


def layer_modules(dim: int, heads: int, H: int) -> Dict[str, Any]:
    """Every candidate at one shape, each checked against the zoo's training form (max |diff| <= 1e-5)."""
    import torch

    from slidelite.zoo import SlideAttention

    torch.manual_seed(0)
    attn = SlideAttention(dim, heads).eval()
    with torch.no_grad():
        for param in (attn.dep_conv1.weight, attn.dep_conv1.bias, attn.dep_conv.bias):
            param.normal_(0, 0.1)
        x = torch.randn(1, H, H, dim)
        trained = attn(x)
        attn.reparameterize()
        modules = {name: make(attn).eval() for name, make in _forms().items()}
        for name, module in modules.items():
            error = (module(x) - trained).abs().max().item()
            if error > 1e-5:
                raise SystemExit(f"{name} differs from the training form by {error:.2e} at C={dim}")
    modules["window"] = _window(dim, heads)
    return modules


def whole_models() -> Dict[str, Any]:
    """Slide-Swin-T (seeded random weights, deployed) with every Slide attention in each form, and Swin-T with
    window attention: ``{form: module}``."""
    import copy

    import torch

    from slidelite.zoo import SlideAttention, create_model, reparameterize_model

    torch.manual_seed(0)
    deployed = reparameterize_model(create_model("slide_swin_tiny").eval())
    models = {}
    for name, make in _forms().items():
        model = copy.deepcopy(deployed)
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) is SlideAttention:
                    setattr(parent, child_name, make(child))
        models[name] = model.eval()
    torch.manual_seed(0)
    models["window"] = create_model("swin_tiny_window").eval()
    return models


def merge_by_reshape(model: Any) -> Any:
    """A copy of ``model`` with the TFLite route's patch-merging rewrite only (its Slide attention form kept)."""
    import copy

    from slidelite.convert.tflite_graph import ReshapePatchMerging
    from slidelite.zoo.slide_swin import PatchMerging

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is PatchMerging:
                setattr(parent, name, ReshapePatchMerging(child))
    return model.eval()


def export(name: str, module: Any, shape: tuple, engine: str) -> Path:
    """The candidate's file for ``engine`` (cached while the sources that shape it are unchanged)."""
    if engine == "onnxruntime":
        return common.export_onnx(module, common.cache_path(name, ".onnx", module), shape)
    from slidelite.convert.tflite_export import export_tflite

    path = common.cache_path(name, ".tflite", module)
    return path if path.exists() else common.publish_file(path, lambda partial: export_tflite(module, partial, shape))


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default="onnxruntime,litert")
    parser.add_argument("--whole-model", action="store_true",
                        help="time whole Slide-Swin-T models (each form, each engine) instead of single layers")
    parser.add_argument("--no-docs", dest="docs", action="store_false")
    args = parser.parse_args(argv)
    if args.whole_model:
        return main_whole_model(args)
    common.limit_threads(args.threads)
    engines = args.engines.split(",")
    start = time.perf_counter()
    targets, labels = [], {}
    for stage, (dim, heads, H) in STAGES.items():
        for name, module in layer_modules(dim, heads, H).items():
            for engine in engines:
                label = f"{stage} {engine} {name}"
                path = export(f"slide-attention-{name}-{dim}", module, (1, H, H, dim), engine)
                targets.append(common.runtime_target(label, path, engine, args.threads))
                labels[label] = (stage, engine, name)
    result = common.measure(targets, args.warmup, args.runs)
    rows = []
    for row in result.rows:
        stage, engine, name = labels[row["label"]]
        ratio = result.round_ratio(row["label"], f"{stage} {engine} window")
        rows.append({"stage": stage, "engine": engine, "form": name, "p50_ms": row["p50_ms"],
                     "p90_ms": row["p90_ms"], "vs_window": ratio})
    table = common.markdown_table(rows, [("stage", "layer"), ("engine", "engine"), ("form", "form"),
                                         ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("vs_window", "/ window")])
    command = f"python benchmarks/slide_attention_forms.py --runs {args.runs} --threads {args.threads} " \
              f"--engines {args.engines}"
    note = ("`/ window`: latency over the window-attention layer of the same engine and shape "
            "(median of the per-round ratios); fp32, batch 1.")
    return publish("slide-attention-forms", command, result, rows, table, note, args, start)


def publish(section: str, command: str, result: Any, rows: List[Dict[str, Any]], table: str, note: str,
            args: argparse.Namespace, start: float) -> int:
    """Print the table, write ``benchmarks/results/<section>.json`` and (unless ``--no-docs``) the docs section."""
    env = common.environment_line(result.report, args.threads)
    print(f"\n{env}\n\n{table}\n\n{note}")
    common.save_json(section.replace("-", "_").replace(":", "_"), {"command": command, "rows": rows,
                                                                   "report": result.report})
    if args.docs:
        common.update_docs_section(section, f"```sh\n{command}\n```\n\n{env} Section wall time "
                                   f"{time.perf_counter() - start:.0f} s.\n\n{table}\n\n{note}")
    return 0


def main_whole_model(args: argparse.Namespace) -> int:
    """Slide-Swin-T with each form vs Swin-T window attention, in each engine, interleaved."""
    common.limit_threads(args.threads)
    start = time.perf_counter()
    shape = (1, 3, 224, 224)
    targets, labels = [], {}
    for name, module in whole_models().items():
        for engine in args.engines.split(","):
            label = f"{engine} {name}"
            form = module if engine == "onnxruntime" else merge_by_reshape(module)
            path = export(f"slide_swin_tiny-{name}", form, shape, engine)
            targets.append(common.runtime_target(label, path, engine, args.threads))
            labels[label] = (engine, name)
    result = common.measure(targets, args.warmup, args.runs)
    rows = []
    for row in result.rows:
        engine, name = labels[row["label"]]
        rows.append({"engine": engine, "form": name, "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"],
                     "vs_window": result.round_ratio(row["label"], f"{engine} window"),
                     "vs_multiplier": result.round_ratio(row["label"], f"{engine} multiplier")})
    table = common.markdown_table(rows, [("engine", "engine"), ("form", "Slide-Swin-T attention form (window: Swin-T)"),
                                         ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("vs_window", "/ Swin-T window"),
                                         ("vs_multiplier", "/ multiplier")])
    command = (f"python benchmarks/slide_attention_forms.py --whole-model --runs {args.runs} --threads {args.threads} "
               f"--engines {args.engines}")
    note = ("Ratios: median over the timed rounds of the ratio within each round (same engine); fp32, batch 1, "
            "224x224. The converter exports `convolutions` to ONNX and `tap-gemm` to TFLite.")
    section = f"slide-attention-forms:whole-model-{args.threads}t"
    return publish(section, command, result, rows, table, note, args, start)


if __name__ == "__main__":
    sys.exit(main())
