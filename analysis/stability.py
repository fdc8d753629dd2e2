"""How far apart the two DReg branches drift: a prediction from the optimizer alone, against the records (M7).

With only the penalty and weight decay acting on ``D = W_R - W_L`` (the cross-entropy's pull on the two
branches is taken as equal and so cancels in D), momentum SGD moves D along itself, so ``||D||`` follows a
scalar recurrence. PyTorch's SGD: ``v <- mu v + g``, ``w <- w - lr v``, and

- ``frobenius`` (``-lambda ||D||^2``): ``g_D = (wd - 4 lambda) D``, so ``d_{t+1} = (1 + mu - lr c) d_t - mu d_{t-1}``
  with ``c = wd - 4 lambda``; ``d`` grows by the largest root of ``r^2 - (1 + mu + lr (4 lambda - wd)) r + mu``
  per step, from any start, until ``||D||^2`` overflows float32;
- ``norm`` (``-lambda ||D||``): ``g_D = wd D - 2 lambda D / ||D||``: ``||D||`` rises by about
  ``2 lr lambda / (1 - mu)`` per step towards ``2 lambda / wd`` and stays there;
- ``cosine``: bounded in [0, 4] and blind to the scale: no growth is predicted;
- ``mse`` (``-lambda ||D||^2 / N``, SPEC 8.2): the frobenius recurrence with ``4 lambda / N``; where N > 4 lambda /
  wd weight decay wins and only the paths' different cross-entropy pulls move D, which this prediction leaves
  out: none is made. The figure draws ``mse`` runs beside the lambda-0 runs (two paths, no penalty) instead.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims import NO, NOT_ENOUGH, YES, Claim
from analysis.figures import save
from analysis.markdown import md_table
from analysis.records import FINISHED, AnalysisError, bs_label, load_results
from lightning_modules.settings import scaled_lr, warmup_factor

FLOAT32_MAX = float(np.finfo(np.float32).max)
FIT_FROM_STEP = 20  # the second root (mu / r ~ 0.77) has died out by then: the growth is geometric
GROWTH_TOLERANCE, DIVERGENCE_TOLERANCE, NORM_TOLERANCE = 0.02, 0.10, 0.20


def growth_root(lr: float, momentum: float, lam: float, weight_decay: float) -> float:
    """The per-step factor of ``||W_R - W_L||`` under the frobenius penalty: the recurrence's largest root."""
    b = 1 + momentum + lr * (4 * lam - weight_decay)
    return (b + math.sqrt(b * b - 4 * momentum)) / 2


def simulate(
    form: str, lrs: Sequence[float], momentum: float, lam: float, weight_decay: float, initial: float
) -> np.ndarray:
    """``||W_R - W_L||`` after each of ``len(lrs)`` steps (index 0: before any step), from ``initial``.

    Runs the optimizer's recurrence on the scalar distance in float64; past float32's range the values are
    still finite here, so the overflow step can be read off (a frobenius prediction over thousands of steps
    goes on to pass float64's range too, quietly: inf). ``cosine`` and ``mse`` have no prediction: NaN.
    """
    if form not in ("frobenius", "norm"):
        return np.full(len(lrs) + 1, math.nan)
    d = np.empty(len(lrs) + 1)
    d[0], v = initial, 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for t, lr in enumerate(lrs):
            g = (weight_decay - 4 * lam) * d[t] if form == "frobenius" else weight_decay * d[t] - 2 * lam
            v = momentum * v + g
            d[t + 1] = d[t] - lr * v
    return d


def lr_per_step(row: pd.Series, steps: int) -> list[float]:
    """The learning rate of each optimizer step of a recorded run: its scaling rule and warm-up."""
    base = scaled_lr(
        row["lr"], row["lr_scaling"], round(row["batch_size"] * row["batch_scale"]), int(row["lr_base_batch"])
    )
    warm = max(1.0, row["warmup_fraction"] * steps) if row["warmup_fraction"] > 0 else 0.0
    return [base * warmup_factor(t, warm) for t in range(steps)]


def overflow_step(d: np.ndarray) -> int | None:
    """The first step whose loss holds ``||D||^2`` past float32's range (the run's non-finite loss)."""
    over = np.flatnonzero(np.abs(np.asarray(d)) > math.sqrt(FLOAT32_MAX))
    return int(over[0]) if len(over) else None


