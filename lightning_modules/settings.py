"""The LightningModule's settings, declared once: name, type, default and check.

``Classifier(**settings)`` takes them as keywords; the run config (``experiments.config.RunConfig``) is
these settings plus the run's own (data, batch, epochs, seed), so a new setting is one line here plus its
use, and a run reaches the module without a hand-written list of keys. docs/method.md gives the reasons.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

CHOICES = {
    "dreg_form": ("frobenius", "norm", "cosine", "mse"),
    "path_loss": ("sum", "mean"),
    "activity_norm": ("l1", "l2"),
    "lr_scaling": ("none", "linear", "sqrt"),
}
NON_NEGATIVE = ("lr", "momentum", "weight_decay", "activity_alpha", "warmup_fraction", "dreg_eps")
FINITE = (*NON_NEGATIVE, "dreg_lambda")


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and what to use instead."""


@dataclass(frozen=True)
class ModuleSettings:
    """What the network, the DReg wrapper, the regularizers and the optimizer are built from."""

    model: str = "resnet18"  # vgg16, resnet18 or mobilenetv2 (CIFAR variants); ignored when a net is given
    dreg_site: str | None = None  # R1 (nearest the output) ... or a module path; None: no DReg
    dreg_lambda: float = 0.1
    dreg_eps: float = 0.01  # W_L = W_R + eps std(W_R) N(0, 1)
    dreg_form: str = "frobenius"  # Eq. 3's squared distance, its unsquared norm, the cosine form, or its mean (mse)
    dreg_include_bias: bool = False
    dreg_learnable: bool = False  # refused: the DReg term is maximized, a learned weight would run off
    path_loss: str = "sum"  # sum (Eq. 3) or mean of the two cross-entropies
    activity_site: str | None = None
    activity_alpha: float = 0.0
    activity_norm: str = "l2"
    activity_learnable: bool = False  # exp(-s) R + s
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_scaling: str = "none"  # none, linear (Goyal et al.) or sqrt (Hoffer et al.) against lr_base_batch
    lr_base_batch: int = 256
    warmup_fraction: float = 0.0  # of the run's steps: 0.05 is 15 of 300 epochs
    width: float = 1.0  # channel multiplier of the suite's networks
    sync_batchnorm: bool = False  # BatchNorm over the global batch instead of each device's micro-batch
    channels_last: bool = True  # NHWC: ~1.5x faster convs on CPUs with oneDNN and on tensor-core GPUs

    def check(self) -> None:
        """Every value that cannot work, in one line each (sites are checked against the network)."""
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"unknown {key} {getattr(self, key)!r}: choose one of {', '.join(allowed)}")
        for key in FINITE:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
        for key in NON_NEGATIVE:
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        if self.warmup_fraction > 1:
            raise ConfigError(
                f"warmup_fraction is a fraction of the run's steps, in 0..1; got {self.warmup_fraction!r}"
            )
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0: set momentum or drop nesterov")
        if self.dreg_learnable:
            raise ConfigError(
                "a learned weight for the DReg term is not allowed: the term is maximized, so its weight "
                "would run off to infinity (docs/method.md §3); set dreg_lambda instead"
            )
        if self.activity_learnable and self.activity_site is None:
            raise ConfigError("activity_learnable needs an activity_site")

    @classmethod
    def of(cls, values: dict[str, Any]) -> ModuleSettings:
        """The settings among ``values`` (a run config's fields, say); the others are not the module's."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


# What the learning-rate settings mean (the optimizer and the stability prediction both use them).
def scaled_lr(lr: float, scaling: str, batch: int, base_batch: int) -> float:
    """The base learning rate after a batch-size scaling rule: Goyal et al.'s linear, Hoffer et al.'s sqrt."""
    return lr * {"none": 1.0, "linear": batch / base_batch, "sqrt": math.sqrt(batch / base_batch)}[scaling]


def warmup_factor(step: int, warmup_steps: float) -> float:
    """The linear warm-up's factor at optimizer step ``step`` (0-based); 1 without warm-up."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
