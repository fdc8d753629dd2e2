"""A figure's records -> its comparisons and its verdicts: the one place that picks the rules by the figure's kind
(the paper's claims, analysis/claims.py; the mechanism and mse questions, analysis/questions.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from analysis.claims import CLAIMS, Claim, comparisons
from analysis.questions import mechanism_questions, mse_questions
from analysis.records import FigureRecords

RULES = {**CLAIMS, "mechanism": mechanism_questions, "mse": mse_questions}


@dataclass
class FigureAnalysis:
    """A figure's comparison table and its claims."""

    records: FigureRecords
    table: pd.DataFrame
    claims: list[Claim]

    def claims_frame(self) -> pd.DataFrame:
        """The claims as a table (for notebooks)."""
        return pd.DataFrame([dataclasses.asdict(c) for c in self.claims])


def analyze(records: FigureRecords) -> FigureAnalysis:
    """The figure's comparisons and its claims (or, for the mechanism study, its questions) with verdicts."""
    table = comparisons(records)
    return FigureAnalysis(records, table, RULES[records.spec.kind](records, table))
