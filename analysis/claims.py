"""The paper's claims as numbers (docs/method.md §7-§8), each with a fixed rule that turns the numbers into a verdict.

Definitions (the report repeats them):

- A curve is a run's validation accuracy per epoch (for DReg the better path's, docs/method.md §1), the mean over the
  seeds recorded at that epoch. Every epoch in this report counts from 1 (the row written after the first epoch is
  epoch 1); the records themselves (`metrics.csv`, `status.json`) count from 0.
- Speed-up of a DReg run over its baseline (the run with the same config and no DReg): the target is the
  baseline's best validation accuracy; the speed-up is (first epoch at which the baseline reaches the
  target) / (first epoch at which the DReg run reaches it). A DReg run that never reaches it has no
  speed-up ("never"). Both curves of a comparison are means over the seeds both runs have (the table's
  "seeds"), so that partly run seeds compare like with like; with 3 or more seeds the table adds each seed's
  speed-up and the bootstrap 95% interval of their median. A baseline whose best is at chance (at most
  1/classes + 1 point) sets no target: the comparison has no speed-up (amended 2026-12-04, docs/method.md §7).
- Gain: DReg best validation accuracy minus the baseline's, in points of accuracy. It clears the noise when it
  exceeds 2 sqrt(2 p (1 - p) / n_val) (p the baseline's best, n_val the validation images) with one or two
  seeds, or when the paired bootstrap 95% interval of the mean gain over 3 or more seeds excludes 0.
- A trend is Spearman's rank correlation (average ranks for ties) between the setting and the measure, over
  the settings that carry a measured value (a speed-up that reached the target; an accuracy above chance):
  "never" is reported, not ranked. A claimed trend is reproduced when |rho| >= 0.5 with the claimed sign over
  at least 3 such settings that are not all within the noise of each other (speed-ups within a factor 1.25;
  accuracies within the one-seed margin; gains within 2 sqrt(4 p (1 - p) / n_val); with 3 or more seeds common
  to every setting, no pair whose paired bootstrap 95% interval of the mean difference excludes 0); else it is
  not decidable.
- Verdicts (SPEC 8.4, written 2026-12-06 after the Fig. 2 `mini` and `quick` results were seen, so it may only
  take support away): reproduced / not reproduced / not decidable (artefact: the rule has too few measured
  settings to rank; noise: the differences lie inside the noise; at chance: the runs never left chance) / not
  enough data (a run the claim needs has not finished). Where the amendment changes a verdict, the report
  shows the earlier rule's verdict beside it.
- A claim needs every run it mentions finished (done or diverged); otherwise: not enough data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.noise import (
    AGAINST,
    FOR,
    INSIDE,
    SPEEDUP_TIE,
    accuracies_tied,
    accuracy_margin,
    bootstrap_interval,
    common_seeds,
    difference_side,
    gain_difference_margin,
    speedup_side,
    speedups_tied,
)
from analysis.records import MODEL_LABELS, Curve, FigureRecords, bs_label, curve, describe, run_key
from datamodules import DATASETS
from experiments.config import RunConfig

REPRODUCED, NOT_REPRODUCED, NOT_ENOUGH = "reproduced", "not reproduced", "not enough data"
NOT_DECIDABLE = "not decidable"
ARTEFACT, NOISE, CHANCE = "artefact", "noise", "at chance"  # why a claim is not decidable
NO_RULE = "no rule"  # a claim that had no rule before SPEC 8.4
YES, NO = "yes", "no"  # controls test the suite's own questions, not the paper's claims
SPEEDUP_CLAIMED = 2.0  # "2-3x sooner": the lower end
SPEEDUP_RULE = SPEEDUP_TIE  # the mechanism study's "speeds up": at least 1.25x in every seed
SETTLE_WINDOW, SETTLE_TAIL, SETTLE_FRACTION = 5, 10, 0.99  # the secondary measure, which decides nothing
TREND_RHO = 0.5
MIN_TREND_POINTS = 3
CHANCE_MARGIN = 0.01  # a baseline best within 1 point of chance never learned: no target to reach


def first_epoch_reaching(epochs: np.ndarray, acc: np.ndarray, target: float) -> int | None:
    """The first (1-based) epoch at which ``acc`` is at least ``target``; None if it never is."""
    hits = np.flatnonzero(np.asarray(acc) >= target)
    return int(np.asarray(epochs)[hits[0]]) if len(hits) else None


Seeds = dict[int, tuple[np.ndarray, np.ndarray]]  # seed -> (1-based epochs, val/acc)


def seed_curves(records: FigureRecords, cfg: RunConfig) -> Seeds:
    """Each recorded seed's validation curve of ``cfg`` (a run shared by panels is read once)."""
    if not len(records.table):
        return {}
    rows = records.table[records.table["run"] == run_key(cfg.name)]
    rows = rows.drop_duplicates(["seed", "epochs_trained"]).sort_values("epochs_trained")
    return {int(s): (g["epochs_trained"].to_numpy(), g["val/acc"].to_numpy(float)) for s, g in rows.groupby("seed")}


