"""MobileNetV2, CIFAR variant (32x32 inputs).

The widely used CIFAR MobileNetV2 (kuangliu/pytorch-cifar): the stem is a 3x3 stride-1 conv to 32
channels and the second stage runs at stride 1 instead of 2, so the seven stages of inverted residual
blocks (t, c, n, s) run at 32, 32, 16, 8, 8, 4 and 4 pixels. Each block is a 1x1 expansion conv, a 3x3
depthwise conv (stride s in the first block of a stage) and a linear 1x1 projection, each followed by
BatchNorm, with ReLU after the first two. As in that code: the activation is ReLU (not ReLU6); the
expansion conv is kept even where t = 1; a stride-1 block always adds a residual, identity when the
channel count is unchanged and a 1x1 conv + BatchNorm projection otherwise. A 1x1 head conv to 1280
channels + BatchNorm + ReLU, global average pooling and one Linear layer follow. Width 1: 2.30M
parameters at 10 classes, 2.41M at 100.

DReg sites: the depthwise conv (`conv2`) of the last block of each stage, R1 in the last stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.nets.layers import init_weights, scaled

# (expansion t, output channels c, blocks n, stride s of the first block) of the seven stages.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class Block(nn.Module):
    """Inverted residual block: 1x1 expand `conv1`, 3x3 depthwise `conv2`, linear 1x1 project `conv3`."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for CIFAR: stem `conv1, bn1`, stages `layer1`..`layer7`, head `conv2, bn2`, Linear `fc`."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        in_channels = scaled(STEM_CHANNELS, width)
        self.conv1 = nn.Conv2d(3, in_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        for index, (expansion, channels, blocks, stride) in enumerate(STAGES, start=1):
            layers: list[nn.Module] = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(Block(in_channels, scaled(channels, width), expansion, block_stride))
                in_channels = scaled(channels, width)
            self.add_module(f"layer{index}", nn.Sequential(*layers))
        head_channels = scaled(HEAD_CHANNELS, width)
        self.conv2 = nn.Conv2d(in_channels, head_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head_channels)
        self.fc = nn.Linear(head_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.layer7(self.layer6(self.layer5(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def dreg_sites(self) -> dict[str, str]:
        """R1..R7: the depthwise `conv2` of the last block of stages 7, 6, ..., 1."""
        last_convs = [f"layer{index}.{n - 1}.conv2" for index, (_, _, n, _) in enumerate(STAGES, start=1)]
        return {f"R{k}": path for k, path in enumerate(reversed(last_convs), start=1)}
