"""Activity regularization (docs/method.md §2) and learnable regularization weights (docs/method.md §3)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lightning_modules.sites import resolve_site


class ActivityPenalty:
    """``mean_over_batch(sum_units |a|)`` (L1) or ``... a^2`` (L2) of a module's output ``a``.

    The per-sample mean keeps the penalty independent of the per-device batch,
    so it is the same on every DDP rank (docs/method.md §2). A forward hook records the
    penalty each time the module runs in training mode: a site downstream of a
    DReg site runs once per path, and ``value()`` averages over the calls.
    Not an ``nn.Module``, so the hooked layer is not registered twice.
    """

    def __init__(self, net: nn.Module, site: str, norm: Literal["l1", "l2"] = "l2") -> None:
        if norm not in ("l1", "l2"):
            raise ValueError(f"unknown activity norm {norm!r}: choose 'l1' or 'l2'")
        self.path = resolve_site(net, site)
        self.norm = norm
        self._values: list[torch.Tensor] = []
        net.get_submodule(self.path).register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if module.training:
            a = output.flatten(1)
            self._values.append((a.abs() if self.norm == "l1" else a.pow(2)).sum(1).mean())

    def value(self) -> torch.Tensor:
        """The penalty of the forward passes since the last call (then forgotten)."""
        if not self._values:
            raise RuntimeError(f"activity site {self.path!r} did not run in training mode since the last call")
        value = torch.stack(self._values).mean()
        self._values.clear()
        return value


class UncertaintyWeight(nn.Module):
    """A learned weight for a term ``R >= 0``: ``exp(-s) * R + s`` (Kendall et al., 2018).

    A plain trainable multiplier would collapse to zero; the ``+ s`` term stops that (docs/method.md §3).
    """

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(init)))

    def forward(self, term: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.s) * term + self.s
