"""What a run is: its configuration (each setting declared once), its name, the presets it starts from, and the
checks it passes before anything runs. How a figure becomes runs is experiments/specs.py."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_modules.settings import ModuleSettings, out_of_range, setting

HERE = Path(__file__).resolve().parent
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")  # Lightning's names


class ExperimentError(ValueError):
    """Bad input to the experiment layer; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class RunConfig(ModuleSettings):
    """Everything that determines a run's numbers: the module's settings (lightning_modules/settings.py, their
    single declaration) and the run's own below. Two runs with equal configs are the same run."""

    dataset: str = "cifar10"
    batch_size: int = setting(2048, low=1)  # the paper's global batch; the run uses batch_size * batch_scale
    batch_scale: float = setting(1.0, short="bscale", above=0)
    micro_batch: int | None = setting(None, short="mb", low=1)  # per device, which BatchNorm sees; None: all
    epochs: int = setting(300, short="ep", low=1)
    train_subset: int | None = setting(None, short="n", low=1)
    val_size: int = setting(5000, short="val", low=0)
    val_from_test: bool = False
    augment: bool = True
    precision: str = setting("32-true", choices=PRECISIONS)
    seed: int = setting(0, low=0)
    preset: str = "custom"

    def __post_init__(self) -> None:
        for site, keys in _NEEDS_SITE.items():
            if getattr(self, site) is None:
                for key in keys:
                    object.__setattr__(self, key, _DEFAULTS[key])

    @property
    def global_batch(self) -> int:
        return round(self.batch_size * self.batch_scale)

    @property
    def name(self) -> str:
        """The run folder's name, e.g. ``vgg16-cifar10-bs30720-base-m0.9-lr0.2-wd0.00025-s0``.

        A readable core, then every setting that differs from the preset's defaults, so that two different
        configs never share a folder (config.yaml stays the identity check), then the seed. The preset is
        the folder above. A micro-batch appears once it differs from the global batch (DDP, accumulation).
        """
        differs = self.differences()
        parts = [self.model, self.dataset, f"bs{self.batch_size}"]
        if self.dreg_site is None:
            parts.append("base")
        else:  # the DReg variant next to its site: dreg0.1-R1-cosine
            parts += [f"dreg{self.dreg_lambda:g}", self.dreg_site]
            parts += [name_part(k, differs.pop(k)) for k in _NEEDS_SITE["dreg_site"] if k in differs]
        if self.activity_site is not None:
            parts.append(f"act{self.activity_alpha:g}{self.activity_norm}-{self.activity_site}")
            parts += ["learned"] if differs.pop("activity_learnable", False) else []
        parts.append(f"m{self.momentum:g}" + ("n" if self.nesterov else ""))
        parts += [name_part(k, v) for k, v in differs.items()]
        parts.append(f"s{self.seed}")  # last: a figure's line is the name without it (its seeds are averaged)
        return "-".join(parts)

    def differences(self) -> dict[str, Any]:
        """The settings outside the name's core that differ from the preset's defaults, in declaration order."""
        defaults = preset_defaults(self.preset, self.model)
        return {
            key: value
            for key, value in self.to_dict().items()
            if key not in _IN_CORE and value != getattr(defaults, key)
            and not (key == "micro_batch" and value == self.global_batch)
        }  # fmt: skip

    def module_kwargs(self) -> dict[str, Any]:
        """The LightningModule's arguments."""
        from datamodules import DATAMODULES

        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModuleSettings)}
        return {**settings, "batch_size": self.global_batch, "num_classes": DATAMODULES[self.dataset].num_classes}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - known))
        if unknown:
            raise ExperimentError(
                f"unknown run setting(s) {', '.join(unknown)}: valid ones are {', '.join(sorted(known))}"
            )
        for f in dataclasses.fields(cls):
            if f.name in values:
                _check_type(f.name, values[f.name], str(f.type))
                if problem := out_of_range(f, values[f.name]):
                    raise ExperimentError(problem)
        return cls(**values)