def seed_states(records: FigureRecords, cfg: RunConfig) -> dict[int, str]:
    if not len(records.table):
        return {}
    rows = records.table[records.table["run"] == run_key(cfg.name)]
    return {int(s): str(g["state"].iloc[0]) for s, g in rows.groupby("seed")}


def _settle_epoch(epochs: np.ndarray, acc: np.ndarray, target: float) -> int | None:
    running = pd.Series(acc).rolling(SETTLE_WINDOW, min_periods=1).mean().to_numpy()
    return first_epoch_reaching(epochs, running, target)


def speedup(ref_epochs: np.ndarray, ref_acc: np.ndarray, epochs: np.ndarray, acc: np.ndarray) -> float | None:
    """The one speed-up (claims, questions and report): the reference's first epoch at its best accuracy over the
    run's first epoch at that accuracy; None when the run never reaches it."""
    target = float(np.max(ref_acc))
    reached = first_epoch_reaching(epochs, acc, target)
    return None if reached is None else first_epoch_reaching(ref_epochs, ref_acc, target) / reached


def speedups(records: FigureRecords, ref: RunConfig, run: RunConfig) -> dict[int, tuple[float | None, float | None]]:
    """Per common seed: (speed-up of ``run`` over ``ref``, the secondary settle ratio)."""
    refs, runs = seed_curves(records, ref), seed_curves(records, run)
    out = {}
    for seed in sorted(set(refs) & set(runs)):
        (e0, a0), (e1, a1) = refs[seed], runs[seed]
        primary = speedup(e0, a0, e1, a1)
        settle = SETTLE_FRACTION * float(a0[-SETTLE_TAIL:].mean())
        s0, s1 = _settle_epoch(e0, a0, settle), _settle_epoch(e1, a1, settle)
        out[seed] = (primary, None if s0 is None or s1 is None else s0 / s1)
    return out


def at_chance(acc: float | None, cfg: RunConfig) -> bool:
    """Whether ``acc`` is no better than guessing one class (a run whose eval never left chance)."""
    return acc is not None and acc <= 1 / DATASETS[cfg.dataset].num_classes + CHANCE_MARGIN


def validation_size(cfg: RunConfig) -> int:
    """How many images a run's validation accuracy is measured on."""
    return DATASETS[cfg.dataset].test_images if cfg.val_from_test else cfg.val_size


def zero_if_never(value: float | None) -> float:
    return 0.0 if value is None else value


def per_seed(values: dict[int, tuple[float | None, float | None]]) -> str:
    """``seed 0: 1.31x (secondary 1.10x); seed 1: never; min-max 0.00-1.31x``; with 3 or more seeds also the
    bootstrap 95% interval of the median (never counted as 0)."""
    if not values:
        return "no seed with both runs"
    parts = [f"seed {s}: {fmt_speedup(p)} (secondary {fmt_speedup(q)})" for s, (p, q) in values.items()]
    primary = [zero_if_never(p) for p, _ in values.values()]
    if len(primary) > 1:
        parts.append(f"min-max {min(primary):.2f}-{max(primary):.2f}x")
    if len(primary) >= 3:
        low, high = bootstrap_interval(primary, np.median)
        parts.append(f"median {np.median(primary):.2f}x, 95% interval [{low:.2f}, {high:.2f}]")
    return "; ".join(parts)


