"""The committed records are the project's results: each keeps its folder name, and that name is still the one the
code derives from its config (a change to names or defaults that would rename a published run fails here)."""

from pathlib import Path

import pytest
import yaml

from experiments.config import RunConfig

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "committed"
CONFIGS = sorted(COMMITTED.glob("*/*/config.yaml"))


def test_there_are_committed_records():
    assert len(CONFIGS) > 100


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_a_committed_run_keeps_its_name(config: Path):
    record = yaml.safe_load(config.read_text())
    cfg = RunConfig.from_dict(record["run"])
    assert record["run_name"] == config.parent.name
    assert cfg.name == config.parent.name and cfg.preset == config.parent.parent.name
