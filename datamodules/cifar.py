"""CIFAR-10/100 DataModules: torchvision download and reading, seeded stratified splits (docs/method.md §4), and two
training pipelines: the whole training split on the device as uint8 with batch-wise augmentation
("device", the default; see device_loader.py), or torchvision transforms in a DataLoader ("reference",
kept to measure the gain).

Every problem with the data or the batch settings raises ``DataError`` with one line saying what is wrong
and what to do, from ``prepare_data()``/``setup()``, i.e. before any training.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from . import DATASETS
from .device_loader import DeviceEvalLoader, DeviceLoader, ShardedEpochSampler

Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 images (N, 3, 32, 32), int64 labels (N,)), on the CPU


DOWNLOAD_TIMEOUT_S = 30.0  # seconds the download waits for the server on each connect or read


class DataError(RuntimeError):
    """Bad data or data settings; the message is one line saying what is wrong and what to do."""


def split_batch(batch: int, world_size: int, micro_batch: int | None = None) -> tuple[int, int]:
    """``(micro_batch, accumulate)``: the global batch is world_size x micro_batch x accumulate (docs/method.md §4).

    The one place the split is computed; ``micro_batch`` None is one micro-batch per device. A split that does
    not divide is a DataError naming what to change.
    """
    if batch % world_size:
        raise DataError(f"batch_size={batch} does not split over {world_size} devices: use a multiple of {world_size}")
    per_device = batch // world_size
    micro = micro_batch or per_device
    if micro > per_device:
        raise DataError(
            f"micro-batch {micro} is larger than the per-device batch {per_device} "
            f"(global {batch} over {world_size} devices): lower --micro-batch"
        )
    if per_device % micro:
        raise DataError(
            f"batch_size={batch} does not split as {world_size} device(s) x micro_batch={micro} x accumulate: the "
            f"per-device batch {per_device} is not a multiple of micro-batch {micro}; choose a micro_batch dividing "
            f"{per_device}"
        )
    return micro, per_device // micro


def default_data_dir() -> Path:
    """``$DREG_DATA_DIR``, else a per-user cache folder."""
    return Path(os.environ.get("DREG_DATA_DIR") or Path.home() / ".cache" / "dreg" / "data")


LOCAL_COPY_MARK = ".local-copy"  # in a data folder built from a local copy: its md5 sums are not the official ones


def local_copies() -> Path | None:
    """Where local copies of the data sets may lie (``<root>/cifar10/build.py``, ``<root>/cifar100/build.py``):
    ``$DREG_LOCAL_COPIES`` (empty: none), else ``../shared/data`` beside this checkout, which a user's clone lacks."""
    env = os.environ.get("DREG_LOCAL_COPIES")
    if env is not None:
        return Path(env) if env else None
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def by_class(split: Split) -> Split:
    """The images ordered by (class, position within the class in the files).

    That pair names an image in every copy of CIFAR-100: the official files and the local copy keep each
    class's images in one order but interleave the classes differently (docs/method.md §4).
    """
    order = torch.argsort(split[1], stable=True)
    return split[0][order], split[1][order]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _OneFile:
    """torchvision's CIFAR reader for a single data file, its integrity check reduced to "the file exists".

    The DataModule checks the md5 sums itself (or skips them, ``verify=False``) before reading, so that a
    mismatch names its file and a local copy such as ../shared/data/cifar10 can be read at all; the
    pickle reading is torchvision's. Reading one file per instance lets an unreadable file be named.
    """

    base_folder: str
    meta: dict[str, str | None]
    train_list: list[list[str]]
    test_list: list[list[str]]

    def __init__(self, root: str, filename: str, train: bool) -> None:
        self.train_list = self.test_list = [[filename, ""]]
        self.meta = {**self.meta, "md5": None}
        super().__init__(root, train=train)

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f, _ in self.train_list)

    def _load_meta(self) -> None:
        try:
            super()._load_meta()
        except Exception as e:
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            raise DataError(f"{path} is truncated or unreadable ({_one_line(e)}): delete it and fetch it again") from e


