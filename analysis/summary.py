"""The replication at a glance (``python -m analysis summary`` -> ``RESULTS/REPORT.md``): one row per claim of the
paper with its best evidence first, the mechanism questions likewise, the settings of each scale, the compute,
the deviations, and what was easy and difficult. Every number comes from the run records (and, for the
overhead, the committed benchmark record); the per-scale reports hold the detail.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from analysis import claims as cl
from analysis import report, stability
from analysis.markdown import md_table
from analysis.records import (
    DATASET_LABELS,
    MODEL_LABELS,
    AnalysisError,
    FigureRecords,
    damaged_runs,
    load_figure_records,
    load_results,
)
from analysis.verdicts import FigureAnalysis, analyze
from experiments.config import RunConfig, preset_settings
from experiments.specs import FIGURE_NAMES

HERE = Path(__file__).parent
SCALES = ("mini", "full", "quick")  # best evidence first: the paper's steps, one paper-scale run, a 15-epoch look
PER_FIGURE = ("model", "dataset", "batch_size", "dreg_site", "seed", "preset")  # set by the figure specs
NO_RULE_FIXED = "no rule fixed (SPEC 7-8 gave none)"


@dataclass
class Evidence:
    """A claim's verdict at one scale, and the records it was read from."""

    preset: str
    claim: cl.Claim
    records: FigureRecords
    scope: str | None = None  # where, when the claim read other runs than ``records`` (M7 reads every DReg run)

    @property
    def decided(self) -> bool:
        return self.claim.verdict != cl.NOT_ENOUGH

    def where(self) -> str:
        return self.scope or where(self.preset, self.records)


def where(preset: str, records: FigureRecords) -> str:
    """The scale, data and seeds of a figure's evidence."""
    own = preset_settings(preset).get("precision", RunConfig.precision)
    precision = f", in {records.precision}" if records.precision != own else ""
    return place(preset, records.data_words() + precision, records.seeds)


def place(preset: str, data: str, seeds: list[int]) -> str:
    """The scale, data and seeds of a piece of evidence, in words."""
    return f"`{preset}`, {data}, seeds {cl.seed_words(seeds) if seeds else '-'}"


def _analyses(results: Path, preset: str) -> list[FigureAnalysis]:
    """Every figure's analysis at ``preset``; none where the preset has no records."""
    if not any((results / preset).glob("*/config.yaml")):
        return []
    return [analyze(load_figure_records(name, results, preset)) for name in FIGURE_NAMES]


def _matches(claim: cl.Claim, rule: dict) -> bool:
    return (
        claim.figure == rule["figure"]
        and rule.get("panel", claim.panel) == claim.panel
        and rule["statement"] in claim.statement
    )


def _evidence(by_scale: dict[str, list[FigureAnalysis]], rule: dict) -> list[Evidence]:
    """The claim ``rule`` names at every scale that has it, best evidence first."""
    found = []
    for preset, analyses in by_scale.items():
        for a in analyses:
            found += [Evidence(preset, c, a.records) for c in a.claims if _matches(c, rule)]
    return sorted(found, key=lambda e: not e.decided)  # stable: decided scales first, each in SCALES' order


def _others(evidence: list[Evidence]) -> str:
    return "; ".join(f"{e.preset}: {e.claim.verdict}" for e in evidence[1:]) or "-"


def _verdict(claim: cl.Claim) -> str:
    return f"**{claim.verdict}**{report._before(claim)}"


def _worked_example(by_scale: dict[str, list[FigureAnalysis]], rule: dict) -> list[str]:
    """The paper's '110 vs 300 epochs at 4k': measured where the records have it; no rule decides it."""
    for preset, analyses in by_scale.items():
        for a in analyses:
            rows = a.table[a.table["batch_size"] == rule["batch_size"]] if a.records.name == rule["figure"] else []
            if not len(rows) or not rows["finished"].all():
                continue
            r = rows.iloc[0]
            dreg = "never reaches it" if pd.isna(r["dreg_epoch"]) else f"reaches it in epoch {r['dreg_epoch']:.0f}"
            own = f"its own best {cl.pct(r['dreg_best'])} in epoch {r['dreg_best_epoch']:.0f}"
            base = f"the baseline's best {cl.pct(r['base_best'])} first in epoch {r['base_epoch']:.0f}"
            measured = f"{base}; DReg {dreg} ({own})"
            return [where(preset, a.records), measured, NO_RULE_FIXED, "-"]
    return ["-", "no finished 4k pair", NO_RULE_FIXED, "-"]


