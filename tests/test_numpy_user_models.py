"""Classifiers users convert themselves (torchvision/timm-style building blocks, random init) run on the numpy
backend and agree with onnxruntime: a ResNet-style CNN (Conv+BatchNorm+ReLU, MaxPool, AveragePool, residual
adds, global average pool), a MobileNetV3-style CNN (depthwise convs, Hardswish, squeeze-excite with
Hardsigmoid, SiLU, LeakyReLU, ELU, Tanh) and a ViT (patch embedding, class token, ``nn.MultiheadAttention``,
LayerNorm, GELU), each exported by the legacy TorchScript exporter (opset 17, no constant folding: BatchNormalization nodes
kept)
and the dynamo exporter (opset 20). Inputs are scikit-image's real photos."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from slidelite.backends import create_backend
from slidelite.model_file import open_model_file
from tests.test_numpy_backend import photo_batch

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn
pytestmark = pytest.mark.convert


class ResNetish(nn.Module):
    """Stem conv-bn-relu-maxpool, one basic residual block, avgpool, global pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.head = nn.Linear(16, 10)

    def forward(self, x):  # noqa: D102
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.pool(x), 1), 1))


class MobileNetish(nn.Module):
    """Inverted residual with depthwise conv, Hardswish, squeeze-excite (Hardsigmoid), assorted activations."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1), nn.BatchNorm2d(48), nn.SiLU())
        self.depthwise = nn.Sequential(nn.Conv2d(48, 48, 5, 2, 2, groups=48), nn.BatchNorm2d(48), nn.LeakyReLU(0.1))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(48, 12, 1), nn.ReLU(), nn.Conv2d(12, 48, 1),
                                nn.Hardsigmoid())
        self.project = nn.Sequential(nn.Conv2d(48, 24, 1), nn.BatchNorm2d(24), nn.ELU())
        self.head = nn.Sequential(nn.Linear(24, 32), nn.Tanh(), nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):  # noqa: D102
        x = self.depthwise(self.expand(self.stem(x)))
        x = self.project(x * self.se(x))
        return self.head(x.mean((2, 3)))


class ViTish(nn.Module):
    """Patch embedding, class token, two pre-norm encoder blocks with nn.MultiheadAttention, GELU MLP."""

    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + (64 // 16) ** 2, dim) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 2 * dim, 0.0, "gelu", batch_first=True,
                                                               norm_first=True) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):  # noqa: D102
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def _export(module: nn.Module, path: Path, dynamo: bool) -> Path:
    torch.manual_seed(0)
    module.eval()
    for m in module.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    example = torch.zeros(2, 3, 64, 64)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder kernel has no ONNX export
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=20, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
                              external_data=False)
        else:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=False)  # keeps BatchNormalization nodes
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy17", "dynamo20"])
@pytest.mark.parametrize("architecture", [ResNetish, MobileNetish, ViTish], ids=lambda a: a.__name__)
def test_user_classifier_matches_onnxruntime(tmp_path: Path, architecture: type, dynamo: bool) -> None:
    torch.manual_seed(0)
    path = _export(architecture(), tmp_path / "model.onnx", dynamo)
    batch = photo_batch(64)
    model_file = open_model_file(path)
    got = create_backend(model_file, "numpy", threads=1).run(batch)
    want = create_backend(model_file, "onnxruntime", threads=1).run(batch)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    if not dynamo and architecture is not ViTish:
        onnx = pytest.importorskip("onnx")
        assert "BatchNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
