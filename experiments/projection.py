"""How long a sweep will take on this machine: its FLOPs over a training rate measured here in seconds.

The FLOPs are counted (``lightning_modules/flops.py``, on the meta device); the rate is that of a few training
steps of each model at the run's width, layout and precision (a batch of ~15 GFLOP per step; the fastest step
after two warm-ups, so other work on the machine weighs little). A projection, not a promise: it knows
nothing of a run that diverges early, nor of the validation and framework time (measured: a `mini` 30k run
spent about twice the projected time on this 2-core CPU).
"""

from __future__ import annotations

import contextlib
import time
from functools import cache

import torch
import torch.nn.functional as F

from datamodules import DATASETS
from experiments.config import RunConfig

STEP_FLOPS, STEPS, WARMUP = 15e9, 8, 2  # a timed step of ~15 GFLOP; the fastest of 6 after 2 warm-ups


@cache
def _per_image(model: str, site: str | None, width: float, classes: int, train: bool) -> float:
    from lightning_modules.flops import step_flops

    return step_flops(model, site, width, classes, train=train)


def run_flops(cfg: RunConfig) -> float:
    """Training and validation FLOPs of the whole run (epochs x images x per-image FLOPs)."""
    data = DATASETS[cfg.dataset]
    classes = data.num_classes
    train = cfg.train_subset or data.train_images - (0 if cfg.val_from_test else cfg.val_size)
    steps = train // cfg.global_batch
    val = data.test_images if cfg.val_from_test else cfg.val_size
    per_train = _per_image(cfg.model, cfg.dreg_site, cfg.width, classes, True)
    per_val = _per_image(cfg.model, cfg.dreg_site, cfg.width, classes, False)
    return cfg.epochs * (steps * cfg.global_batch * per_train + val * per_val)


@cache
def measured_rate(model: str, width: float, precision: str, channels_last: bool, device: str) -> float:
    """FLOP/s of training steps of ``model`` here (plain network; DReg's FLOPs are counted, not timed)."""
    from lightning_modules import build_net

    torch.manual_seed(0)
    per_image = _per_image(model, None, width, 10, True)
    batch = int(min(256, max(8, STEP_FLOPS // per_image)))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = build_net(model, 10, width).to(device, memory_format=layout)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    bf16 = precision.startswith("bf16")
    amp = torch.autocast(device, torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        with amp:
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch * per_image / min(times[WARMUP:])


def project(runs: list[RunConfig], device: str) -> tuple[float, float]:
    """(FLOPs, projected seconds) of ``runs`` on ``device`` (``cpu`` or ``cuda``)."""
    flops = seconds = 0.0
    for cfg in runs:
        f = run_flops(cfg)
        flops += f
        seconds += f / measured_rate(cfg.model, cfg.width, cfg.precision, cfg.channels_last, device)
    return flops, seconds


def words(seconds: float) -> str:
    """``47 min``, ``3.2 h``, ``12 days``."""
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 2 * 86400 else f"{seconds / 86400:.0f} days"
