"""The analysis: claim metrics on curves with known answers, the tidy loader, figures, report, CLI."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.collections import PolyCollection

from analysis import claims as cl
from analysis.__main__ import main
from analysis.fake_records import write_fake_records, write_run
from analysis.figures import draw, render
from analysis.records import AnalysisError, Curve, curves, load_figure_records, load_results, read_run
from analysis.report import ANSWERS_HEADING, build_report
from analysis.verdicts import analyze
from experiments.config import RunConfig
from experiments.specs import FIGURE_NAMES, load_figure


def ramp(best: float, reach: int, epochs: int = 30) -> np.ndarray:
    """A curve that rises linearly to ``best`` at epoch ``reach`` (1-based) and stays there."""
    e = np.arange(1, epochs + 1)
    return best * (np.minimum(e, reach) / reach)


def curve(acc: np.ndarray) -> Curve:
    return Curve(run="r", epochs=np.arange(1, len(acc) + 1), mean=acc)


# --- claim metrics on hand-made curves --------------------------------------------------------------------


def test_speedup_is_baseline_epoch_over_dreg_epoch():
    base, dreg = curve(ramp(0.8, 30)), curve(ramp(0.85, 10) * 0.8 / 0.85)
    assert cl.first_epoch_reaching(base.epochs, base.mean, 0.8) == 30
    assert cl.first_epoch_reaching(dreg.epochs, dreg.mean, 0.8) == 10
    assert cl.speedup(base.epochs, base.mean, dreg.epochs, dreg.mean) == pytest.approx(3.0)
    assert (
        cl.speedup(base.epochs, base.mean, base.epochs, base.mean) == 1.0
    )  # 1-based epochs: reaching it together is no speed-up


def test_dreg_that_never_reaches_the_target_has_no_speedup():
    base, dreg = curve(ramp(0.8, 30)), curve(ramp(0.7, 5))
    assert cl.first_epoch_reaching(dreg.epochs, dreg.mean, 0.8) is None
    assert cl.speedup(base.epochs, base.mean, dreg.epochs, dreg.mean) is None
    assert cl.fmt_speedup(None) == "never"


def test_spearman():
    assert cl.spearman([1, 2, 3, 4], [10, 20, 25, 40]) == pytest.approx(1.0)
    assert cl.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert cl.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert np.isnan(cl.spearman([1, 2, 3], [5, 5, 5]))


def write_curves(results: Path, figure: str, acc: dict[str, np.ndarray], state: str = "done") -> None:
    """Hand-made curves for runs of ``figure`` whose name contains a key of ``acc``."""
    for cfg in load_figure(figure, "smoke").runs:
        for key, values in acc.items():
            if key in cfg.name:
                write_run(results, cfg, values, state)


def fig2_speedups(results: Path, dreg_epochs: list[int], running: str = "") -> list[cl.Claim]:
    """Fig. 2 with the baselines reaching 0.8 at epoch 30, DReg at ``dreg_epochs`` (per batch size, 0: never)."""
    batches = sorted({r.batch_size for r in load_figure("fig2", "smoke").runs})
    for batch, epoch in zip(batches, dreg_epochs, strict=True):
        state = "running" if running and f"bs{batch}-" in running else "done"
        write_curves(results, "fig2", {f"bs{batch}-base": ramp(0.8, 30)}, state)
        write_curves(results, "fig2", {f"bs{batch}-dreg": ramp(0.8, epoch) if epoch else ramp(0.6, 5)})
    return analyze(load_figure_records("fig2", results, "smoke")).claims


def test_convergence_claims_reproduced(tmp_path):
    claims = fig2_speedups(tmp_path, [15, 14, 12, 10, 8, 6, 5])  # speed-ups 2 ... 6, growing with batch
    assert [c.verdict for c in claims] == [cl.REPRODUCED] * 3
    assert [c.before for c in claims] == [cl.REPRODUCED, cl.REPRODUCED, cl.NO_RULE]
    assert "median 3.00x" in claims[0].measured and "2k: 2.00x" in claims[0].measured
    assert "rho +1.00 over 7" in claims[1].measured
    # the accuracy gap over panels (b) and (c): DReg's ramp to 80% at epoch k against the baseline's at 30
    gaps = [0.8 * (np.minimum(np.arange(1, 31), k) / k - np.arange(1, 31) / 30).mean() for k in (12, 10, 8, 6, 5)]
    assert f"mean gap {100 * np.mean(gaps):+.1f} pts" in claims[2].measured


def test_a_trend_ranks_only_measured_speedups(tmp_path):
    """SPEC 8.4: 'never' is reported, not ranked. Before it, three 'never' tied at 0 below four equal speed-ups
    made a growing trend (rho +0.87) out of speed-ups that are all 1."""
    claims = fig2_speedups(tmp_path, [0, 0, 0, 30, 30, 30, 30])
    assert claims[1].verdict == "not decidable: noise" and claims[1].before == cl.REPRODUCED
    assert "4 measured values lie within a factor 1.25" in claims[1].measured


def test_a_trend_from_one_finite_speedup_is_an_artefact(tmp_path):
    """Fig. 2 `mini`'s case: six batch sizes never reach the target, one does; rho +0.61 whatever its value."""
    claims = fig2_speedups(tmp_path, [0, 0, 0, 0, 0, 0, 20])
    assert claims[1].verdict == "not decidable: artefact" and claims[1].before == cl.REPRODUCED
    assert "1 setting(s) with a measured value" in claims[1].measured and "rho +0.61" in claims[1].measured


