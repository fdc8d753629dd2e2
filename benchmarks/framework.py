"""The framework's cost: one epoch of the suite's own training against a minimal hand-written loop.

Suite: ``Classifier`` and the CIFAR-10 DataModule (device pipeline) in a Lightning ``Trainer`` built as
``experiments/train.py`` builds it (RunRecords + ModelCheckpoint callbacks, metrics logged every step,
a validation epoch and a checkpoint at the end). Hand loop: the same network, seed, optimizer settings,
the same DataModule's loaders (so the data path is identical), a plain forward/backward/step loop and
a validation pass. Both include building the model; the data is read once, before either. The target
is suite / hand <= 1.05. The run is a ``mini``-preset ResNet18 run at batch 2k (CPU) or a ``paper``-scale
one (GPU); each is also reported for the epoch's loops alone (RunRecords' ``epoch_time``: without
the Trainer's setup and teardown and the checkpoint). Both sides run in the preset's precision and
layout, not ``--bf16``/``--channels-last``: at `mini` bf16 autocast + channels_last, the fastest hand
loop on a CPU with native bf16 (``python -m benchmarks step``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.common import (
    QUICK_WIDTH,
    autocast,
    cifar_dir,
    device_of,
    interleaved,
    memory_format,
    now,
    ratios,
    summary,
    table,
    write_result,
)
from experiments.config import RunConfig
from experiments.records import RunRecords
from experiments.run_files import read_metrics_rows
from experiments.specs import load_figure
from experiments.train import Execution, build
from lightning_modules import Classifier, build_net

TARGET = 1.05


def run_config(opts: argparse.Namespace) -> RunConfig:
    """Fig. 5's ResNet18 baseline at batch 2k on CIFAR-10: mini scale on CPU, paper scale on GPU."""
    preset = "paper" if opts.device == "cuda" and not opts.quick else "mini"
    (cfg,) = [r for r in load_figure("fig5", preset, overrides={"dataset": "cifar10"}).runs
              if r.batch_size == 2048 and r.dreg_site is None]  # fmt: skip
    changes: dict = {"epochs": 1}
    if preset == "paper":
        changes.update(val_from_test=False, val_size=5000, micro_batch=512)
    if opts.quick:
        changes.update(width=QUICK_WIDTH, train_subset=1024, batch_scale=1 / 16, val_size=256)
    return RunConfig.from_dict({**cfg.to_dict(), **changes})


def suite_epoch(cfg: RunConfig, datamodule: L.LightningDataModule, folder: Path, opts: argparse.Namespace) -> float:
    """One epoch through Lightning as experiments/train.py runs it; returns RunRecords' ``epoch_time``
    (the training and validation loops: Lightning validates before ``on_train_epoch_end``)."""
    L.seed_everything(cfg.seed, verbose=False)
    model = Classifier(**cfg.module_kwargs())  # channels_last as the run says
    directory = Path(tempfile.mkdtemp(dir=folder))
    trainer = L.Trainer(
        max_epochs=1, accelerator=opts.device, devices=1, precision=cfg.precision,
        accumulate_grad_batches=datamodule.accumulate_grad_batches,
        callbacks=[
            RunRecords(directory),
            ModelCheckpoint(directory / "checkpoints", "last", save_on_train_epoch_end=True,
                            enable_version_counter=False),
        ],
        logger=False, default_root_dir=directory, num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    _, rows = read_metrics_rows(directory / "metrics.csv")
    return float(rows[-1]["epoch_time"])


def hand_epoch(cfg: RunConfig, datamodule: L.LightningDataModule, opts: argparse.Namespace) -> float:
    """The same epoch as a plain loop; returns the seconds of its training and validation loops."""
    device = device_of(opts)
    torch.manual_seed(cfg.seed)
    net = build_net(cfg.model, datamodule.num_classes, cfg.width).to(device, memory_format=memory_format(opts))
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, **cfg.sgd())
    accumulate = datamodule.accumulate_grad_batches
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    start = now()
    net.train()
    for i, (x, y) in enumerate(loader):
        with autocast(opts):
            loss = F.cross_entropy(net(x), y) / accumulate
        loss.backward()
        if (i + 1) % accumulate == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    net.eval()
    correct = torch.zeros((), device=device)
    with torch.no_grad(), autocast(opts):
        for x, y in datamodule.val_dataloader():
            correct += (net(x).argmax(1) == y).sum()
    correct.item()
    return now() - start


def run(opts: argparse.Namespace) -> dict:
    cfg = run_config(opts)
    # The hand loop in the run's precision and layout.
    opts = argparse.Namespace(
        **{**vars(opts), "bf16": cfg.precision.startswith("bf16"), "channels_last": cfg.channels_last}
    )
    reps = 2 if opts.quick else 5
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    n_fake = (cfg.train_subset or 45_000) + cfg.val_size + 1000  # + a margin for the per-class rounding
    try:
        with cifar_dir(opts, n_train=n_fake) as (data_dir, real), tempfile.TemporaryDirectory() as folder:
            _, datamodule = build(cfg, Execution(data_dir=data_dir, verify=False))
            datamodule.setup("fit")
            loop_s: dict[str, list[float]] = {"suite": [], "hand": []}
            times = interleaved(
                {
                    "suite": lambda: loop_s["suite"].append(suite_epoch(cfg, datamodule, Path(folder), opts)),
                    "hand": lambda: loop_s["hand"].append(hand_epoch(cfg, datamodule, opts)),
                },
                reps=reps,
                turn_s=0.0,
                warmup_calls=1,
            )
    finally:
        quiet.setLevel(level)
    loop = {name: values[-reps:] for name, values in loop_s.items()}  # the timed turns, after warm-up
    whole, loop_ratio = ratios(times, "suite", "hand"), ratios(loop, "suite", "hand")
    rows = [
        {"part": part, "suite_s": summary(t["suite"])["median"], "hand_s": summary(t["hand"])["median"],
         "ratio": r["median"], "ratio_ci_lo": r["ci_lo"], "ratio_ci_hi": r["ci_hi"], "ratio_min": r["min"],
         "ratio_max": r["max"], "ratio_of_min": r["of_min"]}
        for part, t, r in (("whole epoch (fit vs loop)", times, whole), ("epoch loops (train + val)", loop, loop_ratio))
    ]  # fmt: skip
    print(f"{cfg.name} width {cfg.width:g}, batch {cfg.global_batch} (micro {datamodule.micro_batch_size}), "
          f"{datamodule.train_subset or 'all'} training images, {'real' if real else 'fake'} data, {cfg.precision}"
          f"{', channels_last' if cfg.channels_last else ''}")  # fmt: skip
    print(table(rows, ["part", "suite_s", "hand_s", "ratio", "ratio_ci_lo", "ratio_ci_hi", "ratio_min", "ratio_max",
                       "ratio_of_min"]))  # fmt: skip
    met = whole["median"] <= TARGET
    print(f"suite / hand: {whole['median']:.3f} (target <= {TARGET}): {'met' if met else 'missed'}")
    result = {
        "run": cfg.to_dict(), "real_data": real, "reps": reps, "rows": rows, "times": times, "loop_times": loop,
        "target": TARGET, "target_met": met,
    }  # fmt: skip
    write_result(opts, "framework", result)
    return result
