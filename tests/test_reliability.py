"""Reliability of the experiment layer (docs/method.md §5): kill and resume, atomic records, two sweeps on one results
folder, divergence, and a catalogue of bad input.

Every sweep here is the user's command, ``python -m experiments run fig2 --preset smoke --only bs2048-``: two
runs (VGG16 baseline, then VGG16 + DReg), 2 epochs of 25 steps each on a small fake CIFAR-10. A run is a
function of its config (seeded data order, augmentation and initialization; one CPU thread), so a run that
was killed and resumed, or trained next to a second sweep, must write exactly the metrics.csv of an
uninterrupted run: all columns but ``epoch_time`` (wall clock) are compared as text, i.e. bit for bit. That
holds for runs on the same machine; across machines (other CPU kernels) only a tolerance would.

The moments to kill at are found by polling the results folder from this process. Two of them (while a
checkpoint is being written; after a metrics.csv row, before its checkpoint) last a few milliseconds, so the
sweep's processes get a probe (a ``sitecustomize`` first on PYTHONPATH, as in test_scaling.py) that holds the
rename which publishes each checkpoint for a moment; it changes nothing else.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import yaml
from paths import ROOT

from experiments.config import RunConfig, preset_settings
from experiments.records import RunRecords, claim_run_dir
from experiments.run_files import read_status, write_atomic
from experiments.specs import load_figure, select
from experiments.sweep import run_sweep
from experiments.train import Execution, prepare, resolve, run_dir, train

SEED = 20261123  # the kill moments' random delays
TIMEOUT_S = 300  # a sweep that hangs fails its test instead of stalling CI

# The environment of every process started here: one CPU thread, W&B offline, no W&B key, no data folder from
# the user, and no way out to the network (a proxy nobody listens on), so nothing here can download anything.
_DROP = ("WANDB_API_KEY", "NETRC", "DREG_DATA_DIR", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "DREG_DEBUG")
BASE_ENV = {k: v for k, v in os.environ.items() if k not in _DROP}
BASE_ENV |= {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def _closed_port() -> socket.socket:
    """A bound, never-listening socket: connecting to its port is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


_NO_NETWORK = _closed_port()
_PROXY = f"http://127.0.0.1:{_NO_NETWORK.getsockname()[1]}"
BASE_ENV |= {"http_proxy": _PROXY, "https_proxy": _PROXY, "HTTP_PROXY": _PROXY, "HTTPS_PROXY": _PROXY}

# The probe holds each rename onto a checkpoint (the moment it is published) for DREG_PROBE_HOLD_S and logs it.
PROBE = """
import json, os, time


def _held(rename):
    def held_rename(src, dst, *args, **kwargs):
        if not str(dst).endswith(".ckpt"):
            return rename(src, dst, *args, **kwargs)
        time.sleep(float(os.environ["DREG_PROBE_HOLD_S"]))
        rename(src, dst, *args, **kwargs)
        with open(os.environ["DREG_PROBE_LOG"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "path": str(dst)}) + "\\n")

    return held_rename


os.replace, os.rename = _held(os.replace), _held(os.rename)
"""


# ---- fixtures and helpers ------------------------------------------------------------------------------------


def sweep_runs() -> list[RunConfig]:
    """The runs of the sweep command, in its order: A (baseline), B (DReg)."""
    return select(load_figure("fig2", "smoke").runs, "bs2048-")


def diverging_run() -> RunConfig:
    """DReg with lambda 1: the distance it maximizes blows up, the loss is -1e34 in epoch 2 and inf in epoch 3."""
    (_, dreg) = sweep_runs()
    return RunConfig.from_dict({**dreg.to_dict(), "dreg_lambda": 1.0, "epochs": 4})


