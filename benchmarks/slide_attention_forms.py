"""One Slide attention layer in each deployable formulation vs Swin's 7x7 window attention, per engine.

Candidates (all the same function, checked against the zoo's training form before timing; random weights with
a random deformed branch):

- ``channel-first`` — the zoo's deployed form (:meth:`slidelite.zoo.SlideAttention.reparameterize`): one
  transpose in and out, a depthwise conv each for k and v, Mul+ReduceSum over head_dim, Softmax over ka^2.
- ``per-offset`` — the TFLite route's rewrite (``convert/tflite_graph.py``): multiplier-1 convs per offset.
- ``batched-matmul`` — the earlier deployed form: one multiplier-9 conv over k and v, NHWC, a (1 x hd) @
  (hd x 9) matmul per pixel and head.
- ``correlation`` — the logits as a GEMM: the ka^2 products q_d(p) k_d(p+t) per channel (shifted copies by
  flat slicing) contracted with the shared kernel (hd*ka^2 -> ka^2, bias and position term appended), and
  the output as (ka^2 -> hd*ka^2) GEMM of the attention weights times the shifted values. Exactly as many
  multiply-adds as the depthwise conv (81 per channel and pixel for ka = 3): the rewrite moves them into
  GEMMs, it does not remove them.
- ``window`` — Swin's window attention at the same shape (partition, qkv, attention, proj, reverse).

Every candidate is exported as the converter does (ONNX: dynamo export + onnxslim; TFLite: litert-torch)
and timed interleaved; the table gives p50 latency and the p50 of the per-round ratio to ``window``.

Usage::

    python benchmarks/slide_attention_forms.py [--runs 40] [--threads 2] [--engines onnxruntime,litert] [--no-docs]
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
LITERT_FORMS = ("channel-first", "per-offset", "window")  # the others need ops LiteRT runs badly or not at all


def _forms() -> Dict[str, Any]:
    """``{name: factory(deployed SlideAttention) -> nn.Module}`` (imports torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from slidelite.convert.tflite_graph import PerOffsetSlideAttention

    class BatchedMatmul(nn.Module):
        """The earlier deployed form: one multiplier-ka^2 conv over k|v (NHWC out), per-pixel batched matmuls."""

        def __init__(self, attn: Any) -> None:
            super().__init__()
            self.attn, self.qkv, self.proj = attn, attn.qkv, attn.proj
            self.register_buffer("weight", torch.cat([attn.k_conv.weight, attn.v_conv.weight]).detach())
            self.register_buffer("bias", torch.cat([attn.k_conv.bias, attn.v_conv.bias]).detach())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, H, W, C = x.shape
            heads, hd, ka = self.attn.num_heads, self.attn.head_dim, self.attn.ka
            qkv = self.qkv(x)
            q = qkv[..., :C].reshape(B * H * W, heads, 1, hd)
            kv = F.conv2d(qkv[..., C:].permute(0, 3, 1, 2), self.weight, self.bias, padding=ka // 2, groups=2 * C)
            kv = kv.permute(0, 2, 3, 1).reshape(B * H * W, 2 * heads, hd, ka * ka)
            attn = torch.matmul(q, kv[:, :heads]).softmax(dim=-1)
            return self.proj(torch.matmul(attn, kv[:, heads:].transpose(-1, -2)).reshape(B, H, W, C))

    class Correlation(nn.Module):
        """Logits and output as GEMMs with the shared kernel (see the module docstring)."""

        def __init__(self, attn: Any) -> None:
            super().__init__()
            heads, hd, kk = attn.num_heads, attn.head_dim, attn.ka * attn.ka
            self.attn, self.qkv, self.proj = attn, attn.qkv, attn.proj
            w = attn.k_conv.weight.detach().reshape(heads, hd, kk, kk)[0]            # (d, j, t), shared by heads
            bk = attn.k_conv.bias.detach().reshape(heads, hd, kk).transpose(1, 2)  # (head, j, d): bias + position
            wk = w.permute(1, 0, 2).reshape(1, kk, hd * kk).expand(heads, -1, -1)
            self.register_buffer("wk", torch.cat([wk, bk], 2).contiguous())       # (head, j, hd*(kk+1))
            bv = attn.v_conv.bias.detach().reshape(heads, hd, kk)[0]               # (d, j)
            self.register_buffer("wv", torch.cat([w.permute(0, 2, 1).reshape(hd * kk, kk), bv]).contiguous())

        def _shifts(self, t: torch.Tensor, H: int, W: int) -> torch.Tensor:
            ka, p = self.attn.ka, self.attn.ka // 2
            flat, Wp = F.pad(t, (p, p, p, p + 1)).flatten(2), W + 2 * p
            return torch.stack([flat[..., a * Wp + c: a * Wp + c + H * Wp] for a in range(ka) for c in range(ka)], 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, H, W, C = x.shape
            heads, hd, kk, p = self.attn.num_heads, self.attn.head_dim, self.attn.ka ** 2, self.attn.ka // 2
            L = H * (W + 2 * p)
            f = self.qkv(x).permute(0, 3, 1, 2)
            q = F.pad(f[:, :C], (0, 2 * p)).reshape(B, heads, hd, 1, L)
            ks = self._shifts(f[:, C:2 * C], H, W).reshape(B, heads, hd, kk, L)
            products = torch.cat([(q * ks).reshape(B, heads, hd * kk, L), q.reshape(B, heads, hd, L)], 2)
            a = torch.matmul(self.wk, products).softmax(2)
            m = torch.matmul(self.wv, a)
            vs = self._shifts(f[:, 2 * C:], H, W).reshape(B, heads, hd, kk, L)
            out = (m[:, :, :hd * kk].reshape(B, heads, hd, kk, L) * vs).sum(3) + m[:, :, hd * kk:]
            return self.proj(out.reshape(B, C, H, W + 2 * p)[..., :W].permute(0, 2, 3, 1))

    return {"channel-first": lambda attn: attn, "per-offset": PerOffsetSlideAttention,
            "batched-matmul": BatchedMatmul, "correlation": Correlation}


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
    """Slide-Swin-T (seeded random weights, deployed) with every Slide attention in each ONNX-exportable form,
    and Swin-T with window attention: ``{form: module}``."""
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
                        help="time whole Slide-Swin-T models (ONNX Runtime, each form) instead of single layers")
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
                if engine == "litert" and name not in LITERT_FORMS:
                    continue
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
    """Slide-Swin-T with each form vs Swin-T window attention, ONNX Runtime fp32, interleaved."""
    common.limit_threads(args.threads)
    start = time.perf_counter()
    shape = (1, 3, 224, 224)
    targets = [common.runtime_target(name, common.export_onnx(module, common.cache_path(
        f"slide_swin_tiny-{name}", ".onnx", module), shape), "onnxruntime", args.threads)
        for name, module in whole_models().items() if name not in ("correlation",)]
    result = common.measure(targets, args.warmup, args.runs)
    rows = [{"form": row["label"], "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"],
             "vs_window": result.round_ratio(row["label"], "window"),
             "vs_channel_first": result.round_ratio(row["label"], "channel-first")} for row in result.rows]
    table = common.markdown_table(rows, [("form", "Slide-Swin-T attention form (window: Swin-T)"),
                                         ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("vs_window", "/ Swin-T window"),
                                         ("vs_channel_first", "/ channel-first")])
    command = f"python benchmarks/slide_attention_forms.py --whole-model --runs {args.runs} --threads {args.threads}"
    note = "Ratios: median over the timed rounds of the ratio within each round; ONNX Runtime fp32, batch 1, 224x224."
    return publish("slide-attention-forms:whole-model", command, result, rows, table, note, args, start)


if __name__ == "__main__":
    sys.exit(main())
