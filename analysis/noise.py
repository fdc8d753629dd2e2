"""What seed noise lets a measured difference say (SPEC 8.4, docs/method.md §8): margins, intervals and ties.

The rules here were written after the Fig. 2 `mini` and the `quick` results were seen; they can only turn a
verdict into "not decidable", never make one favour the paper. The one exception is the tie test over 3 or more
seeds (2026-12-07, before any trend had them), which lets seeds decide a trend either way (docs/method.md §8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np

SPEEDUP_TIE = 1.25  # speed-ups within this factor of each other (or of 1) are ties: the effect size of §7.3
RESAMPLES = 10_000
FOR, AGAINST, INSIDE = 1, -1, 0  # which side of the noise a difference falls on


def accuracy_margin(p: float, n_val: int) -> float:
    """One seed: the noise margin of a difference of two best accuracies near ``p`` measured on ``n_val``
    validation images, 2 sqrt(2 p (1 - p) / n_val) (2.8 points at p 0.5, n_val 2,500)."""
    return 2 * math.sqrt(2 * p * (1 - p) / n_val)


def gain_difference_margin(p: float, n_val: int) -> float:
    """One seed: the noise margin of a difference of two gains (each a difference of two accuracies near ``p``),
    2 sqrt(4 p (1 - p) / n_val)."""
    return 2 * math.sqrt(4 * p * (1 - p) / n_val)


def bootstrap_interval(
    values: Sequence[float], statistic: Callable[[np.ndarray], np.ndarray] = np.mean
) -> tuple[float, float]:
    """The 95% percentile interval of ``statistic`` over 10,000 resamples of ``values`` (a fixed generator, so a
    report regenerates to the same digits). With three values the interval of the mean is their range."""
    data = np.asarray(values, dtype=float)
    picks = np.random.default_rng(0).integers(0, len(data), size=(RESAMPLES, len(data)))
    stats = statistic(data[picks], axis=1)
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def difference_side(differences: Sequence[float], margin: float) -> tuple[int, str]:
    """Which side of the noise per-seed differences (run minus reference) fall on, and in words.

    With three or more seeds the paired bootstrap 95% interval of the mean difference must exclude 0; with one
    or two, their mean must clear ``margin`` (the one-seed margin: for two seeds a choice, docs/method.md §8)."""
    mean = float(np.mean(differences))
    if len(differences) >= 3:
        low, high = bootstrap_interval(differences)
        side = FOR if low > 0 else AGAINST if high < 0 else INSIDE
        interval = f"95% interval [{100 * low:+.1f}, {100 * high:+.1f}]"
        return side, f"{100 * mean:+.1f} pts over {len(differences)} seeds, {interval}"
    side = FOR if mean > margin else AGAINST if mean < -margin else INSIDE
    seeds = f" (mean of {len(differences)} seeds)" if len(differences) > 1 else ""
    return side, f"{100 * mean:+.1f} pts{seeds}, margin {100 * margin:.1f}"


def speedup_side(speedup: float | None) -> int:
    """A speed-up of at least 1.25 is for a faster run; never reaching the target, or 1/1.25 or less, against;
    anything between is a tie with the reference."""
    if speedup is None or math.isnan(speedup) or speedup <= 1 / SPEEDUP_TIE:
        return AGAINST
    return FOR if speedup >= SPEEDUP_TIE else INSIDE


def speedups_tied(values: Sequence[float]) -> bool:
    """Finite speed-ups that all lie within a factor 1.25 of each other carry no order."""
    return max(values) <= SPEEDUP_TIE * min(values)


def common_seeds(per_seed: Sequence[Mapping[int, float]]) -> list[int]:
    """The seeds every setting of ``per_seed`` (seed -> value, one mapping a setting) has."""
    return sorted(set.intersection(*(set(values) for values in per_seed))) if per_seed else []


def accuracies_tied(values: Sequence[float], margin: float, per_seed: Sequence[Mapping[int, float]] = ()) -> bool:
    """Accuracies (or gains) that all lie within the noise of each other carry no order. With 3 or more seeds
    common to every setting (``per_seed``, in the order of ``values``) the noise is SPEC 8.4's paired bootstrap:
    they are tied when no pair's per-seed differences have a 95% interval of the mean that excludes 0. Else
    they are tied when they all lie within ``margin`` (the one-seed margin) of each other."""
    seeds = common_seeds(per_seed)
    if len(seeds) >= 3:
        pairs = combinations(per_seed, 2)
        return all(difference_side([a[s] - b[s] for s in seeds], margin)[0] == INSIDE for a, b in pairs)
    return max(values) - min(values) <= margin