def _overhead(results: Path, file: str) -> list[str]:
    """DReg's step time at R1 over the baseline's, from the committed benchmark record; no rule decides it."""
    path = results / "benchmarks" / file
    if not path.exists():
        return ["-", f"no benchmark record ({path})", NO_RULE_FIXED, "-"]
    record = json.loads(path.read_text())
    rows = [r for r in record["rows"] if r["site"] == "R1"]
    words = "; ".join(f"{MODEL_LABELS[r['model']]} width {r['width']:g} batch {r['batch']}: {r['time_ratio']:.2f}x "
                      f"time ({r['flop_ratio']:.2f}x FLOPs)" for r in rows)  # fmt: skip
    where = f"benchmark of {record['date'][:10]}, {record['device_name']} CPU, {record['cpu_count']} cores"
    return [where, f"DReg at R1 over the baseline, per training step: {words}", NO_RULE_FIXED, "-"]


@functools.cache
def paper_claims() -> list[dict]:
    """The paper's claims and what decides each (analysis/paper_claims.yaml), read once per process."""
    return yaml.safe_load((HERE / "paper_claims.yaml").read_text())


def claims_table(results: Path, by_scale: dict[str, list[FigureAnalysis]]) -> str:
    """One row per claim of the paper (analysis/paper_claims.yaml): the best evidence first, then the other scales."""
    rows = []
    for entry in paper_claims():
        if "worked_example" in entry:
            cells = _worked_example(by_scale, entry["worked_example"])
        elif "overhead" in entry:
            cells = _overhead(results, entry["overhead"])
        else:
            evidence = _evidence(by_scale, entry["decided_by"])
            if not evidence:
                cells = ["-", "no records at any scale", cl.NOT_ENOUGH, "-"]
            else:
                best = evidence[0]
                cells = [best.where(), best.claim.measured, _verdict(best.claim), _others(evidence)]
        rows.append([entry["paper"], *cells])
    return md_table(["the paper says", "best evidence at", "measured", "verdict", "at other scales"], rows)


def questions_table(results: Path, by_scale: dict[str, list[FigureAnalysis]]) -> str:
    """M1-M10, each at the scale with the best evidence, then the others."""
    asked: dict[tuple[str, str], list[Evidence]] = {}
    for preset, analyses in by_scale.items():
        for a in analyses:
            if a.records.spec.kind in ("mechanism", "mse"):
                for c in a.claims:
                    asked.setdefault((c.panel, c.statement), []).append(Evidence(preset, c, a.records))
        if analyses:
            found = stability.checks(results, preset)
            m7 = stability.question(found)
            mechanism = next(a.records for a in analyses if a.records.spec.kind == "mechanism")
            data = " and ".join(DATASET_LABELS[d] for d in sorted({c.dataset for c in found}))
            checked = place(preset, data, sorted({c.seed for c in found})) if found else None
            asked.setdefault((m7.panel, m7.statement), []).append(Evidence(preset, m7, mechanism, checked))
    rows = []
    for (key, statement), evidence in sorted(asked.items(), key=lambda kv: int(kv[0][0][1:])):
        evidence = sorted(evidence, key=lambda e: not e.decided)
        best = evidence[0]
        rows.append([f"{key}: {statement}", best.where(), best.claim.measured, _verdict(best.claim), _others(evidence)])
    return md_table(["question", "best evidence at", "measured", "answer", "at other scales"], rows)


def _value(cfg: RunConfig, field: str) -> str:
    value = getattr(cfg, field)
    return "-" if value is None else format(value, ",") if isinstance(value, int) and value > 999 else str(value)


