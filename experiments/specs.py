"""How a figure becomes runs: its spec (experiments/figures/NAME.yaml) crossed out at a preset, one RunConfig per
run and seed. What a run is, and its name, is experiments/config.py."""

from __future__ import annotations

import fnmatch
import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from experiments.config import ExperimentError, RunConfig, preset_settings

FIGURES_DIR = Path(__file__).resolve().parent / "figures"
# The figures are the specs in experiments/figures/: the paper's in order, then the studies beyond it.
FIGURE_NAMES = tuple(sorted((p.stem for p in FIGURES_DIR.glob("*.yaml")), key=lambda n: (not n.startswith("fig"), n)))


@dataclass
class Figure:
    """A figure of the paper as data: panels, each a list of runs."""

    name: str
    title: str
    paper: str  # "Figure 2", or "none (...)" for a study beyond the paper
    kind: str  # batch_sweep, site_sweep, lambda_sweep, momentum_sweep, controls, mechanism: how it is analysed
    subtitle: str
    claims: tuple[str, ...] = ()  # for a batch sweep: which of the paper's convergence claims it makes
    panels: dict[str, list[RunConfig]] = field(default_factory=dict)
    accuracy_gap: dict[str, Any] | None = None  # the text's average accuracy gap: {points, panels}
    roles: dict[str, list[RunConfig]] = field(default_factory=dict)  # "panel/role": the runs a grid's `role:` names

    @property
    def of_paper(self) -> bool:
        return self.paper.startswith("Figure")

    @property
    def runs(self) -> list[RunConfig]:
        """Distinct runs, in panel order (a run shared by panels appears once)."""
        return list({run.name: run for runs in self.panels.values() for run in runs}.values())

    def role(self, panel: str, role: str) -> list[RunConfig]:
        """The runs that play ``role`` in ``panel``, as the spec declares it (``role: doubled``): the analysis
        finds a study's runs by the part they play, so editing their settings in the YAML cannot lose them."""
        return self.roles.get(f"{panel}/{role}", [])


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
    settings = functools.cache(lambda model: preset_settings(preset, model))
    settings(RunConfig.model)  # an unknown preset is refused before anything else
    figure = Figure(name, spec["title"], spec["paper"], spec["kind"], spec["subtitle"], tuple(spec.get("claims", ())),
                    accuracy_gap=spec.get("accuracy_gap"))  # fmt: skip
    for panel, grids in spec["panels"].items():
        figure.panels[panel] = []
        for grid in grids:
            role = grid.pop("role", None)
            runs = [{**spec.get("defaults", {}), **run, **(overrides or {})} for run in _expand(grid)]
            built = [
                RunConfig.from_dict({**settings(run.get("model", RunConfig.model)), **run, "seed": seed})
                for run in runs
                for seed in range(seeds)
            ]
            figure.panels[panel] += built
            if role:
                figure.roles.setdefault(f"{panel}/{role}", []).extend(built)
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