@dataclass
class Check:
    """One DReg run's measured distance against its prediction."""

    run: str
    seed: int
    batch_size: int
    dataset: str
    form: str
    lam: float
    state: str
    steps: np.ndarray  # measured: optimizer steps at each recorded epoch end (0: before any step)
    measured: np.ndarray  # ||W_R - W_L|| there
    predicted: np.ndarray  # per step, index = step
    steps_per_epoch: int
    growth_measured: float | None = None
    growth_predicted: float | None = None
    diverged_epoch: int | None = None
    predicted_epoch: int | None = None

    @property
    def holds(self) -> bool | None:
        """M7's rule for this run; None where it does not apply (cosine, mse; lambda 0, where no penalty drives the
        distance and only the cross-entropy's difference between the paths moves it) or cannot be decided yet."""
        if self.lam == 0:
            return None
        if self.form == "frobenius":
            if self.growth_measured is None:
                return None
            ok = abs(self.growth_measured / self.growth_predicted - 1) <= GROWTH_TOLERANCE
            if self.predicted_epoch is None:  # not predicted to overflow within the run
                return ok and self.diverged_epoch is None
            if self.diverged_epoch is None:
                return False if self.state in FINISHED else None
            return ok and abs(self.diverged_epoch - self.predicted_epoch) <= DIVERGENCE_TOLERANCE * self.predicted_epoch
        if self.form == "norm" and self.state in FINISHED:
            return abs(self.measured[-1] / self.predicted[int(self.steps[-1])] - 1) <= NORM_TOLERANCE
        return None


def check_run(run: pd.DataFrame) -> Check:
    """The measured and predicted distance of one run's records (one seed)."""
    row = run.iloc[0]
    steps = run["step"].to_numpy(int)
    per_epoch = int(steps[0])
    total = max(per_epoch * int(row["epochs"]), int(steps[-1]))
    initial = math.sqrt(row["dreg_initial"]) if pd.notna(row.get("dreg_initial")) else None
    measured = np.sqrt(run["dreg/distance"].to_numpy(float))
    start = initial if initial is not None else measured[0]
    predicted = simulate(
        row["dreg_form"], lr_per_step(row, total), row["momentum"], row["dreg_lambda"], row["weight_decay"], start
    )
    check = Check(
        run=row["run"],
        seed=int(row["seed"]),
        batch_size=int(row["batch_size"]),
        dataset=row["dataset"],
        form=row["dreg_form"],
        lam=float(row["dreg_lambda"]),
        state=row["state"],
        steps=np.concatenate([[0], steps]) if initial is not None else steps,
        measured=np.concatenate([[initial], measured]) if initial is not None else measured,
        predicted=predicted,
        steps_per_epoch=per_epoch,
        diverged_epoch=int(row["diverged_epoch"]) if row["state"] == "diverged" else None,
    )
    if row["dreg_form"] == "frobenius":
        fit = (check.steps >= FIT_FROM_STEP) & np.isfinite(check.measured) & (check.measured > 0)
        if fit.sum() >= 2:  # per-step growth: exp of the slope of log ||D|| over the same steps, both sides
            check.growth_measured = growth(check.steps[fit], check.measured[fit])
            check.growth_predicted = growth(check.steps[fit], predicted[check.steps[fit]])
        step = overflow_step(predicted)  # the loss of step `step` (0-based) is the first non-finite one
        check.predicted_epoch = None if step is None or step >= total else step // per_epoch
    return check


def growth(steps: np.ndarray, distance: np.ndarray) -> float:
    """Per-step growth factor of ``distance``: exp of the least-squares slope of its log over ``steps``."""
    return float(math.exp(np.polyfit(steps, np.log(distance), 1)[0]))


def checks(results: Path | str, preset: str) -> list[Check]:
    """Every DReg run (every seed) under ``results/<preset>`` with at least one recorded epoch."""
    table = load_results(results, preset)
    table = table[table["dreg_site"].notna() & table["dreg/distance"].notna()] if "dreg/distance" in table else []
    if not len(table):
        return []
    return [check_run(g.sort_values("epoch")) for _, g in table.groupby(["run_name"], sort=True)]


UNPREDICTED = "mse and lambda 0"  # the panel of the runs no optimizer-only prediction covers


def panel(c: Check) -> str:
    """The figure panel a run is drawn in: its form, or beside the lambda-0 runs for ``mse``."""
    return UNPREDICTED if c.form == "mse" or c.lam == 0 else c.form


def predicted(c: Check) -> bool:
    """Whether M7 predicts this run's distance (a form with a recurrence and a penalty that drives it)."""
    return c.form in ("frobenius", "norm") and c.lam > 0


def group(c: Check) -> str:
    """A run's legend entry: its batch size (its learning rate, so its predicted growth), and beside the lambda-0
    runs whether it is one of them; models, seeds and variants share it (the report's table lists each run)."""
    kind = "" if panel(c) != UNPREDICTED else " mse" if c.form == "mse" else " λ=0"
    return f"BS {bs_label(c.batch_size)}{kind}"