# In the name's core (or, for the DReg settings, meaningless without a site): never appended as a difference.
_IN_CORE = {"model", "dataset", "batch_size", "dreg_site", "dreg_lambda", "activity_site", "activity_alpha",
            "activity_norm", "momentum", "nesterov", "seed", "preset"}  # fmt: skip
# Settings that mean nothing without their site: a baseline is one run whatever lambda its figure names.
_NEEDS_SITE = {
    "dreg_site": ("dreg_lambda", "dreg_eps", "dreg_form", "dreg_include_bias", "path_loss"),
    "activity_site": ("activity_alpha", "activity_norm", "activity_learnable"),
}


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}  # each setting's declaration (and its metadata)
_DEFAULTS = {name: f.default for name, f in FIELDS.items()}


@functools.cache
def preset_defaults(preset: str, model: str) -> RunConfig:
    """The config a figure at this preset starts from: the defaults above, then the preset's settings (built once
    per preset and network: every run's name compares against it)."""
    settings = preset_settings(preset, model) if preset in load_presets() else {"preset": preset}
    return RunConfig(**settings)


def name_part(key: str, value: Any) -> str:
    """One setting as a short, folder- and W&B-safe name part: ``lr0.2``, ``sqrt``, ``nochannels_last``."""
    if isinstance(value, bool):
        return key if value else f"no{key}"
    short = FIELDS[key].metadata.get("short")
    if short == "":  # the value alone says what it is: cosine, mean, sqrt
        return str(value)
    text = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return (short or key) + re.sub(r"[^A-Za-z0-9.]", "", text)


_KINDS = {
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a finite number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a name"),
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


@functools.cache
def load_presets() -> dict[str, dict[str, Any]]:
    """The presets, parsed once per process (a run's name reads them): read them, never change them."""
    return yaml.safe_load((HERE / "presets.yaml").read_text())


def preset_settings(preset: str, model: str | None = None) -> dict[str, Any]:
    """The preset's run settings; with ``model``, its settings for that network (``by_model``) on top."""
    presets = load_presets()
    if model is not None and not isinstance(model, str):
        raise ExperimentError(f"model must be a name, got {model!r}: one of vgg16, resnet18, mobilenetv2")
    if preset not in presets:
        raise ExperimentError(f"unknown preset {preset!r}: choose one of {', '.join(presets)}")
    settings = {k: v for k, v in presets[preset].items() if k not in ("description", "by_model")}
    return {**settings, **presets[preset].get("by_model", {}).get(model, {}), "preset": preset}


def split_batch(cfg: RunConfig, world_size: int) -> tuple[int, int]:
    """``(micro_batch, accumulate)`` for ``world_size`` devices: global = world x micro x accumulate (method §4)."""
    from datamodules import DataError
    from datamodules.cifar import split_batch as split

    batch = cfg.global_batch
    if batch < 1 or not math.isclose(batch, cfg.batch_size * cfg.batch_scale):
        raise ExperimentError(f"batch {cfg.batch_size} x scale {cfg.batch_scale} is not a whole batch")
    try:
        return split(batch, world_size, cfg.micro_batch)
    except DataError as err:
        raise ExperimentError(str(err)) from err


def validate(cfg: RunConfig) -> None:
    """Catch bad settings before any data is read or anything is written: the module's settings, and the
    sites against the network (built at a tiny width; the run's one LightningModule is built later)."""
    from datamodules import DATAMODULES
    from lightning_modules import build_net, resolve_site
    from lightning_modules.dreg import resolve_conv_site

    if cfg.dataset not in DATAMODULES:
        raise ExperimentError(f"unknown dataset {cfg.dataset!r}: choose one of {', '.join(DATAMODULES)}")
    if cfg.precision not in PRECISIONS:
        raise ExperimentError(f"unknown precision {cfg.precision!r}: choose one of {', '.join(PRECISIONS)}")
    ModuleSettings.of(cfg.to_dict()).check()
    net = build_net(cfg.model, DATAMODULES[cfg.dataset].num_classes, 0.0625)
    if cfg.dreg_site is not None:
        resolve_conv_site(net, cfg.dreg_site)
    if cfg.activity_site is not None:
        resolve_site(net, cfg.activity_site)