def every_seed(values: dict[int, tuple[float | None, float | None]]) -> bool:
    return bool(values) and all(zero_if_never(p) >= SPEEDUP_RULE for p, _ in values.values())


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho with average ranks; NaN when either side is constant (no order to correlate)."""
    rx, ry = pd.Series(x, dtype=float).rank(), pd.Series(y, dtype=float).rank()
    if len(rx) < 2 or rx.nunique() < 2 or ry.nunique() < 2:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


SUMMARY = ("best", "best_epoch", "final", "last_epoch", "epoch", "step")


def _curve_summary(prefix: str, line: Curve | None, target: float | None, state: str) -> dict:
    if line is None:
        return {f"{prefix}_state": "missing", **{f"{prefix}_{key}": None for key in SUMMARY}}
    best = int(np.argmax(line.mean))
    reached = None if target is None else first_epoch_reaching(line.epochs, line.mean, target)
    step = None
    if reached is not None and line.steps is not None:
        step = int(line.steps[list(line.epochs).index(reached)])
    return {
        f"{prefix}_state": state, f"{prefix}_best": float(line.mean[best]),
        f"{prefix}_best_epoch": int(line.epochs[best]), f"{prefix}_final": float(line.mean[-1]),
        f"{prefix}_last_epoch": int(line.epochs[-1]), f"{prefix}_epoch": reached, f"{prefix}_step": step,
    }  # fmt: skip


def seed_words(seeds: list[int]) -> str:
    """'0-2', '0, 2' or '0'."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def compared_pair(rows: pd.DataFrame, base_cfg: RunConfig, cfg: RunConfig) -> tuple[Curve | None, Curve | None, str]:
    """A DReg line and its baseline, each the mean over the seeds both have (so that partly run seeds compare
    like with like), or over their own seeds when they share none; and which seeds those are."""
    base, dreg = (rows[rows["run"] == run_key(c.name)] for c in (base_cfg, cfg))
    shared = sorted(set(base["seed"]) & set(dreg["seed"]))
    if shared:
        base, dreg = (r[r["seed"].isin(shared)] for r in (base, dreg))
        words = seed_words(shared)
    else:
        words = " / ".join(seed_words(sorted(set(r["seed"]))) if len(r) else "-" for r in (base, dreg))
    return (curve(base, base_cfg) if len(base) else None), (curve(dreg, cfg) if len(dreg) else None), words


def comparisons(records: FigureRecords) -> pd.DataFrame:
    """One row per DReg run of the figure against its baseline: speed-up, best and final accuracy over the
    seeds both have; states and whether the comparison is finished over all their seeds."""
    key = ["run", "seed", "epochs_trained"]
    table = records.table.drop_duplicates(key) if len(records.table) else pd.DataFrame(columns=key)
    rows = []
    for panel, runs in records.spec.panels.items():
        for cfg in runs:
            if cfg.dreg_site is None:
                continue
            base_cfg = dataclasses.replace(cfg, dreg_site=None)
            base, dreg, seeds = compared_pair(table, base_cfg, cfg)
            every = {role: curve(r, c) if len(r := table[table["run"] == run_key(c.name)]) else None
                     for role, c in (("base", base_cfg), ("dreg", cfg))}  # fmt: skip
            states = {role: line.state if line is not None else "missing" for role, line in every.items()}
            target = float(base.mean.max()) if base is not None else None
            row = {
                "panel": panel, "run": run_key(cfg.name), "model": cfg.model, "batch_size": cfg.batch_size,
                "global_batch": cfg.global_batch, "momentum": cfg.momentum, "dreg_site": cfg.dreg_site,
                "dreg_lambda": cfg.dreg_lambda, "dreg_form": cfg.dreg_form, "path_loss": cfg.path_loss,
                "target": target, "seeds": seeds, **_curve_summary("base", base, target, states["base"]),
                **_curve_summary("dreg", dreg, target, states["dreg"]),
            }  # fmt: skip
            row["finished"] = all(line is not None and line.finished for line in every.values())
            row["base_at_chance"] = at_chance(target, cfg)
            row["dreg_at_chance"] = at_chance(row["dreg_best"], cfg)
            row["pair_at_chance"] = row["base_at_chance"] and row["dreg_at_chance"]
            both = base is not None and dreg is not None
            row["speedup"] = speedup(base.epochs, base.mean, dreg.epochs, dreg.mean) if both else None
            row["speedup"] = None if row["base_at_chance"] else row["speedup"]
            row["gain"] = row["dreg_best"] - row["base_best"] if both else None
            row["n_val"] = validation_size(cfg)
            base_bests, dreg_bests = seed_bests(records, base_cfg), seed_bests(records, cfg)
            gains = {s: dreg_bests[s] - base_bests[s] for s in sorted(base_bests.keys() & dreg_bests.keys())}
            row["dreg_seed_best"], row["seed_gain"] = dreg_bests, gains
            evidence = _gain_evidence(base_bests, gains, row["n_val"]) if both else (INSIDE, "-")
            row["gain_side"], row["gain_words"] = evidence
            chance = 1 / DATASETS[cfg.dataset].num_classes
            row["gap"], row["gap_recorded"] = accuracy_gap(base, dreg, chance) if both else (None, None)
            row["per_seed"] = NO_TARGET if row["base_at_chance"] else per_seed(speedups(records, base_cfg, cfg))
            if len(gains) > 1:
                bests = (f"seed {s} {pct(base_bests[s])} / {pct(dreg_bests[s])}" for s in gains)
                row["per_seed"] += f"; best (baseline / DReg): {', '.join(bests)}"
            row["label"] = describe(cfg)
            rows.append(row)
    return pd.DataFrame(rows)


