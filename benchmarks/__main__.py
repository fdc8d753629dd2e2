"""``python -m benchmarks NAME [--quick] [--out DIR] [--device cpu|cuda] [--data-dir DIR]``.

Each benchmark prints a table and writes ``OUT/NAME.json``; ``all`` runs the CPU ones (and ``gpu`` on
``--device cuda``). ``--quick`` is a run of under a minute that checks the benchmark works, not its numbers.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from experiments.train import reuse_freed_memory
from lightning_modules.nets import NETS

CPU_BENCHMARKS = ("step", "dreg_overhead", "framework", "data", "memory")
BENCHMARKS = (*CPU_BENCHMARKS, "profile", "epoch", "gpu")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    p.add_argument("name", choices=[*BENCHMARKS, "all"])
    p.add_argument("--quick", action="store_true", help="a small run (< 1 min) that checks the script works")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks"), help="folder for NAME.json")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 (official layout); else fake data")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the training steps")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and input")
    p.add_argument("--model", choices=list(NETS), default="mobilenetv2", help="the network `profile` and `epoch` time")
    p.add_argument("--batch", type=int, default=256, help="`profile`: the batch (3840: the `mini` 30k step)")
    p.add_argument("--against", metavar="REF", help="`epoch`: also time this git commit of the suite, alternated")
    p.add_argument("--variant", nargs="+", metavar="KEY=VALUE", help="`epoch`: also time these run settings")
    return p


def main(argv: list[str] | None = None) -> None:
    opts = parser().parse_args(argv)
    names = [opts.name] if opts.name != "all" else [*CPU_BENCHMARKS, *(["gpu"] if opts.device == "cuda" else [])]
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA device; none is visible here")
    reuse_freed_memory()  # as the suite's runs do (experiments/train.py)
    for name in names:
        if len(names) > 1:
            print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").run(opts)


if __name__ == "__main__":
    main()