def test_speedups_within_a_factor_1_25_decide_nothing(tmp_path):
    """Fig. 5 `quick`'s case: speed-ups 13/14 ... all below 1 made a 'reproduced' trend; under SPEC 8.4 they are
    ties, and so is 'faster above 6k' at 1.1x; a clear win (>= 1.25x) decides it, and so does a clear loss."""
    fig5 = {r.batch_size: r for r in load_figure("fig5", "smoke").runs if r.dreg_site}
    reach = {2048: 30, 4096: 30, 6144: 29, 8192: 28, 10240: 28, 20480: 27, 30720: 27}  # 1.00x ... 1.11x

    def claims(reach: dict[int, int]) -> list[cl.Claim]:
        for batch, cfg in fig5.items():
            write_run(tmp_path, dataclasses.replace(cfg, dreg_site=None), ramp(0.8, 30))
            write_run(tmp_path, cfg, ramp(0.8, reach[batch]))
        return analyze(load_figure_records("fig5", tmp_path, "smoke")).claims

    tied = claims(reach)
    assert [c.verdict for c in tied] == ["not decidable: noise"] * 2
    assert [c.before for c in tied] == [cl.REPRODUCED, cl.REPRODUCED]
    faster = claims({**reach, 8192: 20, 10240: 20, 20480: 15, 30720: 10})
    assert [c.verdict for c in faster] == [cl.REPRODUCED, cl.REPRODUCED]
    slower = claims({**reach, 30720: 40})  # never reaches it in 30 epochs
    assert slower[0].verdict == slower[0].before == cl.NOT_REPRODUCED


def test_convergence_claims_not_reproduced_when_dreg_never_reaches(tmp_path):
    claims = fig2_speedups(tmp_path, [0, 0, 0, 30, 30, 30, 30])  # never counts as 0; 30 / 30 = 1
    assert claims[0].verdict == claims[0].before == cl.NOT_REPRODUCED
    assert "2k: never" in claims[0].measured and "median 1.00x" in claims[0].measured


def test_a_baseline_at_chance_sets_no_target(tmp_path):
    """A flat 10% baseline (eval never left chance on CIFAR-10) would give DReg at 10% a 1.00x speed-up and,
    against never-reached smaller batches, a spurious growing trend; it sets no target instead."""
    fig2_speedups(tmp_path, [0] * 7)
    for batch in (20480, 30720):
        write_curves(tmp_path, "fig2", {f"bs{batch}-base": np.full(30, 0.1), f"bs{batch}-dreg": np.full(30, 0.1)})
    records = load_figure_records("fig2", tmp_path, "smoke")
    table = cl.comparisons(records)
    chance = table[table["batch_size"] >= 20480]
    assert chance["base_at_chance"].all() and chance["speedup"].isna().all()
    assert (chance["per_seed"] == cl.NO_TARGET).all() and not table["base_at_chance"].iloc[0]
    claims = analyze(records).claims
    assert [c.verdict for c in claims[:2]] == [cl.NOT_REPRODUCED, "not decidable: artefact"]
    assert claims[1].before == cl.NOT_REPRODUCED and "over 5 settings" in claims[1].measured
    assert "30k: no target (baseline at chance)" in claims[0].measured
    assert "20k" not in claims[2].measured  # a pair at chance has no accuracy gap


def test_every_run_at_chance_is_not_decidable(tmp_path):
    """Figs. 6 (a), 7 (a), 8 (a) at `quick`: every run at chance read 'not reproduced' (and controls (a), in the
    same state, 'not enough data'); under SPEC 8.4 all are 'not decidable: at chance'."""
    verdicts, before = [], []
    for figure in ("fig6", "fig7", "fig8", "controls"):
        for cfg in load_figure(figure, "smoke").runs:
            write_run(tmp_path, cfg, np.full(10, 0.01 if cfg.model == "mobilenetv2" else 0.3))
        claims = [c for c in analyze(load_figure_records(figure, tmp_path, "smoke")).claims if c.panel == "a"]
        verdicts += [c.verdict for c in claims]
        before += [c.before for c in claims]
    assert set(verdicts) == {"not decidable: at chance"}
    assert set(before) == {cl.NOT_REPRODUCED, cl.NOT_ENOUGH}


def test_claims_need_finished_runs(tmp_path):
    claims = fig2_speedups(tmp_path, [15, 14, 12, 10, 8, 6, 5], running="bs30720-")
    assert [c.verdict for c in claims] == [cl.NOT_ENOUGH] * 3