class _CIFAR10File(_OneFile, datasets.CIFAR10):
    pass


class _CIFAR100File(_OneFile, datasets.CIFAR100):
    pass


def _per_class(total: int, num_classes: int) -> list[int]:
    """``total`` split evenly over the classes, the remainder going to the first classes."""
    q, r = divmod(total, num_classes)
    return [q + (c < r) for c in range(num_classes)]


def stratified_split(
    labels: torch.Tensor, num_classes: int, val_size: int, train_subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices, each sorted: a seeded hold-out of exactly ``val_size`` images (split evenly over
    the classes), then, if asked, a training subset of exactly ``train_subset`` images drawn the same way
    from what is left. Both come from one per-class permutation, so they never overlap and a smaller subset
    is contained in a larger one with the same seed.
    """
    n = len(labels)
    if val_size < 0 or val_size > n:
        raise DataError(f"val_size={val_size} is outside 0..{n} (the training images): choose a smaller val_size")
    if 0 < val_size < num_classes:
        raise DataError(
            f"val_size={val_size} leaves some of the {num_classes} classes without validation images: "
            f"use 0 or at least {num_classes}"
        )
    if train_subset is not None:
        if train_subset < num_classes:
            raise DataError(
                f"train_subset={train_subset} leaves some of the {num_classes} classes without training "
                f"images: use at least {num_classes}"
            )
        if train_subset > n - val_size:
            raise DataError(
                f"train_subset={train_subset} is larger than the {n - val_size} training images left after "
                f"a hold-out of {val_size}: lower train_subset or val_size"
            )
    val_counts = _per_class(val_size, num_classes)
    sub_counts = _per_class(train_subset, num_classes) if train_subset is not None else None
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = val_counts[c]
        if k > len(idx):
            raise DataError(f"val_size={val_size} needs {k} images of class {c}, which has {len(idx)}: lower val_size")
        val.append(idx[:k])
        rest = idx[k:]
        if sub_counts is not None:
            if sub_counts[c] > len(rest):
                raise DataError(
                    f"train_subset={train_subset} needs {sub_counts[c]} images of class {c}, but only {len(rest)} "
                    "are left after the hold-out: lower train_subset or val_size"
                )
            rest = rest[: sub_counts[c]]
        train.append(rest)
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of x/255 for uint8 (N, C, H, W) images, from 256-bin
    histograms, so no float copy of the data set is made."""
    values = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        m = float((hist * values).sum() / hist.sum())
        var = float((hist * values**2).sum() / hist.sum()) - m * m
        mean.append(m / 255)
        std.append(math.sqrt(max(var, 0.0)) / 255)
    return tuple(mean), tuple(std)


class _PILImages(Dataset):
    """The reference pipeline's per-image path: a PIL image through torchvision transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: transforms.Compose) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # HWC, as PIL wants
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class _CIFARDataModule(L.LightningDataModule):
    """Shared CIFAR-10/100 logic; see the module docstring and the subclasses.

    ``batch_size`` is the GLOBAL batch (docs/method.md §4); it is split as world_size x accumulate x micro_batch, and
    the caller sets the Trainer's ``accumulate_grad_batches`` to ``self.accumulate_grad_batches``. ``mean``
    and ``std`` are computed in ``setup()`` from the training images actually used (after the hold-out and
    the subset), unaugmented. Validation and test run on every rank over the full split.
    """

    num_classes: ClassVar[int]
    name: ClassVar[str]
    key: ClassVar[str]  # the dataset setting's value, and the local copy's folder name
    order_by_class: ClassVar[bool]  # read the images by_class
    _torchvision: ClassVar[type[datasets.CIFAR10]]
    _reader: ClassVar[type[_OneFile]]

    def __init__(
        self,
        data_dir: str | Path | None = None,
        batch_size: int = 128,
        micro_batch: int | None = None,
        val_size: int = 5000,
        val_from_test: bool = False,
        train_subset: int | None = None,
        seed: int = 0,
        augment: bool = True,
        verify: bool = True,
        download: bool = True,
        pipeline: Literal["device", "reference"] = "device",
        num_workers: int = 0,
        channels_last: bool = False,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if pipeline not in ("device", "reference"):
            raise DataError(f"pipeline={pipeline!r} is not one of 'device', 'reference'")
        for arg, value in (
            ("batch_size", batch_size),
            ("micro_batch", micro_batch),
            ("eval_batch_size", eval_batch_size),
        ):
            if value is not None and value < 1:
                raise DataError(f"{arg}={value} must be a positive integer")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.batch_size, self.micro_batch, self.eval_batch_size = batch_size, micro_batch, eval_batch_size
        self.val_size, self.val_from_test, self.train_subset = val_size, val_from_test, train_subset
        self.seed, self.augment, self.verify, self.download = seed, augment, verify, download
        self.pipeline, self.num_workers, self.channels_last = pipeline, num_workers, channels_last
        self.world_size, self.rank = 1, 0
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.classes: list[str] = []
        self.train_indices: torch.Tensor | None = None  # into the training set as read_splits() orders it
        self.val_indices: torch.Tensor | None = None  # likewise; None when validating on the test set
        self._train: Split | None = None
        self._val: Split | None = None
        self._test: Split | None = None
        self._on_device: dict[tuple[str, torch.device], Split] = {}

    # ---- batch arithmetic -------------------------------------------------------------------------------

    def _batch_split(self) -> tuple[int, int]:
        """(micro_batch, accumulate) for the current world size, or a DataError if it does not divide."""
        return split_batch(self.batch_size, self.world_size, self.micro_batch)

    @property
    def micro_batch_size(self) -> int:
        """The per-device micro-batch (what BatchNorm sees)."""
        return self._batch_split()[0]

    @property
    def accumulate_grad_batches(self) -> int:
        """Micro-batches per optimizer step, for the Trainer; uses the world size read in ``setup()`` (1 before)."""
        return self._batch_split()[1]

    @property
    def has_test(self) -> bool:
        """Whether a separate test split exists (the test file is there and not used as validation)."""
        return self._test is not None

    # ---- files ------------------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.data_dir / self._torchvision.base_folder

    def _required(self) -> list[str]:
        return [f for f, _ in self._torchvision.train_list] + [self._torchvision.meta["filename"]]

    def _test_file(self) -> str:
        return self._torchvision.test_list[0][0]

    def _missing(self) -> list[str]:
        return [f for f in self._required() if not (self.folder / f).is_file()]

    def _not_found(self, missing: list[str], why: str, remedy: str) -> DataError:
        base = self._torchvision.base_folder
        return DataError(
            f"{self.name} not found in {self.data_dir} (missing {', '.join(missing)} in {base}) and {why}: "
            f"set DREG_DATA_DIR or --data-dir to a folder holding {base}, or {remedy}"
        )

    def prepare_data(self) -> None:
        """Download through torchvision (which checks the archive's md5) when the files are missing."""
        missing = self._missing()
        if not missing or self._build_local_copy():
            return
        if not self.download:
            raise self._not_found(missing, "download=False", "allow the download")
        # torchvision opens its URLs without a timeout: a network that drops packets (a firewall, a dead proxy)
        # would hang here for good. A socket that waits DOWNLOAD_TIMEOUT_S for any answer fails instead.
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S if previous is None else previous)
        try:
            self._torchvision(str(self.data_dir), train=True, download=True)
        except Exception as e:
            raise self._not_found(missing, f"the download failed ({_one_line(e)})", "check the network") from e
        finally:
            socket.setdefaulttimeout(previous)

    def _build_local_copy(self) -> bool:
        """Build the data folder from a local copy's ``build.py`` (local_copies()) if there is one; marked, so
        that its md5 sums, which are not the official ones, are not checked."""
        root = local_copies()
        build = root / self.key / "build.py" if root is not None else None
        if build is None or not build.is_file():
            return False
        print(f"building {self.name} from the local copy {build.parent} into {self.data_dir}", file=sys.stderr)
        done = subprocess.run([sys.executable, str(build), str(self.data_dir)], capture_output=True, text=True)
        if done.returncode or self._missing():
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise DataError(f"building {self.name} from {build} into {self.data_dir} failed ({why}): fix or remove it")
        (self.folder / LOCAL_COPY_MARK).touch()
        return True

    @property
    def is_local_copy(self) -> bool:
        """Whether the data folder was built from a local copy (its md5 sums are then not checked)."""
        return (self.folder / LOCAL_COPY_MARK).is_file()

    def _check_md5(self, files: list[str]) -> None:
        official = dict(self._torchvision.train_list + self._torchvision.test_list)
        official[self._torchvision.meta["filename"]] = self._torchvision.meta["md5"]
        for f in files:
            if not check_integrity(str(self.folder / f), official[f]):
                raise DataError(
                    f"{self.folder / f} does not match the official md5 sum: for a local copy (such as "
                    "../shared/data/cifar10) pass verify=False (--no-verify), else delete it and download again"
                )

    def _read(self, files: list[str], train: bool) -> Split:
        """Read data files through torchvision, one at a time so that a bad one is named."""
        images, labels = [], []
        for f in files:
            try:
                ds = self._reader(str(self.data_dir), f, train)
            except DataError:
                raise
            except Exception as e:
                raise DataError(
                    f"{self.folder / f} is truncated or unreadable ({_one_line(e)}): delete it and fetch it again"
                ) from e
            y = torch.tensor(ds.targets, dtype=torch.int64)
            if len(y) != len(ds.data) or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < self.num_classes):
                raise DataError(f"{self.folder / f} does not hold {self.name} data (labels or sizes are off)")
            self.classes = list(ds.classes)
            images.append(torch.from_numpy(ds.data).permute(0, 3, 1, 2))
            labels.append(y)
        return torch.cat(images).contiguous(), torch.cat(labels)

    # ---- setup ------------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read and split the data (once), then check the batch settings for this trainer's world size."""
        if self.trainer is not None:
            self.world_size, self.rank = self.trainer.world_size, self.trainer.global_rank
        if self._train is None:
            self._load()
        assert self._train is not None
        mb, accumulate = self._batch_split()
        n = len(self._train[1])
        if self.batch_size > n:
            raise DataError(
                f"batch_size={self.batch_size} is larger than the training split ({n} images): "
                "lower batch_size or use more training images"
            )
        if self.trainer is not None and stage in (None, "fit") and self.trainer.accumulate_grad_batches != accumulate:
            raise DataError(
                f"the Trainer accumulates {self.trainer.accumulate_grad_batches} micro-batch(es) but batch_size="
                f"{self.batch_size} over {self.world_size} device(s) with micro_batch={mb} needs "
                f"accumulate_grad_batches={accumulate}: pass that to the Trainer"
            )

    def read_splits(self) -> tuple[Split, Split | None]:
        """The whole training set and the test set (None when its file is missing), md5-checked unless
        ``verify=False`` or a local copy; CIFAR-100 ordered ``by_class``."""
        missing = self._missing()
        if missing:
            if self.trainer is not None:  # Lightning ran prepare_data already
                raise self._not_found(missing, "prepare_data() did not fetch it", "allow the download")
            self.prepare_data()
        test_exists = (self.folder / self._test_file()).is_file()
        if self.verify and self.is_local_copy:
            print(f"md5 check skipped: {self.folder} was built from a local copy ({LOCAL_COPY_MARK})", file=sys.stderr)
        elif self.verify:
            self._check_md5(self._required() + ([self._test_file()] if test_exists else []))
        train = self._read([f for f, _ in self._torchvision.train_list], train=True)
        test = self._read([self._test_file()], train=False) if test_exists else None
        if self.order_by_class:
            train, test = by_class(train), by_class(test) if test is not None else None
        return train, test

    def _load(self) -> None:
        (images, labels), test = self.read_splits()
        if self.val_from_test and test is None:
            raise DataError(
                f"val_from_test=True but {self.folder / self._test_file()} does not exist: "
                "validate on the hold-out (val_from_test=False) or use a copy with the test set"
            )
        val_size = 0 if self.val_from_test else self.val_size
        train_idx, val_idx = stratified_split(labels, self.num_classes, val_size, self.train_subset, self.seed)
        self.train_indices = train_idx
        self.val_indices = None if self.val_from_test else val_idx
        self._train = images[train_idx], labels[train_idx]
        if self.val_from_test:
            self._val, self._test = test, None
        else:
            self._val = (images[val_idx], labels[val_idx]) if len(val_idx) else None
            self._test = test
        self.mean, self.std = channel_stats(self._train[0])

    # ---- loaders ----------------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _split_on(self, name: str, device: torch.device) -> Split:
        """A split moved to the device once and kept there."""
        if (name, device) not in self._on_device:
            split = getattr(self, f"_{name}")
            self._on_device[(name, device)] = (split[0].to(device), split[1].to(device))
        return self._on_device[(name, device)]

    def _checked(self) -> Split:
        if self._train is None or self.mean is None or self.std is None:
            raise DataError(f"{type(self).__name__}.setup() has not run: call it (Lightning does) before the loaders")
        return self._train

    def train_dataloader(self) -> DeviceLoader | DataLoader:
        """Micro-batches of this rank; the device pipeline unless pipeline="reference"."""
        train = self._checked()
        mb, _ = self._batch_split()
        assert self.mean is not None and self.std is not None
        if self.pipeline == "reference":
            steps: list[Any] = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
            steps = (steps if self.augment else []) + [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
            return DataLoader(
                _PILImages(*train, transforms.Compose(steps)),
                batch_size=mb,
                shuffle=True,
                drop_last=True,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                pin_memory=self._device().type == "cuda",
                generator=torch.Generator().manual_seed(self.seed),
            )
        x, y = self._split_on("train", self._device())
        sampler = ShardedEpochSampler(len(y), self.batch_size, mb, self.world_size, self.rank, self.seed)
        return DeviceLoader(x, y, sampler, self.mean, self.std, augment=self.augment, channels_last=self.channels_last)

    def _eval_loader(self, name: str) -> DeviceEvalLoader:
        self._checked()
        assert self.mean is not None and self.std is not None
        x, y = self._split_on(name, self._device())
        batch = self.eval_batch_size or self.micro_batch_size
        return DeviceEvalLoader(x, y, batch, self.mean, self.std, channels_last=self.channels_last)

    def val_dataloader(self) -> DeviceEvalLoader | list:
        """The hold-out (or the test set with val_from_test=True); an empty list when val_size=0."""
        self._checked()
        return self._eval_loader("val") if self._val is not None else []

    def test_dataloader(self) -> DeviceEvalLoader:
        """The official test set, when it exists and is not already the validation set."""
        self._checked()
        if self._test is None:
            why = "it is the validation set (val_from_test=True)" if self.val_from_test else "the test file is missing"
            raise DataError(f"{self.name} has no separate test split here ({why}): skip the test run (see has_test)")
        return self._eval_loader("test")


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (10 classes); files in ``data_dir/cifar-10-batches-py``."""

    num_classes = DATASETS["cifar10"].num_classes
    name = "CIFAR-10"
    key = "cifar10"
    order_by_class = False  # the official order: the committed CIFAR-10 runs were drawn from it
    _torchvision = datasets.CIFAR10
    _reader = _CIFAR10File


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (100 fine classes); files in ``data_dir/cifar-100-python``."""

    num_classes = DATASETS["cifar100"].num_classes
    name = "CIFAR-100"
    key = "cifar100"
    order_by_class = True  # copies interleave the classes differently (docs/method.md §4)
    _torchvision = datasets.CIFAR100
    _reader = _CIFAR100File


DATAMODULES = {"cifar10": CIFAR10DataModule, "cifar100": CIFAR100DataModule}
