"""Small CIFAR-10/100 look-alikes in the official python-pickle layout, so tests run the real reading code.

CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; CIFAR-100:
``cifar-100-python/{train, test, meta}``. Each data file is a dict with ``data`` (uint8 (N, 3072): the R
plane, then G, then B, each row-major), the labels (``labels``, or ``fine_labels`` and ``coarse_labels``),
``filenames`` and ``batch_label``. The official files are Python 2 pickles whose byte-string keys
torchvision decodes to ``str`` with ``encoding="latin1"``; these are written with ``str`` keys, which load
the same way. Labels are balanced over the classes (counts differ by at most one).

CLI: ``python -m datamodules.fake_cifar OUT --dataset cifar10 --n-train 500``.
"""

from __future__ import annotations

import argparse
import colorsys
import pickle
from pathlib import Path
from typing import Literal

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_LAYOUT = {"cifar10": ("cifar-10-batches-py", 10), "cifar100": ("cifar-100-python", 100)}


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator, pattern: str) -> np.ndarray:
    """Rows of 3072 bytes. "patterned": a class colour (hues around the wheel) with class-specific stripes
    (period and direction) plus noise, so a tiny model learns them within an epoch or two."""
    n = len(labels)
    if pattern == "random":
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    colors = np.array([colorsys.hsv_to_rgb(c / num_classes, 0.8, 0.75) for c in range(num_classes)]) * 255
    coord = np.arange(32)
    period = 2 + labels % 4
    along_rows = (labels // 4) % 2 == 1
    pos = np.where(along_rows[:, None, None], coord[None, :, None], coord[None, None, :])  # (N, 32, 32)
    stripes = np.where((pos // period[:, None, None]) % 2 == 0, 30.0, -30.0)
    img = colors[labels][:, :, None, None] + stripes[:, None] + rng.normal(0, 15, (n, 3, 32, 32))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).reshape(n, 3072)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(name: str, labels: np.ndarray, data: np.ndarray, ids: np.ndarray, cifar100: bool) -> dict:
    entry: dict = {"batch_label": name, "filenames": [f"fake_{i:06d}.png" for i in ids]}
    if cifar100:
        entry["fine_labels"] = labels.tolist()
        entry["coarse_labels"] = (labels // 5).tolist()
    else:
        entry["labels"] = labels.tolist()
    entry["data"] = data
    return entry


def write_cifar10(
    root: str | Path, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray | None, test_y: np.ndarray | None
) -> Path:
    """CIFAR-10's official layout under ``root`` from uint8 images (N, 3072) and their labels."""
    folder = Path(root) / _LAYOUT["cifar10"][0]
    folder.mkdir(parents=True, exist_ok=True)
    n_train = len(train_y)
    for b, part in enumerate(np.array_split(np.arange(n_train), 5)):
        _dump(
            folder / f"data_batch_{b + 1}",
            _batch(f"training batch {b + 1} of 5", train_y[part], train_x[part], part, False),
        )
    if test_x is not None:
        _dump(folder / "test_batch", _batch("testing batch 1 of 1", test_y, test_x, np.arange(len(test_y)), False))
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": -(-n_train // 5), "label_names": CIFAR10_CLASSES, "num_vis": 3072},
    )
    return Path(root)


def write_cifar100(
    root: str | Path, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray | None, test_y: np.ndarray | None
) -> Path:
    """CIFAR-100's official layout under ``root`` from uint8 images (N, 3072) and their fine labels."""
    folder = Path(root) / _LAYOUT["cifar100"][0]
    folder.mkdir(parents=True, exist_ok=True)
    _dump(folder / "train", _batch("training batch 1 of 1", train_y, train_x, np.arange(len(train_y)), True))
    if test_x is not None:
        _dump(folder / "test", _batch("testing batch 1 of 1", test_y, test_x, np.arange(len(test_y)), True))
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"class_{c:02d}" for c in range(100)],
            "coarse_label_names": [f"superclass_{c:02d}" for c in range(20)],
        },
    )
    return Path(root)


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100}


def write_fake_cifar(
    root: str | Path,
    dataset: Literal["cifar10", "cifar100"] = "cifar10",
    n_train: int = 500,
    n_test: int = 100,
    seed: int = 0,
    pattern: Literal["random", "patterned"] = "patterned",
) -> Path:
    """Write a fake data set under ``root`` and return ``root`` (what a DataModule takes as data_dir).

    ``n_test=0`` writes no test file, like a copy without the test split.
    """
    if dataset not in _LAYOUT:
        raise ValueError(f"dataset must be one of {sorted(_LAYOUT)}, not {dataset!r}")
    if pattern not in ("random", "patterned"):
        raise ValueError(f"pattern must be 'random' or 'patterned', not {pattern!r}")
    num_classes = _LAYOUT[dataset][1]
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % num_classes)
        splits[split] = (labels, _images(labels, num_classes, rng, pattern))
    (train_y, train_x), (test_y, test_x) = splits["train"], splits["test"]

    WRITERS[dataset](root, train_x, train_y, test_x if n_test else None, test_y if n_test else None)
    return root


def main(argv: list[str] | None = None) -> None:
    """Write a fake data set from the command line and print where."""
    p = argparse.ArgumentParser(description="Write a small fake CIFAR-10/100 in the official pickle layout.")
    p.add_argument("out", type=Path, help="the data_dir to write into")
    p.add_argument("--dataset", choices=sorted(_LAYOUT), default="cifar10")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pattern", choices=["random", "patterned"], default="patterned")
    a = p.parse_args(argv)
    root = write_fake_cifar(a.out, a.dataset, a.n_train, a.n_test, a.seed, a.pattern)
    print(root / _LAYOUT[a.dataset][0])


if __name__ == "__main__":
    main()
