"""CIFAR-10/100 DataModules with an on-device batch pipeline, and a fake-data writer for tests.

The facts about each data set (``DATASETS``) load without torch, so the analysis reads them without it; the
DataModules load on first use.
"""

from typing import Any, NamedTuple


class Dataset(NamedTuple):
    """What the rest of the suite needs to know of a data set without loading it."""

    num_classes: int
    train_images: int
    test_images: int


DATASETS = {"cifar10": Dataset(10, 50_000, 10_000), "cifar100": Dataset(100, 50_000, 10_000)}

__all__ = ["DATAMODULES", "DATASETS", "CIFAR10DataModule", "CIFAR100DataModule", "DataError", "write_fake_cifar"]


def __getattr__(name: str) -> Any:
    """The DataModules (torch, Lightning) and ``write_fake_cifar`` on first use."""
    if name in ("CIFAR10DataModule", "CIFAR100DataModule", "DataError", "DATAMODULES"):
        from . import cifar

        return getattr(cifar, name)
    if name == "write_fake_cifar":
        from .fake_cifar import write_fake_cifar

        return write_fake_cifar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