def seed_bests(records: FigureRecords, cfg: RunConfig) -> dict[int, float]:
    """Each recorded seed's best validation accuracy of ``cfg``."""
    return {seed: float(acc.max()) for seed, (_, acc) in seed_curves(records, cfg).items()}


def _gain_evidence(bases: dict[int, float], gains: dict[int, float], n_val: int) -> tuple[int, str]:
    """Which side of the noise the DReg run's gain over its baseline falls on (per seed both have), in words."""
    if not gains:
        return INSIDE, "no seed with both runs"
    p = float(np.mean([bases[s] for s in gains]))
    return difference_side(list(gains.values()), accuracy_margin(p, n_val))


def accuracy_gap(base: Curve, dreg: Curve, chance: float) -> tuple[float, float]:
    """The mean over the baseline's epochs of DReg minus baseline validation accuracy, a diverged DReg run
    counting at chance after its last epoch (its weights are no longer numbers); and the mean over the epochs
    both recorded, for comparison."""
    dreg_acc = pd.Series(dreg.mean, index=dreg.epochs).reindex(base.epochs).fillna(chance).to_numpy()
    recorded = np.isin(base.epochs, dreg.epochs)
    difference = dreg_acc - base.mean
    return float(difference.mean()), float(difference[recorded].mean())


@dataclass(frozen=True)
class Claim:
    """A claim, the rule that decides it, what was measured, and the verdict."""

    figure: str
    panel: str  # "" for the whole figure
    statement: str
    rule: str
    measured: str
    verdict: str
    before: str | None = None  # the verdict of the rule before SPEC 8.4 where that rule differs (NO_RULE: none)


def pct(acc: float | None) -> str:
    return "-" if acc is None or pd.isna(acc) else f"{100 * acc:.1f}%"


def fmt_speedup(value: float | None) -> str:
    return "never" if value is None or pd.isna(value) else f"{value:.2f}x"


NO_TARGET = "no target (baseline at chance)"


def speed_words(row: pd.Series) -> str:
    """A comparison's speed-up in words; none where the baseline never left chance."""
    return NO_TARGET if row["base_at_chance"] else fmt_speedup(row["speedup"])


def _speedups(rows: pd.DataFrame) -> list[float]:
    """Speed-ups with 'never reached' as 0, for medians (and the rankings of the rule before SPEC 8.4)."""
    return [0.0 if s is None or pd.isna(s) else float(s) for s in rows["speedup"]]


def _enough(rows: pd.DataFrame) -> str | None:
    """None when every run of ``rows`` is finished, else why there is not enough data."""
    done = int(rows["finished"].sum()) if len(rows) else 0
    return None if len(rows) and done == len(rows) else f"{done} of {len(rows)} comparisons finished"


Outcome = bool | str  # what a rule found: for or against the claim, or why it cannot tell (ARTEFACT, NOISE, CHANCE)


def _verdict(outcome: Outcome, missing: str | None, words: tuple[str, str] = (REPRODUCED, NOT_REPRODUCED)) -> str:
    if missing:
        return NOT_ENOUGH
    if isinstance(outcome, str):
        return f"{NOT_DECIDABLE}: {outcome}"
    return words[0] if outcome else words[1]


def _sides(sides: list[int], chance: bool = False) -> Outcome:
    """A claim about every comparison: one that clears the noise against it decides against; then runs at
    chance leave it open; it holds only when every comparison clears the noise for it."""
    if AGAINST in sides:
        return False
    if chance or not sides:
        return CHANCE
    return True if all(side == FOR for side in sides) else NOISE


