"""GPU throughput of the three full-width networks at batch 30,720, and what the paper's grid costs.

Needs a CUDA device (``--device cuda``; best with ``--bf16 --channels-last``). For each network, with
and without DReg at R1: images/s of full training steps at global batch 30,720 (the largest micro-batch
that fits, accumulated), the model FLOP utilization against a measured bf16 matmul rate, and the
projected GPU-hours of the ``paper`` scale of Figs. 2-8 (81 runs, 300 epochs of 50,000 training and
10,000 validation images; per-run FLOPs from the counted per-image numbers, docs/method.md §6).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.benchmark import Timer

from benchmarks.common import autocast, memory_format, table, write_result
from experiments.specs import load_figure
from lightning_modules import Classifier, flops

GLOBAL_BATCH = 30_720
TRAIN_IMAGES, VAL_IMAGES = 50_000, 10_000
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def matmul_rate(dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    """Measured dense matmul FLOP/s: the roof that utilization is taken against."""
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    return 2 * n**3 / Timer("a @ b", globals={"a": a, "b": b}).blocked_autorange(min_run_time=2.0).median


def images_per_s(model: str, site: str | None, opts: argparse.Namespace) -> dict:
    """Training steps at GLOBAL_BATCH with the largest micro-batch (a power-of-two divisor) that fits."""
    for micro in (GLOBAL_BATCH // 2**k for k in range(7)):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            seconds = _step_seconds(model, site, micro, opts)
        except torch.cuda.OutOfMemoryError:
            continue
        return {"micro_batch": micro, "images_per_s": GLOBAL_BATCH / seconds,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip
    raise RuntimeError(f"{model} does not fit at micro-batch {GLOBAL_BATCH // 64}")


def _step_seconds(model: str, site: str | None, micro: int, opts: argparse.Namespace) -> float:
    module = Classifier(model=model, num_classes=100, dreg_site=site, lr=0.001)
    module = module.to("cuda", memory_format=memory_format(opts)).train()
    optimizer = module.configure_optimizers()
    x = torch.randn(micro, 3, 32, 32, device="cuda").contiguous(memory_format=memory_format(opts))
    y = torch.randint(0, 100, (micro,), device="cuda")
    accumulate = GLOBAL_BATCH // micro

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for _ in range(accumulate):
            with autocast(opts):
                loss = module._loss_terms(x, y)["loss"] / accumulate
            loss.backward()
        optimizer.step()

    step()
    return Timer("step()", globals={"step": step}).blocked_autorange(min_run_time=5.0).median


def paper_grid() -> list[dict]:
    """The 81 distinct runs of Figs. 2-8 at ``paper`` scale with their FLOPs (training + validation)."""
    runs = {r.name: r for k in range(2, 9) for r in load_figure(f"fig{k}", "paper").runs}
    counted: dict[tuple, tuple[float, float]] = {}
    grid = []
    for run in runs.values():
        key = (run.model, run.dreg_site, NUM_CLASSES[run.dataset])
        if key not in counted:
            counted[key] = (
                flops.step_flops(*key[:2], 1.0, key[2]),
                flops.step_flops(*key[:2], 1.0, key[2], train=False),
            )
        train, val = counted[key]
        grid.append({"run": run.name, "model": run.model, "dreg": run.dreg_site is not None,
                     "flops": run.epochs * (TRAIN_IMAGES * train + VAL_IMAGES * val)})  # fmt: skip
    return grid


def run(opts: argparse.Namespace) -> dict:
    if opts.device != "cuda" or not torch.cuda.is_available():
        raise SystemExit("the gpu benchmark needs a CUDA device: run it with --device cuda where one is visible")
    peak = matmul_rate()
    rows = []
    for model in ("vgg16", "resnet18", "mobilenetv2"):
        for site in (None, "R1"):
            measured = images_per_s(model, site, opts)
            per_image = flops.step_flops(model, site, 1.0, 100)
            rate = measured["images_per_s"] * per_image
            rows.append({"model": model, "site": site or "-", **measured, "tflops": rate / 1e12, "mfu": rate / peak})
    for plain, dreg in zip(rows[::2], rows[1::2], strict=True):  # DReg's time over the plain step's, per FLOP ratio
        ratio = flops.step_flops(dreg["model"], "R1", 1.0, 100) / flops.step_flops(dreg["model"], None, 1.0, 100)
        dreg["overhead_vs_flops"] = plain["images_per_s"] / dreg["images_per_s"] / ratio
    achieved = {(r["model"], r["site"] != "-"): r["tflops"] * 1e12 for r in rows}
    grid = paper_grid()
    hours = sum(g["flops"] / achieved[(g["model"], g["dreg"])] for g in grid) / 3600
    total = sum(g["flops"] for g in grid)
    print(f"bf16 matmul: {peak / 1e12:.0f} TFLOP/s; bf16 autocast {opts.bf16}, channels_last {opts.channels_last}")
    print(
        table(rows, ["model", "site", "micro_batch", "images_per_s", "tflops", "mfu", "peak_gib", "overhead_vs_flops"])
    )
    print(f"paper grid: {len(grid)} runs, {total:.3g} FLOPs: {hours:.1f} GPU-hours at the measured rates "
          f"({total / (0.4 * peak) / 3600:.1f} at 40% of the matmul rate)")  # fmt: skip
    result = {
        "matmul_tflops": peak / 1e12,
        "global_batch": GLOBAL_BATCH,
        "rows": rows,
        "paper_runs": len(grid),
        "paper_flops": total,
        "paper_gpu_hours": hours,
        "paper_gpu_hours_at_40pct": total / (0.4 * peak) / 3600,
    }
    write_result(opts, "gpu", result)
    return result
