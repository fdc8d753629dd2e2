"""CIFAR-10/100 DataModules with an on-device batch pipeline, and a fake-data writer for tests."""

from typing import Any

from .cifar import CIFAR10DataModule, CIFAR100DataModule, DataError

DATAMODULES = {"cifar10": CIFAR10DataModule, "cifar100": CIFAR100DataModule}

__all__ = ["DATAMODULES", "CIFAR10DataModule", "CIFAR100DataModule", "DataError", "write_fake_cifar"]


def __getattr__(name: str) -> Any:
    """``write_fake_cifar`` on first use, so ``python -m datamodules.fake_cifar`` does not import it twice."""
    if name == "write_fake_cifar":
        from .fake_cifar import write_fake_cifar

        return write_fake_cifar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