def _trend(x: list[float], y: list[float], sign: int) -> tuple[bool, str]:
    """Whether ``y`` follows ``x`` with the sign claimed, and the measured rho in words."""
    if len(x) < MIN_TREND_POINTS:
        return False, f"{len(x)} finished setting(s): too few for a trend"
    rho = spearman(x, y)
    if math.isnan(rho):
        return False, f"Spearman rho undefined over {len(x)} settings (a constant side)"
    return sign * rho >= TREND_RHO, f"Spearman rho {rho:+.2f} over {len(x)} settings"


def _measured_trend(
    x: list[float], y: list[float], sign: int, tied: Callable[[list[float]], bool], few: str, tie_words: str
) -> tuple[Outcome, str]:
    """SPEC 8.4's trend: over the settings with a measured value only, at least 3 of them, not all tied."""
    if len(x) < MIN_TREND_POINTS:
        return few, f"{len(x)} setting(s) with a measured value: too few for a trend"
    if tied(y):
        return NOISE, f"the {len(x)} measured values lie {tie_words}: no order to rank"
    return _trend(x, y, sign)


def _chance_or_artefact(measured: int, finished: int) -> str:
    """Why a trend has too few measured settings: runs at chance, or a rule with too few settings to rank."""
    return CHANCE if measured < finished else ARTEFACT


def _tie_test(
    rows: pd.DataFrame, column: str, per_seed: str, margin: Callable[[float, int], float]
) -> tuple[Callable[[list[float]], bool], str]:
    """Whether the measured values of ``rows`` all lie within the noise of each other, and that noise in words:
    the paired bootstrap over 3 or more seeds common to them all (``per_seed``: seed -> value), else the
    one-seed ``margin`` near the mean of ``column`` (docs/method.md §8)."""
    width = margin(float(rows[column].mean()), int(rows["n_val"].iloc[0])) if len(rows) else 0.0
    values = list(rows[per_seed])
    seeds = common_seeds(values)
    if len(seeds) >= 3:
        pairs = f"no pair's paired 95% interval over seeds {seed_words(seeds)} excludes 0"
        words = f"within the noise of each other ({pairs})"
    else:
        words = f"within {100 * width:.1f} pts of each other"
    return (lambda v: accuracies_tied(v, width, values)), words


def convergence_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Figs. 2-5: DReg vs baseline at each batch size; the size of the speed-up and its trend with batch size;
    the text's average accuracy gap where the figure makes it."""
    name = records.name
    missing = _enough(table)
    finished = table[table["finished"]] if len(table) else table
    listed = ", ".join(f"{bs_label(r['batch_size'])}: {speed_words(r)}" for _, r in finished.iterrows())
    listed = listed or "no finished pair"
    learned = finished[~finished["base_at_chance"]] if len(finished) else finished
    chance = len(finished) > 0 and not len(learned)
    speed = _speedups(learned)
    claims = []
    if "two_to_three_x_sooner" in records.spec.claims:
        median = float(np.median(speed)) if speed else math.nan
        claims.append(Claim(
            name, "", "DReg reaches the baseline's best validation accuracy 2-3x sooner",
            f"median speed-up over batch sizes >= {SPEEDUP_CLAIMED:g} (never reached counts as 0)",
            f"speed-ups {listed}; median {fmt_speedup(median)}",
            _verdict(CHANCE if chance else median >= SPEEDUP_CLAIMED, missing),
            _verdict(median >= SPEEDUP_CLAIMED, missing),
        ))  # fmt: skip
    else:
        large = learned[learned["batch_size"] > 6144] if len(learned) else learned
        claims.append(Claim(
            name, "", "DReg speeds up convergence at batch sizes above 6k (the paper: marginal below)",
            f"speed-up >= {SPEEDUP_TIE:g} at every batch size above 6k; never, or <= 1/{SPEEDUP_TIE:g}, at one of "
            "them is against", f"speed-ups {listed}",
            _verdict(_sides([speedup_side(s) for s in large["speedup"]], chance) if len(large) else CHANCE, missing),
            _verdict(len(large) > 0 and min(_speedups(large)) > 1, missing),
        ))  # fmt: skip
    ok, rho = _trend(list(learned["batch_size"]), speed, +1)
    before = _verdict(ok, missing or (None if len(speed) >= MIN_TREND_POINTS else "fewer than 3 batch sizes"))
    reached = learned[learned["speedup"].notna()] if len(learned) else learned
    outcome, words = _measured_trend(
        list(reached["batch_size"]), list(reached["speedup"]), +1, speedups_tied,
        CHANCE if chance else ARTEFACT, f"within a factor {SPEEDUP_TIE:g} of each other",
    )  # fmt: skip
    claims.append(Claim(
        name, "", "the speed-up grows with batch size",
        f"Spearman rho(batch size, speed-up) >= {TREND_RHO:g} over >= {MIN_TREND_POINTS} batch sizes whose DReg run "
        f"reached the target, not all within a factor {SPEEDUP_TIE:g}",
        f"{words} ({len(reached)} of {len(finished)} batch sizes reached the target); before SPEC 8.4, with never "
        f"ranked as 0: {rho}", _verdict(outcome, missing), before,
    ))  # fmt: skip
    if records.spec.accuracy_gap:
        claims.append(_gap_claim(records, table))
    return claims


