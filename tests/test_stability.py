"""The stability predictor against PyTorch's own SGD, against a real training run, and its overflow step."""

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import ROOT

from analysis.fake_records import write_fake_records
from analysis.stability import checks, draw, growth_root, overflow_step, simulate
from datamodules import write_fake_cifar
from experiments.config import RunConfig
from experiments.specs import load_figure
from experiments.train import Execution, prepare, train


def _torch_distance(form: str, lr: float, momentum: float, lam: float, wd: float, steps: int) -> np.ndarray:
    """||W_R - W_L|| per step when only the penalty and weight decay act: PyTorch's SGD, in float64."""
    g = torch.Generator().manual_seed(0)
    w_R = torch.randn(64, 8, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w_L = (w_R.detach() + 0.01 * torch.randn(w_R.shape, generator=g, dtype=torch.float64)).requires_grad_()
    optimizer = torch.optim.SGD([w_R, w_L], lr=lr, momentum=momentum, weight_decay=wd)
    out = []
    for _ in range(steps + 1):
        diff = w_R - w_L
        out.append(diff.norm().item())
        loss = -lam * (diff.pow(2).sum() if form == "frobenius" else diff.norm())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return np.array(out)


@pytest.mark.parametrize("form", ["frobenius", "norm"])
@pytest.mark.parametrize(("lr", "momentum"), [(0.1, 0.9), (0.2, 0.5), (0.05, 0.0)])
def test_the_recurrence_is_what_pytorch_sgd_does(form, lr, momentum):
    measured = _torch_distance(form, lr, momentum, 0.1, 5e-4, 120)
    predicted = simulate(form, [lr] * 120, momentum, 0.1, 5e-4, measured[0])
    np.testing.assert_allclose(predicted, measured, rtol=1e-9)


def test_frobenius_grows_by_the_largest_root_and_norm_settles_at_two_lambda_over_wd():
    d = simulate("frobenius", [0.1] * 300, 0.9, 0.1, 5e-4, 1.0)
    assert d[300] / d[299] == pytest.approx(growth_root(0.1, 0.9, 0.1, 5e-4), rel=1e-9)
    assert growth_root(0.1, 0.9, 0.1, 5e-4) == pytest.approx(1.17209, abs=1e-5)  # the root the records showed
    n = simulate("norm", [0.1] * 200_000, 0.9, 0.1, 5e-4, 0.16)
    assert n[-1] == pytest.approx(2 * 0.1 / 5e-4, rel=1e-6)
    assert n[11] - n[10] == pytest.approx(2 * 0.1 * 0.1 * (1 - 0.9**11) / (1 - 0.9), rel=0.01)
    assert np.isnan(simulate("cosine", [0.1] * 5, 0.9, 0.1, 5e-4, 1.0)).all()


def test_the_overflow_step_of_the_mini_2k_run():
    """||D||_0 = 0.16 (the initial distance a mini VGG16 run records): float32 overflows near step 291, epoch 12."""
    d = simulate("frobenius", [0.1] * 400, 0.9, 0.1, 5e-4, 0.16)
    step = overflow_step(d)
    assert d[step] ** 2 > np.finfo(np.float32).max >= d[step - 1] ** 2
    assert 285 <= step <= 295 and step // 24 == 12


def test_a_long_frobenius_prediction_passes_float64_quietly():
    """7,200 steps at 2k run far past float64's range: the overflow step is still read, with no warning printed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = simulate("frobenius", [0.1] * 7200, 0.9, 0.1, 5e-4, 0.16)
        step = overflow_step(d)
    assert not np.isfinite(d[-1]) and 285 <= step <= 295


def test_the_prediction_follows_a_real_run(tmp_path: Path):
    """Two epochs of a real DReg run (smoke scale, 25 steps per epoch): the measured per-step growth of
    ||W_R - W_L|| is within 2% of the predicted one, and the records hold the distance before any step."""
    data = write_fake_cifar(tmp_path / "data", "cifar10", n_train=600, n_test=100)
    spec = next(r for r in load_figure("fig2", "smoke").runs if r.dreg_site and r.batch_size == 2048)
    ex = Execution(results=tmp_path, data_dir=data, verify=False, accelerator="cpu", progress=False)
    train(prepare(RunConfig.from_dict({**spec.to_dict(), "epochs": 3}), ex), ex)
    (check,) = checks(tmp_path, "smoke")
    assert check.steps.tolist() == [0, 25, 50, 75]
    assert check.measured[0] == pytest.approx(check.predicted[0]) and check.measured[0] > 0
    assert check.growth_measured == pytest.approx(check.growth_predicted, rel=0.02)
    assert check.growth_predicted == pytest.approx(
        math.exp(np.polyfit([25, 50, 75], np.log(check.predicted[[25, 50, 75]]), 1)[0])
    )
    assert check.holds


def test_the_figure_has_one_legend_entry_per_batch_size(tmp_path: Path):
    """Dozens of runs share a few growth rates: the legend names each batch size once, with its number of runs
    (every seed), instead of one unreadable entry per run."""
    write_fake_records(tmp_path, "fig2", seeds=2)
    found = checks(tmp_path, "smoke")
    sizes = sorted({c.batch_size for c in found})
    (ax,) = draw(found, "t").axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(sizes) > 1 and len(found) == 2 * len(sizes)
    assert labels == [f"BS {round(b / 1024)}k (2 runs)" for b in sizes]


def test_a_run_whose_predicted_overflow_comes_after_its_last_step_is_predicted_to_finish(tmp_path: Path):
    """`mini` ResNet18 at R4, 30k: 300 steps, and the prediction overflows after the 300th, where no loss is taken
    any more. The run finishes `done` with its last distance past float32's range, as predicted: the check holds."""
    name = "resnet18-cifar100-bs30720-dreg0.1-R4-m0.9-s0"
    record = ROOT / "results" / "committed" / "mini" / name
    shutil.copytree(record, tmp_path / "mini" / name, ignore=shutil.ignore_patterns("checkpoints"))
    (check,) = checks(tmp_path, "mini")
    total = int(check.steps[-1])
    assert check.state == "done" and total == 300 and overflow_step(check.predicted) == total
    assert not np.isfinite(check.measured[-1]) and check.predicted_epoch is None
    assert check.holds
