"""The paper's claims as numbers (docs/method.md §4), each with a fixed rule that turns the numbers into a verdict.

Definitions (the report repeats them):

- A curve is a run's validation accuracy per epoch (for DReg the better path's, docs/method.md §1), the mean over the
  seeds recorded at that epoch; epochs count from 1 (the row written after the first epoch is epoch 1).
- Speed-up of a DReg run over its baseline (the run with the same config and no DReg): the target is the
  baseline's best validation accuracy; the speed-up is (first epoch at which the baseline reaches the
  target) / (first epoch at which the DReg run reaches it). A DReg run that never reaches it has no
  speed-up; where speed-ups are ranked or averaged it counts as 0. Both curves of a comparison are means over
  the seeds both runs have (the table's "seeds"), so that partly run seeds compare like with like.
  A baseline whose best is at chance (at most 1/classes + 1 point) sets no target: the comparison has no
  speed-up and stays out of the speed-up claims (amended 2026-12-04, docs/method.md §7).
- Gain: DReg best validation accuracy minus the baseline's, in points of accuracy.
- A trend is Spearman's rank correlation (average ranks for ties) between the setting and the measure;
  a claimed trend is reproduced when |rho| >= 0.5 with the claimed sign, over at least 3 settings.
- A claim needs every run it mentions finished (done or diverged); otherwise: not enough data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.records import MODEL_LABELS, Curve, FigureRecords, bs_label, curve, describe, run_key
from datamodules import DATAMODULES
from experiments.config import RunConfig

REPRODUCED, NOT_REPRODUCED, NOT_ENOUGH = "reproduced", "not reproduced", "not enough data"
YES, NO = "yes", "no"  # controls test the suite's own questions, not the paper's claims
SPEEDUP_CLAIMED = 2.0  # "2-3x sooner": the lower end
SPEEDUP_RULE = 1.25  # the mechanism study's "speeds up": at least 1.25x in every seed
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


def speedups(records: FigureRecords, ref: RunConfig, run: RunConfig) -> dict[int, tuple[float | None, float | None]]:
    """Per common seed: (speed-up of ``run`` over ``ref``, the secondary settle ratio)."""
    refs, runs = seed_curves(records, ref), seed_curves(records, run)
    out = {}
    for seed in sorted(set(refs) & set(runs)):
        (e0, a0), (e1, a1) = refs[seed], runs[seed]
        target = float(a0.max())
        reached = first_epoch_reaching(e1, a1, target)
        primary = None if reached is None else first_epoch_reaching(e0, a0, target) / reached
        settle = SETTLE_FRACTION * float(a0[-SETTLE_TAIL:].mean())
        s0, s1 = _settle_epoch(e0, a0, settle), _settle_epoch(e1, a1, settle)
        out[seed] = (primary, None if s0 is None or s1 is None else s0 / s1)
    return out


def at_chance(acc: float | None, cfg: RunConfig) -> bool:
    """Whether ``acc`` is no better than guessing one class (a run whose eval never left chance)."""
    return acc is not None and acc <= 1 / DATAMODULES[cfg.dataset].num_classes + CHANCE_MARGIN


def noise_margin(p: float, n_val: int) -> float:
    """SPEC 8.4: the one-seed noise margin of a difference of two best accuracies near ``p`` measured on ``n_val``
    validation images, 2 sqrt(2 p (1 - p) / n_val) (2.8 points at p 0.5, n_val 2,500)."""
    return 2 * math.sqrt(2 * p * (1 - p) / n_val)


def validation_size(cfg: RunConfig) -> int:
    """How many images a run's validation accuracy is measured on."""
    from experiments.projection import TEST_IMAGES

    return TEST_IMAGES if cfg.val_from_test else cfg.val_size


def zero_if_never(value: float | None) -> float:
    return 0.0 if value is None else value


