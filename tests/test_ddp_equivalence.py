"""DDP is the same computation as one process at the same global batch (docs/method.md §2: consistent across ranks)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from paths import ROOT

from datamodules import write_fake_cifar


def train(data: Path, out: Path, devices: int, batchnorm: str) -> dict[str, torch.Tensor]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(ROOT / "tests" / "helpers" / "ddp_equivalence.py"),
        str(data),
        str(out),
        str(devices),
        batchnorm,
    ]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=300, capture_output=True)
    return torch.load(out)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_frozen_batchnorm(tmp_path):
    data = write_fake_cifar(tmp_path / "data", "cifar10", n_train=200, n_test=0)
    single = train(data, tmp_path / "one.pt", 1, "frozen")
    double = train(data, tmp_path / "two.pt", 2, "frozen")
    start = train(data, tmp_path / "ghost1.pt", 1, "ghost")
    assert max_difference(single, double) < 1e-5
    # The comparison can fail: the parameters did move, and with BatchNorm in train mode each device
    # normalizes over its own half of the batch (ghost batch norm), which changes the result.
    assert max_difference(single, start) > 1e-3
    ghost = train(data, tmp_path / "ghost2.pt", 2, "ghost")
    assert max_difference(start, ghost) > 1e-5


@pytest.mark.slow
def test_a_run_that_diverges_under_ddp_is_recorded_not_crashed(tmp_path):
    data = write_fake_cifar(tmp_path / "data", "cifar10", n_train=600, n_test=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    settings = ["model=resnet18", "dataset=cifar10", "dreg_site=R1", "dreg_lambda=1e30", "lr=10"]
    command = [sys.executable, "-m", "experiments", "train", "--preset", "smoke", *settings, "--devices", "2",
               "--strategy", "ddp", "--accelerator", "cpu", "--data-dir", str(data), "--no-verify",
               "--results", str(tmp_path / "r"), "--no-progress"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (status,) = (tmp_path / "r" / "smoke").glob("*/status.json")
    assert '"state": "diverged"' in status.read_text()