def _gap_claim(records: FigureRecords, table: pd.DataFrame) -> Claim:
    """The text's average validation-accuracy gap over epochs in panels (b) and (c) (SPEC 8.4)."""
    points, panels = records.spec.accuracy_gap["points"], records.spec.accuracy_gap["panels"]
    rows = table[table["panel"].isin(panels)] if len(table) else table
    missing = _enough(rows)
    need = points / 2
    if missing:
        measured, outcome = missing, False
    elif rows["pair_at_chance"].all():
        measured, outcome = "every pair at chance", CHANCE
    else:
        rows = rows[~rows["pair_at_chance"]]  # a pair that never left chance has no gap to measure
        gap = float(rows["gap"].mean())
        listed = ", ".join(f"{bs_label(r['batch_size'])}: {100 * r['gap']:+.1f} (recorded epochs only "
                           f"{100 * r['gap_recorded']:+.1f})" for _, r in rows.iterrows())  # fmt: skip
        measured, outcome = f"mean gap {100 * gap:+.1f} pts; per batch size {listed}", gap > 0 and gap >= need / 100
    return Claim(
        records.name, "", f"DReg's validation accuracy is ~{points:g}% above the baseline's on average over epochs "
        f"(panels {', '.join(panels)})",
        f"mean over epochs of DReg minus baseline accuracy, averaged over the panels' batch sizes, > 0 and >= "
        f"{need:g} points (half the paper's figure); a diverged DReg run counts at chance after its last epoch, a pair "
        "that never left chance is left out",
        measured, _verdict(outcome, missing), NO_RULE,
    )  # fmt: skip


def _ranking(rows: pd.DataFrame, label: Callable[[pd.Series], str], of: str = "dreg") -> str:
    """Runs by best accuracy (``of`` the DReg runs or their baselines), the earlier best first on a tie."""
    ranked = rows.sort_values([f"{of}_best", f"{of}_best_epoch"], ascending=[False, True])
    return " > ".join(f"{label(r)} {pct(getattr(r, f'{of}_best'))}" for r in ranked.itertuples()) or "no finished run"


def _per_panel(table: pd.DataFrame, claim: Callable[[str, pd.DataFrame], list[Claim]]) -> list[Claim]:
    """Claims made for each model (panel) of a two-panel figure."""
    return [c for panel, rows in table.groupby("panel", sort=True) for c in claim(str(panel), rows)]


def _baseline(rows: pd.DataFrame) -> str:
    return f"baseline {pct(rows['base_best'].iloc[0])}" if rows["base_best"].notna().any() else "baseline missing"


BEATS_RULE = "every DReg run's gain over the baseline clears the noise (one that clears it the other way: against)"


def _beats(rows: pd.DataFrame) -> Outcome:
    """Every DReg run of ``rows`` beats its baseline, by SPEC 8.4's noise margin."""
    return _sides(list(rows["gain_side"]), bool(rows["pair_at_chance"].any()))


def _gains(rows: pd.DataFrame, label: Callable[[pd.Series], str]) -> str:
    return "; ".join(f"{label(r)}: {r['gain_words']}" for _, r in rows.iterrows())


def _accuracy_trend(done: pd.DataFrame, x: Callable[[pd.DataFrame], list[float]], sign: int) -> tuple[Outcome, str]:
    """A trend of DReg's best accuracy over the settings whose DReg run left chance."""
    measured = done[~done["dreg_at_chance"]]
    tied, tie_words = _tie_test(measured, "dreg_best", "dreg_seed_best", accuracy_margin)
    return _measured_trend(
        x(measured), list(measured["dreg_best"]), sign, tied, _chance_or_artefact(len(measured), len(done)), tie_words
    )


