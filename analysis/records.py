"""Run records (docs/method.md §5) -> one tidy pandas table, and a figure's lines.

Only the files a run writes are read (config.yaml, metrics.csv, status.json), so results copied from a
cluster work; `experiments.config` is imported for the figure specs, which are data.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.config import FIELDS, PRECISIONS, ExperimentError, RunConfig, preset_settings
from experiments.run_files import FINISHED, DamagedRecord, read_record, read_status, whole_lines
from experiments.specs import FIGURE_NAMES, Figure, load_figure

RECORD_FILES = ("config.yaml", "metrics.csv", "status.json")
STATUS_KEYS = ("state", "diverged_epoch", "best_val_acc", "best_epoch", "test_acc", "selected_path")
DATASETS = ("cifar10", "cifar100")
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
MODEL_LABELS = {"vgg16": "VGG16", "resnet18": "ResNet18", "mobilenetv2": "MobileNetV2"}
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


class AnalysisError(ValueError):
    """Bad input to the analysis (unknown figure or preset, no records); the message says what to do."""


def bs_label(batch: int) -> str:
    """The paper's batch names: 2048 -> 2k."""
    return f"{batch // 1024}k" if batch % 1024 == 0 else str(batch)


def check_preset(preset: str) -> None:
    """An unknown preset is bad input, reported like any other analysis error."""
    try:
        preset_settings(preset)
    except ExperimentError as err:
        raise AnalysisError(str(err)) from err


def run_key(name: str) -> str:
    """A run's name without its seed: the key of one line of a figure (seeds are averaged)."""
    return re.sub(r"-s\d+$", "", name)


def describe(cfg: RunConfig) -> str:
    """A run in words for a legend: ``DReg λ=0.1, norm form`` or ``baseline, lr 0.2, wd 0.00025``; each setting's
    words are declared with it (``lightning_modules/settings.py``, ``setting(words=...)``)."""
    words = [f"DReg λ={cfg.dreg_lambda:g}" if cfg.dreg_site else "baseline"]
    for key, value in cfg.differences().items():
        text = FIELDS[key].metadata.get("words") or key.replace("_", " ") + " {}"
        shown = f"{value:g}" if isinstance(value, float) else value
        words.append(text.format(shown, pct=f"{100 * value:g}" if isinstance(value, (int, float)) else value))
    return ", ".join(words)


