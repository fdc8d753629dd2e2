"""``python -m analysis``: draw a figure of the paper from run records, or write the replication report or summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from analysis.figures import draw, save
from analysis.records import AnalysisError, damaged_runs, load_figure_records
from analysis.report import write_report
from experiments.config import PRECISIONS
from experiments.specs import FIGURE_NAMES


class Parser(argparse.ArgumentParser):
    """Bad arguments end in one line, ``error: ...``, and exit status 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def cmd_figure(args: argparse.Namespace) -> None:
    names = FIGURE_NAMES if args.figure == "all" else (args.figure,)
    drawn = 0
    for name in names:
        records = load_figure_records(name, args.results, args.preset, args.dataset, args.precision)
        if not len(records.table):
            if args.figure != "all":
                raise AnalysisError(f"no records of {name} under {Path(args.results) / args.preset}: run "
                                    f"`python -m experiments run {name} --preset {args.preset}` first")  # fmt: skip
            print(f"skipped {name}: no records" + "".join(f"; {note}" for note in records.notes))
            continue
        fig, notes = draw(records)
        for path in save(fig, args.out or Path(args.results) / args.preset / "analysis", name):
            print(f"wrote {path}")
        for note in notes:
            print(f"note ({name}): {note}")
        drawn += 1
    if not drawn:
        raise AnalysisError(f"no records of any figure under {Path(args.results) / args.preset}")


def cmd_stability(args: argparse.Namespace) -> None:
    from analysis.stability import render

    for path in render(args.results, args.preset, args.out):
        print(f"wrote {path}")


def cmd_precision(args: argparse.Namespace) -> None:
    from analysis.precision import render

    for path in render(args.results, args.preset, args.out):
        print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    print(f"wrote {write_report(args.results, args.preset, args.out, args.precision)}")


def cmd_summary(args: argparse.Namespace) -> None:
    from analysis.summary import write_summary

    print(f"wrote {write_summary(args.results, args.out)}")


def name_damaged(args: argparse.Namespace) -> None:
    """One line per damaged record the command will leave out; with --strict, an error instead."""
    from analysis.summary import SCALES

    presets = SCALES if args.command == "summary" else (args.preset,)
    damaged = [line for p in presets for line in damaged_runs(Path(args.results) / p).values()]
    if damaged and args.strict:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise AnalysisError(f"damaged record{more}: {damaged[0]}")
    for line in damaged:
        print(f"warning: damaged record, left out of every number: {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m analysis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    figure = commands.add_parser("figure", help="draw a figure as PNG and PDF")
    figure.add_argument("figure", help=f"one of {', '.join(FIGURE_NAMES)}, or all")
    figure.add_argument("--dataset", help="the runs' dataset, if not the paper's (default: found on disk)")
    figure.add_argument("--out", type=Path, help="folder for the files (default RESULTS/PRESET/analysis)")
    report = commands.add_parser("report", help="write the markdown replication report")
    report.add_argument("--out", type=Path, help="the report file (default RESULTS/PRESET/analysis/report.md)")
    stability = commands.add_parser("stability", help="every DReg run's distance per step against its prediction")
    stability.add_argument("--out", type=Path, help="folder for the files (default RESULTS/PRESET/analysis)")
    precision = commands.add_parser("precision", help="the same runs in bf16 and float32: within seed noise?")
    precision.add_argument("--out", type=Path, help="folder for the files (default RESULTS/PRESET/analysis)")
    summary = commands.add_parser("summary", help="one table of every claim over the scales: RESULTS/REPORT.md")
    summary.add_argument("--out", type=Path, help="the summary file (default RESULTS/REPORT.md)")
    for sub in (figure, report, stability, precision, summary):
        sub.add_argument("--results", type=Path, default=Path("results"), help="records are RESULTS/PRESET/<run>")
        sub.add_argument("--strict", action="store_true", help="a damaged run record is an error, not left out")
    for sub in (figure, report, stability, precision):
        sub.add_argument("--preset", default="mini", help="paper, mini, quick, full or smoke (default mini)")
    for sub in (figure, report):
        sub.add_argument("--precision", choices=PRECISIONS, help="the runs' precision, if not the preset's")
    args = parser.parse_args(argv)
    try:
        name_damaged(args)
        commands_ = {"figure": cmd_figure, "report": cmd_report, "stability": cmd_stability,
                     "precision": cmd_precision, "summary": cmd_summary}  # fmt: skip
        commands_[args.command](args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