def test_a_comparison_averages_only_the_seeds_both_runs_have(tmp_path):
    base, dreg = (next(c for c in load_figure("fig2", "smoke").runs if c.batch_size == 30720 and key in c.name)
                  for key in ("-base", "-dreg"))  # fmt: skip
    for cfg, seed, acc in ((base, 0, ramp(0.8, 30)), (base, 1, ramp(0.6, 10)), (dreg, 0, ramp(0.8, 15))):
        write_run(tmp_path, RunConfig.from_dict({**cfg.to_dict(), "seed": seed}), acc)

    def row() -> dict:
        table = cl.comparisons(load_figure_records("fig2", tmp_path, "smoke"))
        return table[table["batch_size"] == 30720].iloc[0].to_dict()

    # over both baseline seeds the target would be 70% and the speed-up 30 / 14; over seed 0 alone it is 30 / 15
    assert (row()["seeds"], row()["base_best"], row()["speedup"]) == ("0", pytest.approx(0.8), pytest.approx(2.0))
    write_run(tmp_path, RunConfig.from_dict({**dreg.to_dict(), "seed": 1}), ramp(0.6, 5))
    assert (row()["seeds"], row()["base_best"], row()["speedup"]) == ("0-1", pytest.approx(0.7), pytest.approx(2.0))


def test_site_lambda_momentum_rankings_and_controls(tmp_path):
    best = {"R1": 0.7, "R2": 0.68, "R3": 0.66, "R4": 0.5, "R5": 0.64, "R6": 0.62, "R7": 0.6}
    for cfg in load_figure("fig6", "smoke").runs:
        write_run(tmp_path, cfg, ramp(best.get(cfg.dreg_site, 0.55), 10))
    fig6 = {
        (c.panel, c.statement.split(": ")[1]): c for c in analyze(load_figure_records("fig6", tmp_path, "smoke")).claims
    }
    assert fig6["a", "DReg closer to the output works better"].verdict == cl.REPRODUCED
    assert fig6["a", "DReg closer to the output works better"].measured.startswith("R1 70.0% > R2 68.0% > R3 66.0%")
    # R4 at 0.5 < 0.55, but 100 validation images give a margin of 14.1 points: every gain is inside the noise
    beats = fig6["a", "every site beats the baseline"]
    assert (beats.verdict, beats.before) == ("not decidable: noise", cl.NOT_REPRODUCED)
    assert "R4: -5.0 pts, margin 14.1" in beats.measured
    assert fig6["b", "DReg closer to the output works better"].verdict == cl.REPRODUCED
    assert ("b", "every site beats the baseline") not in fig6  # the paper claims it for MobileNetV2 only

    lam = {0.001: 0.72, 0.01: 0.71, 0.1: 0.7, 1.0: 0.6, 0.0: 0.65}
    for cfg in load_figure("fig7", "smoke").runs:
        write_run(tmp_path, cfg, ramp(lam[cfg.dreg_lambda] if cfg.dreg_site else 0.62, 10))
    fig7 = analyze(load_figure_records("fig7", tmp_path, "smoke")).claims
    assert [c.before for c in fig7] == [cl.NOT_REPRODUCED, cl.REPRODUCED] * 2  # λ=1 loses to the baseline by 2 pts
    assert [c.verdict for c in fig7] == ["not decidable: noise"] * 4  # every gain and the 12-point range: noise
    assert "λ=1: -2.0 pts" in fig7[0].measured and "λ=0.001 72.0% > λ=0.01 71.0%" in fig7[0].measured

    for cfg in load_figure("fig8", "smoke").runs:  # gain 0.02, 0.05, 0.1 at momentum 0, 0.5, 0.9
        gain = {0: 0.02, 0.5: 0.05, 0.9: 0.1}[cfg.momentum] if cfg.dreg_site else 0
        write_run(tmp_path, cfg, ramp(0.5 + gain, 10))
    fig8 = analyze(load_figure_records("fig8", tmp_path, "smoke")).claims
    assert [c.before for c in fig8] == [cl.REPRODUCED] * 4
    assert [c.verdict for c in fig8] == ["not decidable: noise"] * 4  # Fig. 8 (b) `quick`'s case

    for cfg in load_figure("controls", "smoke").runs:  # baseline at 20, mean at 10, cosine never, λ=0 at 5
        reach = 20 if cfg.dreg_site is None else 5 if cfg.dreg_lambda == 0 else 10
        top = 0.5 if cfg.dreg_form == "cosine" else 0.6
        write_run(tmp_path, cfg, ramp(top, reach))
    controls = analyze(load_figure_records("controls", tmp_path, "smoke")).claims
    assert [c.verdict for c in controls] == [cl.YES, cl.NO, cl.NO] * 2
    assert controls[0].measured == "speed-ups mean: 2.00x"
    assert controls[2].measured == "speed-ups paper: 2.00x, lambda0: 4.00x"


