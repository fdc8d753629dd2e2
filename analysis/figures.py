"""The paper's figures from run records: validation accuracy per epoch, ``render(name)`` for each, PNG and PDF.

DReg lines are solid and their baselines dashed in the same colour; with several seeds the line is the mean
and a band spans min to max; a diverged run is drawn to its last epoch, ends in an 'x' and says so in the
legend; runs not in the results are skipped and listed under the figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.records import MODEL_LABELS, Curve, FigureRecords, bs_label, curves, describe, load_figure_records
from experiments.config import RunConfig

BASELINE_COLOR = "black"
LEGEND_INSIDE = 6  # a panel with more lines than this has its legend under it, off the curves


@dataclass
class Style:
    label: str
    color: str | tuple
    linestyle: str = "-"


@dataclass
class Rendered:
    """A drawn figure, the files written and what the reader should know (missing runs, data used)."""

    figure: Figure
    paths: list[Path]
    notes: list[str]


def _convergence_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    batches = sorted({cfg.batch_size for cfg in records.spec.runs})
    palette = colormaps["tab10"]

    def style(cfg: RunConfig) -> Style:
        color = palette(batches.index(cfg.batch_size))
        kind = "DReg" if cfg.dreg_site else "baseline"
        return Style(f"BS {bs_label(cfg.batch_size)} {kind}", color, "-" if cfg.dreg_site else "--")

    return style


def _site_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    palette = colormaps["viridis"]

    def style(cfg: RunConfig) -> Style:
        if cfg.dreg_site is None:
            return Style("baseline (no DReg)", BASELINE_COLOR, "--")
        level = int(cfg.dreg_site[1:])
        return Style(f"DReg at {cfg.dreg_site}", palette((level - 1) / 7))

    return style


def _lambda_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    lambdas = sorted({cfg.dreg_lambda for cfg in records.spec.runs if cfg.dreg_site and cfg.dreg_lambda > 0})
    palette = colormaps["plasma"]

    def style(cfg: RunConfig) -> Style:
        if cfg.dreg_site is None:
            return Style("baseline (no DReg)", BASELINE_COLOR, "--")
        if cfg.dreg_lambda == 0:
            return Style("λ=0 (two paths, no penalty)", "tab:gray", "-.")
        return Style(f"DReg λ={cfg.dreg_lambda:g}", palette(0.85 * lambdas.index(cfg.dreg_lambda) / len(lambdas)))

    return style


def _momentum_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    colors = {0.0: "tab:blue", 0.5: "tab:orange", 0.9: "tab:green"}

    def style(cfg: RunConfig) -> Style:
        optimizer = "SGD" if cfg.momentum == 0 else f"momentum {cfg.momentum:g}"
        kind = "DReg" if cfg.dreg_site else "baseline"
        return Style(f"{optimizer} {kind}", colors.get(cfg.momentum, "tab:red"), "-" if cfg.dreg_site else "--")

    return style


def _control_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    def style(cfg: RunConfig) -> Style:
        if cfg.dreg_site is None:
            return Style("baseline (no DReg)", BASELINE_COLOR, "--")
        if cfg.dreg_lambda == 0:
            return Style("λ=0 (two paths, no penalty)", "tab:gray", "-.")
        if cfg.path_loss == "mean":
            return Style("DReg, path loss mean", "tab:orange")
        if cfg.dreg_form == "cosine":
            return Style("DReg, cosine form", "tab:green")
        return Style("DReg (paper: sum, Frobenius)", "tab:blue")

    return style


def _mechanism_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    """Each run its own colour, labelled by what it changes against the figure's plain baseline and DReg."""
    labels = [describe(cfg) for cfg in records.spec.runs]
    palette = colormaps["tab20"]

    def style(cfg: RunConfig) -> Style:
        label = describe(cfg)
        return Style(label, palette(labels.index(label) % 20), "-" if cfg.dreg_site else "--")

    return style


def _mse_styles(records: FigureRecords) -> Callable[[RunConfig], Style]:
    """Colour by batch size, as in Fig. 2, so a panel of seven batch sizes tells them apart; the line style tells
    the baseline, the mse reading and DReg with lambda 0 apart."""
    batch_colour = _convergence_styles(records)

    def style(cfg: RunConfig) -> Style:
        line = "--" if cfg.dreg_site is None else "-." if cfg.dreg_lambda == 0 else "-"
        return Style(f"BS {bs_label(cfg.batch_size)} {describe(cfg)}", batch_colour(cfg).color, line)

    return style


STYLES: dict[str, Callable[[FigureRecords], Callable[[RunConfig], Style]]] = {
    "batch_sweep": _convergence_styles, "site_sweep": _site_styles, "lambda_sweep": _lambda_styles,
    "momentum_sweep": _momentum_styles, "controls": _control_styles, "mechanism": _mechanism_styles,
    "mse": _mse_styles,
}  # fmt: skip


