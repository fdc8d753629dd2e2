"""A run's records on disk (docs/method.md §5): config.yaml, metrics.csv, status.json; each write survives a crash."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from experiments.config import ExperimentError, RunConfig
from experiments.run_files import read_config, read_metrics_rows, write_atomic, write_status

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "numpy")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written like the other records: a temporary file next to them, then a rename.

    Lightning's own save goes through an fsspec transaction whose temporary file is made by
    ``tempfile.mkstemp()`` in $TMPDIR and then ``shutil.move``d: with $TMPDIR on another filesystem than
    the results (a node-local /tmp, results on a network disk) the move is a copy into ``last.ckpt``, which
    a kill leaves half-written, and each kill leaves a checkpoint-sized file behind in $TMPDIR.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), buffer.getvalue())


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files that a kill during a write left in ``folder`` (call it holding the run's lock)."""
    for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
        stale.unlink(missing_ok=True)


def _provenance() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"versions": versions, "git_commit": commit, "device": _device()}


def _device() -> str:
    """What trains the run: the GPU's name, else the CPU's model and the threads torch uses."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
    return f"{models[0] if models else platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"


def check_run_dir(cfg: RunConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds this run (False: no run yet); another run's config is an error. Writes nothing."""
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        return False
    recorded = read_config(run_dir)["run"]  # unreadable: a damaged record, one line naming it
    defaults = dataclasses.asdict(RunConfig())  # a setting added after the run was recorded had its default then
    diff = {k: (recorded.get(k, defaults[k]), v) for k, v in cfg.to_dict().items() if recorded.get(k, defaults[k]) != v}
    if diff:
        shown = ", ".join(f"{k}: {old!r} there, {new!r} asked" for k, (old, new) in list(diff.items())[:4])
        raise ExperimentError(
            f"{run_dir} holds a run with another config ({shown}); "
            "use another --results folder, or move that run folder away"
        )
    return True


def check_writable(results: Path) -> None:
    """``results`` can be created and written (checked on its nearest existing ancestor; nothing is written)."""
    folder = Path(results).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        why = "is not a folder" if not folder.is_dir() else "is not writable"
        raise ExperimentError(f"cannot write the results to {results}: {folder} {why}; choose a writable --results")


def claim_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Create ``run_dir`` with its config.yaml, or check that the one there is this run's and can be written."""
    if check_run_dir(cfg, run_dir):
        unwritable = [p for p in (run_dir, *run_dir.glob("*.*")) if not os.access(p, os.W_OK)]
        if unwritable:
            raise ExperimentError(
                f"cannot write the run folder {run_dir} ({unwritable[0].name} is read-only): give yourself write "
                "permission on it (chmod -R u+w), or choose another --results"
            )
        return
    config_file = run_dir / "config.yaml"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"run_name": cfg.name, "run": cfg.to_dict(), **_provenance()}
        write_atomic(config_file, yaml.safe_dump(record, sort_keys=False))
    except OSError as err:
        raise ExperimentError(
            f"cannot write the run folder {run_dir} ({err.strerror}): choose a writable --results"
        ) from err


class RunBusy(ExperimentError):
    """Another process is training this run (a second sweep on the same results folder)."""


BUSY = 3  # the exit code of `python -m experiments train` for a run that another process is training


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock while training it. The kernel drops it when the process ends, even on SIGKILL."""
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            message = f"{run_dir} is being trained by another process: wait for it, or use another --results"
            raise RunBusy(message) from err
        yield


def usable_checkpoint(path: Path) -> Path | None:
    """``path`` if it loads; an unreadable one (cut short by a crash) is moved aside, with a warning."""
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, bad pickle, ...: any failure means "cannot resume from it"
        path.replace(path.with_suffix(".ckpt.unreadable"))
        print(f"warning: {path} is unreadable ({type(err).__name__}); the run restarts from scratch", file=sys.stderr)
        return None
    return path


class RunRecords(Checkpoint):
    """Appends a metrics.csv row and updates status.json at the end of each training epoch.

    A ``Checkpoint`` subclass because Lightning calls checkpoint callbacks after the
    LightningModule's epoch-end hook (so the epoch's diagnostics are logged) and in list
    order: placed before ``ModelCheckpoint``, a row is on disk before the checkpoint that
    follows it, and a resumed run drops the rows its checkpoint does not cover.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "metrics.csv"
        self.header: list[str] = []
        self.best: tuple[float, int] | None = None
        self._epoch_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After Lightning restored a checkpoint, so ``current_epoch`` is the one training resumes at."""
        if not trainer.is_global_zero:
            return
        header, rows = read_metrics_rows(self.path)
        rows = [r for r in rows if int(r["epoch"]) < trainer.current_epoch]  # what the checkpoint covers
        self.header = header
        text = io.StringIO()
        if header:
            writer = csv.DictWriter(text, header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        write_atomic(self.path, text.getvalue())
        accs = [(float(r["val/acc"]), int(r["epoch"])) for r in rows if r.get("val/acc")]
        self.best = max(accs, key=lambda a: (a[0], -a[1])) if accs else None
        extra = {}
        if getattr(pl_module, "dreg", False) and trainer.global_step == 0:  # before any step: the start of M7's curve
            extra["dreg_initial"] = pl_module.net.diagnostics()
        write_status(self.run_dir, state="running", epoch=trainer.current_epoch, pid=os.getpid(), **extra)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or getattr(pl_module, "diverged_epoch", None) is not None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        row["epoch_time"] = round(time.perf_counter() - self._epoch_start, 3)
        if not self.header:
            self.header = list(row)
            write_atomic(self.path, ",".join(self.header) + "\n")
        line = io.StringIO()
        csv.DictWriter(line, self.header, lineterminator="\n", extrasaction="ignore").writerow(row)
        with open(self.path, "a") as f:  # one write of one whole line, then fsync
            f.write(line.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if "val/acc" in metrics and (self.best is None or metrics["val/acc"] > self.best[0]):
            self.best = (metrics["val/acc"], trainer.current_epoch)
        best = {"best_val_acc": self.best[0], "best_epoch": self.best[1]} if self.best else {}
        write_status(self.run_dir, state="running", epoch=trainer.current_epoch + 1, **best)
