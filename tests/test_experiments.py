"""The experiment layer: the grid as data, records, skip / resume, isolation of runs."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from datamodules import write_fake_cifar
from experiments.config import FIGURE_NAMES, ExperimentError, RunConfig, load_figure, select, split_batch
from experiments.records import RunRecords, read_status
from experiments.sweep import run_sweep
from experiments.train import Execution, run_dir, train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("data"), "cifar10", n_train=600, n_test=100)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "experiments", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def smoke(**changes) -> RunConfig:
    figure = load_figure("fig2", "smoke")
    return RunConfig.from_dict({**figure.runs[1].to_dict(), **changes})  # vgg16 bs2048 DReg


def test_figures_have_the_papers_run_counts():
    counts = {name: len(load_figure(name, "paper").runs) for name in FIGURE_NAMES}
    assert [counts[f"fig{k}"] for k in range(2, 9)] == [14, 14, 14, 14, 13, 12, 12]
    paper = {r.name for k in range(2, 9) for r in load_figure(f"fig{k}", "paper").runs}
    assert len(paper) == 81  # docs/method.md §5: runs shared by figures are trained once
    assert counts["controls"] == 10


def test_run_names_and_scaled_batches():
    fig6 = load_figure("fig6", "paper")
    assert "resnet18-cifar100-bs30720-dreg0.1-R1-m0.9-s0" in {r.name for r in fig6.runs}
    mini = {r.batch_size: r.global_batch for r in load_figure("fig2", "mini").runs}
    assert mini[2048] == 256 and mini[30720] == 3840
    controls = {r.name for r in load_figure("controls", "paper").runs}
    assert {
        "resnet18-cifar100-bs30720-dreg0.1-R1-mean-m0.9-s0",
        "resnet18-cifar100-bs30720-dreg0.1-R1-cosine-m0.9-s0",
        "resnet18-cifar100-bs30720-dreg0-R1-m0.9-s0",
        "resnet18-cifar100-bs30720-base-m0.9-s0",
    } <= controls
    seeds = load_figure("fig2", "smoke", seeds=3).runs
    assert len(seeds) == 42 and {r.seed for r in seeds} == {0, 1, 2}
    assert {r.dataset for r in load_figure("fig5", "smoke", overrides={"dataset": "cifar10"}).runs} == {"cifar10"}


def test_list_command_prints_every_figure():
    out = cli("list").stdout
    assert "fig8: Momentum" in out and "Figures 2-8: 93 runs, 81 distinct" in out


@pytest.mark.parametrize(
    ("changes", "world", "message"),
    [
        ({}, 3, "does not split over 3 devices"),
        ({"micro_batch": 32}, 1, "larger than the per-device batch"),
        ({"micro_batch": 5}, 1, "not a multiple of micro-batch 5"),
    ],
)
def test_bad_batch_splits_are_refused(changes, world, message):
    with pytest.raises(ExperimentError, match=message):
        split_batch(smoke(**changes), world)


def test_batch_split_derives_the_accumulation():
    assert split_batch(smoke(micro_batch=4), 2) == (4, 2)  # 16 = 2 devices x 4 x 2 steps


def test_only_pattern_selects_runs_or_says_none_match():
    runs = load_figure("fig2", "smoke").runs
    assert [r.name for r in select(runs, "bs2048-")] == [
        "vgg16-cifar10-bs2048-base-m0.9-s0", "vgg16-cifar10-bs2048-dreg0.1-R1-m0.9-s0"]  # fmt: skip
    with pytest.raises(ExperimentError, match="matches none"):
        select(runs, "bs999")


@pytest.mark.slow
def test_smoke_sweep_completes_and_a_second_call_does_nothing(data, tmp_path):
    args = ["run", "fig6", "--preset", "smoke", "--dataset", "cifar10", "--only", "resnet18*R[234]-", "--data-dir",
            str(data), "--no-verify", "--results", str(tmp_path), "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    first = cli(*args)
    assert "3 runs: 3 to run" in first.stdout and "3 done" in first.stdout
    for name in ("R2", "R3", "R4"):
        folder = tmp_path / "smoke" / f"resnet18-cifar10-bs30720-dreg0.1-{name}-m0.9-s0"
        assert read_status(folder)["state"] == "done"
        assert len(pd.read_csv(folder / "metrics.csv")) == 2
    second = cli(*args)
    assert "3 runs: 0 to run" in second.stdout and "[sweep] run" not in second.stdout
    status = cli("status", "fig6", "--preset", "smoke", "--dataset", "cifar10", "--results", str(tmp_path)).stdout
    assert "3 done" in status and "10 pending" in status


def test_a_resumed_run_equals_an_uninterrupted_one(data, tmp_path, monkeypatch):
    cfg = smoke(epochs=3, model="resnet18")
    ex = Execution(data_dir=data, verify=False, accelerator="cpu", progress=False)
    train(cfg, Execution(**{**ex.__dict__, "results": tmp_path / "whole"}))

    original = RunRecords.on_train_epoch_end

    def crash_after_second_epoch_row(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if trainer.current_epoch == 1:  # the row of epoch 1 is written, its checkpoint is not
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(RunRecords, "on_train_epoch_end", crash_after_second_epoch_row)
    interrupted = Execution(**{**ex.__dict__, "results": tmp_path / "cut"})
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, interrupted)
    folder = run_dir(cfg, tmp_path / "cut")
    assert read_status(folder)["state"] == "failed" and len(pd.read_csv(folder / "metrics.csv")) == 2
    monkeypatch.setattr(RunRecords, "on_train_epoch_end", original)
    assert train(cfg, interrupted)["state"] == "done"

    whole = pd.read_csv(run_dir(cfg, tmp_path / "whole") / "metrics.csv").drop(columns="epoch_time")
    resumed = pd.read_csv(folder / "metrics.csv").drop(columns="epoch_time")
    assert list(resumed["epoch"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(resumed, whole, check_exact=False, rtol=1e-6)


def test_an_absurd_lambda_diverges_and_the_sweep_goes_on(data, tmp_path):
    runs = [smoke(dreg_lambda=1e30, lr=10.0, epochs=3), smoke(dreg_site=None)]
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    run_sweep(runs, ex)
    diverged, baseline = (read_status(run_dir(r, tmp_path)) for r in runs)
    assert diverged["state"] == "diverged" and diverged["diverged_epoch"] == 0
    assert baseline["state"] == "done"
    assert "train/loss" in pd.read_csv(run_dir(runs[1], tmp_path) / "metrics.csv")


def test_a_folder_holding_another_config_is_refused_and_left_alone(data, tmp_path):
    cfg = smoke(epochs=1, dreg_site=None)
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    train(cfg, ex)
    folder = run_dir(cfg, tmp_path)
    # Names tell every setting apart, so another config reaches this folder only by hand (a copied folder):
    record = yaml.safe_load((folder / "config.yaml").read_text())
    _write(folder / "config.yaml", {**record, "run": {**record["run"], "lr": 0.05}})
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    result = cli("train", "--config", str(_write(tmp_path / "c.yaml", cfg.to_dict())), "--results", str(tmp_path),
                 "--data-dir", str(data), "--no-verify", "--accelerator", "cpu", check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "another config (lr: 0.05 there, 0.1 asked)" in result.stderr
    assert before == {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _write(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path