def site_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Fig. 6: DReg closer to the output (R1) works better; for MobileNetV2 every site beats the baseline."""
    name = records.name

    def levels(rows: pd.DataFrame) -> list[float]:
        return [int(s[1:]) for s in rows["dreg_site"]]

    def panel_claims(panel: str, rows: pd.DataFrame) -> list[Claim]:
        missing, model = _enough(rows), MODEL_LABELS[rows["model"].iloc[0]]
        done = rows[rows["finished"]]
        ranking = f"{_ranking(done, lambda r: r.dreg_site)}; {_baseline(rows)}"
        ok, rho = _trend(levels(done), list(done["dreg_best"]), -1)
        outcome, words = _accuracy_trend(done, levels, -1)
        claims = [Claim(
            name, panel, f"{model}: DReg closer to the output works better",
            f"Spearman rho(level k of site Rk, DReg best accuracy) <= -{TREND_RHO:g} over >= {MIN_TREND_POINTS} sites "
            "above chance, not all within the noise margin", f"{ranking}; {words}; before SPEC 8.4: {rho}",
            _verdict(outcome, missing), _verdict(ok, missing),
        )]  # fmt: skip
        if model == "MobileNetV2":
            beats = int((done["gain"] > 0).sum())
            claims.append(Claim(
                name, panel, f"{model}: every site beats the baseline", BEATS_RULE,
                f"gains {_gains(done, lambda r: r['dreg_site'])}", _verdict(_beats(done), missing),
                _verdict(beats == len(done) > 0, missing),
            ))  # fmt: skip
        return claims

    return _per_panel(table, panel_claims)


def lambda_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Fig. 7: every lambda (0 included) beats the baseline; small lambda is slightly better."""
    name = records.name

    def panel_claims(panel: str, rows: pd.DataFrame) -> list[Claim]:
        missing, model = _enough(rows), MODEL_LABELS[rows["model"].iloc[0]]
        done = rows[rows["finished"]]
        beats = int((done["gain"] > 0).sum())
        positive = done[done["dreg_lambda"] > 0]
        ok, rho = _trend(list(positive["dreg_lambda"]), list(positive["dreg_best"]), -1)
        outcome, words = _accuracy_trend(positive, lambda r: list(r["dreg_lambda"]), -1)
        ranking = f"{_ranking(done, lambda r: f'λ={r.dreg_lambda:g}')}; {_baseline(rows)}"
        return [
            Claim(name, panel, f"{model}: every lambda (0 included) beats the baseline", BEATS_RULE,
                  f"gains {_gains(done, lambda r: f'λ={r.dreg_lambda:g}')}; {ranking}", _verdict(_beats(done), missing),
                  _verdict(beats == len(done) > 0, missing)),
            Claim(name, panel, f"{model}: small lambda is slightly better",
                  f"Spearman rho(lambda > 0, DReg best accuracy) <= -{TREND_RHO:g} over >= {MIN_TREND_POINTS} lambdas "
                  "above chance, not all within the noise margin", f"{words}; before SPEC 8.4: {rho}",
                  _verdict(outcome, missing), _verdict(ok, missing)),
        ]  # fmt: skip

    return _per_panel(table, panel_claims)


