"""A damaged run record never becomes a published number: every reader checks the record where it reads it, the
analysis leaves a damaged run out of every figure, claim and table and names it in one line (``--strict``: an
error), and the experiment commands stop with one line naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from analysis import claims as cl
from analysis.__main__ import main as analysis
from analysis.fake_records import write_fake_records
from analysis.records import damaged_runs, load_figure_records, load_results
from experiments.__main__ import main as experiments
from experiments.run_files import DamagedRecord, read_record

VICTIM = "vgg16-cifar10-bs30720-base-m0.9-s0"  # a finished baseline: its best would set Fig. 2's 30k target


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def drop_row(index: int) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        rows = lines(run / "metrics.csv")
        (run / "metrics.csv").write_text("".join(rows[:index] + rows[index + 1 :]))

    return damage


def edit_status(change: dict) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps({**status, **change}))

    return damage


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / name).write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


DAMAGE = {
    "metrics.csv cut mid-line": lambda run: (run / "metrics.csv").write_text((run / "metrics.csv").read_text()[:-9]),
    "an epoch missing": drop_row(1),
    "fewer rows than a done run's epochs": drop_row(-1),
    "a best that is not the metrics' maximum": edit_status({"best_val_acc": 0.99}),
    "a diverged epoch the metrics do not end at": edit_status({"state": "diverged", "diverged_epoch": 7}),
    "metrics.csv not text": write("metrics.csv", b"\xff\xfe\x00bad"),
    "status.json not JSON": write("status.json", '{"state": "done"'),
    "status.json without a state": write("status.json", "[]"),
    "config.yaml empty": write("config.yaml", ""),
    "config.yaml not YAML": write("config.yaml", "run: [vgg16\n"),
    "config.yaml without run settings": write("config.yaml", "run_name: x\n"),
}


@pytest.fixture
def damaged(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    write_fake_records(tmp_path, "fig2", "smoke")
    DAMAGE[request.param](tmp_path / "smoke" / VICTIM)
    return tmp_path


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_a_damaged_record_is_named_and_left_out_of_every_number(damaged, capsys):
    with pytest.raises(DamagedRecord, match=VICTIM):
        read_record(damaged / "smoke" / VICTIM)
    assert list(damaged_runs(damaged / "smoke")) == [VICTIM]
    records = load_figure_records("fig2", damaged, "smoke")
    assert VICTIM not in set(records.table["run_name"]) and VICTIM not in set(load_results(damaged, "smoke").run_name)
    row = cl.comparisons(records).set_index("batch_size").loc[30720]
    assert row["base_state"] == "missing" and pd.isna(row["speedup"])  # no target from the damaged baseline

    out = damaged / "out"
    for command in (["report", "--out", str(out / "report.md")], ["figure", "fig2", "--out", str(out)],
                    ["stability", "--out", str(out)], ["summary", "--out", str(out / "REPORT.md")]):  # fmt: skip
        preset = [] if command[0] == "summary" else ["--preset", "smoke"]
        code = analysis([*command, "--results", str(damaged), *preset])
        err = capsys.readouterr().err.splitlines()
        if command[0] == "summary":  # the summary reads the scales that test the paper: no smoke records there
            assert code == 2 and len(err) == 1
            continue
        assert code == 0 and len(err) == 1 and err[0].startswith("warning: damaged record") and VICTIM in err[0]
    report = (out / "report.md").read_text()
    assert f"damaged record, left out of every number above: {damaged / 'smoke' / VICTIM}" in report


@pytest.mark.parametrize("damaged", ["an epoch missing", "status.json not JSON"], indirect=True)
def test_strict_makes_a_damaged_record_an_error_and_writes_nothing(damaged, capsys):
    out = damaged / "out"
    assert analysis(["report", "--preset", "smoke", "--results", str(damaged), "--out", str(out), "--strict"]) == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert err.startswith("error: damaged record") and VICTIM in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("damaged", ["status.json not JSON", "status.json without a state"], indirect=True)
@pytest.mark.parametrize("command", ["status", "run"])
def test_the_experiment_commands_stop_at_a_damaged_status_with_one_line(damaged, command, capsys):
    before = sorted(p.relative_to(damaged) for p in damaged.rglob("*"))
    only = ["--only", "bs30720-"] if command == "run" else []
    status = experiments([command, "fig2", "--preset", "smoke", *only, "--results", str(damaged)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    (err,) = captured.err.splitlines()
    assert err.startswith("error: ") and f"{VICTIM}/status.json" in err
    assert sorted(p.relative_to(damaged) for p in damaged.rglob("*")) == before


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path, data, monkeypatch, capsys):
    """An interrupted run whose folder is read-only (a results folder copied without permissions): one line naming
    the folder and the fix, exit 2, nothing written. (The check is os.access; as root every folder is writable,
    so the test also tells os.access the truth a normal user would get.)"""
    import os

    from experiments.config import RunConfig, preset_settings
    from experiments.records import claim_run_dir
    from experiments.train import Execution, resolve, run_dir

    cfg = resolve(RunConfig.from_dict(preset_settings("smoke", RunConfig.model)), Execution())
    folder = run_dir(cfg, tmp_path)
    claim_run_dir(cfg, folder)
    (folder / "status.json").write_text('{"state": "running"}')
    folder.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and Path(p).parent != folder and Path(p) != folder)
    before = sorted(p.name for p in folder.iterdir())
    try:
        argv = ["train", "--preset", "smoke", "--data-dir", str(data), "--no-verify", "--results", str(tmp_path),
                "--accelerator", "cpu", "--no-progress"]  # fmt: skip
        assert experiments(argv) == 2
    finally:
        folder.chmod(0o755)
    (err,) = capsys.readouterr().err.splitlines()
    assert err.startswith(f"error: cannot write the run folder {folder}") and "chmod" in err
    assert sorted(p.name for p in folder.iterdir()) == before