def _read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv's whole rows (the experiments' own reader drops a line cut short by a crash)."""
    text = whole_lines(path)
    if text.count("\n") < 2:
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})
    return pd.read_csv(io.StringIO(text))


def read_run(run_dir: Path) -> pd.DataFrame:
    """One run's epochs, each row carrying the run's config and status (no rows before its first epoch); a
    damaged record (``experiments.run_files.read_record``) raises ``DamagedRecord``."""
    checked = read_record(run_dir)
    record, status = checked.config, checked.status
    metrics = _read_metrics(run_dir / "metrics.csv")
    name = record.get("run_name", run_dir.name)
    run = record["run"]
    info = {
        "run": run_key(name),
        "run_name": name,
        **{key: run.get(key) for key in RUN_FIELDS},
        **{key: status.get(key) for key in STATUS_KEYS},
        "state": status["state"],
        "dreg_initial": (status.get("dreg_initial") or {}).get("distance"),  # ||W_R - W_L||^2 before any step
        "device": record.get("device"),
    }
    table = metrics.assign(**{k: [v] * len(metrics) for k, v in info.items()})
    table["epochs_trained"] = table["epoch"] + 1  # 1-based: the row after the first epoch is epoch 1
    front = [*info, "epoch", "epochs_trained"]
    return table[front + [c for c in table.columns if c not in front]]


def load_results(results: Path | str, preset: str) -> pd.DataFrame:
    """Every run under ``results/<preset>/`` as one tidy table, one row per run and epoch."""
    check_preset(preset)
    folder = Path(results) / preset
    runs = sorted(p.parent for p in folder.glob("*/config.yaml"))
    if not runs:
        raise AnalysisError(f"no run records under {folder}: run a sweep first, e.g. `python -m experiments run "
                            f"fig2 --preset {preset} --results {results}`")  # fmt: skip
    damaged = damaged_runs(folder)
    whole = [run for run in runs if run.name not in damaged]
    if not whole:
        raise AnalysisError(f"every run record under {folder} is damaged, e.g. {next(iter(damaged.values()))}")
    return pd.concat([read_run(run) for run in whole], ignore_index=True)


def damaged_runs(folder: Path) -> dict[str, str]:
    """Every damaged record under ``folder`` (one preset's runs), by folder name, with what is wrong: left out of
    every figure, claim and table, and named by the report and the command line. Checked once per state of the
    files (a report reads each figure's records, and the records change while a sweep runs)."""
    runs = sorted(p.parent for p in Path(folder).glob("*/config.yaml"))
    return _damaged(tuple(runs), tuple(_stamp(run) for run in runs))


def _stamp(run_dir: Path) -> tuple:
    return tuple((s.st_mtime_ns, s.st_size) if (s := _stat(run_dir / name)) else None for name in RECORD_FILES)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def _damaged(runs: tuple[Path, ...], stamps: tuple) -> dict[str, str]:
    found = {}
    for run in runs:
        try:
            read_record(run)
        except DamagedRecord as err:
            found[run.name] = str(err)
    return found


@dataclass
class FigureRecords:
    """A figure's runs as found on disk: the tidy table and what is missing, for figures, claims and the report."""

    name: str
    preset: str
    spec: Figure  # seed 0 of every run, with the dataset the records were made on
    table: pd.DataFrame  # one row per panel, run, seed and epoch
    seeds: list[int]
    missing: dict[str, list[RunConfig]]  # per panel: runs with no epoch on disk
    paper_dataset: str  # the figure's dataset in the paper (the runs may be on another: ``dataset``)
    precision: str  # the figure's runs' (a line lent from another precision says so in ``notes``)
    notes: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.spec.runs[0].dataset

    def scale_words(self) -> str:
        """The scale in words (preset, width, epochs, data, batch scaling, seeds), for titles and the report."""
        s = preset_settings(self.preset)
        train = f"{s['train_subset']:,} training images" if s.get("train_subset") else "full training set"
        val = "official test set as validation" if s.get("val_from_test") else f"{s['val_size']:,} held-out validation"
        first = min(self.spec.runs, key=lambda r: r.batch_size)
        scale = Fraction(s["batch_scale"]).limit_denominator(4096)
        batches = "" if scale == 1 else f", batches x{scale} (BS {bs_label(first.batch_size)} -> {first.global_batch})"
        n = len(self.seeds)
        seeds = f"{n} seed{'s' * (n != 1)} ({', '.join(map(str, self.seeds))})" if n else "no runs yet"
        return f"preset {self.preset}, width {s['width']:g}, {s['epochs']} epochs, {train}, {val}{batches}; {seeds}"

    def data_words(self, reference: str = "paper") -> str:
        """The dataset the runs used, and the ``reference``'s when it differs (a CIFAR-100 figure on CIFAR-10)."""
        data = DATASET_LABELS[self.dataset]
        if self.dataset != self.paper_dataset:
            data += f" ({reference}: {DATASET_LABELS[self.paper_dataset]})"
        return data


def _seeds_on_disk(folder: Path, cfg: RunConfig) -> list[int]:
    pattern = re.compile(re.escape(run_key(cfg.name)) + r"-s(\d+)$")
    found = (pattern.match(p.parent.name) for p in folder.glob(f"{run_key(cfg.name)}-s*/config.yaml"))
    return sorted(int(m.group(1)) for m in found if m)


def _spec(name: str, preset: str, dataset: str | None, precision: str | None = None) -> Figure:
    overrides = {key: value for key, value in (("dataset", dataset), ("precision", precision)) if value}
    try:
        return load_figure(name, preset, overrides=overrides)
    except ExperimentError as err:
        raise AnalysisError(str(err)) from err


def _same_runs(spec: Figure, preset: str) -> str | None:
    """The paper figure whose runs are exactly ``spec``'s, if any."""
    names, precision = {cfg.name for cfg in spec.runs}, spec.runs[0].precision
    twins = [n for n in FIGURE_NAMES
             if n != spec.name and {c.name for c in _spec(n, preset, None, precision).runs} == names]  # fmt: skip
    return twins[0] if twins else None


def _has_records(folder: Path, spec: Figure) -> bool:
    return any(_seeds_on_disk(folder, cfg) for cfg in spec.runs)


def _lend_other_precisions(folder: Path, spec: Figure, notes: list[str]) -> tuple[Figure, dict[str, list[RunConfig]]]:
    """``spec`` with each line that has no records in its precision but has them in another (a run that did not
    fit in memory in float32, say) taken from that precision, and per panel the baselines such DReg lines are
    compared with: of their own precision, so that every comparison is like with like; a note says so."""
    panels, baselines = {}, {}
    for panel, runs in spec.panels.items():
        panels[panel] = []
        for cfg in runs:
            other = None if _seeds_on_disk(folder, cfg) else _in_other_precision(folder, cfg)
            panels[panel].append(other or cfg)
            if other is None:
                continue
            against = ""
            if other.dreg_site:
                base = dataclasses.replace(other, dreg_site=None)
                if base not in baselines.setdefault(panel, []):  # read once, however many lines it serves
                    baselines[panel].append(base)
                against = ", against the baseline made in the same precision"
            notes.append(f"{run_key(cfg.name)}: no records in precision {cfg.precision}; showing the run made in "
                         f"{other.precision}{against}")  # fmt: skip
    return dataclasses.replace(spec, panels=panels), baselines


def _in_other_precision(folder: Path, cfg: RunConfig) -> RunConfig | None:
    """``cfg`` in another precision, when its records exist there (for a DReg run, its baseline's too)."""
    for precision in PRECISIONS:
        other = dataclasses.replace(cfg, precision=precision)
        needed = [other, dataclasses.replace(other, dreg_site=None)] if other.dreg_site else [other]
        if precision != cfg.precision and all(_seeds_on_disk(folder, c) for c in needed):
            return other
    return None


def load_figure_records(
    name: str,
    results: Path | str = "results",
    preset: str = "mini",
    dataset: str | None = None,
    precision: str | None = None,
) -> FigureRecords:
    """The records of figure ``name`` at ``preset``, every seed found.

    ``dataset`` None means the paper's and ``precision`` None the preset's; when none of those runs exist but
    the figure was run on another dataset (``--dataset cifar10`` for a CIFAR-100 figure, as the mini scale
    does) or in another precision (``--precision 32-true`` on a CPU without native bf16), those runs are used
    and a note says so; likewise for a single line (``_lend_other_precisions``).
    """
    folder = Path(results) / preset
    spec = _spec(name, preset, dataset, precision)
    paper = _spec(name, preset, None).runs[0]
    paper_dataset = paper.dataset
    notes = []
    if not _has_records(folder, spec):
        datasets = [dataset] if dataset else [paper_dataset, *(d for d in DATASETS if d != paper_dataset)]
        precisions = [precision] if precision else [paper.precision, *(p for p in PRECISIONS if p != paper.precision)]
        found = next(((d, p, c) for d in datasets for p in precisions
                      for c in [_spec(name, preset, d, p)] if _has_records(folder, c)), None)  # fmt: skip
        if found:
            other, other_precision, candidate = found
            twin = _same_runs(candidate, preset) if other != paper_dataset else None
            if twin:  # Fig. 3 on CIFAR-10 is Fig. 2: showing it twice would count the same evidence twice
                notes.append(f"no {paper_dataset} records; on {other} this figure's runs are {twin}'s")
            else:
                if other != paper_dataset:
                    notes.append(f"no {paper_dataset} records: showing the runs made on {other}")
                if other_precision != spec.runs[0].precision:
                    notes.append(f"no records in precision {spec.runs[0].precision}: showing the runs made in "
                                 f"{other_precision}")  # fmt: skip
                spec = candidate
    figure_precision = spec.runs[0].precision
    spec, baselines = _lend_other_precisions(folder, spec, notes)
    frames, missing, seeds = [], {}, set()
    damaged = damaged_runs(folder)
    for panel, runs in spec.panels.items():
        missing[panel] = []
        for cfg in runs + baselines.get(panel, []):
            dirs = [folder / f"{run_key(cfg.name)}-s{s}" for s in _seeds_on_disk(folder, cfg)]
            found = [read_run(d) for d in dirs if d.name not in damaged]
            if any(not len(f) for f in found):
                states = sorted({read_status(d)["state"] for d in dirs if d.name not in damaged})
                notes.append(f"{run_key(cfg.name)}: a seed has no finished epoch yet ({', '.join(states)})")
            found = [f for f in found if len(f)]
            if not found:
                missing[panel].append(cfg)
                continue
            seeds.update(s for f in found for s in f["seed"].unique())
            frames += [f.assign(figure=name, panel=panel) for f in found]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["figure", "panel", "run"])
    table = table[["figure", "panel", *[c for c in table.columns if c not in ("figure", "panel")]]]
    n_missing = sum(len(m) for m in missing.values())
    if n_missing:
        notes.append(f"{n_missing} of {sum(len(r) for r in spec.panels.values())} lines have no records yet")
    return FigureRecords(
        name, preset, spec, table, sorted(int(s) for s in seeds), missing, paper_dataset, figure_precision, notes
    )


@dataclass
class Curve:
    """One line of a figure: a run's validation accuracy per epoch, the mean over its seeds with min and max."""

    run: str
    epochs: np.ndarray  # 1-based epochs trained
    mean: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    steps: np.ndarray | None = None
    config: RunConfig | None = None
    seeds: tuple[int, ...] = (0,)
    states: tuple[str, ...] = ("done",)
    diverged_at: tuple[int, ...] = ()  # last recorded epoch of each diverged seed

    def __post_init__(self) -> None:
        self.epochs = np.asarray(self.epochs, dtype=int)
        self.mean = np.asarray(self.mean, dtype=float)
        self.low = self.mean if self.low is None else np.asarray(self.low, dtype=float)
        self.high = self.mean if self.high is None else np.asarray(self.high, dtype=float)

    @property
    def finished(self) -> bool:
        """Every seed is done or diverged: the curve will not grow any more."""
        return all(s in FINISHED for s in self.states)

    @property
    def state(self) -> str:
        """The least finished of its seeds' states (a curve is running while any seed runs)."""
        for state in ("failed", "running", "pending", "diverged"):
            if state in self.states:
                return state
        return "done"


def curve(run: pd.DataFrame, cfg: RunConfig) -> Curve:
    """One line from the tidy rows of one run (all its seeds, or those a comparison shares)."""
    acc = run.pivot_table(index="epochs_trained", columns="seed", values="val/acc", aggfunc="first")
    per_seed = run.groupby("seed", sort=True)
    states = per_seed["state"].first()
    last = per_seed["epochs_trained"].max()
    steps = run.groupby("epochs_trained")["step"].mean().reindex(acc.index) if "step" in run else None
    return Curve(
        run=run_key(cfg.name),
        epochs=acc.index.to_numpy(),
        mean=acc.mean(axis=1).to_numpy(),
        low=acc.min(axis=1).to_numpy(),
        high=acc.max(axis=1).to_numpy(),
        steps=None if steps is None else steps.to_numpy(),
        config=cfg,
        seeds=tuple(int(s) for s in states.index),
        states=tuple(str(s) for s in states),
        diverged_at=tuple(int(last[s]) for s in states.index if states[s] == "diverged"),
    )


def curves(records: FigureRecords) -> dict[str, list[Curve]]:
    """Per panel, in the spec's order, the lines that have records (missing runs are skipped)."""
    out: dict[str, list[Curve]] = {}
    for panel, runs in records.spec.panels.items():
        rows = records.table[records.table["panel"] == panel] if len(records.table) else records.table
        out[panel] = [curve(run, cfg) for cfg in runs if len(run := rows[rows["run"] == run_key(cfg.name)])]
    return out
