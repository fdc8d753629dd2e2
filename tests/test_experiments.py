"""The experiment layer: the grid as data, records, skip / resume, isolation of runs."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from paths import ROOT

from experiments.config import ExperimentError, RunConfig, preset_settings, split_batch
from experiments.records import RunRecords
from experiments.run_files import read_status
from experiments.specs import FIGURE_NAMES, load_figure, select
from experiments.sweep import run_sweep
from experiments.train import Execution, prepare, run_dir, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "experiments", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def smoke(**changes) -> RunConfig:
    """The smoke preset's VGG16 bs2048 DReg run; another ``model`` gets that network's smoke settings too."""
    run = load_figure("fig2", "smoke").runs[1].to_dict()
    network = preset_settings("smoke", changes["model"]) if "model" in changes else {}
    return RunConfig.from_dict({**run, **network, **changes})


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


@pytest.mark.slow
def test_a_cifar100_panel_trains_records_and_draws(data, tmp_path):
    """Fig. 3's 2k pair at smoke scale on the fake CIFAR-100 (its default data set), then its figure."""
    cli("run", "fig3", "--preset", "smoke", "--only", "bs2048-", "--data-dir", str(data), "--no-verify",
        "--results", str(tmp_path), "--accelerator", "cpu", "--no-progress")  # fmt: skip
    for name in ("base", "dreg0.1-R1"):
        folder = tmp_path / "smoke" / f"vgg16-cifar100-bs2048-{name}-m0.9-s0"
        assert read_status(folder)["state"] == "done" and len(pd.read_csv(folder / "metrics.csv")) == 2
        assert yaml.safe_load((folder / "config.yaml").read_text())["run"]["dataset"] == "cifar100"
    drawn = subprocess.run(
        [sys.executable, "-m", "analysis", "figure", "fig3", "--results", str(tmp_path), "--preset", "smoke", "--out",
         str(tmp_path / "figs")], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert (tmp_path / "figs" / "fig3.png").stat().st_size > 10_000


def test_a_resumed_run_equals_an_uninterrupted_one(data, tmp_path, monkeypatch):
    ex = Execution(data_dir=data, verify=False, accelerator="cpu", progress=False)
    cfg = prepare(smoke(epochs=3, model="resnet18"), ex)
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
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    runs = [prepare(smoke(dreg_lambda=1e30, lr=10.0, epochs=3), ex), prepare(smoke(dreg_site=None), ex)]
    run_sweep(runs, ex)
    diverged, baseline = (read_status(run_dir(r, tmp_path)) for r in runs)
    assert diverged["state"] == "diverged" and diverged["diverged_epoch"] == 0
    assert baseline["state"] == "done"
    assert "train/loss" in pd.read_csv(run_dir(runs[1], tmp_path) / "metrics.csv")


def test_a_folder_holding_another_config_is_refused_and_left_alone(data, tmp_path):
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    cfg = prepare(smoke(epochs=1, dreg_site=None), ex)
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


# --- a run's names and records --------------------------------------------------------------------------------


def _another(value):
    """A different valid value of a setting's kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    return {"resnet18": "vgg16", "cifar10": "cifar100", "frobenius": "norm", "sum": "mean", "l2": "l1",
            "none": "sqrt", "32-true": "bf16-mixed", "R1": "R2", "R2": "R3", None: 5000}[value]  # fmt: skip


def test_every_setting_that_differs_gives_another_name():
    """Over every field of the run config (the preset excepted: it is the folder above the name)."""
    base = RunConfig(dreg_site="R1", activity_site="R2", activity_alpha=0.1, micro_batch=512)
    names = {base.name}
    for field in dataclasses.fields(RunConfig):
        if field.name == "preset":
            continue
        changed = dataclasses.replace(base, **{field.name: _another(getattr(base, field.name))})
        assert changed.name not in names, field.name
        names.add(changed.name)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", changed.name), changed.name  # a folder and a W&B run name
    assert (
        dataclasses.replace(base, dreg_site=None, dreg_lambda=0.01).name
        == dataclasses.replace(base, dreg_site=None).name
    )  # a baseline is one run, whatever lambda its figure names


def test_mechanism_has_18_distinct_runs_and_shares_four_with_fig2(tmp_path):
    mechanism = load_figure("mechanism", "mini")
    assert [len(runs) for runs in mechanism.panels.values()] == [13, 5]
    assert len({r.name for r in mechanism.runs}) == 18
    out = cli("run", "mechanism", "--preset", "mini", "--dry-run", "--results", str(tmp_path)).stdout
    shared = [line.split()[1] for line in out.splitlines() if "fig2" in line.partition("shared with ")[2].split(", ")]
    assert sorted(shared) == sorted(
        f"vgg16-cifar10-bs{b}-{k}-m0.9-s0" for b in (2048, 30720) for k in ("base", "dreg0.1-R1")
    )
    assert "18 runs: 18 to run" in out and not (tmp_path / "mini").exists()


def test_a_runs_records_hold_what_the_method_says(data, tmp_path):
    """best_val_acc and best_epoch are metrics.csv's maximum and its first epoch; test_acc is the selected
    path's; the distance before any step is recorded; config.yaml holds versions, commit and device."""
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    cfg = prepare(smoke(epochs=2), ex)
    train(cfg, ex)
    folder = run_dir(cfg, tmp_path)
    status, metrics = read_status(folder), pd.read_csv(folder / "metrics.csv")
    assert status["best_val_acc"] == pytest.approx(metrics["val/acc"].max())
    assert status["best_epoch"] == int(metrics["epoch"][metrics["val/acc"].idxmax()])
    assert status["test_acc"] == status["test_acc_paths"][status["selected_path"]]
    last = metrics.iloc[-1]
    assert status["selected_path"] == ("R" if last["val/acc_R"] >= last["val/acc_L"] else "L")
    assert 0 < status["dreg_initial"]["distance"] < metrics["dreg/distance"].iloc[0]
    record = yaml.safe_load((folder / "config.yaml").read_text())
    assert record["versions"]["torch"] == torch.__version__.split("+")[0] and record["versions"]["lightning"]
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"]) and "threads" in record["device"]


CRASH = """
import os
from lightning_modules import Classifier

_step = Classifier.training_step


def _crash(self, batch, batch_idx):
    if os.path.exists(os.environ["DREG_CRASH_FILE"]) and self.dreg:
        raise RuntimeError("simulated crash in training")
    return _step(self, batch, batch_idx)


Classifier.training_step = _crash
"""


@pytest.mark.slow
def test_a_crash_is_failed_the_sweep_goes_on_and_retry_failed_clears_it(data, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(CRASH)
    (tmp_path / "crash").touch()
    env = {**ENV, "PYTHONPATH": f"{probe}{os.pathsep}{ROOT}", "DREG_CRASH_FILE": str(tmp_path / "crash")}
    args = ["-m", "experiments", "run", "fig2", "--preset", "smoke", "--only", "bs2048-", "--data-dir", str(data),
            "--no-verify", "--results", str(tmp_path), "--accelerator", "cpu", "--no-progress"]  # fmt: skip

    def sweep(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600)  # fmt: skip

    first = sweep()
    assert first.returncode == 1 and "1 done, 1 failed" in first.stdout
    dreg, base = (tmp_path / "smoke" / f"vgg16-cifar10-bs2048-{k}-m0.9-s0" for k in ("dreg0.1-R1", "base"))
    assert read_status(dreg) == {**read_status(dreg), "state": "failed"}
    assert "simulated crash in training" in read_status(dreg)["error"]
    assert read_status(base)["state"] == "done"
    assert "2 runs: 0 to run" in sweep().stdout  # failed runs wait for --retry-failed
    (tmp_path / "crash").unlink()
    retried = sweep("--retry-failed")
    assert retried.returncode == 0 and "2 runs: 1 to run" in retried.stdout
    assert read_status(dreg)["state"] == "done" and "error" not in read_status(dreg)
    status = cli("status", "fig2", "--preset", "smoke", "--results", str(tmp_path)).stdout
    rows = {line.split()[0]: line.split()[1] for line in status.splitlines() if line.startswith("vgg16")}
    assert rows[dreg.name] == rows[base.name] == "done" and list(rows.values()).count("pending") == 12
    assert "2 done, 12 pending" in status
    dry = cli("run", "fig2", "--preset", "smoke", "--dry-run", "--results", str(tmp_path)).stdout
    assert "14 runs: 12 to run, 2 finished or failed (skipped)" in dry
    assert f"  skip  {dreg.name}  [done]" in dry and "  run   vgg16-cifar10-bs4096-base-m0.9-s0  [pending]" in dry


TIMES = """
import atexit, json, os, sys, time
if "train" in sys.argv:
    start = time.time()
    atexit.register(lambda: open(os.environ["DREG_TIMES"], "a").write(json.dumps([start, time.time()]) + "\\n"))
"""


@pytest.mark.slow
def test_parallel_two_runs_two_at_once_with_their_own_logs(data, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(TIMES)
    env = {**ENV, "PYTHONPATH": f"{probe}{os.pathsep}{ROOT}", "DREG_TIMES": str(tmp_path / "times.jsonl")}
    command = [sys.executable, "-m", "experiments", "run", "fig2", "--preset", "smoke", "--only", "bs2048-",
               "--parallel", "2", "--data-dir", str(data), "--no-verify", "--results", str(tmp_path),
               "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    logs = sorted((tmp_path / "smoke" / "logs").iterdir())
    assert [p.name for p in logs] == [
        "vgg16-cifar10-bs2048-base-m0.9-s0.log",
        "vgg16-cifar10-bs2048-dreg0.1-R1-m0.9-s0.log",
    ]
    assert all("done: best val/acc" in p.read_text() for p in logs)
    (a_start, a_end), (b_start, b_end) = [json.loads(x) for x in (tmp_path / "times.jsonl").read_text().splitlines()]
    assert max(a_start, b_start) < min(a_end, b_end)  # the two trained at the same time


def test_one_run_builds_one_lightning_module_and_each_default_is_written_once(data, tmp_path, monkeypatch):
    """train() builds the run's Classifier once; checking the settings builds none (only a tiny bare net)."""
    import experiments.train
    from lightning_modules import Classifier

    built = []

    def counting(**kwargs):
        built.append(kwargs["model"])
        return Classifier(**kwargs)

    monkeypatch.setattr(experiments.train, "Classifier", counting)
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    train(prepare(smoke(epochs=1), ex), ex)
    assert built == ["vgg16"]
    assert "Classifier" not in (ROOT / "experiments" / "config.py").read_text()  # validate() builds none
    sources = "".join(p.read_text() for p in (ROOT / "experiments").glob("*.py"))
    sources += "".join(p.read_text() for p in (ROOT / "lightning_modules").rglob("*.py"))
    assert len(re.findall(r"dreg_lambda: float = (?:setting\()?0\.1", sources)) == 1


def test_a_preset_can_set_a_network_its_own_layout(monkeypatch):
    """mini and quick give MobileNetV2 NCHW (by_model in presets.yaml): in every figure, in `train`, and in
    the name's defaults (no `nochannels_last`); an explicit setting still wins and is named."""
    import experiments.train
    from experiments.__main__ import main

    for preset in ("mini", "quick"):
        mobile = [r for name in FIGURE_NAMES for r in load_figure(name, preset).runs if r.model == "mobilenetv2"]
        assert mobile and not any(r.channels_last for r in mobile)
        assert not any("channels_last" in r.name for r in mobile)
        assert all(r.channels_last for r in load_figure("fig2", preset).runs)
    assert all(r.channels_last for r in load_figure("fig4", "paper").runs)
    forced = load_figure("fig4", "mini", overrides={"channels_last": True}).runs[0]
    assert forced.channels_last and "-channels_last-" in forced.name
    seen: list[RunConfig] = []
    monkeypatch.setattr(experiments.train, "train", lambda cfg, ex: seen.append(cfg) or {"state": "done"})
    assert main(["train", "--preset", "mini", "model=mobilenetv2"]) == 0
    assert main(["train", "--preset", "mini", "model=vgg16"]) == 0
    assert [c.channels_last for c in seen] == [False, True]


def test_bf16_where_it_is_emulated_is_refused_once_before_the_data_is_read(tmp_path, monkeypatch, capsys):
    """A CPU without AVX512-BF16 or AMX runs bf16 ~8x slower than fp32: a sweep says so in one line, before
    any run folder exists; a GPU, or a CPU with native bf16, passes."""
    from experiments.__main__ import main
    from experiments.train import bf16_is_native

    argv = ["run", "fig2", "--preset", "smoke", "--precision", "bf16-mixed", "--results", str(tmp_path / "results"),
            "--data-dir", str(tmp_path / "no-data")]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not bf16_is_native() and bf16_is_native("gpu")
    assert main(argv) == 2
    assert capsys.readouterr().err == ("error: precision bf16-mixed needs a CPU with native bf16 (AVX512-BF16 or "
                                       "AMX), which this one lacks: add --precision 32-true\n")  # fmt: skip
    assert not (tmp_path / "results").exists()
    assert main([*argv[:4], "--precision", "32-true", *argv[6:]]) == 2  # fp32 goes on, to the missing data
    assert "CIFAR-10 not found" in capsys.readouterr().err
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert main(argv) == 2 and "CIFAR-10 not found" in capsys.readouterr().err


def test_a_sweeps_run_is_built_and_checked_once_and_its_process_takes_it_as_it_is(data, tmp_path, monkeypatch):
    """The planning process builds each run of the figure once, checks and prepares each chosen run once, and
    hands it over; the run's own process (``train --prepared``) neither rebuilds nor re-checks it (it reads
    presets.yaml once and builds the preset's defaults once, for the run's name). The child runs in this
    process here, with the caches emptied as a new process has them, so that one counter sees both."""
    import types

    import experiments.__main__ as cli_main
    import experiments.config
    import experiments.train

    counts = {"built": 0, "checked": 0, "presets parsed": 0}
    post_init, validate, read_text = RunConfig.__post_init__, experiments.train.validate, Path.read_text

    def counted(key, function):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return function(*args, **kwargs)

        return wrapper

    def reading(path, *args, **kwargs):
        counts["presets parsed"] += path.name == "presets.yaml"
        return read_text(path, *args, **kwargs)

    in_child: list[dict[str, int]] = []
    run = subprocess.run

    def child(command, **kwargs):  # `python -m experiments train --prepared FILE`, in this process
        if command[1:4] != ["-m", "experiments", "train"]:
            return run(command, **kwargs)  # git, asked for the commit a record names
        before = dict(counts)
        experiments.config.load_presets.cache_clear()
        experiments.config.preset_defaults.cache_clear()
        code = cli_main.main(command[3:])
        in_child.append({key: counts[key] - before[key] for key in counts})
        return types.SimpleNamespace(returncode=code)

    experiments.config.load_presets.cache_clear()
    experiments.config.preset_defaults.cache_clear()
    monkeypatch.setattr(RunConfig, "__post_init__", counted("built", post_init))
    monkeypatch.setattr(experiments.train, "validate", counted("checked", validate))
    monkeypatch.setattr(Path, "read_text", reading)
    monkeypatch.setattr(subprocess, "run", child)
    monkeypatch.setattr(experiments.train, "_fit", lambda *args: {"state": "done"})
    args = ["run", "fig2", "--preset", "smoke", "--only", "bs2048-", "--results", str(tmp_path), "--data-dir",
            str(data), "--no-verify", "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    assert cli_main.main(args) == 0
    assert in_child == [{"built": 1, "checked": 0, "presets parsed": 1}] * 2  # the preset's defaults, for the name
    # fig2's 14 runs once each, the 2 chosen runs with their micro-batch made explicit, the preset's defaults once
    planning = {key: counts[key] - sum(child[key] for child in in_child) for key in counts}
    assert planning == {"built": 14 + 2 + 1, "checked": 2, "presets parsed": 1}
    with pytest.raises(ExperimentError, match="prepared run"):  # a run that skipped prepare() is not trained
        train(smoke(), Execution(results=tmp_path))


def test_the_evaluation_batch_changes_no_number(data, tmp_path):
    """How many images an evaluation batch holds is how a run executes, not what it computes: BatchNorm
    evaluates with its running statistics, so validation and test accuracies are the same to the bit."""
    tables, finals = [], []
    for eval_batch in (None, 7):
        ex = Execution(results=tmp_path / str(eval_batch), data_dir=data, verify=False, accelerator="cpu",
                       progress=False, eval_batch=eval_batch)  # fmt: skip
        cfg = prepare(smoke(epochs=2, model="resnet18"), ex)
        final = train(cfg, ex)
        finals.append({k: final[k] for k in ("best_val_acc", "test_acc", "test_acc_paths")})
        tables.append(pd.read_csv(run_dir(cfg, ex.results) / "metrics.csv").drop(columns="epoch_time"))
    pd.testing.assert_frame_equal(*tables, check_exact=True)
    assert finals[0] == finals[1]
