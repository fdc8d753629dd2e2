"""The files of a run's record (docs/method.md §5), read and written; the one reader that the sweep, the
records callback and the analysis share. Light on imports, so the analysis loads without Lightning."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FINISHED = ("done", "diverged")  # a run in either state is never trained again
REPAIR = "restore the folder's files from git, or move the folder away to train the run again"


class DamagedRecord(ValueError):
    """A run record that cannot be trusted as it is; the message names the folder, what is wrong and the fix."""


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file next to ``path`` and rename it over ``path``: a reader never sees half a file.

    The temporary name is unique to this call, so two processes writing the same file at once (two sweeps
    claiming a new run folder) each rename a whole file of their own; one fixed name let one truncate the
    other's file before its rename. Next to ``path``, so the rename never crosses a filesystem.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "xb" if isinstance(data, bytes) else "x") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parsed(path: Path, parse: Callable[[str], Any], error: type[Exception]) -> Any:
    """``parse`` of a record file's text; a file that cannot be read or parsed is a damaged record."""
    try:
        return parse(path.read_text())
    except (OSError, UnicodeDecodeError, error) as err:
        raise DamagedRecord(f"{path} cannot be read ({' '.join(str(err).split())}): {REPAIR}") from err


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json (``pending`` where there is none); one that is not a status is a damaged record."""
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"state": "pending"}
    status = _parsed(path, json.loads, json.JSONDecodeError)
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        raise DamagedRecord(f"{path} has no state: {REPAIR}")
    return status


def write_status(run_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into status.json; a field given as None is removed (a retried run's old error)."""
    status = {**read_status(run_dir), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    status = {k: v for k, v in status.items() if v is not None}
    write_atomic(run_dir / "status.json", json.dumps(status, indent=1) + "\n")


def whole_lines(path: Path) -> str:
    """A file's complete lines (a last line cut short by a crash is dropped; the writer appends whole lines)."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return "".join(lines[:-1] if lines and not lines[-1].endswith("\n") else lines)


def read_metrics_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and complete rows of metrics.csv (a line cut short by a crash is dropped)."""
    reader = csv.DictReader(io.StringIO(whole_lines(path)))
    return list(reader.fieldnames or []), list(reader)


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml, a mapping with the run's settings under ``run``; anything else is a damaged record."""
    path = Path(run_dir) / "config.yaml"
    record = _parsed(path, yaml.safe_load, yaml.YAMLError)
    if not isinstance(record, dict) or not isinstance(record.get("run"), dict):
        raise DamagedRecord(f"{path} holds no run settings (no 'run' mapping): {REPAIR}")
    return record


@dataclass
class Record:
    """A run's three files, checked against each other (``read_record``)."""

    config: dict[str, Any]
    status: dict[str, Any]
    header: list[str]
    rows: list[dict[str, str]]


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def metrics_problem(status: dict[str, Any], run: dict[str, Any], rows: list[dict[str, str]], cut: bool) -> str | None:
    """What makes metrics.csv disagree with itself or with status.json, or None."""
    epochs = [row.get("epoch") for row in rows]
    if epochs != [str(e) for e in range(len(rows))]:
        first = next(i for i, e in enumerate(epochs) if e != str(i))
        return f"metrics.csv's epochs do not run 0..{len(rows) - 1} (row {first + 1} has epoch {epochs[first]!r})"
    state = status["state"]
    if cut and state in FINISHED:
        return "metrics.csv ends mid-line although the run is finished"
    if state == "done" and len(rows) < (run.get("epochs") or 0):
        return f"status.json says done after {run.get('epochs')} epochs, metrics.csv has {len(rows)}"
    if state == "diverged" and len(rows) != status.get("diverged_epoch"):
        return f"status.json says diverged in epoch {status.get('diverged_epoch')}, metrics.csv has {len(rows)} rows"
    accuracy = [_number(row.get("val/acc")) for row in rows]
    best = status.get("best_val_acc")
    if best is not None and accuracy and not math.isclose(best, max(accuracy), rel_tol=0, abs_tol=1e-6):
        return f"status.json's best val/acc {best} is not metrics.csv's maximum {max(accuracy)}"
    return None


def read_record(run_dir: Path) -> Record:
    """A run's record, checked where it is read: config.yaml and status.json readable, metrics.csv's epochs
    0..N-1 without gaps, no line cut short in a finished run, and its rows and best accuracy what status.json
    says. A running run's last line cut short by a crash is dropped, as the writer's resume drops it."""
    run_dir = Path(run_dir)
    config, status = read_config(run_dir), read_status(run_dir)
    path = run_dir / "metrics.csv"
    try:
        text = path.read_text() if path.exists() else ""
        header, rows = read_metrics_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DamagedRecord(f"{path} cannot be read ({err}): {REPAIR}") from err
    problem = metrics_problem(status, config["run"], rows, bool(text) and not text.endswith("\n"))
    if problem:
        raise DamagedRecord(f"{run_dir}: {problem}: {REPAIR}")
    return Record(config, status, header, rows)
