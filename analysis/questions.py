"""The mechanism study's questions M1-M6 and M8 and the mse reading's M9-M10 (docs/method.md, "Questions and
rules"), decided per seed.

Every speed-up here is per seed: the reference run's first epoch at its own best validation accuracy over
the compared run's first epoch at that accuracy (None: never reached; counted as 0). A question needs every
seed of every run it names finished (done or diverged); it is answered over the seeds both runs have.
Beside each speed-up the measured text gives a secondary measure that decides nothing: the first epoch at
which a curve's 5-epoch running mean reaches 99% of the reference's mean over its last 10 epochs, as the ratio
reference epoch / run epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis.claims import (
    NO,
    NOT_ENOUGH,
    SPEEDUP_CLAIMED,
    SPEEDUP_RULE,
    YES,
    Claim,
    every_seed,
    fmt_speedup,
    pct,
    per_seed,
    seed_curves,
    seed_states,
    speed_words,
    speedups,
    validation_size,
    zero_if_never,
)
from analysis.noise import accuracy_margin
from analysis.records import FINISHED, FigureRecords, bs_label, run_key
from experiments.config import RunConfig


class Roles:
    """The runs of a study by the part they play, as its YAML declares them (``role:``), never by their values."""

    def __init__(self, records: FigureRecords) -> None:
        self.records = records

    def runs(self, panel: str, role: str) -> list[RunConfig]:
        return self.records.spec.role(panel, role)

    def one(self, panel: str, role: str) -> RunConfig | None:
        """The run that plays ``role`` in ``panel``; None where the spec names none (or several)."""
        runs = self.runs(panel, role)
        return runs[0] if len(runs) == 1 else None

    def missing(self, *cfgs: RunConfig | None) -> str | None:
        """None when every run is in the figure and every seed of it finished; else what is missing."""
        if any(cfg is None for cfg in cfgs):
            return "a run it needs is not in the figure"
        for cfg in cfgs:
            states = seed_states(self.records, cfg)
            if not states or any(s not in FINISHED for s in states.values()):
                return f"{run_key(cfg.name)} is {', '.join(sorted(set(states.values()))) or 'not run'}"
        return None


def _answer(ok: bool, missing: str | None) -> str:
    return NOT_ENOUGH if missing else YES if ok else NO


def mechanism_questions(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """M1-M6 and M8 with their rules (M7 is the stability analysis: analysis/stability.py)."""
    r = Roles(records)
    base, dreg, doubled = r.one("a", "baseline"), r.one("a", "dreg"), r.one("a", "doubled")
    out = []

    def ask(key: str, question: str, rule: str, runs: tuple, answer: Callable[[], tuple[bool, str]]) -> None:
        missing = r.missing(*runs)
        ok, measured = answer() if missing is None else (False, missing)
        out.append(Claim(records.name, key, question, rule, measured, _answer(ok, missing)))

    def over(ref: RunConfig, run: RunConfig) -> Callable[[], tuple[bool, str]]:
        return lambda: (every_seed(s := speedups(records, ref, run)), per_seed(s))

    rule = f"speed-up >= {SPEEDUP_RULE:g} in every seed"
    ask("M1", "at 30k, does DReg (paper) speed up convergence over the baseline?", rule, (base, dreg), over(base, dreg))

    def m2() -> tuple[bool, str]:
        d, p = speedups(records, base, doubled), speedups(records, base, dreg)
        seeds = sorted(set(d) & set(p))
        wins = sum(zero_if_never(d[s][0]) >= zero_if_never(p[s][0]) for s in seeds)
        return wins * 2 > len(
            seeds
        ), f"doubled gradient: {per_seed(d)}. DReg: {per_seed(p)}. {wins} of {len(seeds)} seeds"

    ask(
        "M2",
        "is DReg's effect at 30k that of the doubled gradient of the shared layers?",
        "the doubled-gradient baseline's speed-up >= DReg's in a majority of seeds",
        (base, doubled, dreg),
        m2,
    )
    mean = r.one("a", "path_mean")
    ask("M3", "does a speed-up survive path_loss: mean?", rule, (base, mean), over(base, mean))
    lam0 = r.one("a", "lambda0")
    ask("M4", "does the penalty add to a second path (DReg over DReg λ=0)?", rule, (lam0, dreg), over(lam0, dreg))
    for b in r.runs("a", "schedule_baseline"):
        d = next((d for d in r.runs("a", "schedule_dreg") if d.lr_scaling == b.lr_scaling), None)
        ask(
            "M5",
            f"does DReg add to {b.lr_scaling} scaling with warm-up (DReg + schedule over baseline + schedule)?",
            rule,
            (b, d),
            over(b, d),
        )
    grid = (*sorted((*r.runs("a", "lr_grid"), *([base] if base else [])), key=lambda cfg: cfg.lr), doubled)

    def m8() -> tuple[bool, str]:
        words, values = [], {}
        for seed in sorted(seed_curves(records, dreg)):
            best = {cfg: seed_curves(records, cfg).get(seed, (None, np.array([-1.0])))[1].max() for cfg in grid}
            tuned = max(grid, key=lambda cfg: best[cfg])
            s = speedups(records, tuned, dreg).get(seed)
            if s is None:
                continue
            values[seed] = s
            dreg_best = seed_curves(records, dreg)[seed][1].max()
            words.append(
                f"seed {seed}: tuned baseline lr {tuned.lr:g} wd {tuned.weight_decay:g} best {pct(best[tuned])}, "
                f"DReg best {pct(dreg_best)}"
            )
        return every_seed(values), f"{per_seed(values)}. " + "; ".join(words)

    ask(
        "M8",
        f"does DReg beat the tuned baseline (the best of the lr grid {', '.join(f'{c.lr:g}' for c in grid[:-1])} "
        "and the doubled gradient)?",
        rule,
        (*grid, dreg),
        m8,
    )
    base_b = r.one("b", "baseline")
    for run in r.runs("b", "forms"):
        form = run.dreg_form

        def m6(run: RunConfig = run) -> tuple[bool, str]:
            s = speedups(records, base_b, run)
            rows = records.table[records.table["run"] == run_key(run.name)].drop_duplicates(["seed", "epoch"])
            diverged = [
                f"seed {k}: {g['diverged_epoch'].iloc[0] + 1:.0f}"
                for k, g in rows.groupby("seed")
                if g["state"].iloc[0] == "diverged"
            ]
            bests = ", ".join(f"seed {k}: {pct(a.max())}" for k, (_, a) in seed_curves(records, run).items())
            return every_seed(s), (
                f"diverged in epoch (1-based): {', '.join(diverged) or 'none'}; best {bests}; {per_seed(s)}"
            )

        ask(
            "M6",
            f"at 2k, does the {form} reading survive 300 epochs and speed up convergence?",
            rule,
            (base_b, run),
            m6,
        )
    return out


def mse_questions(records: FigureRecords, table: pd.DataFrame) -> list[Claim]:
    """M9 (does the mse reading reproduce Fig. 2?) and M10 (is mse the same as lambda 0?), SPEC 8.2."""
    r = Roles(records)
    sweep = table[table["panel"] == "a"] if len(table) else table
    by_batch = {(cfg.batch_size, cfg.dreg_site is not None): cfg for cfg in records.spec.panels.get("a", [])}
    batches = sorted(set(sweep["batch_size"])) if len(sweep) else []
    pairs = [(by_batch.get((bs, False)), by_batch.get((bs, True))) for bs in batches]
    missing = r.missing(*(cfg for pair in pairs for cfg in pair)) if pairs else "a run it needs is not in the figure"
    if missing is None:
        speed = [0.0 if pd.isna(v) else float(v) for v in sweep["speedup"]]
        median = float(np.median(speed))
        listed = ", ".join(f"{bs_label(row['batch_size'])}: {speed_words(row)}" for _, row in sweep.iterrows())
        m10 = {cfg.batch_size for cfg in r.runs("b", "mse")}  # the batch sizes that have seeds 1-2
        seeds = "; ".join(f"{bs_label(b.batch_size)} {per_seed(speedups(records, b, m))}"
                          for b, m in pairs if b.batch_size in m10)  # fmt: skip
        m9 = (median >= SPEEDUP_CLAIMED, f"speed-ups {listed}; median {fmt_speedup(median)}. Per seed: {seeds}")
    else:
        m9 = (False, missing)
    out = [Claim(
        records.name, "M9", "does the mse reading reproduce Fig. 2 (DReg 2-3x sooner)?",
        f"Fig. 2's rule: median speed-up over the batch sizes >= {SPEEDUP_CLAIMED:g} (never reached counts as 0)",
        m9[1], _answer(m9[0], missing),
    )]  # fmt: skip

    lam0 = {cfg.batch_size: cfg for cfg in r.runs("b", "lambda0")}
    at = {cfg.batch_size: (cfg, lam0.get(cfg.batch_size)) for cfg in r.runs("b", "mse")}
    missing = r.missing(*(cfg for pair in at.values() for cfg in pair)) if at else "a run it needs is not in the figure"
    within, words, unpaired = True, [], []
    if missing is None:
        for bs, (mse, lam0) in at.items():
            ours, theirs = seed_curves(records, mse), seed_curves(records, lam0)
            if set(ours) != set(theirs):  # "in every seed" pairs the seeds: one side's extra seed waits for its pair
                seeds = [", ".join(map(str, sorted(side))) for side in (ours, theirs)]
                unpaired.append(f"{bs_label(bs)}: mse has seed(s) {seeds[0]}, λ=0 {seeds[1]}")
            for seed in sorted(set(ours) & set(theirs)):
                a, b = float(ours[seed][1].max()), float(theirs[seed][1].max())
                margin = accuracy_margin(b, validation_size(lam0))
                within &= abs(a - b) <= margin
                words.append(f"{bs_label(bs)} seed {seed}: {pct(a)} vs {pct(b)} (margin {100 * margin:.1f} pts)")
        if unpaired:
            missing = "; ".join(unpaired) + "; every seed needs both. So far: " + ("; ".join(words) or "none")
    out.append(Claim(
        records.name, "M10", "is the mse reading the same as DReg with λ=0 (two paths, no penalty)?",
        "at 2k and at 30k, mse's best accuracy within the one-seed noise margin 2 sqrt(2 p (1 - p) / n_val) of "
        "λ=0's (p its best) in every seed", missing or "; ".join(words), _answer(within, missing),
    ))  # fmt: skip
    return out