def settings_table() -> str:
    """Every run setting per scale, from the presets and the settings' defaults (a model's own value beside)."""
    scales = ("paper", *SCALES)
    fields = [f.name for f in dataclasses.fields(RunConfig) if f.name not in PER_FIGURE]
    rows = []
    for field in fields:
        cells = []
        for preset in scales:
            per_model = {m: _value(RunConfig.from_dict(preset_settings(preset, m)), field) for m in MODEL_LABELS}
            common = per_model[RunConfig.model]
            other = ", ".join(f"{m}: {v}" for m, v in per_model.items() if v != common)
            cells.append(common + (f" ({other})" if other else ""))
        rows.append([field, *cells])
    return md_table(["setting", *scales], rows)


def compute_table(results: Path) -> str:
    """Hours of recorded epoch time per scale and device, each run once."""
    rows = []
    for preset in SCALES:
        if not any((results / preset).glob("*/config.yaml")):
            continue
        table = load_results(results, preset).drop_duplicates(["run_name", "epoch"])
        if "epoch_time" not in table:
            continue
        table["device"] = table["device"].fillna("not recorded").astype(str)
        for device, runs in table.groupby("device"):
            hours = runs.groupby("run_name")["epoch_time"].sum() / 3600
            rows.append([preset, device, str(len(hours)), f"{hours.sum():.2f}"])
    return md_table(["scale", "device", "runs", "hours (sum of epoch times)"], rows)


def build_summary(results: Path | str) -> str:
    """The markdown of ``RESULTS/REPORT.md``."""
    results = Path(results)
    by_scale = {preset: found for preset in SCALES if (found := _analyses(results, preset))}
    if not by_scale:
        raise AnalysisError(f"no run records under {results}/{{{','.join(SCALES)}}}: run a sweep first")
    decided = [e for e in paper_claims() if "decided_by" in e]
    verdicts = [ev[0].claim.verdict.split(":")[0] for e in decided if (ev := _evidence(by_scale, e["decided_by"]))]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in (cl.REPRODUCED, cl.NOT_REPRODUCED, cl.NOT_DECIDABLE))
    reports = ", ".join(f"[{p}]({p}/analysis/report.md)" for p in by_scale)
    deviations = report.DEVIATIONS.format(scale="\n".join(f"- Scale of `{p}`: " + report._scale_deviation(p)[9:]
                                                          for p in by_scale))  # fmt: skip
    return "\n\n".join([
        "# DReg replication: summary",
        f"Generated {datetime.date.today().isoformat()} from the run records under `{results}` by `python -m analysis "
        f"summary --results {results}`; the per-scale reports ({reports}) hold every run, curve and rule. Settings "
        "were fixed before results were seen and never tuned; numbers are as measured, for or against DReg. "
        "Epochs count from 1.",
        f"Of the paper's claims that have a rule, at their best evidence: {counts} (the rest: not enough data). "
        "Best evidence first: `mini` (the paper's SGD steps and 300 epochs on real data, width 0.25), then `full` "
        "(one paper-scale run), then `quick` (15 epochs: shapes, never a verdict on convergence; kept for "
        "completeness).",
        "## The paper's claims", report.AMENDMENT, claims_table(results, by_scale),
        "## The mechanism questions (M1-M10)", questions_table(results, by_scale),
        "## Settings per scale", "Generated from `experiments/presets.yaml` and the settings' defaults; the figure "
        f"specs (`experiments/figures/`) set {', '.join(PER_FIGURE[:4])} and the DReg settings each line varies.",
        settings_table(),
        "## Compute", compute_table(results),
        "## Deviations from the paper", deviations,
        (HERE / "summary_notes.md").read_text().strip(),
        *_damaged(results),
    ]) + "\n"  # fmt: skip


def _damaged(results: Path) -> list[str]:
    """A section naming every damaged record, which no number above uses; none where there is none."""
    lines = [f"- {why}" for preset in SCALES for why in damaged_runs(results / preset).values()]
    return ["## Damaged records, left out of every number above", "\n".join(lines)] if lines else []


def write_summary(results: Path | str, out: Path | str | None = None) -> Path:
    """Write the summary (default ``RESULTS/REPORT.md``); written whole, so a failure leaves the old one."""
    out = Path(out) if out is not None else Path(results) / "REPORT.md"
    text = build_summary(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
