"""VGG16 with BatchNorm, CIFAR variant (32x32 inputs).

Thirteen 3x3 convs in five stages, each conv followed by BatchNorm and ReLU, each stage closed by a 2x2
max-pool, so a 32x32 image leaves the last stage as a 512x1x1 map. As in the usual CIFAR VGG, the
ImageNet classifier (three large Linear layers) is replaced by a single Linear(512, num_classes); the
convs have no bias because BatchNorm follows. Width 1: 14.72M parameters at 10 classes, 14.77M at 100.

DReg sites: the last conv of each stage, R1 in the last stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.nets.layers import init_weights, scaled

# Output channels of the convs, stage by stage (a max-pool closes each stage).
STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class ConvBNReLU(nn.Module):
    """3x3 conv (padding 1, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class VGG16(nn.Module):
    """VGG16-BN for CIFAR: stages `layer1`..`layer5` (ConvBNReLU units, then a max-pool), Linear head `fc`."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        in_channels = 3
        for index, stage in enumerate(STAGES, start=1):
            layers: list[nn.Module] = []
            for channels in stage:
                layers.append(ConvBNReLU(in_channels, scaled(channels, width)))
                in_channels = scaled(channels, width)
            layers.append(nn.MaxPool2d(2))
            self.add_module(f"layer{index}", nn.Sequential(*layers))
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.fc(torch.flatten(x, 1))

    def dreg_sites(self) -> dict[str, str]:
        """R1..R5: the last conv of stages 5, 4, ..., 1."""
        last_convs = [f"layer{index}.{len(stage) - 1}.conv" for index, stage in enumerate(STAGES, start=1)]
        return {f"R{k}": path for k, path in enumerate(reversed(last_convs), start=1)}
