"""What every benchmark shares: interleaved timing, summaries, the JSON record, the table, the data.

Timings are taken side by side in one process: after warm-up, the variants run in turn, in a rotated
order, ``reps`` times; each turn is a fixed number of calls timed with the accelerator synchronized.
A comparison is the median of the per-turn ratios, with their min and max, so a slow stretch on a
shared machine hits both sides of a ratio instead of one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from datamodules import write_fake_cifar

# Width of the --quick runs (tests): at 0.0625 ResNet18's first shortcut has 4 input channels, and oneDNN's
# channels_last 1x1 stride-2 conv with fewer than 8 hangs or crashes on AVX2 CPUs (uxlfoundation/oneDNN#6035).
QUICK_WIDTH = 0.125


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max, quartiles and a 95% confidence interval of the median: robust to the outliers a
    shared machine produces, and saying whether a median is close enough to a target to tell."""
    ordered = sorted(values)
    n = len(ordered)
    q1, _, q3 = statistics.quantiles(ordered, n=4) if n > 1 else (ordered[0],) * 3
    # Distribution-free interval from order statistics: ranks n/2 -+ 1.96 sqrt(n)/2 (1-based).
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(1, math.floor(n / 2 - half)), min(n, math.ceil(1 + n / 2 + half))
    return {
        "median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3,
        "ci_lo": ordered[lo - 1], "ci_hi": ordered[hi - 1],
    }  # fmt: skip


def seconds(fn: Callable[[], object], number: int = 1) -> float:
    """Wall seconds per call of ``fn`` over ``number`` calls, the device's queued work included.

    (``torch.utils.benchmark.Timer.timeit`` would run ``fn`` twice more as warm-up on every call.)
    """
    start = now()
    for _ in range(number):
        fn()
    return (now() - start) / number


def warm_up(fn: Callable[[], object], calls: int = 2, max_s: float = 60.0) -> float:
    """Call ``fn`` until it runs at its steady speed; return that call's seconds.

    Steady: at least ``calls`` calls, the last within 25% of the fastest before it. The first calls can
    be 10-20x slower than later ones (lazy initialization; memory touched for the first time, which a
    VM makes expensive), so a fixed number of warm-up calls is not enough.
    """
    best, start, n = math.inf, time.perf_counter(), 0
    while True:
        last = seconds(fn)
        n += 1
        if (n >= calls and last <= 1.25 * best) or time.perf_counter() - start > max_s:
            return last
        best = min(best, last)


def interleaved(
    fns: dict[str, Callable[[], object]], reps: int, turn_s: float = 0.2, warmup_calls: int = 2, min_s: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per call of each function, one value per turn; turn k starts at the k-th function.

    After warm-up, every turn makes the same number of calls, enough for the first function to take
    ``turn_s``, so that paired turns span similar stretches of time. ``reps`` rounds at least, more if
    that takes less than ``min_s`` seconds.
    """
    names = list(fns)
    steady = {name: warm_up(fn, warmup_calls) for name, fn in fns.items()}
    number = max(1, round(turn_s / steady[names[0]]))
    reps = max(reps, math.ceil(min_s / (number * sum(steady.values()))))
    times: dict[str, list[float]] = {name: [] for name in names}
    for k in range(reps):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            times[name].append(seconds(fns[name], number))
    return times


def ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    """Summary of the per-turn ratios ``numerator / denominator``, and the ratio of the fastest turns
    (noise on a shared machine only ever adds time, so the minima are the cleanest pair)."""
    paired = summary([a / b for a, b in zip(times[numerator], times[denominator], strict=True)])
    return {**paired, "of_min": min(times[numerator]) / min(times[denominator])}


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what a result was measured."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "lightning": metadata.version("lightning"),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def write_result(opts: argparse.Namespace, name: str, result: dict[str, Any]) -> Path:
    """``OUT/NAME.json`` with the environment and the options it ran with."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    record = {"benchmark": name, **environment(device_of(opts)), "options": options, **result}
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table; floats with 3 significant digits."""

    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    cells = [columns] + [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def device_of(opts: argparse.Namespace) -> torch.device:
    return torch.device(opts.device)


def autocast(opts: argparse.Namespace) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (``--bf16``), else nothing."""
    if opts.bf16:
        return torch.autocast(device_of(opts).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(opts: argparse.Namespace) -> torch.memory_format:
    return torch.channels_last if opts.channels_last else torch.contiguous_format


def now() -> float:
    """``time.perf_counter()`` once CUDA (if in use) has finished its queued work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


@contextlib.contextmanager
def cifar_dir(opts: argparse.Namespace, n_train: int = 50_000) -> Iterator[tuple[Path, bool]]:
    """(data_dir, real): ``--data-dir`` if given, else fake CIFAR-10 in a temporary folder (random bytes,
    the fastest to write: seconds for 50,000 images)."""
    if opts.data_dir is not None:
        yield Path(opts.data_dir), True
        return
    with tempfile.TemporaryDirectory(prefix="dreg-bench-") as tmp:
        yield write_fake_cifar(tmp, n_train=n_train, n_test=1000, pattern="random"), False
