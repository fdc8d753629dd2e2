"""What the notebooks call: where the records are (environment variables) and one figure shown with its claims."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.figures import draw, save
from analysis.records import load_figure_records
from analysis.report import comparison_table
from analysis.verdicts import FigureAnalysis, analyze

ROOT = Path(__file__).resolve().parents[1]


def settings() -> tuple[Path, str, Path]:
    """Results folder, preset and output folder from ``DREG_RESULTS``, ``DREG_PRESET`` and ``DREG_OUT``.

    Defaults: the repository's ``results/``, ``mini``, and ``<results>/<preset>/analysis``; a notebook runs
    from its own folder, so a relative default would point into ``analysis/notebooks``.
    """
    results = Path(os.environ.get("DREG_RESULTS") or ROOT / "results")
    preset = os.environ.get("DREG_PRESET") or "mini"
    out = Path(os.environ.get("DREG_OUT") or results / preset / "analysis")
    return results, preset, out


def show(name: str, results: Path, preset: str, out: Path) -> FigureAnalysis:
    """Draw figure ``name`` (PNG and PDF in ``out``), display it, its notes, its comparison table and claims."""
    from IPython.display import Image, Markdown, display

    records = load_figure_records(name, results, preset)
    fig, notes = draw(records)
    png = save(fig, out, name)[0]
    analysis = analyze(records)
    display(Image(filename=str(png)))
    claims = [f"- **{c.verdict}** {c.panel and f'({c.panel}) '}{c.statement}: {c.measured} (rule: {c.rule})"
              for c in analysis.claims]  # fmt: skip
    notes_md = [f"Note: {note}." for note in notes]
    display(Markdown("\n\n".join([*notes_md, comparison_table(records.spec.kind, analysis.table), *claims])))
    return analysis
