"""CIFAR for a `mini` run on a machine that cannot hold or fetch the whole set (a lent GPU machine).

A `mini` run reads only its stratified subset and hold-out, but which images those are depends on every
label. ``pack`` keeps all 50,000 labels, the images the given seeds use and the test split (~30 MB for one
seed, compressed); ``unpack`` writes the official layout back, the unused training images black. A mini
run on the unpacked copy sees exactly the images it sees on the full set (the normalization statistics come
from the images used). CIFAR-100 is packed in the order the DataModule reads it (by class), which is a
valid interleaving of its classes, so the unpacked copy reads back the same.

    python -m experiments.carry pack ~/.cache/dreg/data .carry/mini-cifar100.npz --dataset cifar100 --seeds 0
    python -m experiments.carry unpack .carry/mini-cifar100.npz /tmp/data   # then --data-dir /tmp/data --no-verify
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datamodules import DATAMODULES
from datamodules.cifar import stratified_split
from datamodules.fake_cifar import WRITERS
from experiments.config import preset_settings


def pack(data_dir: Path, out: Path, seeds: list[int], preset: str = "mini", dataset: str = "cifar10") -> Path:
    """Write ``out`` (.npz): every label, the images the preset's split uses for ``seeds``, and the test split."""
    settings = preset_settings(preset)
    dm = DATAMODULES[dataset](data_dir=data_dir, verify=False, batch_size=1)
    (images, labels), test = dm.read_splits()
    used = set()
    for seed in seeds:
        train_idx, val_idx = stratified_split(
            labels, dm.num_classes, settings["val_size"], settings["train_subset"], seed
        )
        used.update(train_idx.tolist() + val_idx.tolist())
    keep = np.array(sorted(used))
    arrays = {"dataset": np.array(dataset), "labels": labels.numpy(), "keep": keep, "images": images[keep].numpy()}
    if test is not None:
        arrays |= {"test_images": test[0].numpy(), "test_labels": test[1].numpy()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def unpack(packed: Path, root: Path) -> Path:
    """The official layout of the packed data set under ``root`` from a ``pack`` file."""
    z = np.load(packed)
    train = np.zeros((len(z["labels"]), 3072), np.uint8)
    train[z["keep"]] = z["images"].reshape(len(z["keep"]), 3072)
    has_test = "test_images" in z
    test_x = z["test_images"].reshape(-1, 3072) if has_test else None
    dataset = str(z["dataset"]) if "dataset" in z else "cifar10"  # packs written before CIFAR-100 had no key
    return WRITERS[dataset](root, train, z["labels"], test_x, z["test_labels"] if has_test else None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.carry", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="labels + the images the mini split uses")
    p.add_argument("data_dir", type=Path, help="folder holding cifar-10-batches-py / cifar-100-python")
    p.add_argument("out", type=Path)
    p.add_argument("--dataset", choices=sorted(DATAMODULES), default="cifar10")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--preset", default="mini", help="whose subset and hold-out (experiments/presets.yaml)")
    u = sub.add_parser("unpack", help="the official layout back, unused images black")
    u.add_argument("packed", type=Path)
    u.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        written = pack(args.data_dir, args.out, args.seeds, args.preset, args.dataset)
    else:
        written = unpack(args.packed, args.root)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
