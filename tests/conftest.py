"""Shared test setup: the small CIFAR data, the ``cuda`` marker (skipped without a GPU), the helpers' path."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from datamodules import write_fake_cifar

# Tests make their own data: a missing data set is never built from ../shared/data (datamodules.cifar.local_copies),
# here or in the commands the tests start. A test of the local copies sets its own folder.
os.environ["DREG_LOCAL_COPIES"] = ""
# One thread, as the commands the tests start already have (OMP_NUM_THREADS=1): at the tests' tiny widths a second
# thread buys nothing, and two threads of a test and two of a training run beside it (a sweep) wait on each other
# at every parallel region (measured 2026-12-06, AMD EPYC, 2 cores: a 2-thread mini VGG16 epoch 3.2 s alone,
# 11 s beside one busy thread; a 1-thread epoch 5.9 s alone, 6.4 s beside it).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake CIFAR-10 and CIFAR-100 in the official layout (600 training, 100 test images each), written once.
    Tests read it and never change it (a test that needs a damaged copy copies it first)."""
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar(root, "cifar10", n_train=600, n_test=100)
    write_fake_cifar(root, "cifar100", n_train=600, n_test=100)
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by `make gpu-check` where one is)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
