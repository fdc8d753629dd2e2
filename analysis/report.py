"""The markdown replication report: every claim, what was measured, at which scale and seeds, and a verdict."""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd

from analysis import claims as cl
from analysis.records import MODEL_LABELS, AnalysisError, FigureRecords, bs_label, check_preset, load_figure_records
from experiments.config import FIGURE_NAMES


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([lines[0], "| " + " | ".join("---" for _ in header) + " |", *lines[1:]])


def _num(value: object, spec: str = "d") -> str:
    return "-" if value is None or pd.isna(value) else format(int(value) if spec == "d" else value, spec)


def setting(name: str, row: pd.Series) -> str:
    """What the comparison varies, in the figure's terms."""
    model = MODEL_LABELS[row["model"]]
    if name in ("fig2", "fig3", "fig4", "fig5"):
        return f"BS {bs_label(row['batch_size'])} (run: {row['global_batch']})"
    if name == "fig6":
        return f"{model}, DReg at {row['dreg_site']}"
    if name == "fig7":
        return f"{model}, λ={row['dreg_lambda']:g}"
    if name == "fig8":
        return f"{model}, momentum {row['momentum']:g}"
    variant = "λ=0" if row["dreg_lambda"] == 0 else "path loss mean" if row["path_loss"] == "mean" else (
        "cosine form" if row["dreg_form"] == "cosine" else "paper form")  # fmt: skip
    return f"{model}, {variant}"


def _best(row: pd.Series, prefix: str) -> str:
    """Best accuracy and its epoch, e.g. '91.2% (8)'."""
    if row[f"{prefix}_state"] == "missing":
        return "-"
    return f"{cl.pct(row[f'{prefix}_best'])} ({row[f'{prefix}_best_epoch']:.0f})"


def comparison_table(name: str, table: pd.DataFrame) -> str:
    """One line per DReg run against its baseline, accuracies in %, epochs 1-based."""
    header = ["panel", "setting", "baseline best (epoch)", "baseline final", "DReg best (epoch)", "DReg final",
              "epoch reaching baseline best: baseline / DReg (steps)", "speed-up", "states"]  # fmt: skip
    rows = []
    for _, r in table.iterrows():
        reach = f"{_num(r['base_epoch'])} / {_num(r['dreg_epoch'])} ({_num(r['base_step'])} / {_num(r['dreg_step'])})"
        both = r["dreg_state"] != "missing" and r["base_state"] != "missing"
        rows.append([
            r["panel"], setting(name, r), _best(r, "base"), cl.pct(r["base_final"]), _best(r, "dreg"),
            cl.pct(r["dreg_final"]), reach if r["base_state"] != "missing" else "-",
            cl.fmt_speedup(r["speedup"]) if both else "-", f"{r['base_state']} / {r['dreg_state']}",
        ])  # fmt: skip
    return md_table(header, rows)


def _scale(records: FigureRecords, reference: str) -> str:
    n_runs = len(records.spec.runs)
    found = n_runs - sum(len(m) for m in records.missing.values())
    data = records.data_words(reference)
    return f"Scale: {records.scale_words()}. Data: {data}. {found} of {n_runs} runs have records."


def figure_section(analysis: cl.FigureAnalysis, figures_dir: Path | None) -> str:
    records = analysis.records
    name = records.name
    paper = name != "controls"
    heading = f"{records.spec.paper}: {records.spec.title}" if paper else f"{records.spec.title} (beyond the paper)"
    parts = [f"## {heading}", _scale(records, "paper" if paper else "specified")]
    parts += [f"Note: {note}." for note in records.notes]
    if figures_dir is not None and (figures_dir / f"{name}.png").exists():
        parts.append(f"![{name}]({name}.png)")
    if len(records.table):
        parts.append(comparison_table(name, analysis.table))
    parts += [f"- **{c.verdict}** ({_where(c)}): {c.statement}. Rule: {c.rule}. Measured: {c.measured}."
              for c in analysis.claims]  # fmt: skip
    return "\n\n".join(parts)


def _where(claim: cl.Claim) -> str:
    return f"{claim.figure} ({claim.panel})" if claim.panel else claim.figure


def build_report(results: Path | str = "results", preset: str = "mini", figures_dir: Path | None = None) -> str:
    """The report's markdown for every figure and the controls at ``preset``."""
    check_preset(preset)
    folder = Path(results) / preset
    if not any(folder.glob("*/config.yaml")):
        raise AnalysisError(f"no run records under {folder}: run a sweep first (python -m experiments run ...)")
    analyses = [cl.analyze(load_figure_records(name, results, preset)) for name in FIGURE_NAMES]
    claims = [c for a in analyses for c in a.claims]
    paper = [c for c in claims if c.figure != "controls"]
    counts = {v: sum(c.verdict == v for c in paper) for v in (cl.REPRODUCED, cl.NOT_REPRODUCED, cl.NOT_ENOUGH)}
    summary = md_table(
        ["claim", "measured", "verdict"], [[f"{_where(c)}: {c.statement}", c.measured, c.verdict] for c in claims]
    )
    definitions = cl.__doc__.split("Definitions (the report repeats them):")[1].strip()
    head = [
        "# DReg replication report",
        f"Records: `{folder}`; generated {datetime.date.today().isoformat()}. Settings were fixed before any result "
        "was seen and never tuned; every number is as measured, whether or not it favours DReg.",
        f"Paper claims: {counts[cl.REPRODUCED]} reproduced, {counts[cl.NOT_REPRODUCED]} not reproduced, "
        f"{counts[cl.NOT_ENOUGH]} not enough data. The controls answer yes / no.",
        "## Definitions", definitions, "## Verdicts", summary,
    ]  # fmt: skip
    return "\n\n".join(head + [figure_section(a, figures_dir) for a in analyses]) + "\n"


def write_report(results: Path | str = "results", preset: str = "mini", out: Path | str | None = None) -> Path:
    """Write the report (default ``results/<preset>/analysis/report.md``); figures there are linked."""
    out = Path(out) if out is not None else Path(results) / preset / "analysis" / "report.md"
    text = build_report(results, preset, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
