"""A real `mini` 30k epoch, timed from the run's own records, against another commit or other settings.

``python -m benchmarks epoch --model mobilenetv2 [--against REF | --variant KEY=VALUE ...]``: trains the 30k
DReg R1 run of `mini` on CIFAR-100 (``python -m experiments train``, one step of 3,840 images and the
validation of both paths per epoch) for a few epochs, in this checkout and, with ``--against``, in a worktree
of REF, or, with ``--variant``, in this checkout with other run settings (``channels_last=true``: a layout to
choose before a network's runs start), in alternated rounds. Each epoch's time is its ``epoch_time`` in
metrics.csv; a run's first epoch (start-up) is left out. It prints the median epoch of each side and their
ratio with a bootstrap 95% interval, and whether the two sides' records are the same but for times: a speed
change that is how a run executes must compute the same numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import cifar_dir, table, write_result

ROOT = Path(__file__).resolve().parents[1]


def train_epochs(
    tree: Path, variant: list[str], results: Path, opts: argparse.Namespace, data: Path | None
) -> pd.DataFrame:
    """metrics.csv of the run trained in ``tree`` (a checkout of the suite) with the ``variant`` settings."""
    if opts.quick:
        settings = ["--preset", "smoke", f"model={opts.model}", "batch_size=30720", "dreg_site=R1", "epochs=3"]
    else:
        settings = ["--preset", "mini", f"model={opts.model}", "dataset=cifar100", "batch_size=30720",
                    "dreg_site=R1", "epochs=7"]  # fmt: skip
    where = ["--data-dir", str(data), "--no-verify"] if data else []
    command = [sys.executable, "-m", "experiments", "train", *settings, *variant, *where, "--results", str(results)]
    subprocess.run([*command, "--no-progress"], cwd=tree, check=True, capture_output=True, env=os.environ.copy())
    (run,) = (results / settings[1]).iterdir()
    return pd.read_csv(run / "metrics.csv")


def bootstrap_ratio(before: np.ndarray, after: np.ndarray, n: int = 10_000) -> tuple[float, float]:
    """95% interval of median(before) / median(after), resampling each side's epochs (fixed generator)."""
    rng = np.random.default_rng(0)
    ratios = np.median(rng.choice(before, (n, len(before))), axis=1) / np.median(rng.choice(after, (n, len(after))), 1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def run(opts: argparse.Namespace) -> dict:
    if opts.against and opts.variant:
        raise SystemExit("epoch compares two sides: give --against REF or --variant KEY=VALUE, not both")
    rounds = 1 if opts.quick else 2
    with tempfile.TemporaryDirectory(prefix="dreg-epoch-") as tmp, cifar_dir(opts, n_train=600) as (data, real):
        sides = {"this checkout": (ROOT, [])}
        if opts.against:
            sides[opts.against] = (Path(tmp) / "against", [])
            subprocess.run(["git", "worktree", "add", "--detach", str(sides[opts.against][0]), opts.against],
                           cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        if opts.variant:
            sides[" ".join(opts.variant)] = (ROOT, opts.variant)
        try:
            runs: dict[str, list[pd.DataFrame]] = {side: [] for side in sides}
            for k in range(rounds):  # alternated: a slow stretch of the machine hits both sides
                for side in list(sides)[::-1] if k % 2 else list(sides):
                    results = Path(tmp) / f"{len(runs[side])}-{k}-{len(side)}"
                    runs[side].append(train_epochs(*sides[side], results, opts, data if opts.quick or real else None))
        finally:
            if opts.against:
                subprocess.run(["git", "worktree", "remove", "--force", str(sides[opts.against][0])], cwd=ROOT)
    times = {side: np.concatenate([m["epoch_time"].to_numpy()[1:] for m in ms]) for side, ms in runs.items()}
    rows = [{"code": side, "epochs": len(t), "median s": float(np.median(t)), "min s": float(t.min()),
             "max s": float(t.max())} for side, t in times.items()]  # fmt: skip
    result: dict = {"model": opts.model, "quick": opts.quick, "rounds": rounds, "rows": rows}
    print(f"{opts.model}: the 30k DReg R1 run's epochs ({'smoke' if opts.quick else 'mini, CIFAR-100'})")
    print(table(rows, ["code", "epochs", "median s", "min s", "max s"]))
    if len(sides) > 1:  # the candidate (this checkout, or its variant) over the reference (REF, or as it is)
        reference, candidate = (opts.against, "this checkout") if opts.against else ("this checkout", list(sides)[1])
        before, after = times[reference], times[candidate]
        lo, hi = bootstrap_ratio(before, after)
        same = all(
            a.drop(columns="epoch_time").equals(b.drop(columns="epoch_time"))
            for a, b in zip(runs[reference], runs[candidate], strict=True)
        )
        result.update(speedup=float(np.median(before) / np.median(after)), ci=[lo, hi], same_records=same)
        print(f"speed-up of {candidate} over {reference}: {result['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]; "
              f"records {'identical but for times' if same else 'differ'}")  # fmt: skip
    write_result(opts, f"epoch-{opts.model}", result)
    return result
