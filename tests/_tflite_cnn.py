"""A small MobileNetV3-like image classifier (torch), the kind of CNN users convert themselves: a strided stem
with hard-swish, inverted residual blocks (1x1 expand, 3x3 depthwise, squeeze-and-excitation with a sigmoid
gate, 1x1 project, residual add), a max pool, global average pooling and a linear head. Converted to
``.tflite`` (fp32, full-int8 with uint8 pixels, dynamic-int8) by the tests of the numpy TFLite backend."""
from __future__ import annotations

from typing import Any

INPUT_SIZE = 64
NUM_CLASSES = 10


def make_mobilenet_like(num_classes: int = NUM_CLASSES) -> Any:
    """The model, randomly initialized from torch's current seed, in eval mode (batch norms with random
    running statistics, so folding them is exercised)."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: Any = nn.ReLU6) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.reduce, self.expand = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
            return x * torch.sigmoid(gate)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool, act: Any) -> None:
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(conv_bn(cin, mid, 1, act=act), conv_bn(mid, mid, 3, stride, groups=mid, act=act),
                                      SqueezeExcite(mid) if se else nn.Identity(), conv_bn(mid, cout, 1, act=None))
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.residual else self.body(x)

    model = nn.Sequential(
        conv_bn(3, 16, 3, 2, act=nn.Hardswish),
        Block(16, 16, 1, 1, False, nn.ReLU),
        Block(16, 24, 2, 4, False, nn.ReLU6),
        Block(24, 24, 1, 3, False, nn.ReLU6),
        nn.MaxPool2d(2),
        Block(24, 40, 1, 3, True, nn.Hardswish),
        Block(40, 40, 1, 3, True, nn.Hardswish),
        conv_bn(40, 96, 1, act=nn.Hardswish),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, num_classes))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()
