"""What the three networks share: the width rule and He initialization (docs/method.md §1)."""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channel count at width multiplier `width`: rounded, at least 4."""
    return max(4, round(channels * width))


def init_weights(net: nn.Module) -> None:
    """Convs: Kaiming normal (fan_out, ReLU gain). BatchNorm: weight 1, bias 0. Linear: N(0, 0.01), bias 0."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