def momentum_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Fig. 8: DReg helps at every momentum (0, 0.5, 0.9), and more with larger momentum."""
    name = records.name

    def panel_claims(panel: str, rows: pd.DataFrame) -> list[Claim]:
        missing, model = _enough(rows), MODEL_LABELS[rows["model"].iloc[0]]
        done = rows[rows["finished"]].sort_values("momentum")
        gains = _gains(done, lambda r: f"m={r['momentum']:g}") or "no finished pair"
        speeds = ", ".join(f"m={r['momentum']:g}: {speed_words(r)}" for _, r in done.iterrows())
        ok, rho = _trend(list(done["momentum"]), list(done["gain"]), +1)
        measured = done[~done["pair_at_chance"]]
        tied, tie_words = _tie_test(measured, "base_best", "seed_gain", gain_difference_margin)
        outcome, words = _measured_trend(
            list(measured["momentum"]), list(measured["gain"]), +1, tied,
            _chance_or_artefact(len(measured), len(done)), tie_words,
        )  # fmt: skip

        def optimizer(r: pd.Series) -> str:
            return "SGD" if r.momentum == 0 else f"m={r.momentum:g}"

        ranking = f"DReg {_ranking(done, optimizer)}; baseline {_ranking(done, optimizer, 'base')}"
        return [
            Claim(name, panel, f"{model}: DReg helps with and without momentum", BEATS_RULE,
                  f"gains {gains}; speed-ups {speeds or '-'}", _verdict(_beats(done), missing),
                  _verdict(len(done) > 0 and bool((done["gain"] > 0).all()), missing)),
            Claim(name, panel, f"{model}: DReg helps more with larger momentum",
                  f"Spearman rho(momentum, gain) >= {TREND_RHO:g} over >= {MIN_TREND_POINTS} momenta not at chance, "
                  "gains not all within 2 sqrt(4 p (1 - p) / n_val) of each other",
                  f"{words}; before SPEC 8.4: {rho}; {ranking}", _verdict(outcome, missing), _verdict(ok, missing)),
        ]  # fmt: skip

    return _per_panel(table, panel_claims)


def control_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Controls: does a speed-up survive ``path_loss: mean`` and the cosine form; is it the penalty's."""
    name = records.name

    def panel_claims(panel: str, rows: pd.DataFrame) -> list[Claim]:
        model = MODEL_LABELS[rows["model"].iloc[0]]
        variants = {
            "paper": (rows["path_loss"] == "sum") & (rows["dreg_form"] == "frobenius") & (rows["dreg_lambda"] > 0),
            "mean": rows["path_loss"] == "mean", "cosine": rows["dreg_form"] == "cosine",
            "lambda0": rows["dreg_lambda"] == 0,
        }  # fmt: skip
        pick = {k: rows[mask] for k, mask in variants.items()}

        def speed(key: str) -> float | None:
            value = pick[key]["speedup"].iloc[0]
            return None if pd.isna(value) else float(value)

        def penalty() -> Outcome:
            paper, lambda0 = speed("paper"), speed("lambda0")
            if paper is None or lambda0 is None:
                return ARTEFACT if paper is None and lambda0 is None else lambda0 is None
            return _sides([speedup_side(paper / lambda0)])

        def claim(
            statement: str, rule: str, keys: tuple[str, ...], ok: Callable[[], bool], amended: Callable[[], Outcome]
        ) -> Claim:
            parts = pd.concat([pick[k] for k in keys])
            missing = _enough(parts) if all(len(pick[k]) for k in keys) else "a variant is not in the figure"
            chance = not missing and bool(parts["base_at_chance"].any())
            measured = ", ".join(
                f"{k}: {speed_words(pick[k].iloc[0]) if len(pick[k]) and pick[k]['finished'].all() else '-'}"
                for k in keys
            )
            return Claim(
                name,
                panel,
                f"{model}: {statement}",
                rule,
                f"speed-ups {measured}",
                _verdict(CHANCE if chance else amended() if not missing else False, missing, (YES, NO)),
                _verdict(not missing and not chance and ok(), missing or (NO_TARGET if chance else None), (YES, NO)),
            )

        tie = f"{SPEEDUP_TIE:g} or more (never, or 1/{SPEEDUP_TIE:g} or less: no; between: not decidable)"
        return [
            claim("a speed-up survives path_loss: mean (no doubled prefix gradient)",
                  f"speed-up of the mean form {tie}", ("mean",), lambda: zero_if_never(speed("mean")) > 1,
                  lambda: _sides([speedup_side(speed("mean"))])),
            claim("a speed-up survives the cosine form (bounded, scale-invariant)",
                  f"speed-up of the cosine form {tie}", ("cosine",), lambda: zero_if_never(speed("cosine")) > 1,
                  lambda: _sides([speedup_side(speed("cosine"))])),
            claim("the penalty adds to the second path",
                  f"speed-up at lambda 0.1 over the speed-up at lambda 0: {tie}; never at lambda 0 only: yes",
                  ("paper", "lambda0"), lambda: zero_if_never(speed("paper")) > zero_if_never(speed("lambda0")),
                  penalty),
        ]  # fmt: skip

    return _per_panel(table, panel_claims)


CLAIMS: dict[str, Callable[[FigureRecords, pd.DataFrame], list[Claim]]] = {
    "batch_sweep": convergence_claims, "site_sweep": site_claims, "lambda_sweep": lambda_claims,
    "momentum_sweep": momentum_claims, "controls": control_claims,
}  # fmt: skip
