"""Is bf16 autocast the same experiment as float32? The same runs in both precisions, several seeds each.

The `mini` and `quick` presets train in bf16 autocast (weights, optimizer state and the DReg distance stay
float32). That is a deviation from an fp32 replication only if it changes the outcome by more than a change
of seed does. The rule, fixed before the fp32 runs were seen:

- per arm (each run config, i.e. the baseline and the DReg run) and epoch, the precision effect is the mean
  over seeds of |acc_bf16(seed) - acc_fp32(seed)| (same seed: same initialization and batches), the seed
  spread the mean over seed pairs and both precisions of |acc(seed) - acc(seed')|; each averaged over epochs;
- bf16 is the same experiment when, for every arm, the precision effect is no larger than the seed spread
  and, for every DReg seed, the per-step growth of ||W_R - W_L|| agrees between precisions within 0.1%.

``python -m analysis precision --preset quick --results results/committed`` writes ``precision.md`` and
``precision.png`` (each arm's curves, bf16 solid, fp32 dashed, one colour per seed).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures import save
from analysis.markdown import md_table
from analysis.records import FINISHED, AnalysisError, load_results, run_key
from analysis.stability import growth, growth_root

BF16, FP32 = "bf16-mixed", "32-true"
GROWTH_AGREEMENT = 1e-3  # relative; the growth is a property of the optimizer, not of the precision
GROWTH_FROM_STEP = 8  # a quick 30k run has 15 steps: fit where the transient has mostly died out


@dataclass
class Arm:
    """One run config in both precisions: ``acc[precision]`` is seeds x epochs, ``growth[precision]`` per seed."""

    label: str
    seeds: list[int]
    acc: dict[str, np.ndarray]
    growth: dict[str, list[float]]
    predicted: float | None  # the optimizer-only growth (analysis.stability), for DReg arms

    @property
    def precision_effect(self) -> float:
        return float(np.mean(np.abs(self.acc[BF16] - self.acc[FP32])))

    @property
    def seed_spread(self) -> float:
        pairs = [np.abs(a[i] - a[j]) for a in self.acc.values() for i, j in itertools.combinations(range(len(a)), 2)]
        return float(np.mean(pairs)) if pairs else float("nan")

    def best_difference(self) -> tuple[float, float]:
        """Mean and standard error over seeds of best-accuracy bf16 minus fp32."""
        d = self.acc[BF16].max(axis=1) - self.acc[FP32].max(axis=1)
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")

    def growth_gap(self) -> float | None:
        """The largest relative difference of the DReg growth between precisions, over seeds."""
        if not self.growth[BF16]:
            return None
        return max(abs(b / f - 1) for b, f in zip(self.growth[BF16], self.growth[FP32], strict=True))

    @property
    def same(self) -> bool:
        gap = self.growth_gap()
        return self.precision_effect <= self.seed_spread and (gap is None or gap <= GROWTH_AGREEMENT)


def arms(results: Path | str, preset: str) -> list[Arm]:
    """Every finished run config recorded in both precisions, with the seeds finished in both."""
    table = load_results(results, preset)
    table = table[table["state"].isin(FINISHED)]
    table = table.assign(key=[re.sub(r"-precision[^-]+", "", run_key(n)) for n in table["run_name"]])
    found = []
    for key, rows in table.groupby("key", sort=True):
        by = {p: rows[rows["precision"] == p] for p in (BF16, FP32)}
        seeds = sorted(set(by[BF16]["seed"]) & set(by[FP32]["seed"]))
        if not seeds:
            continue
        runs = {p: [r[r["seed"] == s].sort_values("epoch") for s in seeds] for p, r in by.items()}
        epochs = min(len(x) for per_seed in runs.values() for x in per_seed)  # the epochs every run has
        acc = {p: np.stack([x["val/acc"].to_numpy(float)[:epochs] for x in xs]) for p, xs in runs.items()}
        dreg = "dreg/distance" in rows and rows["dreg/distance"].notna().any()
        grow = {p: [run_growth(x) for x in xs] if dreg else [] for p, xs in runs.items()}
        row = by[BF16].iloc[0]
        predicted = (
            growth_root(row["lr"], row["momentum"], row["dreg_lambda"], row["weight_decay"]) if grow[BF16] else None
        )
        found.append(Arm(key, seeds, acc, grow, predicted))
    if not found:
        raise AnalysisError(f"no run under {Path(results) / preset} finished in both {BF16} and {FP32}: run "
                            f"the same runs with --precision 32-true")  # fmt: skip
    return found


def run_growth(run: pd.DataFrame) -> float:
    """The measured per-step growth of ||W_R - W_L|| of one DReg run."""
    steps = run["step"].to_numpy(int)
    fit = steps >= GROWTH_FROM_STEP
    fit = fit if fit.sum() >= 2 else steps >= 0  # a shorter run: every step
    return growth(steps[fit], np.sqrt(run["dreg/distance"].to_numpy(float)[fit]))


def report(found: list[Arm]) -> str:
    """The comparison as markdown: one row per arm, the rule, and the verdict."""
    rows = []
    for a in found:
        mean, se = a.best_difference()
        gap = a.growth_gap()
        growths = (
            "-"
            if gap is None
            else "; ".join(f"{b:.5f} / {f:.5f}" for b, f in zip(a.growth[BF16], a.growth[FP32], strict=True))
            + f" (predicted {a.predicted:.5f})"
        )
        rows.append([
            a.label, ", ".join(map(str, a.seeds)), f"{100 * a.precision_effect:.2f}", f"{100 * a.seed_spread:.2f}",
            f"{100 * mean:+.2f} ± {100 * se:.2f}", growths, "yes" if a.same else "no",
        ])  # fmt: skip
    header = [
        "run", "seeds", "precision effect (points)", "seed spread (points)", "best acc bf16 - fp32 (mean ± s.e.)",
        "DReg growth per step, bf16 / fp32, per seed", "same experiment",
    ]  # fmt: skip
    verdict = all(a.same for a in found)
    rule = "\n\n".join(__doc__.split("\n\n")[1:3]).strip()
    return "\n\n".join([
        "# bf16 autocast against float32",
        rule,
        md_table(header, rows),
        "Verdict: " + ("bf16 is the same experiment: its effect is within seed noise."
                       if verdict else "bf16 changes the outcome beyond seed noise."),
    ]) + "\n"  # fmt: skip


def draw(found: list[Arm], title: str) -> Figure:
    fig = Figure(figsize=(5.2 * len(found), 4.2), layout="constrained")
    axes = fig.subplots(1, len(found), squeeze=False)[0]
    for ax, a in zip(axes, found, strict=True):
        for i, seed in enumerate(a.seeds):
            for p, style in ((BF16, "-"), (FP32, "--")):
                acc = a.acc[p][i]
                ax.plot(np.arange(1, len(acc) + 1), acc, style, color=f"C{i}", label=f"seed {seed}, {p}")
        ax.set_title(a.label, fontsize=8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation accuracy")
    fig.suptitle(title, fontsize=10)
    return fig


def render(results: Path | str, preset: str, out: Path | str | None = None) -> list[Path]:
    """``precision.md``, ``precision.png`` and ``.pdf`` under ``out`` (default RESULTS/PRESET/analysis)."""
    found = arms(results, preset)
    folder = Path(out) if out is not None else Path(results) / preset / "analysis"
    paths = save(draw(found, f"bf16 autocast (solid) against float32 (dashed), preset {preset}"), folder, "precision")
    (folder / "precision.md").write_text(report(found))
    return [*paths, folder / "precision.md"]
