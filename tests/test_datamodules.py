"""The CIFAR DataModules on fake data in the official pickle layout (and on the real CIFAR-10 copy when
../shared is there): reading, splits, on-device augmentation, seeding, DDP shards, Lightning, bad input."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datamodules import DATAMODULES, CIFAR10DataModule, CIFAR100DataModule, DataError, write_fake_cifar
from datamodules.device_loader import DeviceLoader, ShardedEpochSampler, random_crop_flip
from datamodules.fake_cifar import main as fake_main

SHARED_BUILD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "build.py"


@pytest.fixture(scope="module")
def c10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 training images (50 per class) and 100 test images."""
    return write_fake_cifar(tmp_path_factory.mktemp("c10"), "cifar10", n_train=500, n_test=100)


@pytest.fixture(scope="module")
def c100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("c100"), "cifar100", n_train=400, n_test=100)


def _raw_train(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fake CIFAR-10 training set read straight from the pickles, to check the DataModule against."""
    xs, ys = [], []
    for b in range(1, 6):
        with open(root / "cifar-10-batches-py" / f"data_batch_{b}", "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        xs.append(entry["data"])
        ys += entry["labels"]
    return np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys)


def _trainer(world: int, rank: int, accumulate: int = 1) -> SimpleNamespace:
    """Just what the DataModule reads from a Lightning Trainer, to simulate DDP ranks on one process."""
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    return SimpleNamespace(world_size=world, global_rank=rank, accumulate_grad_batches=accumulate, strategy=strategy)


def _epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


# ---- reading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_both_datasets_load_through_torchvision(dataset: str, c10: Path, c100: Path) -> None:
    root, n_classes = (c10, 10) if dataset == "cifar10" else (c100, 100)
    dm = DATAMODULES[dataset](root, batch_size=100, val_size=100, verify=False)
    dm.setup("fit")
    assert dm.num_classes == n_classes == len(dm.classes)
    assert len(dm.train_indices) + len(dm.val_indices) == (500 if dataset == "cifar10" else 400)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(_epoch(dm.val_dataloader())[1].tolist()) == set(range(n_classes))
    assert dm.has_test and len(_epoch(dm.test_dataloader())[1]) == 100


def test_verify_rejects_files_that_are_not_the_official_ones(c10: Path) -> None:
    with pytest.raises(DataError, match=r"data_batch_1 does not match the official md5.*verify=False"):
        CIFAR10DataModule(c10, verify=True).setup()


def test_fake_cli_without_test_split(tmp_path: Path) -> None:
    fake_main([str(tmp_path), "--dataset", "cifar100", "--n-train", "200", "--n-test", "0"])
    assert sorted(p.name for p in (tmp_path / "cifar-100-python").iterdir()) == ["meta", "train"]
    dm = CIFAR100DataModule(tmp_path, batch_size=50, val_size=100, verify=False)
    dm.setup()
    assert not dm.has_test
    with pytest.raises(DataError, match="no separate test split"):
        dm.test_dataloader()


# ---- splits ------------------------------------------------------------------------------------------


def test_holdout_and_subset_are_exact_stratified_and_disjoint(c10: Path) -> None:
    _, labels = _raw_train(c10)
    dm = CIFAR10DataModule(c10, batch_size=50, val_size=53, train_subset=101, seed=3, verify=False)
    dm.setup()
    val, train = dm.val_indices.numpy(), dm.train_indices.numpy()
    assert np.bincount(labels[val], minlength=10).tolist() == [6, 6, 6] + [5] * 7
    assert np.bincount(labels[train], minlength=10).tolist() == [11] + [10] * 9
    assert len(set(val) | set(train)) == len(val) + len(train)

    full = CIFAR10DataModule(c10, batch_size=50, val_size=53, seed=3, verify=False)
    full.setup()
    assert torch.equal(full.val_indices, dm.val_indices)  # the subset is drawn after the same hold-out
    assert set(train) <= set(full.train_indices.tolist()) and len(full.train_indices) == 447
    other = CIFAR10DataModule(c10, batch_size=50, val_size=53, seed=4, verify=False)
    other.setup()
    assert not torch.equal(other.val_indices, dm.val_indices)


def test_val_from_test_uses_the_test_set_and_no_holdout(c10: Path) -> None:
    dm = CIFAR10DataModule(c10, batch_size=50, val_from_test=True, verify=False)
    dm.setup()
    assert dm.val_indices is None and len(dm.train_indices) == 500 and not dm.has_test
    assert len(_epoch(dm.val_dataloader())[1]) == 100


# ---- the on-device pipeline --------------------------------------------------------------------------


def test_crop_offsets_stay_within_4px_and_half_are_flipped() -> None:
    n = 1000
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[0] = torch.arange(1, 33)[:, None]  # row + 1
    img[1] = torch.arange(1, 33)[None, :]  # col + 1
    img[2] = 100
    # mean 0 and std 1/255 make the normalization the identity, so the raw pixels come back
    loader = DeviceLoader(
        img.expand(n, 3, 32, 32).contiguous(),
        torch.arange(n),
        ShardedEpochSampler(n, 1000, 250, seed=1),
        mean=(0.0,) * 3,
        std=(1 / 255,) * 3,
    )
    x, _ = _epoch(loader)
    x = x.round().to(torch.uint8)
    dy = x[:, 0, 16, 16].long() - 17
    flipped = x[:, 1, 16, 16] < x[:, 1, 16, 15]
    dx = x[:, 1, 16, 16].long() - torch.where(flipped, 16, 17)
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(-4, 5))
    assert abs(int(flipped.sum()) - n / 2) < 5 * (n / 4) ** 0.5
    padded = F.pad(img, (4, 4, 4, 4))
    for b in range(0, n, 7):  # the whole image is the zero-padded window, mirrored when flipped
        window = padded[:, 4 + dy[b] : 36 + dy[b], 4 + dx[b] : 36 + dx[b]]
        assert torch.equal(x[b], window.flip(2) if flipped[b] else window)


def test_random_crop_flip_matches_slicing() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    shifts = torch.randint(0, 9, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    out = random_crop_flip(x, shifts, flips)
    padded = F.pad(x, (4, 4, 4, 4))
    for b in range(16):
        w = padded[b, :, shifts[b, 0] : shifts[b, 0] + 32, shifts[b, 1] : shifts[b, 1] + 32]
        assert torch.equal(out[b], w.flip(2) if flips[b] else w)


def _loader(seed: int, epoch: int, rank: int = 0, world: int = 1, micro: int = 10) -> DeviceLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (103, 3, 32, 32), dtype=torch.uint8, generator=g)
    sampler = ShardedEpochSampler(103, 20, micro, world_size=world, rank=rank, seed=seed)
    sampler.set_epoch(epoch)
    return DeviceLoader(images, torch.arange(103), sampler, (0.5,) * 3, (0.25,) * 3)


def test_batches_are_a_function_of_seed_epoch_and_rank() -> None:
    torch.manual_seed(123)
    a = _epoch(_loader(seed=0, epoch=2))
    torch.manual_seed(456)  # the global RNG plays no part
    b = _epoch(_loader(seed=0, epoch=2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (_loader(seed=1, epoch=2), _loader(seed=0, epoch=3)):
        x, y = _epoch(other)
        assert not torch.equal(y, a[1]) and not torch.equal(x, a[0])
    # each rank draws its augmentation from its own stream
    draws = [torch.rand(8, generator=_loader(0, 0, rank=r, world=2).sampler.generator()) for r in range(2)]
    assert not torch.equal(*draws)


@pytest.mark.parametrize("micro", [10, 5])
def test_ddp_shards_are_disjoint_equal_and_cover_the_epoch(micro: int) -> None:
    world, g_batch, accumulate = 2, 20, 10 // micro
    shards = [_epoch(_loader(seed=7, epoch=1, rank=r, world=world, micro=micro))[1] for r in range(world)]
    perm = _loader(seed=7, epoch=1).sampler.permutation()
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == sorted(perm[:100].tolist())  # 103 // 20 * 20
    for r in range(world):
        loader = _loader(seed=7, epoch=1, rank=r, world=world, micro=micro)
        assert len(loader) == 5 * accumulate
        for i, (_, y) in enumerate(loader):
            k, a = divmod(i, accumulate)
            start = k * g_batch + r * (g_batch // world) + a * micro
            assert torch.equal(y, perm[start : start + micro])


def test_datamodule_reads_world_and_rank_from_the_trainer(c10: Path) -> None:
    shards = []
    for rank in range(2):
        dm = CIFAR10DataModule(c10, batch_size=100, micro_batch=25, val_size=100, verify=False)
        dm.trainer = _trainer(world=2, rank=rank, accumulate=2)
        dm.setup("fit")
        assert (dm.world_size, dm.rank, dm.accumulate_grad_batches) == (2, rank, 2)
        loader = dm.train_dataloader()
        assert len(loader) == (400 // 100) * 2
        shards.append(set(loader.sampler.micro_batches().flatten().tolist()))
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 200


def test_normalization_uses_the_training_statistics(c10: Path) -> None:
    raw, _ = _raw_train(c10)
    dm = CIFAR10DataModule(c10, batch_size=100, val_size=100, augment=False, verify=False, channels_last=True)
    dm.setup()
    train = raw[dm.train_indices.numpy()] / 255
    np.testing.assert_allclose(dm.mean, train.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(dm.std, train.std(axis=(0, 2, 3)), atol=1e-9)
    x, _ = _epoch(dm.train_dataloader())  # 400 images, 4 batches of 100: the whole split, un-augmented
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    xv, _ = _epoch(dm.val_dataloader())
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    expected = (torch.from_numpy(raw[dm.val_indices.numpy()]) / 255 - mean) / std
    torch.testing.assert_close(xv, expected.float(), atol=1e-5, rtol=0)


def test_reference_pipeline_matches_the_device_pipeline(c10: Path) -> None:
    args = dict(data_dir=c10, batch_size=100, val_size=100, verify=False)
    stats = []
    for pipeline in ("device", "reference"):
        dm = CIFAR10DataModule(**args, augment=False, pipeline=pipeline)
        dm.setup()
        loader = dm.train_dataloader()
        assert len(loader) == 4
        x, y = _epoch(loader)
        assert x.shape == (400, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        stats.append((x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)), torch.bincount(y)))
    for a, b in zip(*stats, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    dm = CIFAR10DataModule(**args, pipeline="reference")
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32
    # The same index is the same image, pixel for pixel, in both pipelines (ToTensor + Normalize vs on-device).
    reference = CIFAR10DataModule(**args, augment=False, pipeline="reference")
    reference.setup()
    device = CIFAR10DataModule(**args, augment=False)
    device.setup()
    dataset, loader = reference.train_dataloader().dataset, device.train_dataloader()
    for i in (0, 7, 399):
        image, label = dataset[i]
        torch.testing.assert_close(loader.normalize(loader.images[i : i + 1])[0], image, atol=1e-5, rtol=0)
        assert label == int(loader.labels[i])


# ---- Lightning ---------------------------------------------------------------------------------------


class _TinyNet(L.LightningModule):
    """Two convolutions; remembers each epoch's first micro-batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )
        self.first_batches: list[torch.Tensor] = []
        self.val_correct = self.val_seen = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if batch_idx == 0:
            self.first_batches.append(x.detach().clone())
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_correct += int((self.net(x).argmax(1) == y).sum())
        self.val_seen += len(y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def test_lightning_fit_sets_the_epoch_and_accumulates(c10: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = CIFAR10DataModule(c10, batch_size=50, micro_batch=25, val_size=100, verify=False)
    model = _TinyNet()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        accumulate_grad_batches=dm.accumulate_grad_batches,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 * (400 // 50)  # optimizer steps: 16 micro-batches per epoch, 2 per step
    assert trainer.train_dataloader.sampler.epoch == 1
    assert len(model.first_batches) == 2 and not torch.equal(*model.first_batches)
    assert model.val_seen == 2 * 100


def test_trainer_accumulation_must_match(c10: Path) -> None:
    dm = CIFAR10DataModule(c10, batch_size=100, micro_batch=25, val_size=100, verify=False)
    dm.trainer = _trainer(world=2, rank=0, accumulate=1)
    with pytest.raises(DataError, match="accumulate_grad_batches=2"):
        dm.setup("fit")


# ---- bad input ---------------------------------------------------------------------------------------


def test_missing_data_and_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(
        DataError, match=rf"CIFAR-100 not found in {re.escape(str(tmp_path / 'empty'))} .*download failed .*no network"
    ):
        CIFAR100DataModule(tmp_path / "empty").setup()
    with pytest.raises(DataError, match=r"not found .*download=False.*DREG_DATA_DIR"):
        CIFAR10DataModule(tmp_path / "empty", download=False).prepare_data()


def test_data_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREG_DATA_DIR", str(tmp_path))
    assert CIFAR10DataModule().data_dir == tmp_path
    monkeypatch.delenv("DREG_DATA_DIR")
    assert CIFAR10DataModule().data_dir == Path.home() / ".cache" / "dreg" / "data"


@pytest.mark.parametrize(("victim", "content"), [("data_batch_3", None), ("batches.meta", b"not a pickle")])
def test_unreadable_files_are_named(tmp_path: Path, victim: str, content: bytes | None) -> None:
    path = write_fake_cifar(tmp_path, n_train=100, n_test=0) / "cifar-10-batches-py" / victim
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(DataError, match=rf"{victim} is truncated or unreadable"):
        CIFAR10DataModule(tmp_path, batch_size=10, val_size=10, verify=False).setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_size": 501}, "val_size=501 is outside 0..500"),
        ({"val_size": 5}, "val_size=5 leaves some of the 10 classes without validation images"),
        ({"val_size": 100, "train_subset": 401}, "train_subset=401 is larger than the 400 training images left"),
        ({"train_subset": 9}, "train_subset=9 leaves some of the 10 classes without training images"),
        ({"val_size": 100, "batch_size": 401}, r"batch_size=401 is larger than the training split \(400 images\)"),
        (
            {"batch_size": 100, "micro_batch": 30},
            r"batch_size=100 does not split as 1 device\(s\) x micro_batch=30 .*dividing 100",
        ),
        ({"pipeline": "pil"}, "pipeline='pil' is not one of"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
    ],
)
def test_bad_settings_are_refused(c10: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        CIFAR10DataModule(c10, verify=False, **{"val_size": 100, **kwargs}).setup()


def test_uneven_split_over_devices_is_refused(c10: Path) -> None:
    dm = CIFAR10DataModule(c10, batch_size=100, val_size=100, verify=False)
    dm.trainer = _trainer(world=3, rank=0)
    with pytest.raises(DataError, match="batch_size=100 does not split over 3 devices: use a multiple of 3"):
        dm.setup("fit")


def test_val_from_test_needs_a_test_file(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, n_train=100, n_test=0)
    with pytest.raises(DataError, match=r"val_from_test=True but .*test_batch does not exist"):
        CIFAR10DataModule(tmp_path, batch_size=10, val_from_test=True, verify=False).setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_size": 80}, r"val_size=80 needs 8 images of class 9, which has \d"),
        ({"val_size": 0, "train_subset": 80}, r"train_subset=80 needs 8 images of class 9, but only \d are left"),
    ],
)
def test_per_class_shortage_is_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    write_fake_cifar(tmp_path, n_train=100, n_test=0)
    for b in (1, 2, 3):  # relabel class 9 to 0 in 60 of the 100 images: class 9 keeps fewer than 8
        path = tmp_path / "cifar-10-batches-py" / f"data_batch_{b}"
        with open(path, "rb") as f:
            entry = pickle.load(f)
        entry["labels"] = [0 if y == 9 else y for y in entry["labels"]]
        with open(path, "wb") as f:
            pickle.dump(entry, f)
    with pytest.raises(DataError, match=message):
        CIFAR10DataModule(tmp_path, batch_size=1, verify=False, **kwargs).setup()


# ---- the real CIFAR-10 copy --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED_BUILD.is_file():
        pytest.skip("../shared/data/cifar10 is not here (a fresh clone)")
    out = tmp_path_factory.mktemp("real")
    subprocess.run([sys.executable, str(SHARED_BUILD), str(out)], check=True, capture_output=True)
    return out


def test_real_cifar10_copy(real_cifar10: Path) -> None:
    with pytest.raises(DataError, match="data_batch_1 does not match the official md5"):
        CIFAR10DataModule(real_cifar10, batch_size=512, val_size=0).setup()
    dm = CIFAR10DataModule(real_cifar10, batch_size=1000, val_size=0, augment=False, verify=False)
    dm.setup()
    _, y = _epoch(dm.train_dataloader())  # 50 batches of 1000: every image once
    assert len(y) == 50_000 and torch.bincount(y).tolist() == [5000] * 10
    assert dm.val_dataloader() == [] and len(_epoch(dm.test_dataloader())[1]) == 1000
    np.testing.assert_allclose(dm.mean, (0.4914, 0.4822, 0.4465), atol=1e-4)
    np.testing.assert_allclose(dm.std, (0.2470, 0.2435, 0.2616), atol=1e-4)


def test_a_packed_copy_gives_a_run_the_same_images(c10: Path, tmp_path: Path) -> None:
    """What a lent GPU machine gets (experiments/carry.py): the same subset and hold-out, pixel for pixel."""
    from experiments.carry import pack, unpack

    packed = pack(c10, tmp_path / "mini.npz", [0], preset="smoke")
    unpack(packed, tmp_path / "copy")
    args = dict(batch_size=16, val_size=100, train_subset=400, verify=False, augment=False)
    full, copy = (CIFAR10DataModule(data_dir=d, **args) for d in (c10, tmp_path / "copy"))
    for dm in (full, copy):
        dm.setup()
    for a, b in zip((full._train, full._val, full._test), (copy._train, copy._val, copy._test), strict=True):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    assert full.mean == copy.mean and full.std == copy.std


# ---- CIFAR-100: an image is (class, position within the class) -------------------------------------


def _interleaved_otherwise(src: Path, dst: Path, seed: int) -> Path:
    """The same CIFAR-100 with the classes interleaved in another order, each class's images in theirs (what the
    local copy of ../shared/data/cifar100 is to the official files)."""
    from datamodules.fake_cifar import write_cifar100

    splits = []
    for name in ("train", "test"):
        with open(src / "cifar-100-python" / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        labels = np.array(entry["fine_labels"])
        slots = np.random.default_rng(seed).permutation(labels)  # which class each position now holds
        order = np.empty(len(labels), dtype=np.int64)
        for c in np.unique(labels):
            order[slots == c] = np.flatnonzero(labels == c)  # the class's images, in their order
        assert not np.array_equal(order, np.arange(len(labels)))
        splits += [entry["data"][order], labels[order]]
    return write_cifar100(dst, *splits)


def test_cifar100_runs_do_not_depend_on_how_the_files_interleave_the_classes(c100: Path, tmp_path: Path) -> None:
    other = _interleaved_otherwise(c100, tmp_path, seed=5)
    args = dict(batch_size=50, val_size=100, train_subset=200, seed=3, verify=False)
    batches = []
    for root in (c100, other):
        dm = CIFAR100DataModule(root, **args)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        batches.append([*loader, *dm.val_dataloader(), *dm.test_dataloader()])
    assert len(batches[0]) == 4 + 2 + 2
    for (xa, ya), (xb, yb) in zip(*batches, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_cifar10_keeps_the_order_of_its_files(c10: Path) -> None:
    """CIFAR-10's committed runs were drawn from the files' order: it is not reordered."""
    dm = CIFAR10DataModule(c10, batch_size=50, val_size=0, verify=False)
    (_, labels), _ = dm.read_splits()
    assert labels.tolist() == _raw_train(c10)[1].tolist() and labels.tolist() != sorted(labels.tolist())


def _fake_local_copies(tmp_path: Path, fails: bool = False) -> Path:
    """A folder of local copies holding a cifar100/build.py that writes a small fake CIFAR-100 (or fails)."""
    build = tmp_path / "copies" / "cifar100" / "build.py"
    build.parent.mkdir(parents=True)
    body = (
        "raise SystemExit('no WebP support')"
        if fails
        else (
            "from datamodules import write_fake_cifar\nwrite_fake_cifar(sys.argv[1], 'cifar100', n_train=300, n_test=0)"
        )
    )
    build.write_text(f"import sys\n{body}\n")
    return build.parents[1]


def test_a_missing_data_set_is_built_from_a_local_copy_and_not_md5_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DREG_LOCAL_COPIES", str(_fake_local_copies(tmp_path)))
    dm = CIFAR100DataModule(tmp_path / "data", batch_size=100, val_size=100)  # verify=True
    dm.setup()
    assert dm.is_local_copy and len(dm._train[1]) == 200
    err = capsys.readouterr().err
    assert "building CIFAR-100 from the local copy" in err and "md5 check skipped" in err
    with pytest.raises(DataError, match=r"CIFAR-10 not found .*download=False"):  # no cifar10/ among the copies
        CIFAR10DataModule(tmp_path / "data", download=False).prepare_data()


def test_a_local_copy_that_fails_to_build_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREG_LOCAL_COPIES", str(_fake_local_copies(tmp_path, fails=True)))
    with pytest.raises(DataError, match=r"building CIFAR-100 from .*build.py .* failed \(no WebP support\)"):
        CIFAR100DataModule(tmp_path / "data").prepare_data()


def test_a_packed_cifar100_gives_a_run_the_same_images(data: Path, tmp_path: Path) -> None:
    from experiments.carry import main as carry

    carry(["pack", str(data), str(tmp_path / "mini.npz"), "--dataset", "cifar100", "--seeds", "0", "1",
           "--preset", "smoke"])  # fmt: skip
    carry(["unpack", str(tmp_path / "mini.npz"), str(tmp_path / "copy")])
    for seed in (0, 1):
        args = dict(batch_size=16, val_size=100, train_subset=400, seed=seed, verify=False, augment=False)
        full, copy = (CIFAR100DataModule(data_dir=d, **args) for d in (data, tmp_path / "copy"))
        for dm in (full, copy):
            dm.setup()
        for a, b in zip((full._train, full._val, full._test), (copy._train, copy._val, copy._test), strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
