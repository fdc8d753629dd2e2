"""The data path: the on-device pipeline against torchvision's DataLoader, and against a training step.

1. Images per second of the device pipeline (the whole training split as uint8 on the device; crop,
   flip and normalize on whole batches) against the reference pipeline (PIL + torchvision transforms in
   a DataLoader with ``os.cpu_count()`` workers), same augmentation, same batch: target >= 10x.
2. The device loader's time per batch against a full ResNet18 (width 0.25) training step at batch
   1024, both as `mini` runs them (bf16 autocast, channels_last: the fastest step, so the largest
   fraction): target < 5%, i.e. the data path does not slow training.

Epochs of the two pipelines alternate; the reference's first epoch (starting its workers) is warm-up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from types import SimpleNamespace

import torch

from benchmarks.common import QUICK_WIDTH, cifar_dir, device_of, interleaved, ratios, summary, table, write_result
from benchmarks.dreg_overhead import training_step
from datamodules import CIFAR10DataModule

SPEEDUP_TARGET = 10.0
FRACTION_TARGET = 0.05


def datamodule(data_dir: str, batch: int, subset: int, opts: argparse.Namespace, **kwargs) -> CIFAR10DataModule:
    """A set-up DataModule whose data lives on ``--device`` (there is no Trainer to say where)."""
    dm = CIFAR10DataModule(
        data_dir, batch_size=batch, train_subset=subset, val_size=1000, verify=False, download=False,
        channels_last=opts.channels_last, **kwargs,
    )  # fmt: skip
    strategy = SimpleNamespace(root_device=device_of(opts))
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0, accumulate_grad_batches=1, strategy=strategy)
    dm.setup("fit")
    return dm


def epoch(loader: Iterable, device: torch.device) -> Callable[[], None]:
    """A closure consuming one epoch of ``loader``, its batches on ``device`` (as training would)."""

    def consume() -> None:
        for x, y in loader:
            x.to(device, non_blocking=True)
            y.to(device, non_blocking=True)

    return consume


def run(opts: argparse.Namespace) -> dict:
    device = device_of(opts)
    if opts.quick:
        batch, subset, width, step_batch, reps, epochs = 256, 2048, QUICK_WIDTH, 256, 3, 3
    else:  # an epoch of each pipeline takes ~1.5 s, so many: the reference's rate varies by +-30% here
        batch, subset, width, step_batch, reps, epochs = 512, 10_240, 0.25, 1024, 5, 31
    with cifar_dir(opts, n_train=max(subset, 4 * step_batch) + 2000) as (data_dir, real):
        on_device = datamodule(data_dir, batch, subset, opts)
        reference = datamodule(data_dir, batch, subset, opts, pipeline="reference", num_workers=os.cpu_count())
        loaders = {"device": on_device.train_dataloader(), "reference": reference.train_dataloader()}
        times = interleaved({k: epoch(v, device) for k, v in loaders.items()}, reps=epochs, turn_s=0.0)
        del loaders["reference"]  # stops its workers

        # Part 2: the loader at the step's batch against the step itself, as `mini` runs them.
        fast = argparse.Namespace(**{**vars(opts), "bf16": True, "channels_last": True})
        step_loader = datamodule(data_dir, step_batch, 4 * step_batch, fast).train_dataloader()
        _, _, step = training_step("resnet18", width, None, step_batch, fast, num_classes=10)
        against = interleaved({"step": step, "loader": epoch(step_loader, device)}, reps=reps, turn_s=0.0)
    images = len(loaders["device"]) * batch
    rate = {k: summary([images / t for t in v]) for k, v in times.items()}
    speedup = ratios(times, "reference", "device")
    per_batch = [t / len(step_loader) for t in against["loader"]]
    fraction = summary([b / s for b, s in zip(per_batch, against["step"], strict=True)])
    rows = [
        {"pipeline": name, "images_per_s": r["median"], "min": r["min"], "max": r["max"]} for name, r in rate.items()
    ]
    print(f"{images} images per epoch, batch {batch}, {'real' if real else 'fake'} data, {os.cpu_count()} workers")
    print(table(rows, ["pipeline", "images_per_s", "min", "max"]))
    print(f"device / reference: {speedup['median']:.1f}x (95% CI {speedup['ci_lo']:.1f}-{speedup['ci_hi']:.1f}, "
          f"min {speedup['min']:.1f}, max {speedup['max']:.1f}; target >= {SPEEDUP_TARGET:g}x)")  # fmt: skip
    print(f"ResNet18 width {width:g}, bf16 + channels_last, at batch {step_batch}: loader "
          f"{summary(per_batch)['median'] * 1e3:.1f} ms per batch, step "
          f"{summary(against['step'])['median'] * 1e3:.0f} ms: {fraction['median']:.2%} "
          f"(max {fraction['max']:.2%}; target < {FRACTION_TARGET:.0%})")  # fmt: skip
    result = {
        "real_data": real, "batch": batch, "images_per_epoch": images, "num_workers": os.cpu_count(),
        "images_per_s": rate, "speedup": speedup, "speedup_target": SPEEDUP_TARGET,
        "step": {"model": "resnet18", "width": width, "batch": step_batch,
                 "loader_s_per_batch": summary(per_batch), "step_s": summary(against["step"])},
        "data_fraction": fraction, "fraction_target": FRACTION_TARGET,
        "targets_met": speedup["median"] >= SPEEDUP_TARGET and fraction["median"] < FRACTION_TARGET,
    }  # fmt: skip
    write_result(opts, "data", result)
    return result