def sweep_command(data: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "experiments", "run", "fig2", "--preset", "smoke", "--only", "bs2048-",
            "--data-dir", str(data), "--no-verify", "--results", str(results), "--accelerator", "cpu",
            "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep's runs trained without interruption, with a diverging run between them; returns the results.

    ``run_sweep`` trains each run in a ``python -m experiments train`` process, as the command does.
    """
    results = tmp_path_factory.mktemp("reference")
    a, b = sweep_runs()
    ex = Execution(results=results, data_dir=data, verify=False, accelerator="cpu", progress=False)
    with mock.patch.dict(os.environ, BASE_ENV, clear=True):
        outcomes = run_sweep([prepare(cfg, ex) for cfg in (a, diverging_run(), b)], ex)
    assert [outcome for _, outcome in outcomes] == ["ok", "ok", "ok"]
    return results


def folder(results: Path, cfg: RunConfig) -> Path:
    return run_dir(cfg, results)


def state(run: Path) -> str:
    return read_status(run)["state"]


def complete_rows(run: Path) -> int:
    """The metrics.csv rows that are on disk whole (a line still being appended is not counted)."""
    try:
        text = (run / "metrics.csv").read_bytes()
    except FileNotFoundError:
        return 0
    return max(0, text.count(b"\n") - 1)


def metrics_text(run: Path) -> str:
    """metrics.csv without its ``epoch_time`` column (wall clock), as text: equal text is bit-equal numbers."""
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "epoch_time"]
    return "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines)


def final_status(run: Path) -> dict[str, Any]:
    """status.json without what differs between two trainings of one run (when, and which process)."""
    return {k: v for k, v in read_status(run).items() if k not in ("updated", "pid")}


def temporaries(run: Path) -> list[str]:
    """Files in checkpoints/ other than last.ckpt (and one set aside as unreadable): checkpoints being written."""
    try:
        names = [p.name for p in (run / "checkpoints").iterdir()]
    except FileNotFoundError:
        return []
    return [n for n in names if n not in ("last.ckpt", "last.ckpt.unreadable")]


def checkpoint_epoch(run: Path) -> int | None:
    """The epoch of last.ckpt, None when there is none; a file that does not load fails the test."""
    path = run / "checkpoints" / "last.ckpt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"]


def snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    files = (run / "status.json", run / "metrics.csv")
    return {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


@pytest.fixture
def probed_env(tmp_path: Path) -> Callable[[float], dict[str, str]]:
    """The environment with the probe that holds each checkpoint's rename for ``hold_s``; log in tmp/probe."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE)

    def env(hold_s: float) -> dict[str, str]:
        path = os.pathsep.join([str(probe), str(ROOT), BASE_ENV.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return {**BASE_ENV, "PYTHONPATH": path, "DREG_PROBE_HOLD_S": str(hold_s),
                "DREG_PROBE_LOG": str(probe / "published.jsonl")}  # fmt: skip

    return env


class Sweep:
    """The sweep command in its own process group (the sweep and the run it is training), output in files."""

    count = 0

    def __init__(self, command: list[str], env: dict[str, str], logs: Path) -> None:
        Sweep.count += 1
        self.out, self.err = logs / f"sweep{Sweep.count}.out", logs / f"sweep{Sweep.count}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)  # fmt: skip

    def output(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    def tail(self) -> str:
        out, err = self.output()
        return f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the sweep ran past {TIMEOUT_S} s\n{self.tail()}")

    def kill_when(self, moment: Callable[[], bool], delay_s: float, what: str) -> None:
        """SIGKILL the whole process group ``delay_s`` after ``moment()`` first holds (polled every 2 ms)."""
        deadline = time.monotonic() + TIMEOUT_S
        while not moment():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the sweep ended (or timed out) before the moment {what!r}\n{self.tail()}")
            time.sleep(0.002)
        time.sleep(delay_s)
        self.kill()


# ---- 1, 2: kill and resume; atomic records; a repaired metrics.csv; a truncated checkpoint -----------------


@pytest.mark.slow
def test_a_sweep_killed_five_times_finishes_with_the_uninterrupted_records(data, reference, tmp_path, probed_env):
    """SIGKILL the sweep's process group at five moments, rerunning the same command after each:

    1. during A's first epoch; 2. while A's first checkpoint is being written (its temporary file is in
    checkpoints/); 3. after A's epoch-1 row reached metrics.csv, before its checkpoint replaced last.ckpt; then
    cut that row in half (a partial last line); 4. between the runs (A done, B's process starting); 5. during B's
    second epoch; then truncate B's last.ckpt. The last rerun must skip A, warn about B's checkpoint, train B
    from scratch, and both runs' records must equal the uninterrupted ones.
    """
    rng = random.Random(SEED)
    results, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    a, b = (folder(results, cfg) for cfg in sweep_runs())
    ref_a, ref_b = (folder(reference, cfg) for cfg in sweep_runs())
    command, env = sweep_command(data, results), probed_env(0.8)

    def whole_records() -> None:
        """What a kill may leave: a status.json that parses, a last.ckpt that loads (or none), whole rows."""
        for run in (a, b):
            read_status(run)
            checkpoint_epoch(run)
            if (run / "metrics.csv").exists():
                assert (run / "metrics.csv").read_text().endswith("\n") or not (run / "metrics.csv").stat().st_size

    # 1. During A's first epoch: its process has written `running` and is training.
    sweep = Sweep(command, env, logs)
    sweep.kill_when(lambda: state(a) == "running", rng.uniform(0.05, 0.4), "during an epoch of A")
    assert state(a) == "running" and checkpoint_epoch(a) is None, sweep.tail()
    whole_records()

    # 2. While A's first checkpoint is written: a temporary file next to last.ckpt, which does not exist yet.
    stale = set(temporaries(a))  # left by kill 1 if it fell on a checkpoint (the run's process clears them)
    sweep = Sweep(command, env, logs)
    sweep.kill_when(lambda: bool(set(temporaries(a)) - stale), rng.uniform(0.0, 0.4), "while a checkpoint is written")
    assert complete_rows(a) == 1 and checkpoint_epoch(a) is None and temporaries(a), sweep.tail()
    whole_records()

    # 3. After A's epoch-1 row, before last.ckpt changes (it is older than metrics.csv, and still epoch 0's).
    def row_before_checkpoint() -> bool:
        with contextlib.suppress(FileNotFoundError):
            ckpt, rows = a / "checkpoints" / "last.ckpt", a / "metrics.csv"
            return complete_rows(a) == 2 and ckpt.stat().st_mtime_ns < rows.stat().st_mtime_ns
        return False

    sweep = Sweep(command, env, logs)
    sweep.kill_when(row_before_checkpoint, rng.uniform(0.0, 0.2), "after a row, before its checkpoint")
    assert checkpoint_epoch(a) == 0 and complete_rows(a) == 2, sweep.tail()
    whole_records()
    # A crash in the middle of appending that row would have left half a line: make it so.
    text = (a / "metrics.csv").read_text()
    last_row = text.rstrip("\n").rsplit("\n", 1)[1]
    (a / "metrics.csv").write_text(text[: len(text) - len(last_row) // 2 - 1])

    # 4. Between the runs: A is done, B's process is starting and has written nothing.
    sweep = Sweep(command, env, logs)
    sweep.kill_when(lambda: state(a) == "done", 0.0, "between the runs")
    assert not (b / "status.json").exists(), sweep.tail()
    whole_records()
    finished_a = snapshot(a)

    # 5. During B's second epoch: its first checkpoint is published.
    sweep = Sweep(command, env, logs)
    sweep.kill_when(lambda: (b / "checkpoints" / "last.ckpt").exists(), rng.uniform(0.05, 0.4), "during B's epoch")
    assert state(b) == "running" and checkpoint_epoch(b) == 0, sweep.tail()
    assert "2 runs: 1 to run" in sweep.output()[0], sweep.tail()
    whole_records()
    ckpt = b / "checkpoints" / "last.ckpt"  # as a full disk or a copy cut short would leave it
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])

    # The same command once more, to the end.
    sweep = Sweep(command, env, logs)
    assert sweep.wait() == 0, sweep.tail()
    out, err = sweep.output()
    assert "2 runs: 1 to run" in out and "[sweep] finished: 1 done" in out, sweep.tail()
    assert f"warning: {ckpt} is unreadable" in err and "restarts from scratch" in err, sweep.tail()
    assert (b / "checkpoints" / "last.ckpt.unreadable").exists()

    assert snapshot(a) == finished_a  # A, finished at moment 4, was not trained again (not even rewritten)
    for run, ref in ((a, ref_a), (b, ref_b)):
        assert state(run) == "done"
        assert metrics_text(run) == metrics_text(ref)  # exact: every number bit for bit
        assert final_status(run) == final_status(ref)  # best val/acc and epoch, steps, test accuracy, path
        assert temporaries(run) == []  # temporary files left by the kills were cleared on resume


def test_checkpoints_reach_last_ckpt_only_by_a_rename_next_to_it(data, tmp_path, monkeypatch):
    """A kill can never leave half a last.ckpt: it is only ever created by renaming a whole file in its folder.

    Lightning's own save writes its temporary file in $TMPDIR and ``shutil.move``s it, which is a copy into
    last.ckpt when $TMPDIR is another filesystem. Here $TMPDIR is another folder and renames across folders
    fail as they do across filesystems (EXDEV); every opening of last.ckpt for writing is recorded.
    """
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    renames: list[tuple[str, str]] = []

    def same_filesystem_only(real: Callable[..., None]) -> Callable[..., None]:
        def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if Path(src).resolve().parent != Path(dst).resolve().parent:
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src))
            renames.append((str(src), str(dst)))
            real(src, dst, *args, **kwargs)

        return rename

    monkeypatch.setattr(os, "rename", same_filesystem_only(os.rename))
    monkeypatch.setattr(os, "replace", same_filesystem_only(os.replace))
    direct_writes: list[str] = []
    real_open = builtins.open

    def recording_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and str(file).endswith(".ckpt") and set(mode) & set("wax+"):
            direct_writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    (a, _) = sweep_runs()
    cfg = RunConfig.from_dict({**a.to_dict(), "epochs": 1})
    ex = Execution(results=tmp_path / "results", data_dir=data, verify=False, accelerator="cpu", progress=False)
    assert train(prepare(cfg, ex), ex)["state"] == "done"

    last = folder(ex.results, resolve(cfg, ex)) / "checkpoints" / "last.ckpt"
    assert direct_writes == []
    published = [src for src, dst in renames if dst == str(last)]
    assert len(published) == 1 and Path(published[0]).parent == last.parent
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
    assert list(elsewhere.iterdir()) == [] and temporaries(last.parent.parent) == []


def test_two_writers_of_one_record_each_rename_a_whole_file(tmp_path, monkeypatch):
    """Two processes claiming a new run folder write its config.yaml at the same moment: the second writer
    starts between the first's write and its rename. Each must rename a whole file of its own."""
    target = tmp_path / "config.yaml"
    real_fsync = os.fsync
    interleaved: list[str] = []

    def fsync_then_the_other_writer(fd: int) -> None:
        real_fsync(fd)
        if not interleaved:
            interleaved.append("second")
            write_atomic(target, "second: 2\n")

    monkeypatch.setattr(os, "fsync", fsync_then_the_other_writer)
    write_atomic(target, "first: 1\n")
    assert interleaved and target.read_text() == "first: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


class _Trainer:
    """What RunRecords.on_train_start reads from Lightning's Trainer."""

    def __init__(self, current_epoch: int) -> None:
        self.current_epoch, self.is_global_zero = current_epoch, True


def test_a_partial_last_line_of_metrics_csv_is_dropped_on_resume(tmp_path):
    """A row cut short by a crash is not a row: resuming (from the checkpoint of epoch 1) drops it."""
    rows = "epoch,step,val/acc,epoch_time\n0,25,0.1,0.5\n"
    (tmp_path / "metrics.csv").write_text(rows + "1,50,0.2")  # no newline: the append was cut short
    write_atomic(tmp_path / "status.json", json.dumps({"state": "running", "epoch": 1}))
    records_ = RunRecords(tmp_path)
    records_.on_train_start(_Trainer(current_epoch=1), None)  # type: ignore[arg-type]
    assert (tmp_path / "metrics.csv").read_text() == rows
    assert records_.best == (0.1, 0) and read_status(tmp_path)["state"] == "running"


# ---- 3: two sweeps at once on one results folder ---------------------------------------------------------


@pytest.mark.slow
def test_two_sweeps_at_once_train_each_run_once(data, reference, tmp_path, probed_env):
    """Two identical sweeps started together on one results folder: a run held by one is skipped by the other
    (its process exits 3, reported as busy); every run ends done, trained once, with the reference records.

    The probe holds each checkpoint 1.5 s, so a run holds its lock long enough for the other sweep's process,
    started at the same time, to find it held; it also logs each published checkpoint: a run trained twice
    would publish 4 instead of 2.
    """
    results, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    env = probed_env(1.5)
    sweeps = [Sweep(sweep_command(data, results), env, logs) for _ in range(2)]
    codes = [sweep.wait() for sweep in sweeps]
    tails = "\n".join(sweep.tail() for sweep in sweeps)
    assert codes == [0, 0], tails
    outs = [sweep.output()[0] for sweep in sweeps]
    assert "(busy: another process is training it)" in "".join(outs), tails

    published = [json.loads(line)["path"] for line in (tmp_path / "probe" / "published.jsonl").read_text().splitlines()]
    for cfg in sweep_runs():
        run, ref = folder(results, cfg), folder(reference, cfg)
        assert state(run) == "done"
        assert published.count(str(run / "checkpoints" / "last.ckpt")) == cfg.epochs  # trained once
        assert metrics_text(run) == metrics_text(ref)
        assert final_status(run) == final_status(ref)
        assert yaml.safe_load((run / "config.yaml").read_text())["run_name"] == cfg.name


# ---- 4: divergence -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_diverged_run_keeps_the_rows_of_its_finite_epochs_and_the_sweep_goes_on(reference):
    diverged = folder(reference, diverging_run())
    status = read_status(diverged)
    assert status["state"] == "diverged" and status["diverged_epoch"] >= 1  # 3 here: rows of epochs 0-2 kept
    rows = (diverged / "metrics.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(status["diverged_epoch"]))
    assert status["best_epoch"] < status["diverged_epoch"]  # its best accuracy is one of the kept rows
    a, b = (folder(reference, cfg) for cfg in sweep_runs())
    assert state(a) == state(b) == "done"  # the run after it was trained


# ---- 5: bad input ------------------------------------------------------------------------------------------

# Each case runs in a process of its own forked from one that imported the CLI once (torch and Lightning take
# seconds to import), with stdout and stderr in files; what the command prints at import is checked by the
# cases run as plain `python -m experiments` processes (GENUINE).
RUNNER = """
import json, os, sys, traceback

sys.path.insert(0, os.getcwd())  # the repository's code, as `python -m experiments` run there gets it
from experiments.__main__ import main

cases, out = json.load(open(sys.argv[1])), sys.argv[2]
for i, case in enumerate(cases):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.clear()
            os.environ.update(case["env"])
            for fd, name in ((1, "out"), (2, "err")):
                os.dup2(os.open(f"{out}/{i}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            try:
                code = main(case["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    with open(f"{out}/{i}.code", "w") as f:
        f.write(str(os.waitstatus_to_exitcode(status)))
"""

GENUINE = ("stalled network", "--only matching nothing")


@contextlib.contextmanager
def stalled_proxy() -> Iterator[str]:
    """A proxy that accepts connections and never answers: a network that drops everything."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def _cases(data: Path, work: Path, proxy: str) -> list[dict[str, Any]]:
    """(name, argv, expected text in the one stderr line, extra env) for each bad input, with its setup done."""
    home = work / "home"
    home.mkdir()
    smoke_train = ["train", "--preset", "smoke"]
    run = ["run", "fig2", "--preset", "smoke", "--only", "bs2048-"]
    fp32 = ["--precision", "32-true"]  # the paper's bf16 is refused first on a CPU that lacks it

    def ex(data_dir: Path = data, verify: bool = False) -> list[str]:
        return ["--data-dir", str(data_dir), *([] if verify else ["--no-verify"]), "--accelerator", "cpu",
                "--no-progress"]  # fmt: skip

    empty = work / "empty-data"
    empty.mkdir()
    truncated = Path(shutil.copytree(data, work / "truncated-data"))
    batch = truncated / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    configs = work / "configs"
    configs.mkdir()
    (configs / "malformed.yaml").write_text("lr: [0.1\nepochs: 2\n")
    (configs / "list.yaml").write_text("- lr: 0.1\n- epochs: 2\n")
    (configs / "numbers.yaml").write_text("1: 2\nlr: 0.1\n")
    (work / "a-file").write_text("not a folder\n")

    cases = [
        ("unknown figure", ["run", "fig9", "--preset", "smoke", *ex()], "invalid choice: 'fig9'"),
        ("unknown preset", ["run", "fig2", "--preset", "huge", *ex()], "unknown preset 'huge'"),
        ("unknown model", [*smoke_train, "model=alexnet", *ex()], "'alexnet'"),
        ("unknown dataset", [*smoke_train, "dataset=svhn", *ex()], "unknown dataset 'svhn'"),
        ("unknown site", [*smoke_train, "dreg_site=R9", *ex()], "unknown site 'R9'"),
        ("unknown setting (typo)", [*smoke_train, "dreg_lamda=0.1", *ex()], "unknown run setting(s) dreg_lamda"),
        ("unknown dataset (run)", [*run, "--dataset", "imagenet", *ex()], "unknown dataset 'imagenet': choose one"),
        ("unknown precision (run)", [*run, "--precision", "bf17", *ex()], "invalid choice: 'bf17'"),
        ("unknown precision (train)", [*smoke_train, "precision=fp8", *ex()], "unknown precision 'fp8': choose"),
        ("unknown strategy", [*run, "--strategy", "ddpx", *ex()], "invalid choice: 'ddpx'"),
        ("unknown accelerator", [*smoke_train, "--accelerator", "tpux", *ex()], "invalid choice: 'tpux'"),
        ("unknown launcher", [*run, "--launcher", "k8s", *ex()], "invalid choice: 'k8s'"),
        ("warm-up above 1", [*smoke_train, "warmup_fraction=5", *ex()], "warmup_fraction must be <= 1, got 5"),
        ("the paper's grid on a CPU", ["run", "fig2", "--preset", "paper", *fp32, *ex()], "projected to take"),
        ("lambda nan", [*smoke_train, "dreg_site=R1", "dreg_lambda=nan", *ex()], "dreg_lambda must be a finite"),
        ("lambda .nan", [*smoke_train, "dreg_site=R1", "dreg_lambda=.nan", *ex()], "dreg_lambda must be a finite"),
        ("lr inf", [*smoke_train, "lr=inf", *ex()], "lr must be a finite number"),
        ("lr not a number", [*smoke_train, "lr=fast", *ex()], "lr must be a finite number, got 'fast'"),
        ("negative lr", [*smoke_train, "lr=-0.1", *ex()], "lr must be >= 0"),
        ("epochs not a number", [*smoke_train, "epochs=two", *ex()], "epochs must be a whole number"),
        ("epochs 0", [*smoke_train, "epochs=0", *ex()], "epochs must be a whole number >= 1"),
        ("a list where a name goes", [*smoke_train, "model=[vgg16,resnet18]", *ex()], "model must be a name"),
        ("a divisor of 0", [*smoke_train, "lr_base_batch=0", *ex()], "lr_base_batch must be a whole number >= 1"),
        ("width 0", [*smoke_train, "width=0", *ex()], "width must be a finite number > 0"),
        ("a setting twice", [*smoke_train, "lr=0.1", "lr=0.2", *ex()], "lr is given twice (0.1 and '0.2')"),
        ("seeds 0", [*run, "--seeds", "0", *ex()], "--seeds: expected a whole number >= 1, got '0'"),
        ("micro-batch 0", [*smoke_train, "--micro-batch", "0", *ex()], "expected a whole number >= 1, got '0'"),
        ("micro-batch negative", [*run, "--micro-batch", "-4", *ex()], "expected a whole number >= 1, got '-4'"),
        ("nodes 0", [*run, "--num-nodes", "0", *ex()], "--num-nodes: expected a whole number >= 1"),
        ("empty config.yaml in the run folder", [*smoke_train, *ex()], "config.yaml holds no run settings"),
        ("config keys not names", ["train", "--config", str(configs / "numbers.yaml"), *ex()], "setting(s) 1:"),
        ("unknown dreg_form", [*smoke_train, "dreg_site=R1", "dreg_form=l1", *ex()], "unknown dreg_form 'l1'"),
        ("unknown path_loss", [*smoke_train, "dreg_site=R1", "path_loss=max", *ex()], "unknown path_loss 'max'"),
        ("unknown lr_scaling", [*smoke_train, "lr_scaling=cubic", *ex()], "unknown lr_scaling 'cubic'"),
        ("learnable lambda", [*smoke_train, "dreg_site=R1", "dreg_learnable=true", *ex()], "is not allowed"),
        ("batch over 3 devices", [*run, "--devices", "3", *ex()], "does not split over 3 devices"),
        ("micro-batch too large", [*smoke_train, "--micro-batch", "32", *ex()], "larger than the per-device"),
        ("micro-batch not dividing", [*smoke_train, "--micro-batch", "5", *ex()], "not a multiple of micro-batch"),
        ("KEY=VALUE malformed", [*smoke_train, "lr0.1", *ex()], "expected KEY=VALUE, got 'lr0.1'"),
        ("unknown option", [*smoke_train, "--learning-rate", "0.1", *ex()], "unrecognized arguments"),
        ("missing data (train)", [*smoke_train, *ex(empty)], "CIFAR-10 not found"),
        ("missing data (run)", [*run, *ex(empty)], "CIFAR-10 not found"),
        ("truncated data (train)", [*smoke_train, *ex(truncated)], "data_batch_3 is truncated or unreadable"),
        ("truncated data (run)", [*run, *ex(truncated)], "data_batch_3 is truncated or unreadable"),
        ("md5 mismatch (train)", [*smoke_train, *ex(verify=True)], "does not match the official md5 sum"),
        ("md5 mismatch (run)", [*run, *ex(verify=True)], "does not match the official md5 sum"),
        ("another config (train)", [*smoke_train, *ex()], "holds a run with another config (lr: 0.05 there"),
        ("another config (run)", [*run, *ex()], "holds a run with another config (lr: 0.05 there"),
        ("unwritable results (train)", [*smoke_train, *ex()], "cannot write the run folder"),
        ("unwritable results (run)", [*run, *ex()], "a-file is not a folder"),
        ("malformed YAML", ["train", "--config", str(configs / "malformed.yaml"), *ex()], "cannot read the config"),
        ("YAML not a mapping", ["train", "--config", str(configs / "list.yaml"), *ex()], "holds a list, not KEY"),
        ("config missing", ["train", "--config", str(configs / "nope.yaml"), *ex()], "No such file"),
        ("W&B online, no login (train)", [*smoke_train, "--wandb", *ex()], "no login was found"),
        ("W&B online, no login (run)", [*run, "--wandb", *ex()], "no login was found"),
        ("--only matching nothing", ["run", "fig2", "--preset", "smoke", "--only", "bs999", *ex()], "matches none"),
        ("stalled network", [*smoke_train, *ex(work / "never-answered")], "download failed (URLError: <urlopen"),
    ]
    table = []
    for i, (name, argv, expected) in enumerate(cases):
        results = work / f"results{i}"
        if name.startswith("unwritable"):
            results = work / "a-file" / "results"
        env = {**BASE_ENV, "HOME": str(home)}
        if name.startswith("W&B"):
            env["WANDB_MODE"] = "online"
        if name == "stalled network":
            env |= {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy}
        if name.startswith("another config"):  # a finished run, same name, trained with lr 0.05
            cfg = RunConfig.from_dict(preset_settings("smoke", RunConfig.model)) if "train" in name else sweep_runs()[0]
            other = RunConfig.from_dict({**resolve(cfg, Execution()).to_dict(), "lr": 0.05})
            folder = run_dir(resolve(cfg, Execution()), results)  # names differ by lr: a folder copied by hand
            claim_run_dir(other, folder)
            write_atomic(folder / "status.json", json.dumps({"state": "done"}))
            write_atomic(folder / "metrics.csv", "epoch,val/acc\n0,0.5\n1,0.6\n")
        if name == "empty config.yaml in the run folder":
            cfg = RunConfig.from_dict(preset_settings("smoke", RunConfig.model))
            folder = run_dir(resolve(cfg, Execution()), results)
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text("")
        table.append({"name": name, "argv": [*argv, "--results", str(results)], "expected": expected, "env": env,
                      "results": str(results)})  # fmt: skip
    return table


def _files(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


@pytest.mark.slow
def test_bad_input_fails_at_once_with_one_line_and_writes_nothing(data, tmp_path):
    """Each bad input: exit 2, exactly one line on stderr (``error: ...``, naming the problem) and nothing on
    stdout, before any run starts; the results folder is not created (or, holding another run, not changed).

    A download on a network that never answers gives up after the datamodule's socket timeout (30 s) instead
    of hanging: that case and one other run as plain ``python -m experiments`` processes, next to the rest.
    """
    with stalled_proxy() as proxy:
        table = _cases(data, tmp_path, proxy)
        before = {case["name"]: _files(Path(case["results"])) for case in table}
        before_file = (tmp_path / "a-file").read_bytes()
        genuine = {}
        for case in table:
            if case["name"] in GENUINE:
                command = [sys.executable, "-m", "experiments", *case["argv"]]
                genuine[case["name"]] = (time.monotonic(), subprocess.Popen(
                    command, cwd=ROOT, env=case["env"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, start_new_session=True))  # fmt: skip
        forked = [case for case in table if case["name"] not in GENUINE]
        (tmp_path / "cases.json").write_text(json.dumps(forked))
        (tmp_path / "runner.py").write_text(RUNNER)
        (tmp_path / "out").mkdir()
        subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "cases.json"),
                        str(tmp_path / "out")], cwd=ROOT, env=BASE_ENV, check=True, timeout=TIMEOUT_S)  # fmt: skip
        outcomes = {}
        for i, case in enumerate(forked):
            read = (tmp_path / "out" / f"{i}.{kind}" for kind in ("code", "out", "err"))
            code, out, err = (p.read_text() if p.exists() else "" for p in read)
            outcomes[case["name"]] = (int(code), out, err, None)
        for name, (start, proc) in genuine.items():
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            outcomes[name] = (proc.returncode, out, err, time.monotonic() - start)

    problems = []
    for case in table:
        name = case["name"]
        code, out, err, seconds = outcomes[name]
        lines = err.splitlines()
        if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or case["expected"] not in err:
            problems.append(f"{name}: exit {code}, stderr {err[-1500:]!r}")
        if out:
            problems.append(f"{name}: printed {out[-500:]!r}")
        if _files(Path(case["results"])) != before[name] or (Path(case["results"]).exists() and not before[name]):
            problems.append(f"{name}: the results folder changed: {list(_files(Path(case['results'])))}")
        if seconds is not None and seconds > 100:
            problems.append(f"{name}: took {seconds:.0f} s")
    assert (tmp_path / "a-file").read_bytes() == before_file
    assert not problems, "\n".join(problems)
    assert len(table) >= 20
