"""The bf16-against-fp32 comparison (analysis/precision.py) on made-up records with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import precision
from analysis.__main__ import main as analysis_main
from analysis.fake_records import write_run
from analysis.records import AnalysisError
from experiments.config import RunConfig
from experiments.specs import load_figure


def pair(seeds: int) -> list[RunConfig]:
    spec = load_figure("fig2", "smoke", seeds, {"epochs": 12})  # 12 steps: growth fitted from step 8
    return [cfg for cfg in spec.runs if cfg.batch_size == 30720]


def write_both(results, offset: float = 0.0, growth_fp32: float | None = None) -> None:
    """Each run in bf16 and fp32: the seed moves the curve by 2 points per seed, bf16 by ``offset``."""
    for cfg in pair(3):
        acc = np.linspace(0.1, 0.6, cfg.epochs) + 0.02 * cfg.seed
        for prec, shift in ((precision.BF16, offset), (precision.FP32, 0.0)):
            run = RunConfig.from_dict({**cfg.to_dict(), "precision": prec})
            run_dir = write_run(results, run, acc + shift)
            if growth_fp32 is not None and prec == precision.FP32 and cfg.dreg_site:
                metrics = pd.read_csv(run_dir / "metrics.csv")
                metrics["dreg/distance"] = 0.01 * growth_fp32 ** (2 * metrics["step"])  # the distance squared
                metrics.to_csv(run_dir / "metrics.csv", index=False)


def test_same_within_seed_noise(tmp_path):
    write_both(tmp_path, offset=0.005)
    arms = precision.arms(tmp_path, "smoke")
    assert len(arms) == 2 and all(a.seeds == [0, 1, 2] for a in arms)
    for a in arms:
        assert a.precision_effect == pytest.approx(0.005)
        assert a.seed_spread == pytest.approx((0.02 + 0.04 + 0.02) / 3)
        assert a.same
    dreg = next(a for a in arms if a.growth[precision.BF16])
    assert dreg.growth_gap() == pytest.approx(0.0, abs=1e-9)  # the fake distance grows 1.2^step, so ||D|| 1.2^(s/2)
    assert "bf16 is the same experiment" in precision.report(arms)


def test_beyond_seed_noise(tmp_path):
    write_both(tmp_path, offset=-0.05)
    arms = precision.arms(tmp_path, "smoke")
    assert not any(a.same for a in arms)
    mean, _ = arms[0].best_difference()
    assert mean == pytest.approx(-0.05)
    assert "changes the outcome beyond seed noise" in precision.report(arms)


def test_growth_disagreement_decides(tmp_path):
    write_both(tmp_path, growth_fp32=1.2**0.5 * 1.01)
    dreg = next(a for a in precision.arms(tmp_path, "smoke") if a.growth[precision.BF16])
    assert dreg.growth_gap() == pytest.approx(1 - 1 / 1.01)
    assert not dreg.same


def test_cli_writes_files_and_refuses_one_precision(tmp_path, capsys):
    write_both(tmp_path)
    assert analysis_main(["precision", "--preset", "smoke", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "smoke" / "analysis" / "precision.md").read_text().startswith("# bf16")
    assert (tmp_path / "smoke" / "analysis" / "precision.png").stat().st_size > 0
    only = tmp_path / "only"
    write_run(only, pair(1)[0], np.linspace(0.1, 0.2, 12))
    with pytest.raises(AnalysisError, match="--precision 32-true"):
        precision.arms(only, "smoke")
    assert analysis_main(["precision", "--preset", "smoke", "--results", str(only)]) == 2
    assert "finished in both" in capsys.readouterr().err
