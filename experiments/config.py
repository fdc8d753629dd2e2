"""A run's configuration, its name, and how a figure spec and a preset become a list of runs."""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
FIGURES_DIR = HERE / "figures"
FIGURE_NAMES = ("fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "controls")


class ExperimentError(ValueError):
    """Bad input to the experiment layer; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. Two runs with equal configs are the same run."""

    model: str = "resnet18"
    dataset: str = "cifar10"
    batch_size: int = 2048  # the paper's global batch; the run uses batch_size * batch_scale
    batch_scale: float = 1.0
    micro_batch: int | None = None  # per-device micro-batch, which BatchNorm sees; None: one per device
    dreg_site: str | None = None
    dreg_lambda: float = 0.1
    dreg_eps: float = 0.01
    dreg_form: str = "frobenius"
    dreg_include_bias: bool = False
    dreg_learnable: bool = False  # refused with a clear message: the DReg term is maximized (SPEC §3)
    path_loss: str = "sum"
    activity_site: str | None = None
    activity_alpha: float = 0.0
    activity_norm: str = "l2"
    activity_learnable: bool = False
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_scaling: str = "none"
    lr_base_batch: int = 256
    warmup_epochs: float = 0.0
    width: float = 1.0
    epochs: int = 300
    train_subset: int | None = None
    val_size: int = 5000
    val_from_test: bool = False
    augment: bool = True
    sync_batchnorm: bool = False
    precision: str = "32-true"
    seed: int = 0
    preset: str = "custom"

    @property
    def global_batch(self) -> int:
        return round(self.batch_size * self.batch_scale)

    @property
    def name(self) -> str:
        """The run folder's name (SPEC §5), e.g. ``resnet18-cifar100-bs30720-dreg0.1-R1-m0.9-s0``."""
        parts = [self.model, self.dataset, f"bs{self.batch_size}"]
        if self.dreg_site is None:
            parts.append("base")
        else:
            parts += [f"dreg{self.dreg_lambda:g}", self.dreg_site]
            parts += ["cosine"] if self.dreg_form == "cosine" else []
            parts += ["mean"] if self.path_loss == "mean" else []
        if self.activity_site is not None:
            parts.append(f"act{self.activity_alpha:g}{self.activity_norm}-{self.activity_site}")
        parts.append(f"m{self.momentum:g}" + ("n" if self.nesterov else ""))
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    def module_kwargs(self) -> dict[str, Any]:
        """The LightningModule's arguments."""
        from datamodules import DATAMODULES

        return {
            **{key: getattr(self, key) for key in MODULE_KEYS},
            "batch_size": self.global_batch,
            "num_classes": DATAMODULES[self.dataset].num_classes,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ExperimentError(
                f"unknown run setting(s) {', '.join(unknown)}: valid ones are {', '.join(sorted(known))}"
            )
        for f in dataclasses.fields(cls):
            if f.name in values:
                _check_type(f.name, values[f.name], str(f.type))
        return cls(**values)


_KINDS = {
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a finite number"),
    "bool": ((bool,), "true or false"),
}


def _check_type(key: str, value: Any, annotation: str) -> None:
    """A number, a whole number or a flag where the setting is one (``epochs=two`` is refused by name)."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return
    checked = [_KINDS[k] for k in kinds if k in _KINDS]
    if not checked or len(checked) < len(kinds) - ("None" in kinds):
        return  # text settings are checked where they are used (model, site, ...)
    if any(isinstance(value, types) and (types == (bool,) or not isinstance(value, bool)) for types, _ in checked):
        return
    wanted = " or ".join(what for _, what in checked) + (" or null" if "None" in kinds else "")
    raise ExperimentError(f"{key} must be {wanted}, got {value!r}")


MODULE_KEYS = (
    "model", "width", "dreg_site", "dreg_lambda", "dreg_eps", "dreg_form", "dreg_include_bias", "dreg_learnable",
    "path_loss", "activity_site", "activity_alpha", "activity_norm", "activity_learnable",
    "lr", "momentum", "nesterov", "weight_decay", "lr_scaling", "lr_base_batch", "warmup_epochs",
)  # fmt: skip


@dataclass
class Figure:
    """A figure of the paper as data: panels, each a list of runs."""

    name: str
    title: str
    paper: str
    panels: dict[str, list[RunConfig]] = field(default_factory=dict)

    @property
    def runs(self) -> list[RunConfig]:
        """Distinct runs, in panel order (a run shared by panels appears once)."""
        return list({run.name: run for runs in self.panels.values() for run in runs}.values())


def load_presets() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((HERE / "presets.yaml").read_text())


def preset_settings(preset: str) -> dict[str, Any]:
    presets = load_presets()
    if preset not in presets:
        raise ExperimentError(f"unknown preset {preset!r}: choose one of {', '.join(presets)}")
    settings = {k: v for k, v in presets[preset].items() if k != "description"}
    return {**settings, "preset": preset}


def _expand(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """A grid whose list values are crossed: {a: [1, 2], b: x} -> [{a: 1, b: x}, {a: 2, b: x}]."""
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def load_figure(name: str, preset: str, seeds: int = 1, overrides: dict[str, Any] | None = None) -> Figure:
    """The runs of figure ``name`` at ``preset``, one per seed, with ``overrides`` (e.g. dataset) applied."""
    if name not in FIGURE_NAMES:
        raise ExperimentError(f"unknown figure {name!r}: choose one of {', '.join(FIGURE_NAMES)}")
    spec = yaml.safe_load((FIGURES_DIR / f"{name}.yaml").read_text())
    base = {**preset_settings(preset), **spec.get("defaults", {}), **(overrides or {})}
    figure = Figure(name=name, title=spec["title"], paper=spec["paper"])
    for panel, grids in spec["panels"].items():
        figure.panels[panel] = [
            RunConfig.from_dict({**base, **run, **(overrides or {}), "seed": seed})
            for grid in grids
            for run in _expand(grid)
            for seed in range(seeds)
        ]
    return figure


def select(runs: list[RunConfig], pattern: str | None) -> list[RunConfig]:
    """Runs whose name matches the shell-style ``pattern`` anywhere (``--only``)."""
    if pattern is None:
        return runs
    chosen = [run for run in runs if fnmatch.fnmatch(run.name, f"*{pattern}*")]
    if not chosen:
        raise ExperimentError(
            f"--only {pattern!r} matches none of the {len(runs)} runs: see `python -m experiments list`"
        )
    return chosen


def split_batch(cfg: RunConfig, world_size: int) -> tuple[int, int]:
    """``(micro_batch, accumulate)`` for ``world_size`` devices: global = world x micro x accumulate (SPEC §4)."""
    batch = cfg.global_batch
    if batch < 1 or not math.isclose(batch, cfg.batch_size * cfg.batch_scale):
        raise ExperimentError(f"batch {cfg.batch_size} x scale {cfg.batch_scale} is not a whole batch")
    if batch % world_size:
        raise ExperimentError(f"global batch {batch} does not split over {world_size} devices: choose a divisor")
    per_device = batch // world_size
    micro = cfg.micro_batch or per_device
    if micro > per_device:
        raise ExperimentError(
            f"micro-batch {micro} is larger than the per-device batch {per_device} "
            f"(global {batch} over {world_size} devices): lower --micro-batch"
        )
    if per_device % micro:
        raise ExperimentError(
            f"per-device batch {per_device} is not a multiple of micro-batch {micro}: choose a divisor of {per_device}"
        )
    return micro, per_device // micro


def validate(cfg: RunConfig) -> None:
    """Catch bad settings before any data is read or anything is written.

    Building the LightningModule at a tiny width checks the model, the sites and every
    optimizer and regularizer setting in one place.
    """
    from datamodules import DATAMODULES
    from lightning_modules import Classifier

    if cfg.dataset not in DATAMODULES:
        raise ExperimentError(f"unknown dataset {cfg.dataset!r}: choose one of {', '.join(DATAMODULES)}")
    if cfg.epochs < 1:
        raise ExperimentError(f"epochs must be >= 1, got {cfg.epochs}")
    Classifier(**{**cfg.module_kwargs(), "width": 0.0625})
