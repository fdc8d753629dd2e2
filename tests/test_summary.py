"""The summary page (results/committed/REPORT.md): one command from the committed records, and a sample of its
numbers recomputed here by hand from the runs' metrics.csv, without the analysis code."""

import re
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.summary import build_summary

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "committed"
MINI = COMMITTED / "mini"


@pytest.fixture(scope="module")
def summary() -> str:
    return build_summary(COMMITTED)


def row(summary: str, starts: str) -> str:
    (line,) = [line for line in summary.splitlines() if line.startswith(f"| {starts}")]
    return line


def seeds(run: str) -> set[int]:
    return {int(p.name.rsplit("-s", 1)[1]) for p in MINI.glob(f"{run}-s*") if (p / "status.json").exists()}


def mean_curve(run: str, shared: set[int]) -> pd.Series:
    """Validation accuracy per 1-based epoch, the mean over ``shared`` seeds."""
    frames = [pd.read_csv(MINI / f"{run}-s{s}" / "metrics.csv").set_index("epoch")["val/acc"] for s in sorted(shared)]
    curve = pd.concat(frames, axis=1).mean(axis=1)
    curve.index = curve.index + 1
    return curve


def first_at(curve: pd.Series, target: float) -> int | None:
    hits = curve[curve >= target]
    return int(hits.index[0]) if len(hits) else None


def pair(base: str, dreg: str) -> tuple[pd.Series, pd.Series]:
    shared = seeds(base) & seeds(dreg)
    return mean_curve(base, shared), mean_curve(dreg, shared)


def test_the_summary_is_one_command_from_the_committed_records(tmp_path, capsys):
    assert main(["summary", "--results", str(COMMITTED), "--out", str(tmp_path / "REPORT.md")]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert text.startswith("# DReg replication: summary") and "## The mechanism questions (M1-M10)" in text
    assert main(["summary", "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run records under") and err.count("\n") == 1


def test_the_worked_example_and_a_speedup_match_the_metrics(summary):
    base, dreg = pair("vgg16-cifar10-bs4096-base-m0.9", "vgg16-cifar10-bs4096-dreg0.1-R1-m0.9")
    best = base.max()
    reached = first_at(dreg, best)
    words = f"the baseline's best {100 * best:.1f}% first in epoch {first_at(base, best)}; DReg "
    words += "never reaches it" if reached is None else f"reaches it in epoch {reached}"
    assert words in row(summary, "§5, Fig. 2 (a)")

    base, dreg = pair("vgg16-cifar10-bs30720-base-m0.9", "vgg16-cifar10-bs30720-dreg0.1-R1-m0.9")
    speedup = first_at(base, base.max()) / first_at(dreg, base.max())
    assert f"30k: {speedup:.2f}x" in row(summary, "Fig. 2, VGG16")


def test_the_mechanism_answers_match_the_metrics(summary):
    line, speedups = row(summary, "M1:"), []
    for seed in (0, 1, 2):
        base = mean_curve("vgg16-cifar10-bs30720-base-m0.9", {seed})
        dreg = mean_curve("vgg16-cifar10-bs30720-dreg0.1-R1-m0.9", {seed})
        speedups.append(first_at(base, base.max()) / first_at(dreg, base.max()))
        assert f"seed {seed}: {speedups[-1]:.2f}x" in line
    assert ("**yes**" in line) == (min(speedups) >= 1.25)  # the rule of M1: >= 1.25 in every seed


def test_m7_names_the_runs_it_checked(summary):
    """M7 checks every DReg run of the scale, the CIFAR-100 figures' too, not only the mechanism study's."""
    assert "| `mini`, CIFAR-10 and CIFAR-100, seeds 0-2 |" in row(summary, "M7")


def test_the_readme_results_are_short_and_their_numbers_are_the_summarys():
    section = (ROOT / "README.md").read_text().split("\n## Results\n")[1].split("\n## ")[0]
    assert len(section.splitlines()) <= 60
    summary = (COMMITTED / "REPORT.md").read_text()
    numbers = re.findall(r"[-+]?\d+\.\d+(?:x|%| pts)|rho [-+]\d\.\d\d|\d+ of \d+ decided runs", section)
    assert len(numbers) >= 10
    assert [n for n in numbers if n not in summary] == []