def test_gains_that_clear_the_noise_decide_and_three_seeds_use_the_bootstrap(tmp_path):
    """At 100 validation images the one-seed margin near 40% is 13.9 points: gains of 20-45 points clear it, one of
    -20 decides against. With three seeds the paired bootstrap interval of the mean gain decides instead; with
    exactly three it is their range, so one seed of the other sign leaves the claim open."""
    runs = load_figure("fig8", "smoke").runs

    def claims(folder: str, gains: dict[float, list[float]]) -> tuple[list[cl.Claim], pd.DataFrame]:
        for cfg in runs:
            for seed, gain in enumerate(gains[cfg.momentum]):
                top = 0.4 + (gain if cfg.dreg_site else 0)
                write_run(tmp_path / folder, RunConfig.from_dict({**cfg.to_dict(), "seed": seed}), ramp(top, 10))
        analysis = analyze(load_figure_records("fig8", tmp_path / folder, "smoke"))
        return [c for c in analysis.claims if c.panel == "b"], analysis.table

    one, _ = claims("one", {0: [0.2], 0.5: [0.3], 0.9: [0.45]})
    assert [c.verdict for c in one] == [cl.REPRODUCED, cl.REPRODUCED]
    assert "m=0: +20.0 pts, margin 13.9" in one[0].measured
    against, _ = claims("against", {0: [-0.2], 0.5: [0.3], 0.9: [0.45]})
    assert against[0].verdict == cl.NOT_REPRODUCED
    three, table = claims("three", {0: [0.2, 0.25, 0.3], 0.5: [0.3, 0.3, 0.35], 0.9: [0.45, 0.4, 0.5]})
    assert [c.verdict for c in three] == [cl.REPRODUCED, cl.REPRODUCED]
    assert "m=0: +25.0 pts over 3 seeds, 95% interval [+20.0, +30.0]" in three[0].measured
    assert "median 1.43x, 95% interval [1.43, 1.67]" in table["per_seed"].iloc[0]
    split, _ = claims("split", {0: [0.2, 0.25, -0.05], 0.5: [0.3, 0.3, 0.35], 0.9: [0.45, 0.4, 0.5]})
    assert split[0].verdict == "not decidable: noise" and split[0].before == cl.REPRODUCED


def test_a_trend_over_three_seeds_pairs_them(tmp_path):
    """Fig. 6 (b)'s sites 2 points apart: inside one seed's 14-point margin (100 validation images), so seed 0
    alone is "noise". Three seeds that agree on every pair's order decide it, either way; seeds that disagree on
    every pair leave it open."""
    runs = [c for c in load_figure("fig6", "smoke").runs if c.model == "resnet18"]

    def verdict(folder: str, best: dict[str | None, float], shifts: list[float], flip: int | None = None) -> cl.Claim:
        for seed, shift in enumerate(shifts):
            for cfg in runs:
                level = best[cfg.dreg_site]
                if seed == flip and cfg.dreg_site:
                    level = 1.26 - level  # this seed ranks the sites the other way
                seeded = RunConfig.from_dict({**cfg.to_dict(), "seed": seed})
                write_run(tmp_path / folder, seeded, ramp(level + shift, 10))
        claims = analyze(load_figure_records("fig6", tmp_path / folder, "smoke")).claims
        return next(c for c in claims if c.panel == "b")

    closer = {None: 0.5, "R1": 0.66, "R2": 0.64, "R3": 0.62, "R4": 0.6}
    assert verdict("one", closer, [0.0]).verdict == "not decidable: noise"
    three = verdict("three", closer, [0.0, 0.05, -0.05])
    assert three.verdict == cl.REPRODUCED and "Spearman rho -1.00 over 4 settings" in three.measured
    farther = {site: 1.26 - acc if site else acc for site, acc in closer.items()}
    assert verdict("against", farther, [0.0, 0.05, -0.05]).verdict == cl.NOT_REPRODUCED
    split = verdict("split", closer, [0.0, 0.05, -0.05], flip=2)  # seed 2 ranks the sites the other way
    assert split.verdict == "not decidable: noise"
    assert "no pair's paired 95% interval over seeds 0-2 excludes 0" in split.measured
    table = cl.comparisons(load_figure_records("fig6", tmp_path / "three", "smoke"))
    r1 = table[(table["model"] == "resnet18") & (table["dreg_site"] == "R1")].iloc[0]
    assert "best (baseline / DReg): seed 0 50.0% / 66.0%, seed 1 55.0% / 71.0%, seed 2 45.0% / 61.0%" in r1["per_seed"]


# --- the tidy loader ---------------------------------------------------------------------------------------


