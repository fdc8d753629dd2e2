"""Peak memory against the global batch: 30,720 and 2,048 with the same micro-batch of 512 on one device.

With gradient accumulation only the micro-batch's activations are alive, so the peak must not grow with
the global batch: target 30k within 10% of 2k. Each configuration trains in its own process (the suite's
``Classifier`` and DataModule under Lightning, accumulating as experiments/train.py does), which prints
its peak resident set size from ``/proc/self/status`` (``VmHWM``; not ``ru_maxrss``, which Linux carries
over from the forked parent across exec): of the whole process, and of training alone (the mark reset
after the data is loaded, where the kernel allows it); on CUDA also ``torch.cuda.max_memory_allocated``.
``--quick`` scales the batches by 1/16 (micro-batch 32; 1,920 vs 128), keeping 60 vs 4 micro-batches a step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import QUICK_WIDTH, cifar_dir, table, write_result

MICRO_BATCH = 512
TARGET = 0.10
ROOT = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(argv: list[str]) -> None:
    """Train ``--steps`` optimizer steps at ``--global-batch`` and print the peaks as one JSON line."""
    import lightning as L

    from experiments.config import RunConfig
    from experiments.train import Execution, build

    p = argparse.ArgumentParser()
    for name, kind in (
        ("--global-batch", int), ("--micro-batch", int), ("--steps", int), ("--width", float), ("--val-size", int),
        ("--data-dir", str),
    ):  # fmt: skip
        p.add_argument(name, type=kind, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args(argv)
    cfg = RunConfig(
        model="resnet18", batch_size=a.global_batch, micro_batch=a.micro_batch, width=a.width, epochs=1,
        val_size=a.val_size, precision="bf16-mixed" if a.bf16 else "32-true",
    )  # fmt: skip
    model, datamodule = build(cfg, Execution(data_dir=Path(a.data_dir), verify=False))
    datamodule.channels_last = a.channels_last
    datamodule.setup("fit")
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    setup_kb, setup_peak_kb = _status_kb("VmRSS"), _status_kb("VmHWM")
    reset = _reset_peak()
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    accumulate = datamodule.accumulate_grad_batches
    trainer = L.Trainer(
        max_epochs=1, accelerator=a.device, devices=1, precision=cfg.precision, accumulate_grad_batches=accumulate,
        limit_train_batches=a.steps * accumulate, limit_val_batches=0, logger=False, enable_checkpointing=False,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    train_peak_kb = _status_kb("VmHWM")
    peaks = {
        "global_batch": a.global_batch, "micro_batch": a.micro_batch, "accumulate": accumulate,
        "steps": trainer.global_step, "micro_batches": a.steps * accumulate,
        "setup_rss_mb": setup_kb / 1024,
        "peak_rss_mb": max(setup_peak_kb, train_peak_kb) / 1024,
        "train_peak_rss_mb": train_peak_kb / 1024 if reset else None,
    }  # fmt: skip
    if a.device == "cuda":
        peaks["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("PEAKS " + json.dumps(peaks), flush=True)


def measure(global_batch: int, micro: int, steps: int, width: float, val: int, data_dir: Path,
            opts: argparse.Namespace) -> dict:  # fmt: skip
    cmd = [
        sys.executable, "-m", "benchmarks.memory", "--child", "--global-batch", str(global_batch),
        "--micro-batch", str(micro), "--steps", str(steps), "--width", str(width), "--val-size", str(val),
        "--data-dir", str(data_dir), "--device", opts.device,
    ] + ["--bf16"] * opts.bf16 + ["--channels-last"] * opts.channels_last  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAKS ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the global batch {global_batch} run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("PEAKS "))


def run(opts: argparse.Namespace) -> dict:
    if opts.quick:
        width, micro, val, n_fake, plan = QUICK_WIDTH, MICRO_BATCH // 16, 1000, 4000, {2048 // 16: 1, 30720 // 16: 1}
    else:  # optimizer steps: 4 at 2k (16 micro-batches), 1 at 30k (60)
        width, micro, val, n_fake, plan = 0.25, MICRO_BATCH, 5000, 50_000, {2048: 4, 30720: 1}
    with cifar_dir(opts, n_train=n_fake) as (data_dir, real):
        rows = [measure(batch, micro, steps, width, val, data_dir, opts) for batch, steps in plan.items()]
    key = "train_peak_rss_mb" if all(r["train_peak_rss_mb"] is not None for r in rows) else "peak_rss_mb"
    growth = rows[1][key] / rows[0][key] - 1
    columns = ["global_batch", "micro_batch", "accumulate", "steps", "micro_batches", "setup_rss_mb", "peak_rss_mb",
               "train_peak_rss_mb"] + ["cuda_max_allocated_mb"] * (opts.device == "cuda")  # fmt: skip
    print(f"ResNet18 width {width:g}, {'real' if real else 'fake'} data")
    print(table(rows, columns))
    met = growth <= TARGET
    versus = f"{rows[1]['global_batch']} vs {rows[0]['global_batch']}"
    print(f"{key} at global batch {versus}: {growth:+.1%} (target <= {TARGET:.0%}): {'met' if met else 'missed'}")
    result = {"model": "resnet18", "width": width, "real_data": real, "rows": rows, "compared": key,
              "growth": growth, "target": TARGET, "target_met": met}  # fmt: skip
    if opts.device == "cuda":
        result["cuda_growth"] = rows[1]["cuda_max_allocated_mb"] / rows[0]["cuda_max_allocated_mb"] - 1
    write_result(opts, "memory", result)
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child(sys.argv[2:])
