"""The three CIFAR networks of the paper (VGG16-BN, ResNet18, MobileNetV2) and their DReg sites.

`build_net(name, num_classes, width)` builds one by name; `dreg_sites(net)` names the layers DReg can
regularize, R1 (the last 3x3 conv of the network) back to Rn (the last 3x3 conv of the first stage).
"""

from __future__ import annotations

import math

from torch import nn

from lightning_modules.nets.mobilenetv2 import MobileNetV2
from lightning_modules.nets.resnet import ResNet18
from lightning_modules.nets.vgg import VGG16

__all__ = ["NETS", "VGG16", "MobileNetV2", "ResNet18", "build_net", "dreg_sites"]

NETS: dict[str, type[nn.Module]] = {"vgg16": VGG16, "resnet18": ResNet18, "mobilenetv2": MobileNetV2}


def build_net(name: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """Build a CIFAR network by name (case-insensitive; `_` and `-` ignored, so 'mobilenet_v2' works).

    `width` multiplies every channel count (rounded, at least 4).
    """
    key = name.lower().replace("_", "").replace("-", "") if isinstance(name, str) else None
    if key not in NETS:
        raise ValueError(f"unknown net {name!r}; choose one of {', '.join(map(repr, NETS))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (0 < width < math.inf):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    return NETS[key](num_classes=num_classes, width=float(width))


def dreg_sites(net: nn.Module) -> dict[str, str]:
    """Map 'R1'..'Rn' to the dotted module paths (as in `net.named_modules()`) of the net's DReg sites."""
    sites = getattr(net, "dreg_sites", None)
    if not callable(sites):
        name = type(net).__name__
        raise ValueError(f"{name} has no named DReg sites; pass a module path such as 'layer4.1.conv2' instead")
    return sites()