def per_seed(values: dict[int, tuple[float | None, float | None]]) -> str:
    """``seed 0: 1.31x (secondary 1.10x); seed 1: never; min-max 0.00-1.31x``."""
    if not values:
        return "no seed with both runs"
    parts = [f"seed {s}: {fmt_speedup(p)} (secondary {fmt_speedup(q)})" for s, (p, q) in values.items()]
    primary = [zero_if_never(p) for p, _ in values.values()]
    return "; ".join(parts) + (f"; min-max {min(primary):.2f}-{max(primary):.2f}x" if len(primary) > 1 else "")


def every_seed(values: dict[int, tuple[float | None, float | None]]) -> bool:
    return bool(values) and all(zero_if_never(p) >= SPEEDUP_RULE for p, _ in values.values())


def speedup(base: Curve, dreg: Curve) -> float | None:
    """Baseline epoch / DReg epoch of first reaching the baseline's best accuracy (None: DReg never does)."""
    target = float(base.mean.max())
    base_epoch = first_epoch_reaching(base.epochs, base.mean, target)
    dreg_epoch = first_epoch_reaching(dreg.epochs, dreg.mean, target)
    return None if dreg_epoch is None else base_epoch / dreg_epoch


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
            reached = row.get("dreg_epoch") is not None and row.get("base_epoch") is not None
            row["speedup"] = row["base_epoch"] / row["dreg_epoch"] if reached and not row["base_at_chance"] else None
            row["gain"] = row["dreg_best"] - row["base_best"] if base is not None and dreg is not None else None
            row["per_seed"] = NO_TARGET if row["base_at_chance"] else per_seed(speedups(records, base_cfg, cfg))
            row["label"] = describe(cfg)
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Claim:
    """A claim, the rule that decides it, what was measured, and the verdict."""

    figure: str
    panel: str  # "" for the whole figure
    statement: str
    rule: str
    measured: str
    verdict: str


@dataclass
class FigureAnalysis:
    """A figure's comparison table and its claims."""

    records: FigureRecords
    table: pd.DataFrame
    claims: list[Claim]

    def claims_frame(self) -> pd.DataFrame:
        """The claims as a table (for notebooks)."""
        return pd.DataFrame([dataclasses.asdict(c) for c in self.claims])


def pct(acc: float | None) -> str:
    return "-" if acc is None or pd.isna(acc) else f"{100 * acc:.1f}%"


def fmt_speedup(value: float | None) -> str:
    return "never" if value is None or pd.isna(value) else f"{value:.2f}x"


NO_TARGET = "no target (baseline at chance)"


def speed_words(row: pd.Series) -> str:
    """A comparison's speed-up in words; none where the baseline never left chance."""
    return NO_TARGET if row["base_at_chance"] else fmt_speedup(row["speedup"])


def _speedups(rows: pd.DataFrame) -> list[float]:
    """Speed-ups with 'never reached' as 0, for medians and rankings."""
    return [0.0 if s is None or pd.isna(s) else float(s) for s in rows["speedup"]]


def _enough(rows: pd.DataFrame) -> str | None:
    """None when every run of ``rows`` is finished, else why there is not enough data."""
    done = int(rows["finished"].sum()) if len(rows) else 0
    return None if len(rows) and done == len(rows) else f"{done} of {len(rows)} comparisons finished"


def _verdict(ok: bool, missing: str | None, words: tuple[str, str] = (REPRODUCED, NOT_REPRODUCED)) -> str:
    return NOT_ENOUGH if missing else words[0] if ok else words[1]


def _trend(x: list[float], y: list[float], sign: int) -> tuple[bool, str]:
    """Whether ``y`` follows ``x`` with the sign claimed, and the measured rho in words."""
    if len(x) < MIN_TREND_POINTS:
        return False, f"{len(x)} finished setting(s): too few for a trend"
    rho = spearman(x, y)
    if math.isnan(rho):
        return False, f"Spearman rho undefined over {len(x)} settings (a constant side)"
    return sign * rho >= TREND_RHO, f"Spearman rho {rho:+.2f} over {len(x)} settings"


