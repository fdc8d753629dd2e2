"""The files of a run's record (docs/method.md §5), read and written; the one reader that the sweep, the
records callback and the analysis share. Light on imports, so the analysis loads without Lightning."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

FINISHED = ("done", "diverged")  # a run in either state is never trained again


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


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.exists() else {"state": "pending"}


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
