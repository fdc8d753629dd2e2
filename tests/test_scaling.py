"""Scaling out (docs/method.md §4-5): DDP on the CPU, W&B offline runs, submitit's local executor, W&B sweep files.

Each test runs the real command line (``python -m experiments``) in a subprocess on a small fake CIFAR, as a
user, a launcher or a W&B agent would. The smoke preset's global batch at the paper's 2k is 16, its training
subset 400 images, so an epoch is 25 steps.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import ROOT as REPO
from wandb.proto import wandb_internal_pb2
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from experiments.__main__ import _parse_value
from experiments.__main__ import main as cli_main
from experiments.config import RunConfig
from experiments.specs import load_figure

TIMEOUT_S = 300  # a hung DDP rank or a login prompt fails the test instead of stalling CI
GLOBAL_BATCH, TRAIN_SUBSET, EPOCHS = 16, 400, 2  # the smoke preset at batch_size=2048
RUN_2K = ["--preset", "smoke", "model=resnet18", "dataset=cifar10", "batch_size=2048"]

# Lightning's DDP launcher starts rank 1 as a fresh `python -m experiments ...`, so the only way into that
# process is Python's startup hook: this sitecustomize (put first on PYTHONPATH) logs what each rank's
# training loader yields, and which process writes records.
PROBE = """
import json, os
from datamodules.device_loader import DeviceLoader
from experiments import records, run_files

_iter, _write = DeviceLoader.__iter__, run_files.write_atomic


def _log(name, **entry):
    with open(os.path.join(os.environ["DREG_PROBE_DIR"], name), "a") as f:
        f.write(json.dumps({"pid": os.getpid(), **entry}) + "\\n")


def _probed_iter(self):
    s = self.sampler
    shard = s.micro_batches().tolist()
    for i, (x, y) in enumerate(_iter(self)):
        _log(f"rank{s.rank}.jsonl", world=s.world_size, epoch=s.epoch, indices=shard[i], batch=len(x))
        yield x, y


def _probed_write(path, text):
    _log("writes.jsonl", path=str(path))
    _write(path, text)