def convergence_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Figs. 2-5: DReg vs baseline at each batch size; the size of the speed-up and its trend with batch size."""
    name = records.name
    missing = _enough(table)
    finished = table[table["finished"]] if len(table) else table
    listed = ", ".join(f"{bs_label(r['batch_size'])}: {speed_words(r)}" for _, r in finished.iterrows())
    listed = listed or "no finished pair"
    finished = finished[~finished["base_at_chance"]] if len(finished) else finished
    speed = _speedups(finished)
    claims = []
    if "two_to_three_x_sooner" in records.spec.claims:
        median = float(np.median(speed)) if speed else math.nan
        claims.append(Claim(
            name, "", "DReg reaches the baseline's best validation accuracy 2-3x sooner",
            f"median speed-up over batch sizes >= {SPEEDUP_CLAIMED:g} (never reached counts as 0)",
            f"speed-ups {listed}; median {fmt_speedup(median)}", _verdict(median >= SPEEDUP_CLAIMED, missing),
        ))  # fmt: skip
    else:
        large = finished[finished["batch_size"] > 6144]
        claims.append(Claim(
            name, "", "DReg speeds up convergence at batch sizes above 6k (the paper: marginal below)",
            "speed-up > 1 at every batch size above 6k", f"speed-ups {listed}",
            _verdict(len(large) > 0 and min(_speedups(large)) > 1, missing),
        ))  # fmt: skip
    ok, rho = _trend(list(finished["batch_size"]), speed, +1)
    claims.append(Claim(
        name, "", "the speed-up grows with batch size",
        f"Spearman rho(batch size, speed-up) >= {TREND_RHO:g} over >= {MIN_TREND_POINTS} batch sizes",
        rho, _verdict(ok, missing or (None if len(speed) >= MIN_TREND_POINTS else "fewer than 3 batch sizes")),
    ))  # fmt: skip
    return claims


def _ranking(rows: pd.DataFrame, label: Callable[[pd.Series], str], of: str = "dreg") -> str:
    """Runs by best accuracy (``of`` the DReg runs or their baselines), the earlier best first on a tie."""
    ranked = rows.sort_values([f"{of}_best", f"{of}_best_epoch"], ascending=[False, True])
    return " > ".join(f"{label(r)} {pct(getattr(r, f'{of}_best'))}" for r in ranked.itertuples()) or "no finished run"


def _per_panel(table: pd.DataFrame, claim: Callable[[str, pd.DataFrame], list[Claim]]) -> list[Claim]:
    """Claims made for each model (panel) of a two-panel figure."""
    return [c for panel, rows in table.groupby("panel", sort=True) for c in claim(str(panel), rows)]


def _baseline(rows: pd.DataFrame) -> str:
    return f"baseline {pct(rows['base_best'].iloc[0])}" if rows["base_best"].notna().any() else "baseline missing"


def site_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Fig. 6: DReg closer to the output (R1) works better; for MobileNetV2 every site beats the baseline."""
    name = records.name

    def panel_claims(panel: str, rows: pd.DataFrame) -> list[Claim]:
        missing, model = _enough(rows), MODEL_LABELS[rows["model"].iloc[0]]
        done = rows[rows["finished"]]
        ranking = f"{_ranking(done, lambda r: r.dreg_site)}; {_baseline(rows)}"
        ok, rho = _trend([int(s[1:]) for s in done["dreg_site"]], list(done["dreg_best"]), -1)
        claims = [Claim(
            name, panel, f"{model}: DReg closer to the output works better",
            f"Spearman rho(level k of site Rk, DReg best accuracy) <= -{TREND_RHO:g}", f"{ranking}; {rho}",
            _verdict(ok, missing),
        )]  # fmt: skip
        if model == "MobileNetV2":
            beats = int((done["gain"] > 0).sum())
            claims.append(Claim(
                name, panel, f"{model}: every site beats the baseline", "DReg best > baseline best at every site",
                f"{beats} of {len(done)} sites beat the baseline", _verdict(beats == len(done) > 0, missing),
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
        ranking = f"{_ranking(done, lambda r: f'λ={r.dreg_lambda:g}')}; {_baseline(rows)}"
        return [
            Claim(name, panel, f"{model}: every lambda (0 included) beats the baseline",
                  "DReg best > baseline best for every lambda", f"{beats} of {len(done)} lambdas beat it; {ranking}",
                  _verdict(beats == len(done) > 0, missing)),
            Claim(name, panel, f"{model}: small lambda is slightly better",
                  f"Spearman rho(lambda > 0, DReg best accuracy) <= -{TREND_RHO:g}", rho, _verdict(ok, missing)),
        ]  # fmt: skip

    return _per_panel(table, panel_claims)


def momentum_claims(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """Fig. 8: DReg helps at every momentum (0, 0.5, 0.9), and more with larger momentum."""
    name = records.name

    def panel_claims(panel: str, rows: pd.DataFrame) -> list[Claim]:
        missing, model = _enough(rows), MODEL_LABELS[rows["model"].iloc[0]]
        done = rows[rows["finished"]].sort_values("momentum")
        gains = ", ".join(
            f"m={r['momentum']:g}: {100 * r['gain']:+.1f} pts, speed-up {speed_words(r)}" for _, r in done.iterrows()
        )
        ok, rho = _trend(list(done["momentum"]), list(done["gain"]), +1)

        def optimizer(r: pd.Series) -> str:
            return "SGD" if r.momentum == 0 else f"m={r.momentum:g}"

        ranking = f"DReg {_ranking(done, optimizer)}; baseline {_ranking(done, optimizer, 'base')}"
        return [
            Claim(name, panel, f"{model}: DReg helps with and without momentum",
                  "gain (DReg best - baseline best) > 0 at every momentum", gains or "no finished pair",
                  _verdict(len(done) > 0 and bool((done["gain"] > 0).all()), missing)),
            Claim(name, panel, f"{model}: DReg helps more with larger momentum",
                  f"Spearman rho(momentum, gain) >= {TREND_RHO:g}", f"{rho}; {ranking}", _verdict(ok, missing)),
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

        def speed(key: str) -> float:
            return _speedups(pick[key])[0]

        def claim(statement: str, rule: str, keys: tuple[str, ...], ok: Callable[[], bool]) -> Claim:
            parts = pd.concat([pick[k] for k in keys])
            missing = _enough(parts) if all(len(pick[k]) for k in keys) else "a variant is not in the figure"
            missing = missing or (NO_TARGET if parts["base_at_chance"].any() else None)
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
                _verdict(not missing and ok(), missing, (YES, NO)),
            )

        return [
            claim("a speed-up survives path_loss: mean (no doubled prefix gradient)", "speed-up of the mean form > 1",
                  ("mean",), lambda: speed("mean") > 1),
            claim("a speed-up survives the cosine form (bounded, scale-invariant)", "speed-up of the cosine form > 1",
                  ("cosine",), lambda: speed("cosine") > 1),
            claim("the penalty adds to the second path", "speed-up at lambda 0.1 > speed-up at lambda 0",
                  ("paper", "lambda0"), lambda: speed("paper") > speed("lambda0")),
        ]  # fmt: skip

    return _per_panel(table, panel_claims)


CLAIMS: dict[str, Callable[[FigureRecords, pd.DataFrame], list[Claim]]] = {
    "batch_sweep": convergence_claims, "site_sweep": site_claims, "lambda_sweep": lambda_claims,
    "momentum_sweep": momentum_claims, "controls": control_claims,
}  # fmt: skip


def analyze(records: FigureRecords) -> FigureAnalysis:
    """The figure's comparisons and its claims (or, for the mechanism study, its questions) with verdicts."""
    from analysis.questions import mechanism_questions, mse_questions

    table = comparisons(records)
    rules = {**CLAIMS, "mechanism": mechanism_questions, "mse": mse_questions}
    return FigureAnalysis(records, table, rules[records.spec.kind](records, table))
