"""Synthetic run records in the layout the experiments write (docs/method.md §5), for tests and a first look.

The curves are made up (a saturating exponential plus noise; DReg faster); they say nothing about DReg.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from experiments.config import RunConfig
from experiments.specs import load_figure

BASE_COLUMNS = ["epoch", "step", "val/acc", "train/ce", "train/loss", "train/lr", "epoch_time"]
DREG_COLUMNS = [
    "epoch", "step", "val/acc_R", "val/acc_L", "val/acc", "train/ce_R", "train/ce_L", "train/dreg", "train/loss",
    "train/lr", "dreg/distance", "dreg/norm_R", "dreg/norm_L", "dreg/cosine", "epoch_time",
]  # fmt: skip


def fake_accuracy(cfg: RunConfig, epochs: int) -> np.ndarray:
    """A made-up validation curve: slower at larger batch, faster with DReg near the output, plus noise."""
    ceiling = 0.9 if cfg.dataset == "cifar10" else 0.6
    tau = 0.12 * cfg.epochs * (cfg.batch_size / 2048) ** 0.5 * (1.5 - cfg.momentum)
    if cfg.dreg_site is not None:
        tau *= (0.5 + 0.15 * (int(cfg.dreg_site[1:]) - 1)) * (1 + cfg.dreg_lambda)
    rng = np.random.default_rng(zlib.crc32(cfg.name.encode()))
    e = np.arange(1, epochs + 1)
    return np.clip(ceiling * (1 - np.exp(-e / tau)) + rng.normal(0, 0.01, epochs), 0.01, 1.0)


def write_run(
    folder: Path, cfg: RunConfig, acc: Iterable[float], state: str = "done", diverged_epoch: int | None = None
) -> Path:
    """One run folder with config.yaml, metrics.csv (one row per value of ``acc``) and status.json."""
    acc = np.asarray(list(acc), dtype=float)
    run_dir = folder / cfg.preset / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"run_name": cfg.name, "run": cfg.to_dict(), "versions": {}, "git_commit": None}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    steps = max(1, (cfg.train_subset or 50_000) // cfg.global_batch)
    epochs = np.arange(len(acc))
    ce = -np.log(np.clip(acc, 1e-3, 1))
    if cfg.dreg_site is None:
        metrics = pd.DataFrame({"epoch": epochs, "step": steps * (epochs + 1), "val/acc": acc, "train/ce": ce,
                                "train/loss": ce, "train/lr": cfg.lr, "epoch_time": 1.0})  # fmt: skip
    else:
        distance = 0.01 * 1.2 ** (steps * (epochs + 1))
        loss = 2 * ce - cfg.dreg_lambda * distance
        metrics = pd.DataFrame({
            "epoch": epochs, "step": steps * (epochs + 1), "val/acc_R": acc, "val/acc_L": acc - 0.01, "val/acc": acc,
            "train/ce_R": ce, "train/ce_L": ce, "train/dreg": distance, "train/loss": loss,
            "train/lr": cfg.lr, "dreg/distance": distance, "dreg/norm_R": 1 + distance / 2,
            "dreg/norm_L": 1 + distance / 2, "dreg/cosine": -0.9, "epoch_time": 1.1,
        })[DREG_COLUMNS]  # fmt: skip
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    status: dict = {"state": state}
    if len(acc):
        status |= {"best_val_acc": float(acc.max()), "best_epoch": int(acc.argmax()), "epoch": len(acc)}
    if state == "diverged":
        status["diverged_epoch"] = len(acc) if diverged_epoch is None else diverged_epoch
    if state == "done":
        status |= {"selected_path": "R" if cfg.dreg_site else None, "test_acc": float(acc[-1])}
    (run_dir / "status.json").write_text(json.dumps(status, indent=1) + "\n")
    return run_dir


def write_fake_records(
    results: Path | str, figure: str, preset: str = "smoke", seeds: int = 1, dataset: str | None = None,
    diverged: Iterable[str] = (), running: Iterable[str] = (), skip: Iterable[str] = (),
    precision: str | None = None,
) -> list[Path]:  # fmt: skip
    """Made-up records for every run of ``figure``; runs whose name contains a string of ``diverged`` stop
    halfway as diverged, of ``running`` stop halfway still running, of ``skip`` are left out."""
    overrides = {key: value for key, value in (("dataset", dataset), ("precision", precision)) if value}
    spec = load_figure(figure, preset, seeds, overrides)
    written = []
    for cfg in spec.runs:
        if any(s in cfg.name for s in skip):
            continue
        acc = fake_accuracy(cfg, cfg.epochs)
        if any(s in cfg.name for s in diverged):
            written.append(write_run(Path(results), cfg, acc[: cfg.epochs // 2], "diverged"))
        elif any(s in cfg.name for s in running):
            written.append(write_run(Path(results), cfg, acc[: cfg.epochs // 2], "running"))
        else:
            written.append(write_run(Path(results), cfg, acc))
    return written