DeviceLoader.__iter__ = _probed_iter
records.write_atomic = run_files.write_atomic = _probed_write  # every record file goes through one of them
"""


def cli(args: list[str], home: Path, env: dict[str, str] | None = None,
        unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m experiments ARGS`` from the repo root, no stdin, HOME in a tmp folder (no ~/.netrc, no
    W&B settings) and no W&B key; the whole process group is killed if it outlives TIMEOUT_S."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "NETRC", "DREG_DATA_DIR", *unset)}
    full_env |= {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HOME": str(home)}
    full_env |= {"WANDB_MODE": "offline"} if "WANDB_MODE" not in unset else {}
    full_env |= env or {}
    command = [sys.executable, "-m", "experiments", *args]
    with subprocess.Popen(command, cwd=REPO, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # DDP's rank 1 and W&B's service are in the group too
            out, err = proc.communicate()
            pytest.fail(f"`{' '.join(args)}` ran past {TIMEOUT_S} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def execution(data: Path, results: Path) -> list[str]:
    return ["--data-dir", str(data), "--no-verify", "--results", str(results), "--accelerator", "cpu", "--no-progress"]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def run_folders(results: Path) -> dict[str, Path]:
    return {p.name: p for p in (results / "smoke").iterdir() if (p / "config.yaml").exists()}


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def wandb_records(run: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of the run's one offline W&B run, read from its ``.wandb`` transaction log.

    wandb 0.31 ships no Python reader for it (``wandb.sdk.internal.datastore`` is gone), so this reads the
    format directly: a 7-byte header (":W&B", magic 0xBEE1, version 0), then leveldb-log blocks of 32 KiB whose
    chunks (checksum, length, type: 1 full, 2 first, 3 middle, 4 last) hold ``wandb.proto`` Records.
    """
    (offline,) = (run / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")
    data = log.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's last bytes too few for a chunk header are padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zeros: the unwritten rest of the last block
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run_and_history(run: Path) -> tuple[wandb_internal_pb2.RunRecord, set[str]]:
    """The W&B run record and every key logged to its history."""
    records = list(wandb_records(run))
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    keys = {i.key or "/".join(i.nested_key) for r in records if r.HasField("history") for i in r.history.item}
    return run_record, keys


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_splits_the_global_batch(data: Path, tmp_path: Path) -> None:
    """Two gloo ranks train one run at global batch 16: 8 per rank per step, disjoint; rank 0 alone records."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE)
    results = tmp_path / "results"
    env = {"PYTHONPATH": os.pathsep.join([str(probe), str(REPO)]), "DREG_PROBE_DIR": str(probe)}
    args = ["train", *RUN_2K, "dreg_site=R1", *execution(data, results), "--devices", "2", "--strategy", "ddp"]
    result = ok(cli(args, tmp_path, env))
    assert result.stdout.count("done: best val/acc") == 2, "each rank returns the final status"

    half = GLOBAL_BATCH // 2
    (run,) = run_folders(results).values()
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["micro_batch"] == half
    steps = TRAIN_SUBSET // GLOBAL_BATCH
    rows = metrics(run)
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(e, (e + 1) * steps) for e in range(EPOCHS)]
    status = read_json(run / "status.json")
    assert status["state"] == "done" and status["steps"] == EPOCHS * steps

    per_rank = [read_jsonl(probe / f"rank{r}.jsonl") for r in (0, 1)]
    rank0_pid = {e["pid"] for e in per_rank[0]}
    assert len(rank0_pid | {e["pid"] for e in per_rank[1]}) == 2, "the two ranks are two processes"
    for log in per_rank:
        assert {(e["world"], e["batch"], len(e["indices"])) for e in log} == {(2, half, half)}
        assert [sum(e["epoch"] == k for e in log) for k in range(EPOCHS)] == [steps] * EPOCHS
    for a, b in zip(*per_rank, strict=True):  # a step's two shards: disjoint halves of one global batch
        assert a["epoch"] == b["epoch"] and not set(a["indices"]) & set(b["indices"])
    writes = read_jsonl(probe / "writes.jsonl")
    assert writes and {w["pid"] for w in writes} == rank0_pid == {status["pid"]}


def test_a_batch_that_does_not_split_fails_before_writing(data: Path, tmp_path: Path) -> None:
    """Global 16 over 3 devices is refused up front: exit 2, one error line, no run folder."""
    results = tmp_path / "results"
    args = ["train", *RUN_2K, *execution(data, results), "--devices", "3", "--strategy", "ddp"]
    result = cli(args, tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "does not split" in line
    assert not results.exists()


@pytest.mark.slow
def test_wandb_goes_offline_by_itself_without_a_login(data: Path, tmp_path: Path) -> None:
    """No WANDB_MODE, no key, no ~/.netrc, no stdin: the run logs offline into its own folder, no prompt."""
    results = tmp_path / "results"
    ok(cli(["train", *RUN_2K, *execution(data, results), "--wandb"], tmp_path, unset=("WANDB_MODE",)))
    (run,) = run_folders(results).values()
    run_record, keys = wandb_run_and_history(run)
    assert run_record.display_name == run.name
    assert {"train/loss", "val/acc"} <= keys
    assert read_json(run / "status.json")["state"] == "done"


@pytest.mark.slow
def test_sweep_names_wandb_runs_by_figure_and_run(data: Path, tmp_path: Path) -> None:
    """Through a sweep, the W&B run's group is the figure and its name the run folder's (docs/method.md §5)."""
    results = tmp_path / "results"
    ok(cli(["run", "fig2", "--preset", "smoke", "--only", "bs2048-base", "--wandb", *execution(data, results)],
           tmp_path))  # fmt: skip
    (run,) = run_folders(results).values()
    assert run.name == "vgg16-cifar10-bs2048-base-m0.9-s0"
    run_record, keys = wandb_run_and_history(run)
    assert (run_record.run_group, run_record.display_name) == ("fig2", run.name)
    assert {"vgg16", "cifar10", "bs2048", "baseline"} <= set(run_record.tags)
    assert {"train/loss", "val/acc"} <= keys
    # Seeds group by the name without the seed; curves run against the epoch; the summary is the best val/acc.
    assert run_record.job_type == "train"
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["config_key"] == "vgg16-cifar10-bs2048-base-m0.9"
    metrics = {r.metric.name: r.metric for r in wandb_records(run) if r.WhichOneof("record_type") == "metric"}
    assert metrics["val/acc"].step_metric == "epoch" and metrics["val/acc"].summary.max


@pytest.mark.slow
def test_submitit_local_executor_runs_a_sweep_once(data: Path, tmp_path: Path) -> None:
    """submitit's LocalExecutor unpickles train(cfg, ex) in its own processes; a second sweep has nothing to do."""
    results = tmp_path / "results"
    args = ["run", "fig2", "--preset", "smoke", "--only", "bs2048-", "--launcher", "submitit-local"]
    ok(cli([*args, *execution(data, results)], tmp_path))
    runs = run_folders(results)
    assert sorted(runs) == ["vgg16-cifar10-bs2048-base-m0.9-s0", "vgg16-cifar10-bs2048-dreg0.1-R1-m0.9-s0"]
    statuses = {name: (run / "status.json").read_text() for name, run in runs.items()}
    assert all(json.loads(s)["state"] == "done" for s in statuses.values())
    jobs = sorted((results / ".submitit").iterdir())

    again = ok(cli([*args, *execution(data, results)], tmp_path))
    assert "2 runs: 0 to run" in again.stdout
    assert sorted((results / ".submitit").iterdir()) == jobs
    assert {name: (run / "status.json").read_text() for name, run in runs.items()} == statuses


def test_wandb_tags_say_lambda_site_and_what_differs() -> None:
    from experiments.train import wandb_tags

    (dreg,) = [
        r for r in load_figure("fig7", "smoke").runs if r.dreg_site and r.dreg_lambda == 0.01 and "resnet" in r.model
    ]
    assert {"resnet18", "cifar100", "bs30720", "m0.9", "smoke", "lambda0.01", "R1", "frobenius"} <= set(
        wandb_tags(dreg)
    )
    doubled = next(r for r in load_figure("mechanism", "smoke").runs if r.lr == 0.2)
    assert {"baseline", "lr0.2", "wd0.00025"} <= set(wandb_tags(doubled))
    other = RunConfig.from_dict({**dreg.to_dict(), "nesterov": True, "warmup_fraction": 0.05, "path_loss": "mean",
                                 "dreg_eps": 0.1, "lr_scaling": "sqrt"})  # fmt: skip
    assert {"nesterov", "wu0.05", "mean", "eps0.1", "sqrt"} <= set(wandb_tags(other))


def test_agent_values_parse() -> None:
    """A W&B agent writes values with Python's str(): None for a baseline's site, 1e-05 for a small float;
    ``none`` is lr_scaling's name for no scaling, not None."""
    texts = ("None", "null", "R1", "0.01", "1e-05", "0", "False", "32-true", "none")
    assert [_parse_value(t) for t in texts] == [None, None, "R1", 0.01, 1e-05, 0, False, "32-true", "none"]


@pytest.mark.slow
def test_wandb_sweep_files_drive_the_single_run_command(data: Path, tmp_path: Path) -> None:
    """fig7's sweep files grid over lambda; the command a W&B agent builds from them trains a run."""
    out = tmp_path / "sweeps"
    assert cli_main(["wandb-sweep", "fig7", "--preset", "smoke", "--out", str(out)]) == 0
    sweeps = {p.name: yaml.safe_load(p.read_text()) for p in out.iterdir()}
    assert sorted(sweeps) == ["fig7a-smoke.yaml", "fig7b-smoke.yaml"]
    for sweep in sweeps.values():
        assert sweep["parameters"]["dreg_lambda"] == {"values": [0.001, 0.01, 0.1, 1, 0]}
        command = sweep["command"]
        assert command[command.index("-m") : command.index("-m") + 3] == ["-m", "experiments", "train"]

    # What a W&B agent does (wandb/wandb_agent.py): take a grid point, expand the macros with wandb's own
    # create_sweep_command_args, and name the run in WANDB_RUN_ID.
    parameters = sweeps["fig7b-smoke.yaml"]["parameters"]
    assert {k for k, v in parameters.items() if "values" in v} == {"dreg_lambda"}
    point = {k: v.get("value", 0.01) for k, v in parameters.items()}
    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    macros |= {"env": [], "interpreter": []}  # cli() runs the interpreter itself
    expanded = [a for c in sweeps["fig7b-smoke.yaml"]["command"] for a in macros.get(c[2:-1], [c])]
    assert expanded[:2] == ["-m", "experiments"] and "micro_batch=None" in expanded
    results = tmp_path / "results"
    ok(cli([*expanded[2:], *execution(data, results)], tmp_path, {"WANDB_RUN_ID": "agentrun0001"}))

    (run,) = run_folders(results).values()
    assert run.name == "resnet18-cifar100-bs30720-dreg0.01-R1-m0.9-s0"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["run"]
    assert recorded == {**point, "micro_batch": 240}
    assert read_json(run / "status.json")["state"] == "done"
    run_record, keys = wandb_run_and_history(run)
    assert (run_record.run_id, run_record.run_group) == ("agentrun0001", "fig7")
    assert "val/acc" in keys
