"""Markdown for the reports: the one table writer every report and section uses."""

from __future__ import annotations


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table (pipes in cells escaped)."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([lines[0], "| " + " | ".join("---" for _ in header) + " |", *lines[1:]])
