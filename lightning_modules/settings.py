"""The LightningModule's settings, declared once: name, type, default, range, choices, and the words that
stand for it in run names, W&B tags and legends (``setting(...)``).

``Classifier(**settings)`` takes them as keywords; the run config (``experiments.config.RunConfig``) is
these settings plus the run's own (data, batch, epochs, seed), so a new setting is its declaration here plus
the line that uses it (for the optimizer: ``sgd()``), and a run reaches the module without a hand-written list
of keys. docs/method.md gives the reasons.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and what to use instead."""


def setting(
    default: Any, *, short: str | None = None, words: str | None = None, low: float | None = None,
    above: float | None = None, high: float | None = None, choices: tuple[str, ...] = (),
) -> Any:  # fmt: skip
    """A setting's one declaration beyond its type: its default; ``short``, its part of a run's name where it
    differs from the preset's (``wd0.00025``; ``""``: the value alone, ``cosine``; None: the setting's own name);
    ``words``, its legend words (``wd {}``; ``{pct}``: the value in percent); its range (``low`` <= value,
    ``above`` < value, value <= ``high``) and its ``choices``. Names, tags, legends and checks read it."""
    meta = {"short": short, "words": words, "low": low, "above": above, "high": high, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def out_of_range(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` cannot be setting ``f``, by its declaration (choices, finiteness, range); None if it can."""
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        return f"unknown {f.name} {value!r}: choose one of {', '.join(meta['choices'])}"
    if value is None or isinstance(value, (bool, str)) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"{f.name} must be a finite number, got {value!r}"
    whole = "a whole number " if str(f.type).startswith("int") else ""
    if meta.get("low") is not None and value < meta["low"]:
        return f"{f.name} must be {whole}>= {meta['low']:g}, got {value!r}"
    if meta.get("above") is not None and not value > meta["above"]:
        return f"{f.name} must be a finite number > {meta['above']:g}, got {value!r}"
    if meta.get("high") is not None and value > meta["high"]:
        return f"{f.name} must be <= {meta['high']:g}, got {value!r}"
    return None


@dataclass(frozen=True)
class ModuleSettings:
    """What the network, the DReg wrapper, the regularizers and the optimizer are built from."""

    model: str = "resnet18"  # vgg16, resnet18 or mobilenetv2 (CIFAR variants); ignored when a net is given
    dreg_site: str | None = None  # R1 (nearest the output) ... or a module path; None: no DReg
    dreg_lambda: float = setting(0.1)
    dreg_eps: float = setting(0.01, short="eps", words="eps {}", low=0)  # W_L = W_R + eps std(W_R) N(0, 1)
    # Eq. 3's squared distance, its unsquared norm, the cosine form, or its mean (mse)
    dreg_form: str = setting("frobenius", short="", words="{} form", choices=("frobenius", "norm", "cosine", "mse"))
    dreg_include_bias: bool = False
    dreg_learnable: bool = False  # refused: the DReg term is maximized, a learned weight would run off
    path_loss: str = setting("sum", short="", words="path loss {}", choices=("sum", "mean"))  # of the two CEs
    activity_site: str | None = None
    activity_alpha: float = setting(0.0, low=0)
    activity_norm: str = setting("l2", choices=("l1", "l2"))
    activity_learnable: bool = False  # exp(-s) R + s
    lr: float = setting(0.1, short="lr", words="lr {}", low=0)
    momentum: float = setting(0.9, low=0)
    nesterov: bool = False
    weight_decay: float = setting(5e-4, short="wd", words="wd {}", low=0)
    # none, linear (Goyal et al.) or sqrt (Hoffer et al.) against lr_base_batch
    lr_scaling: str = setting("none", short="", words="{} scaling", choices=("none", "linear", "sqrt"))
    lr_base_batch: int = setting(256, short="base", low=1)
    # of the run's steps: 0.05 is 15 of 300 epochs
    warmup_fraction: float = setting(0.0, short="wu", words="warm-up {pct}%", low=0, high=1)
    width: float = setting(1.0, short="w", above=0)  # channel multiplier of the suite's networks
    sync_batchnorm: bool = False  # BatchNorm over the global batch instead of each device's micro-batch
    channels_last: bool = True  # NHWC: ~1.5x faster convs on CPUs with oneDNN and on tensor-core GPUs

    def check(self) -> None:
        """Every value that cannot work, in one line each (sites are checked against the network)."""
        for f in dataclasses.fields(ModuleSettings):
            value = getattr(self, f.name)
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
            if problem := out_of_range(f, value):
                raise ConfigError(problem)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0: set momentum or drop nesterov")
        if self.dreg_learnable:
            raise ConfigError(
                "a learned weight for the DReg term is not allowed: the term is maximized, so its weight "
                "would run off to infinity (docs/method.md §3); set dreg_lambda instead"
            )
        if self.activity_learnable and self.activity_site is None:
            raise ConfigError("activity_learnable needs an activity_site")

    def sgd(self) -> dict[str, Any]:
        """SGD's arguments beyond the learning rate: the one place the optimizer reads its settings (the
        Classifier and the benchmarks' plain loop both call it)."""
        return {"momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

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
