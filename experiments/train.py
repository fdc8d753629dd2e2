"""One run: check everything, build data and model, train with Lightning, keep the records, resume."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from datamodules import DATAMODULES
from experiments.config import ExperimentError, RunConfig, name_part, split_batch, validate
from experiments.records import (
    AtomicCheckpointIO,
    RunRecords,
    claim_run_dir,
    remove_stale_temporaries,
    run_lock,
    usable_checkpoint,
)
from experiments.run_files import read_status, write_status
from lightning_modules import Classifier

# Lines a run's output does without: Lightning's advertisement for its cloud logger, and a deprecation inside
# Lightning's own use of torch's pytree (neither says anything about the run, and the user can act on neither).
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")


# Images per evaluation batch on a CPU: evaluation has no batch statistics (BatchNorm uses its running ones), and
# batches that fit the caches make MobileNetV2's 2,500-image validation 3.9x faster than one batch of 2,500
# (ResNet18 2.0x, VGG16 1.7x), with bit-identical logits (2026-12-06, AMD EPYC, 2 threads; docs/manual.md).
CPU_EVAL_BATCH = 256


@dataclass(frozen=True)
class Execution:
    """How a run is executed. Nothing here changes its numbers (the micro-batch, which does, is in RunConfig)."""

    results: Path = Path("results")
    data_dir: Path | None = None
    verify: bool = True
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    wandb: bool = False
    wandb_project: str = "dreg"
    group: str | None = None
    progress: bool = True
    eval_batch: int | None = None  # None: CPU_EVAL_BATCH on a CPU, the micro-batch on a GPU

    @property
    def on_cpu(self) -> bool:
        import torch

        return self.accelerator == "cpu" or (self.accelerator == "auto" and not torch.cuda.is_available())

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def reuse_freed_memory() -> None:
    """Keep freed memory in the process for the next step instead of handing it back to the kernel.

    glibc gives every block over its mmap threshold (at most 32 MB) its own mapping and unmaps it when freed,
    so at a 30k `mini` batch each step's activations (MobileNetV2's are ~280 MB a tensor) arrive as fresh
    pages the kernel must fault in and zero. Serving every block from the heap and never trimming it makes
    MobileNetV2's 30k step 1.9x and its evaluation 4.2x faster (2026-12-06, AMD EPYC, 2 threads; docs/manual.md,
    Benchmarks). Which memory holds a tensor changes no number. No-op where mallopt is missing (macOS, musl).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no block gets its own mapping
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: the heap's free top is kept
    except (OSError, AttributeError):
        pass


def run_dir(cfg: RunConfig, results: Path) -> Path:
    return Path(results) / cfg.preset / cfg.name


def resolve(cfg: RunConfig, ex: Execution) -> RunConfig:
    """The config with its micro-batch made explicit (it is recorded: BatchNorm sees it, docs/method.md §4)."""
    micro, _ = split_batch(cfg, ex.world_size)
    return dataclasses.replace(cfg, micro_batch=micro)


def prepare(cfg: RunConfig, ex: Execution) -> RunConfig:
    """The run as it trains: its settings checked against its network, its micro-batch made explicit. Whoever
    plans a run prepares it, once (the sweep for all its runs, before any data is read); ``train`` takes it as
    it is, in whatever process it lands."""
    validate(cfg)
    return resolve(cfg, ex)


def wandb_mode() -> str:
    """``online`` when logged in, else ``offline``; a user's WANDB_MODE wins, but online needs a login."""
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc()
    mode = os.environ.get("WANDB_MODE") or ("online" if logged_in else "offline")
    if mode == "online" and not logged_in:
        raise ExperimentError(
            "W&B online was asked for (WANDB_MODE=online) but no login was found: run `wandb login` or set "
            "WANDB_API_KEY, or unset WANDB_MODE to log offline and `wandb sync` later"
        )
    return mode


def wandb_tags(cfg: RunConfig) -> list[str]:
    """Model, data set, batch, momentum (and nesterov), preset; lambda and site for DReg ("baseline" otherwise);
    every other setting that differs from the preset's, as in the run's name (e.g. ``lr0.2``, ``wu0.05``,
    ``mean``)."""
    tags = [cfg.model, cfg.dataset, f"bs{cfg.batch_size}", f"m{cfg.momentum:g}", cfg.preset]
    tags += ["nesterov"] if cfg.nesterov else []
    tags += [f"lambda{cfg.dreg_lambda:g}", cfg.dreg_site, cfg.dreg_form] if cfg.dreg_site else ["baseline"]
    return tags + [name_part(k, v) for k, v in cfg.differences().items() if name_part(k, v) not in tags]


def wandb_logger(cfg: RunConfig, ex: Execution, directory: Path) -> L.pytorch.loggers.Logger:
    """W&B, offline unless the user is logged in; it never waits for a login prompt."""
    from lightning.pytorch.loggers import WandbLogger

    os.environ["WANDB_MODE"] = wandb_mode()
    tags = wandb_tags(cfg)
    # A W&B sweep agent names the run it scheduled in WANDB_RUN_ID, which an explicit id would override;
    # otherwise the id follows the run, so a resumed run continues the same W&B run.
    run_id = os.environ.get("WANDB_RUN_ID") or hashlib.sha1(f"{cfg.preset}/{cfg.name}".encode()).hexdigest()[:12]
    # `config_key` is the name without the seed: W&B's "group by" on it gathers a config's seeds into one line.
    config = {**cfg.to_dict(), "config_key": cfg.name.rsplit("-s", 1)[0]}
    logger = WandbLogger(
        project=ex.wandb_project, group=ex.group, name=cfg.name, id=run_id, resume="allow", job_type="train",
        tags=tags, config=config, save_dir=str(directory),
    )  # fmt: skip
    if rank_zero_only.rank == 0:  # curves against the epoch, and each run's summary is its best val/acc
        logger.experiment.define_metric("epoch")
        logger.experiment.define_metric("val/*", step_metric="epoch")
        logger.experiment.define_metric("dreg/*", step_metric="epoch")
        logger.experiment.define_metric("val/acc", step_metric="epoch", summary="max")
    return logger


