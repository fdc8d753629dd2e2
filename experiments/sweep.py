"""A figure's runs: skip what is finished, resume what was interrupted, isolate each run.

Each run trains in its own process, so a crash, an out-of-memory kill or a divergence in one run
never stops the others; ``--parallel K`` keeps K of them going at once, and ``--launcher slurm``
hands each to SLURM via submitit. The runs come prepared (``train.prepare``): each process receives
its run as an object, pickled (``python -m experiments train --prepared FILE`` here, submitit's own
pickle on SLURM), and trains it without parsing or checking it again.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from experiments.config import RunConfig
from experiments.records import BUSY, check_run_dir, check_writable
from experiments.run_files import FINISHED, read_status
from experiments.train import Execution, run_dir, wandb_mode


def plan(runs: list[RunConfig], ex: Execution, retry_failed: bool) -> list[tuple[RunConfig, str]]:
    """Each run with its state and what the sweep does with it: run, or skip."""
    rows = []
    for cfg in runs:
        state = read_status(run_dir(cfg, ex.results))["state"]
        rows.append((cfg, "skip" if state in FINISHED or (state == "failed" and not retry_failed) else "run"))
    return rows


def train_command(cfg: RunConfig, ex: Execution, handover: Path) -> list[str]:
    """The command line of the process that trains the prepared run ``cfg`` under ``ex``."""
    handover.write_bytes(pickle.dumps((cfg, ex)))
    return [sys.executable, "-m", "experiments", "train", "--prepared", str(handover)]


def _local(jobs: list[RunConfig], ex: Execution, parallel: int, report: Callable[[RunConfig, str], None]) -> None:
    gpus = _gpu_count()
    with tempfile.TemporaryDirectory(prefix="dreg-sweep-") as tmp:

        def one(slot_and_cfg: tuple[int, RunConfig]) -> None:
            slot, cfg = slot_and_cfg
            env = dict(os.environ)
            if gpus and parallel > 1:  # one run per GPU
                env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            if parallel > 1:  # share the CPU cores instead of oversubscribing them
                env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
            command = train_command(cfg, ex, Path(tmp) / f"{cfg.name}.pickle")
            if parallel > 1:
                log = Path(ex.results) / cfg.preset / "logs" / f"{cfg.name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "w") as out:
                    code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            else:
                code = subprocess.run(command, env=env).returncode
            report(cfg, {0: "ok", BUSY: "busy: another process is training it"}.get(code, f"exit {code}"))

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(one, enumerate(jobs)))


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _submitit(jobs: list[RunConfig], ex: Execution, launcher: str, slurm: dict[str, Any],
              report: Callable[[RunConfig, str], None]) -> None:  # fmt: skip
    """Each run one submitit job; multi-GPU runs get one task per GPU (Lightning reads SLURM's environment)."""
    import submitit

    from experiments.train import train

    folder = Path(ex.results) / ".submitit"
    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            nodes=ex.num_nodes, tasks_per_node=ex.devices, gpus_per_node=ex.devices, **slurm,
        )  # fmt: skip
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=slurm.get("timeout_min", 60))
    quiet = dataclasses.replace(ex, progress=False)
    submitted = [(cfg, executor.submit(train, cfg, quiet)) for cfg in jobs]
    for cfg, job in submitted:
        try:
            job.result()
            report(cfg, "ok")
        except Exception as err:  # the job's own status.json holds the details
            report(cfg, f"failed: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")


def run_sweep(
    runs: list[RunConfig], ex: Execution, *, retry_failed: bool = False, parallel: int = 1,
    launcher: str = "local", slurm: dict[str, Any] | None = None, dry_run: bool = False,
    shared: dict[str, list[str]] | None = None,
) -> list[tuple[RunConfig, str]]:  # fmt: skip
    """Run what is not finished of ``runs`` (from ``train.prepare``); returns each run with what happened to it.
    ``shared`` names, per run, the other figures that have it (a dry run lists them: such a run is trained once
    for all)."""
    for cfg in runs:
        check_run_dir(cfg, run_dir(cfg, ex.results))  # a folder of another config is not this run
    if not dry_run:  # what each run's process would refuse, refused once, up front
        check_writable(ex.results)
        if ex.wandb:
            wandb_mode()
    rows = plan(runs, ex, retry_failed)
    jobs = [cfg for cfg, action in rows if action == "run"]
    if jobs:
        import torch

        from experiments.projection import words

        flops, seconds, gpu = _projection(jobs, ex)
        where = torch.cuda.get_device_name() if gpu else f"this CPU ({torch.get_num_threads()} threads)"
        print(f"projected: {len(jobs)} runs to train, {flops:.2g} FLOPs, about {words(seconds)} on {where}")
    print(f"{len(runs)} runs: {len(jobs)} to run, {len(runs) - len(jobs)} finished or failed (skipped)")
    if dry_run:
        for cfg, action in rows:
            others = (shared or {}).get(cfg.name)
            also = f"  shared with {', '.join(others)}" if others else ""
            hours = f"  ~{_projection([cfg], ex)[1] / 3600:.2f} h" if action == "run" else ""
            print(f"  {action:4s}  {cfg.name}  [{read_status(run_dir(cfg, ex.results))['state']}]{hours}{also}")
        return [(cfg, "dry-run") for cfg in jobs]
    outcomes: list[tuple[RunConfig, str]] = []
    start = time.monotonic()

    def report(cfg: RunConfig, outcome: str) -> None:
        outcomes.append((cfg, outcome))
        done = len(outcomes)
        eta = (time.monotonic() - start) / done * (len(jobs) - done)
        state = read_status(run_dir(cfg, ex.results))["state"]
        print(f"[sweep] run {done} of {len(jobs)}: {cfg.name} -> {state} ({outcome}); ETA {_clock(eta)}", flush=True)

    if launcher == "local":
        _local(jobs, ex, parallel, report)
    else:
        _submitit(jobs, ex, launcher, slurm or {}, report)
    return outcomes


def _projection(jobs: list[RunConfig], ex: Execution) -> tuple[float, float, bool]:
    """(FLOPs, projected seconds, on a GPU) of the runs left to train, on this machine."""
    import torch

    from experiments.projection import project

    gpu = torch.cuda.is_available() and ex.accelerator in ("auto", "gpu", "cuda")
    return (*project(jobs, "cuda" if gpu else "cpu"), gpu)


def refuse_too_long(runs: list[RunConfig], ex: Execution, retry_failed: bool = False) -> None:
    """A local CPU sweep projected past a day is refused, in one line, before any data is read."""
    from experiments.config import ExperimentError
    from experiments.projection import words

    jobs = [cfg for cfg, action in plan(runs, ex, retry_failed) if action == "run"]
    _, seconds, gpu = _projection(jobs, ex) if jobs else (0.0, 0.0, True)
    if not gpu and seconds > 86400:
        raise ExperimentError(
            f"these {len(jobs)} runs at preset {jobs[0].preset} are projected to take {words(seconds)} on this CPU: "
            "use --preset mini (the paper's steps on a CPU), or add --insist to run them anyway"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
