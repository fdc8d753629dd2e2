"""Shared test setup: the ``cuda`` marker (skipped without a GPU) and the tests' own helpers on the path."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by `make gpu-check` where one is)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
