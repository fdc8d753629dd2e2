"""ResNet18, CIFAR variant (32x32 inputs).

The common CIFAR ResNet18: the ImageNet stem (7x7 stride-2 conv and max-pool) becomes a single 3x3
stride-1 conv, so the four stages of BasicBlocks ([2, 2, 2, 2], 64-128-256-512 channels, strides 1, 2,
2, 2) run at 32, 16, 8 and 4 pixels. A 1x1 conv + BatchNorm projects the shortcut wherever the shape
changes. Global average pooling and one Linear layer follow. Module names follow the widely used CIFAR
code: `conv1, bn1, layer1..layer4, fc`. Width 1: 11.17M parameters at 10 classes, 11.22M at 100.

DReg sites: `conv2` of the last block of each stage, R1 in `layer4`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.nets.layers import init_weights, scaled

# (channels, stride of the first block) of the four stages; every stage has two blocks.
STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2))
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers around a ReLU, plus the (identity or projected) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for CIFAR: 3x3 stem `conv1, bn1`, stages `layer1`..`layer4`, Linear head `fc`."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        in_channels = scaled(64, width)
        self.conv1 = nn.Conv2d(3, in_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        for index, (channels, stride) in enumerate(STAGES, start=1):
            blocks: list[nn.Module] = []
            for block_stride in [stride] + [1] * (BLOCKS_PER_STAGE - 1):
                blocks.append(BasicBlock(in_channels, scaled(channels, width), block_stride))
                in_channels = scaled(channels, width)
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def dreg_sites(self) -> dict[str, str]:
        """R1..R4: `conv2` of the last block of stages 4, 3, 2, 1."""
        last = BLOCKS_PER_STAGE - 1
        return {f"R{k}": f"layer{len(STAGES) + 1 - k}.{last}.conv2" for k in range(1, len(STAGES) + 1)}