def draw(found: list[Check], title: str) -> Figure:
    """Measured ``||W_R - W_L||`` per step (solid, markers; lambda 0 dash-dotted) and its prediction (dashed), log
    scale, one panel per form, one colour per batch size."""
    order = ("frobenius", "norm", "cosine", UNPREDICTED)
    forms = [f for f in order if any(panel(c) == f for c in found)] or ["frobenius"]
    sizes = sorted({c.batch_size for c in found})
    fig = Figure(figsize=(5.4 * len(forms), 4.6), layout="constrained")
    axes = fig.subplots(1, len(forms), squeeze=False)[0]
    for ax, form in zip(axes, forms, strict=True):
        runs = sorted((c for c in found if panel(c) == form), key=lambda c: (c.batch_size, group(c)))
        groups = [group(c) for c in runs]
        counts, labelled = Counter(groups), set()
        for c, g in zip(runs, groups, strict=True):
            n = counts[g]
            label = "_nolegend_" if g in labelled else f"{g} ({n} run{'s' * (n > 1)})"
            labelled.add(g)
            ax.plot(
                c.steps,
                c.measured,
                color=f"C{sizes.index(c.batch_size) % 10}",
                linestyle="-." if c.lam == 0 else "-",
                marker=".",
                markersize=3,
                linewidth=1.2,
                label=label,
            )
            if predicted(c) and np.isfinite(c.predicted).any():
                limit = min(len(c.predicted), int(c.steps[-1]) + 2 * c.steps_per_epoch)
                ax.plot(np.arange(limit), c.predicted[:limit], color="black", linestyle="--", linewidth=0.9, zorder=3)
        ax.axhline(math.sqrt(FLOAT32_MAX), color="gray", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        what = "measured (no prediction)" if form == UNPREDICTED else "measured (colour) vs predicted (black, dashed)"
        ax.set_title(f"{form}: {what}", fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("||W_R - W_L||_F (dotted: its square overflows float32)")
    fig.suptitle(title, fontsize=10)
    return fig


def one_based(epoch: int | None) -> int | None:
    """A record's 0-based epoch as the report counts it (the row written after the first epoch is epoch 1)."""
    return None if epoch is None else epoch + 1


def table_rows(found: list[Check]) -> list[list[str]]:
    """M7's table: per run and seed, growth measured / predicted, divergence epoch measured / predicted."""

    def num(x: float | None, spec: str) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

    rows = []
    for c in found:
        prediction = f"{c.predicted[int(c.steps[-1])]:.3g}" if predicted(c) else "-"
        final = f"{c.measured[-1]:.3g} / {prediction}"
        verdict = {True: "yes", False: "no", None: "-"}[c.holds]
        rows.append(
            [
                c.run,
                str(c.seed),
                c.form,
                c.state,
                f"{num(c.growth_measured, '.4f')} / {num(c.growth_predicted, '.4f')}",
                f"{num(one_based(c.diverged_epoch), 'd')} / {num(one_based(c.predicted_epoch), 'd')}",
                final,
                verdict,
            ]
        )
    return rows


def question(found: list[Check]) -> Claim:
    """M7: does the measured distance follow the prediction, in every run where the rule applies?"""
    decided = [c for c in found if c.holds is not None]
    failed = [f"{c.run} s{c.seed}" for c in decided if not c.holds]
    undecided = [c for c in found if c.holds is None and predicted(c)]
    if failed:
        answer = NO
    elif decided and not undecided:
        answer = YES
    else:
        answer = NOT_ENOUGH
    measured = (
        f"{len(decided) - len(failed)} of {len(decided)} decided runs follow it"
        + (f" (not: {', '.join(failed)})" if failed else "")
        + (f"; {len(undecided)} not decided yet" if undecided else "")
    )
    rule = (
        f"frobenius: fitted per-step growth of ||W_R - W_L|| within {GROWTH_TOLERANCE:.0%} of the prediction and "
        f"the diverged epoch within {DIVERGENCE_TOLERANCE:.0%} of the predicted one; norm: the final distance "
        f"within {NORM_TOLERANCE:.0%}"
    )
    return Claim(
        "stability", "M7", "does the measured distance follow the optimizer-only prediction?", rule, measured, answer
    )


def section(found: list[Check], figures_dir: Path | None) -> str:
    """The report's stability section: the figure and the table behind M7."""
    if not found:
        return "No DReg run has a recorded epoch yet."
    parts = (
        ["![stability](stability.png)"] if figures_dir is not None and (figures_dir / "stability.png").exists() else []
    )
    header = [
        "run",
        "seed",
        "form",
        "state",
        "growth per step: measured / predicted",
        "diverged in epoch (1-based): measured / predicted",
        "last ||W_R - W_L||: measured / predicted",
        "holds",
    ]
    parts.append(md_table(header, table_rows(found)))
    return "\n\n".join(parts)


def render(results: Path | str, preset: str, out: Path | str | None = None) -> list[Path]:
    """``stability.png`` and ``.pdf`` of every DReg run under ``results/<preset>``."""
    found = checks(results, preset)
    if not found:
        raise AnalysisError(f"no DReg run with a recorded epoch under {Path(results) / preset}")
    fig = draw(found, f"DReg distance per step against the optimizer-only prediction, preset {preset}")
    return save(fig, out if out is not None else Path(results) / preset / "analysis", "stability")