def _title(records: FigureRecords) -> str:
    models = " and ".join(dict.fromkeys(MODEL_LABELS[cfg.model] for cfg in records.spec.runs))
    paper = records.spec.of_paper
    data = records.data_words("paper" if paper else "specified")
    if paper:
        return f"{records.spec.paper}: {models} on {data}, {records.spec.subtitle}"
    return f"{records.spec.title} ({data}): {records.spec.subtitle}"  # the title names the model


def _panel_title(panel: str, runs: list[RunConfig]) -> str:
    models = dict.fromkeys(MODEL_LABELS[r.model] for r in runs)
    batches = ", ".join(bs_label(b) for b in dict.fromkeys(r.batch_size for r in runs))
    prefix = f"{' / '.join(models)}, " if len(models) == 1 and len({r.model for r in runs}) == 1 else ""
    return f"({panel}) {prefix}BS {batches}"


def _state_words(curve: Curve) -> str:
    """' (diverged)' for one seed; ' (3 seeds, 1 diverged)' for several; nothing for finished runs."""
    counts = {s: curve.states.count(s) for s in ("diverged", "running", "failed", "pending") if s in curve.states}
    if len(curve.seeds) == 1:
        return "".join(f" ({s})" for s in counts)
    return f" ({len(curve.seeds)} seeds" + "".join(f", {n} {s}" for s, n in counts.items()) + ")"


def draw_curve(ax: Axes, curve: Curve, style: Style) -> None:
    """One line (mean over seeds), a min-max band with several seeds, an 'x' where a seed diverged."""
    x, y = curve.epochs, 100 * curve.mean
    if len(curve.seeds) > 1:
        ax.fill_between(x, 100 * curve.low, 100 * curve.high, color=style.color, alpha=0.15, linewidth=0)
    marks = [int(np.flatnonzero(x == e)[0]) for e in curve.diverged_at]
    marker = "x" if marks else ("o" if len(x) == 1 else None)
    label = style.label + _state_words(curve)
    ax.plot(
        x, y, color=style.color, linestyle=style.linestyle, label=label, marker=marker,
        markevery=marks or None, markersize=9, markeredgewidth=2, linewidth=1.6,
    )  # fmt: skip


def draw(records: FigureRecords) -> tuple[Figure, list[str]]:
    """The figure of ``records``: one axes per panel that has records (every panel while none has), one line per
    run found; and the notes to print (the runs not found, of every panel)."""
    style = STYLES[records.spec.kind](records)
    found = curves(records)
    panels = {panel: lines for panel, lines in found.items() if lines} or found
    rows_below = max([(len(lines) + 1) // 2 for lines in panels.values() if len(lines) > LEGEND_INSIDE] or [0])
    fig = Figure(figsize=(5.4 * len(panels), 4.9 + 0.17 * rows_below), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    skipped = [f"({panel}) " + ", ".join(style(cfg).label for cfg in missing)
               for panel, missing in records.missing.items() if missing]  # fmt: skip
    for ax, (panel, lines) in zip(axes, panels.items(), strict=True):
        runs = records.spec.panels[panel]
        for curve in lines:
            line = style(curve.config)
            if curve.config.precision != records.precision:  # a line lent from another precision (a note says why)
                line = replace(line, label=f"{line.label}, {curve.config.precision}")
            draw_curve(ax, curve, line)
        if len(lines) > LEGEND_INSIDE:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2)
        elif lines:
            ax.legend(fontsize=7.5, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no records yet", transform=ax.transAxes, ha="center", va="center", color="gray")
        ax.set_title(_panel_title(panel, runs), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(0, max([cfg.epochs for cfg in runs] + [int(c.epochs[-1]) for c in lines]))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    if not any(panels.values()):
        axes[0].set_ylim(0, 100)
    width = 60 * len(panels)
    fig.suptitle(f"{textwrap.fill(_title(records), width)}\n{textwrap.fill('scale: ' + records.scale_words(), width)}",
                 fontsize=10)  # fmt: skip
    notes = list(records.notes)
    if skipped:
        text = "not in the results yet (skipped): " + "; ".join(skipped)
        fig.supxlabel(textwrap.fill(text, 60 * len(panels)), fontsize=8, color="dimgray")
        notes.append(text)
    return fig, notes


def render(
    name: str, results: Path | str = "results", preset: str = "mini", out: Path | str | None = None,
    dataset: str | None = None,
) -> Rendered:  # fmt: skip
    """Draw figure ``name`` from ``results/<preset>`` and write ``<out>/<name>.png`` and ``.pdf``.

    ``out`` defaults to ``results/<preset>/analysis``.
    """
    fig, notes = draw(load_figure_records(name, results, preset, dataset))
    return Rendered(fig, save(fig, out if out is not None else Path(results) / preset / "analysis", name), notes)


def save(fig: Figure, out: Path | str, name: str) -> list[Path]:
    """Write ``<out>/<name>.png`` and ``.pdf``."""
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = [Path(out) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=130)
    return paths