def _netrc() -> str:
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return path.read_text() if path.exists() else ""


def build(cfg: RunConfig, ex: Execution) -> tuple[Classifier, L.LightningDataModule]:
    """The LightningModule and the DataModule of a run (seeded, so a run is a function of its config)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = DATAMODULES[cfg.dataset](
        data_dir=ex.data_dir, batch_size=cfg.global_batch, micro_batch=cfg.micro_batch, val_size=cfg.val_size,
        val_from_test=cfg.val_from_test, train_subset=cfg.train_subset, seed=cfg.seed, augment=cfg.augment,
        verify=ex.verify, channels_last=cfg.channels_last,
        eval_batch_size=ex.eval_batch or (CPU_EVAL_BATCH if ex.on_cpu else None),
    )  # fmt: skip
    model = Classifier(**cfg.module_kwargs())
    return model, datamodule


def bf16_is_native(accelerator: str = "auto") -> bool:
    """Whether bf16 runs at speed where ``accelerator`` puts the run: on a GPU, or on a CPU with AVX512-BF16
    or AMX (without them bf16 is emulated: 7.8x slower than fp32 for a conv block on an AVX2 AMD EPYC)."""
    import torch

    return not Execution(accelerator=accelerator).on_cpu or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_precision(cfg: RunConfig, ex: Execution) -> None:
    """bf16 where it is not native runs many times slower than fp32: refuse it."""
    if cfg.precision.startswith("bf16") and not bf16_is_native(ex.accelerator):
        raise ExperimentError(
            f"precision {cfg.precision} needs a CPU with native bf16 (AVX512-BF16 or AMX), which this one lacks: "
            "add --precision 32-true"
        )


def train(cfg: RunConfig, ex: Execution) -> dict[str, Any]:
    """Train (or resume) one run from ``prepare`` and return its final status. What is checked here is the
    machine it landed on (native bf16, a W&B login), before anything is written."""
    if cfg.micro_batch is None:
        raise ExperimentError("train() takes a prepared run: train(prepare(cfg, ex), ex)")
    check_precision(cfg, ex)
    reuse_freed_memory()
    if ex.wandb:
        wandb_mode()
    directory = run_dir(cfg, ex.results)
    model, datamodule = build(cfg, ex)
    datamodule.prepare_data()  # missing or corrupt data fails here, before the run folder exists
    datamodule.setup("fit")
    if rank_zero_only.rank != 0:  # ranks launched after rank 0 (DDP): rank 0 holds the folder and its lock
        return _fit(cfg, ex, model, datamodule, directory)
    claim_run_dir(cfg, directory)
    with run_lock(directory):
        status = read_status(directory)
        if status["state"] in ("done", "diverged"):
            return status
        return _fit(cfg, ex, model, datamodule, directory)


def _fit(
    cfg: RunConfig, ex: Execution, model: Classifier, datamodule: L.LightningDataModule, directory: Path
) -> dict[str, Any]:
    last = directory / "checkpoints" / "last.ckpt"
    if rank_zero_only.rank == 0:  # it holds the run's lock: no one else is writing there
        remove_stale_temporaries(last.parent)
    # Rank 0 checks the checkpoint before it launches the other ranks, which then resume from the same one.
    checkpoint = usable_checkpoint(last) if rank_zero_only.rank == 0 else (last if last.exists() else None)
    _, accumulate = split_batch(cfg, ex.world_size)
    checkpointing = ModelCheckpoint(
        directory / "checkpoints", "last", save_on_train_epoch_end=True, enable_version_counter=False
    )
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=ex.accelerator,
        devices=ex.devices,
        num_nodes=ex.num_nodes,
        strategy=ex.strategy,
        precision=cfg.precision,
        accumulate_grad_batches=accumulate,
        callbacks=[RunRecords(directory), checkpointing],  # records first: a row lands before its checkpoint
        plugins=[AtomicCheckpointIO()],  # a temporary file next to last.ckpt, then a rename
        logger=wandb_logger(cfg, ex, directory) if ex.wandb else False,
        default_root_dir=directory,
        num_sanity_val_steps=0,
        enable_progress_bar=ex.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the device loader shards each epoch itself
        log_every_n_steps=1,
    )
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint)
    except Exception as err:
        if trainer.is_global_zero:
            write_status(directory, state="failed", error=f"{type(err).__name__}: {err}")
        raise
    if model.diverged_epoch is not None:
        final = {"state": "diverged", "diverged_epoch": model.diverged_epoch}
    else:
        final = {"state": "done", "selected_path": model.selected_path if model.dreg else None}
        if datamodule.has_test and not cfg.val_from_test:  # the test split, touched once at the end
            (result,) = trainer.test(model, datamodule=datamodule, verbose=False)
            final["test_acc"] = float(result["test/acc"])  # the selected path's (for DReg: chosen on validation)
            if model.dreg:  # both paths, for information only: choosing by them would select on the test set
                final["test_acc_paths"] = {p: float(result[f"test/acc_{p}"]) for p in ("R", "L")}
    if trainer.is_global_zero:
        write_status(directory, steps=trainer.global_step, error=None, **final)
    # Every rank returns the final status: one that read `running` would exit 1, and Lightning's DDP launcher
    # then kills rank 0.
    trainer.strategy.barrier("status")
    return read_status(directory)