def write_by_hand(folder: Path, cfg: RunConfig, rows: str, status: dict) -> Path:
    """A run folder written as the experiments write it, without their code."""
    run_dir = folder / cfg.preset / cfg.name
    run_dir.mkdir(parents=True)
    record = {"run_name": cfg.name, "run": {**cfg.to_dict(), "micro_batch": 16}, "versions": {}, "git_commit": "x"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(record))
    (run_dir / "metrics.csv").write_text(rows)
    (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir


def test_loader_reads_hand_written_records(tmp_path):
    base, dreg = load_figure("fig2", "smoke").runs[:2]
    write_by_hand(
        tmp_path,
        base,
        "epoch,step,val/acc,train/ce,train/loss,train/lr,epoch_time\n"
        "0,25,0.1,2.3,2.3,0.1,0.6\n1,50,0.3,1.9,1.9,0.1,0.5\n2,75,0.2",
        {"state": "running"},
    )  # cut line
    write_by_hand(tmp_path, dreg, "epoch,step,val/acc_R,val/acc_L,val/acc,dreg/distance\n0,25,0.2,0.25,0.25,3.5\n",
                  {"state": "diverged", "diverged_epoch": 1, "best_val_acc": 0.25, "best_epoch": 0})  # fmt: skip
    table = read_run(tmp_path / "smoke" / base.name)
    assert list(table["epochs_trained"]) == [1, 2]  # the line cut short by a crash is dropped
    assert list(table["val/acc"]) == [0.1, 0.3]
    assert (table["state"] == "running").all() and (table["micro_batch"] == 16).all()
    assert table["run"].iloc[0] == "vgg16-cifar10-bs2048-base-m0.9"

    every = load_results(tmp_path, "smoke")
    assert len(every) == 3 and set(every["state"]) == {"running", "diverged"}
    assert every.loc[every["dreg_site"] == "R1", "dreg/distance"].iloc[0] == 3.5

    records = load_figure_records("fig2", tmp_path, "smoke")
    assert set(records.table["panel"]) == {"a"} and records.seeds == [0]
    assert len(records.missing["a"]) == 2 and len(records.missing["c"]) == 4
    (line,) = [c for c in curves(records)["a"] if c.config.dreg_site]
    assert line.state == "diverged" and line.diverged_at == (1,)


def test_loader_errors_and_seeds_and_dataset_fallback(tmp_path):
    with pytest.raises(AnalysisError, match="no run records"):
        load_results(tmp_path, "smoke")
    with pytest.raises(AnalysisError, match="unknown preset"):
        load_figure_records("fig2", tmp_path, "huge")
    with pytest.raises(AnalysisError, match="unknown figure"):
        load_figure_records("fig9", tmp_path, "smoke")
    write_fake_records(tmp_path, "fig7", seeds=2, dataset="cifar10")
    records = load_figure_records("fig7", tmp_path, "smoke")
    assert records.seeds == [0, 1] and records.dataset == "cifar10" and records.paper_dataset == "cifar100"
    assert "showing the runs made on cifar10" in records.notes[0]
    assert all(len(c.seeds) == 2 for panel in curves(records).values() for c in panel)
    write_fake_records(tmp_path, "fig2")
    fig3 = load_figure_records("fig3", tmp_path, "smoke")  # Fig. 3 on CIFAR-10 is Fig. 2: not shown twice
    assert not len(fig3.table) and "this figure's runs are fig2's" in fig3.notes[0]


# --- figures -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_each_figure_has_the_papers_panels_and_lines(tmp_path, name):
    write_fake_records(tmp_path, name)
    rendered = render(name, tmp_path, "smoke", tmp_path / "out")
    assert [p.name for p in rendered.paths] == [f"{name}.png", f"{name}.pdf"]
    assert all(p.stat().st_size > 1000 for p in rendered.paths)
    spec = load_figure(name, "smoke")
    axes = rendered.figure.axes
    assert len(axes) == len(spec.panels)
    assert [len(ax.get_lines()) for ax in axes] == [len(r) for r in spec.panels.values()]
    assert "scale: preset smoke" in rendered.figure.get_suptitle()


def test_convergence_figure_styles_diverged_missing_and_seeds(tmp_path):
    write_fake_records(tmp_path, "fig2", seeds=2, diverged=["bs2048-dreg0.1-R1-m0.9-s1"], skip=["bs4096-dreg"])
    rendered = render("fig2", tmp_path, "smoke", tmp_path)
    a = rendered.figure.axes[0]
    assert len(a.get_lines()) == 3  # 2k baseline and DReg, 4k baseline; 4k DReg missing
    lines = {line.get_label(): line for line in a.get_lines()}
    dreg = lines["BS 2k DReg (2 seeds, 1 diverged)"]
    assert dreg.get_marker() == "x" and dreg.get_linestyle() == "-"
    assert lines["BS 2k baseline (2 seeds)"].get_linestyle() == "--"
    assert lines["BS 2k baseline (2 seeds)"].get_color() == dreg.get_color()
    assert len([c for c in a.collections if isinstance(c, PolyCollection)]) == 3  # a min-max band per line
    assert any("BS 4k DReg" in note for note in rendered.notes)
    assert "BS 4k DReg" in rendered.figure.get_supxlabel()


def test_a_figure_draws_the_panels_it_has_records_for(tmp_path):
    """`make demo` trains Fig. 2's 2k pair only: its figure is panel (a), the runs of (b) and (c) listed under it."""
    write_fake_records(tmp_path, "fig2", skip=["bs6144", "bs8192", "bs10240", "bs20480", "bs30720"])
    rendered = render("fig2", tmp_path, "smoke", tmp_path)
    assert len(rendered.figure.axes) == 1 and "(b) BS 6k baseline" in rendered.figure.get_supxlabel()
    assert "(c) BS 20k baseline" in rendered.figure.get_supxlabel()


def test_single_seed_diverged_run_is_marked(tmp_path):
    write_fake_records(tmp_path, "fig7", diverged=["resnet18-cifar100-bs30720-dreg1-"])
    b = render("fig7", tmp_path, "smoke", tmp_path).figure.axes[1]
    (line,) = [line for line in b.get_lines() if "(diverged)" in line.get_label()]
    assert line.get_label() == "DReg λ=1 (diverged)" and line.get_marker() == "x"
    assert [t.get_text() for t in b.get_legend().get_texts()].count("DReg λ=1 (diverged)") == 1


def test_a_crowded_panel_has_its_legend_under_it(tmp_path):
    write_fake_records(tmp_path, "mechanism")
    a, b = render("mechanism", tmp_path, "smoke", tmp_path).figure.axes  # 13 lines in (a), 5 in (b)
    assert a.get_legend().get_window_extent().y1 < a.get_window_extent().y0
    assert b.get_window_extent().contains(*b.get_legend().get_window_extent().p0)


# --- report and CLI ----------------------------------------------------------------------------------------


def test_report_states_each_claim_with_a_verdict(tmp_path):
    fig2_speedups(tmp_path, [15, 14, 12, 10, 8, 6, 5])
    text = build_report(tmp_path, "smoke")
    assert "**reproduced** (fig2): DReg reaches the baseline's best validation accuracy 2-3x sooner." in text
    assert "**reproduced** (fig2): the speed-up grows with batch size." in text
    assert "**not enough data** (fig6 (a)): MobileNetV2: DReg closer to the output works better." in text
    assert "Paper claims: 3 reproduced, 0 not reproduced, 0 not decidable, 18 not enough data." in text
    assert "| a | BS 2k (run: 16) | 0 | 80.0% (30) | 80.0% | 80.0% (15) | 80.0% | 30 / 15 (" in text


def test_cli(tmp_path, capsys):
    assert main(["figure", "fig9", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: unknown figure 'fig9': choose one of " + ", ".join(FIGURE_NAMES) + "\n"
    assert main(["report", "--results", str(tmp_path), "--preset", "smoke"]) == 2
    assert capsys.readouterr().err.startswith("error: no run records under")
    assert main(["figure", "fig2", "--results", str(tmp_path), "--preset", "huge"]) == 2
    assert capsys.readouterr().err == "error: unknown preset 'huge': choose one of paper, mini, quick, full, smoke\n"
    with pytest.raises(SystemExit) as exit_:
        main(["plot"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    write_fake_records(tmp_path, "fig8")
    assert main(["figure", "fig8", "--results", str(tmp_path), "--preset", "smoke", "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [f"wrote {tmp_path / 'o' / 'fig8.png'}",
                                                        f"wrote {tmp_path / 'o' / 'fig8.pdf'}"]  # fmt: skip
    assert main(["report", "--results", str(tmp_path), "--preset", "smoke"]) == 0
    assert (tmp_path / "smoke" / "analysis" / "report.md").exists()


# --- the mechanism study: questions per seed ----------------------------------------------------------------


def write_mechanism(results: Path, reach: dict[tuple, tuple[int, int]], best: dict[tuple, float] | None = None) -> None:
    """Each run of the mechanism figure (2 seeds) reaches its best (0.8 unless ``best`` says) at the epoch
    ``reach`` gives per seed for its role ((panel, role) or, for a role of several runs, (panel, role, index)),
    else at epoch 30."""
    spec = load_figure_records("mechanism", results, "smoke").spec
    playing = {key: spec.role(*key[:2])[key[2] if len(key) > 2 else 0] for key in reach}
    for cfg in spec.runs:
        role = next((key for key, run in playing.items() if run is cfg), None)
        for seed in (0, 1):
            at = reach[role][seed] if role else 30
            top = (best or {}).get(role, 0.8)
            write_run(results, RunConfig.from_dict({**cfg.to_dict(), "seed": seed}), ramp(top, at))


BASE, DREG, LR_04 = ("a", "baseline"), ("a", "dreg"), ("a", "lr_grid", 1)


def test_mechanism_questions_follow_their_rules_per_seed(tmp_path):
    write_mechanism(
        tmp_path,
        {
            BASE: (30, 30),
            DREG: (10, 20),  # speed-ups 3.0 and 1.5: M1 yes
            ("a", "doubled"): (25, 15),  # 1.2 and 2.0: 1 of 2 seeds, M2 no
            ("a", "lambda0"): (30, 30),  # DReg over lambda 0: 3.0, 1.5: M4 yes
            ("a", "path_mean"): (20, 28),  # 1.5 and 1.07: M3 no
            LR_04: (30, 30),
        },
        best={LR_04: 0.82},  # the tuned baseline; DReg never reaches 82%: M8 no
    )
    records = load_figure_records("mechanism", tmp_path, "smoke")
    answers = {(c.panel, c.statement.split(" ")[1]): c for c in analyze(records).claims}
    m1 = next(c for c in answers.values() if c.panel == "M1")
    assert m1.verdict == "yes"
    # secondary: the 5-epoch mean first at 99% of the baseline's last-10 mean (0.673): baseline 28, DReg 11 and 19
    assert m1.measured.startswith("seed 0: 3.00x (secondary 2.55x); seed 1: 1.50x (secondary 1.47x)")
    assert m1.measured.endswith("min-max 1.50-3.00x")
    verdicts = {c.panel: c.verdict for c in analyze(records).claims if c.panel in ("M2", "M3", "M4", "M8")}
    assert verdicts == {"M2": "no", "M3": "no", "M4": "yes", "M8": "no"}
    m8 = next(c for c in analyze(records).claims if c.panel == "M8")
    assert "tuned baseline lr 0.4 wd 0.0005 best 82.0%, DReg best 80.0%" in m8.measured


def test_a_studys_runs_are_found_by_their_role_whatever_is_overridden():
    """The questions find the mechanism and mse runs by the role their YAML declares: under --precision or
    --dataset (every run then differs from the preset) they are still found, and the roles hold the runs
    the questions mean (the doubled gradient: lr 0.2 at weight decay 2.5e-4; the lr grid 0.05 and 0.4)."""
    for overrides in ({}, {"precision": "32-true"}, {"dataset": "cifar100"}):
        spec = load_figure("mechanism", "quick", overrides=overrides)
        ((doubled,),) = [spec.role("a", "doubled")]
        assert (doubled.lr, doubled.weight_decay, doubled.dreg_site) == (0.2, 0.00025, None)
        assert [c.lr for c in spec.role("a", "lr_grid")] == [0.05, 0.4]
        assert [c.lr_scaling for c in spec.role("a", "schedule_dreg")] == ["sqrt", "linear"]
        assert [c.dreg_form for c in spec.role("b", "forms")] == ["frobenius", "cosine", "norm"]
        assert spec.role("a", "lambda0")[0].dreg_lambda == 0 and spec.role("b", "baseline")[0].batch_size == 2048
        mse = load_figure("mse", "quick", overrides=overrides)
        assert [(c.batch_size, c.dreg_form) for c in mse.role("b", "mse")] == [(2048, "mse"), (30720, "mse")]
        assert [c.dreg_lambda for c in mse.role("b", "lambda0")] == [0, 0]
    assert not load_figure("fig2", "quick").roles  # a paper figure's runs need no roles


def test_a_question_waits_for_every_seed(tmp_path):
    write_mechanism(tmp_path, {BASE: (30, 30), DREG: (10, 10)})
    running = next(c for c in load_figure("mechanism", "smoke", 2).runs if c.dreg_site and c.seed == 1)
    write_run(tmp_path, running, ramp(0.8, 10)[:5], "running")
    m1 = next(c for c in analyze(load_figure_records("mechanism", tmp_path, "smoke")).claims if c.panel == "M1")
    assert m1.verdict == "not enough data" and "running" in m1.measured


def test_report_is_a_replication_report(tmp_path):
    write_fake_records(tmp_path, "fig2", seeds=2)
    write_fake_records(tmp_path, "mechanism", seeds=2)
    assert main(["stability", "--results", str(tmp_path), "--preset", "smoke"]) == 0
    text = build_report(tmp_path, "smoke", tmp_path / "smoke" / "analysis")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:6] == ["## Scope", "## Deviations from the paper", "## Definitions",
                            "## Verdicts: the paper's claims", ANSWERS_HEADING,
                            "## Figure 2: VGG16 on CIFAR-10"]  # fmt: skip
    assert ANSWERS_HEADING == "## Answers: the mechanism study (M1-M8) and the mse reading (M9-M10)"
    assert sections[-3:] == ["## Stability of the DReg distance (M7)", "## Compute", "## Not run yet"]
    for question in ("M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8"):
        assert f"| {question} " in text
    assert "seed 0: " in text and "seed 1: " in text and "min-max" in text
    assert "Regenerate: `python -m experiments run mechanism --preset smoke && python -m analysis figure" in text
    assert "![stability](stability.png)" in text
    assert "| all (each run once) | 56 |" in text  # (14 + 18 lines - 4 shared) x 2 seeds, each counted once


def test_runs_in_another_precision_are_shown_with_a_note_or_chosen(tmp_path, capsys):
    """fp32 runs of a bf16 preset (a CPU without native bf16) are found without a flag, and said to be fp32;
    where both exist, --precision chooses."""
    write_fake_records(tmp_path, "fig8", precision="bf16-mixed")  # smoke's own precision is 32-true
    records = load_figure_records("fig8", tmp_path, "smoke")
    assert len(records.table) and {c.precision for c in records.spec.runs} == {"bf16-mixed"}
    assert "no records in precision 32-true: showing the runs made in bf16-mixed" in records.notes
    text = build_report(tmp_path, "smoke")
    assert "fig8 (12 of 12 lines, in bf16-mixed)" in text
    assert "--preset smoke --precision bf16-mixed && python -m analysis figure fig8 --preset smoke --precision" in text
    write_fake_records(tmp_path, "fig8")
    assert all(c.precision == "32-true" for c in load_figure_records("fig8", tmp_path, "smoke").spec.runs)
    chosen = load_figure_records("fig8", tmp_path, "smoke", precision="bf16-mixed")
    assert len(chosen.table) and not chosen.notes
    assert main(["report", "--results", str(tmp_path), "--preset", "smoke", "--precision", "bf16-mixed"]) == 0
    assert "precision bf16-mixed (the preset's: 32-true)" in (tmp_path / "smoke" / "analysis" / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        main(["figure", "fig8", "--results", str(tmp_path), "--preset", "smoke", "--precision", "fp8"])
    assert exit_.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_a_line_missing_in_the_figures_precision_is_lent_from_another_with_its_own_baseline(tmp_path):
    """A DReg run that did not fit in memory in float32, made in bf16 with a bf16 baseline: the figure shows it,
    labelled and noted, and compares it with the bf16 baseline, not the float32 one; without that baseline the
    line stays missing."""
    spec = load_figure("fig6", "smoke")
    deepest = [cfg for cfg in spec.panels["a"] if cfg.dreg_site][-1]
    write_fake_records(tmp_path, "fig6", skip=[deepest.name])  # smoke's own precision: 32-true
    lent = dataclasses.replace(deepest, precision="bf16-mixed")
    write_run(tmp_path, lent, np.full(deepest.epochs, 0.3))
    write_run(tmp_path, dataclasses.replace(lent, dreg_site=None), np.full(deepest.epochs, 0.2))

    records = load_figure_records("fig6", tmp_path, "smoke")
    assert records.precision == "32-true" and lent in records.spec.panels["a"] and not records.missing["a"]
    assert (f"{deepest.name.removesuffix('-s0')}: no records in precision 32-true; showing the run made in "
            "bf16-mixed, against the baseline made in the same precision") in records.notes  # fmt: skip
    row = cl.comparisons(records).set_index("run").loc[lent.name.removesuffix("-s0")]
    assert row["target"] == pytest.approx(0.2) and row["dreg_best"] == pytest.approx(0.3)
    fig, _ = draw(records)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sum(label.endswith(", bf16-mixed") for label in labels) == 1
    assert "baseline (no DReg)" in labels  # the figure's own, float32 baseline is drawn, the bf16 one is not
    assert "fig6 (13 of 13 lines, 1 in bf16-mixed)" in build_report(tmp_path, "smoke")

    shutil.rmtree(tmp_path / "smoke" / dataclasses.replace(lent, dreg_site=None).name)
    records = load_figure_records("fig6", tmp_path, "smoke")
    assert records.missing["a"] == [deepest] and not any("bf16" in note for note in records.notes)


@pytest.mark.parametrize(
    ("mse_acc", "m9", "m10"),
    [
        ([0.8, 0.85], "yes", "yes"),  # reaches the baseline's best in epoch 1 of 2 (2.00x); 85% vs 80%: within 11.3 pts
        ([0.5, 0.7], "no", "yes"),  # never reaches it (counted 0); 70% vs 80%: within the margin
        ([0.3, 0.5], "no", "no"),  # 50% vs 80%: 30 points apart, outside the margin
    ],
)
def test_the_mse_questions_can_come_out_either_way(tmp_path, mse_acc, m9, m10):
    for cfg in load_figure("mse", "smoke").runs:
        write_run(tmp_path, cfg, mse_acc if cfg.dreg_form == "mse" else [0.5, 0.8])
    answers = {c.panel: c for c in analyze(load_figure_records("mse", tmp_path, "smoke")).claims}
    assert (answers["M9"].verdict, answers["M10"].verdict) == (m9, m10)
    assert "median 2.00x" in answers["M9"].measured if m9 == "yes" else "median 0.00x" in answers["M9"].measured
    assert "2k seed 0: " in answers["M10"].measured and "(margin 11.3 pts)" in answers["M10"].measured


def test_the_mse_questions_wait_for_their_runs(tmp_path):
    write_fake_records(tmp_path, "mse", skip=["bs30720-dreg0-"])
    answers = {c.panel: c for c in analyze(load_figure_records("mse", tmp_path, "smoke")).claims}
    assert answers["M9"].verdict != cl.NOT_ENOUGH
    assert answers["M10"].verdict == cl.NOT_ENOUGH and "bs30720-dreg0-R1-m0.9 is not run" in answers["M10"].measured


def test_the_mse_figure_tells_its_lines_apart(tmp_path):
    """Panel (a) holds seven batch sizes of two kinds: each line's legend entry is its own and names its batch."""
    write_fake_records(tmp_path, "mse")
    fig, _ = draw(load_figure_records("mse", tmp_path, "smoke"))
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(set(labels)) == len(labels) == len(ax.get_lines()) and all(x.startswith("BS ") for x in labels)


def test_m10_pairs_the_seeds(tmp_path):
    """M10 asks "in every seed": an mse seed whose lambda-0 seed has not run leaves it undecided, not "yes"."""
    figure = load_figure("mse", "smoke")
    for cfg in figure.runs:
        write_run(tmp_path, cfg, [0.5, 0.8])
    mse_2k = figure.role("b", "mse")[0]
    write_run(tmp_path, dataclasses.replace(mse_2k, seed=1), [0.5, 0.8])
    answers = {c.panel: c for c in analyze(load_figure_records("mse", tmp_path, "smoke")).claims}
    assert answers["M10"].verdict == cl.NOT_ENOUGH
    assert "2k: mse has seed(s) 0, 1, λ=0 0; every seed needs both. So far: 2k seed 0: " in answers["M10"].measured


def test_the_analysis_loads_without_torch():
    """The analysis reads records, not networks: it runs where torch is not installed, and starts fast."""
    code = "import analysis.__main__, analysis.summary, sys; assert not {'torch', 'lightning'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_the_analysis_modules_import_one_way():
    """records -> comparisons -> claims / questions -> verdicts -> report / summary: no module of the analysis
    imports one that (directly or not) imports it, at the top or inside a function."""
    import ast

    folder = Path(__file__).resolve().parents[1] / "analysis"
    graph = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis"):
                found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
        graph[path.stem] = found - {path.stem}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [m for m in graph if m != "__main__" and reaches(m, m, set())] == []
