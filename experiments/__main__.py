"""``python -m experiments``: list the figures, run a figure's sweep, show its status, train one run."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from experiments.config import PRECISIONS, ExperimentError, RunConfig, preset_settings
from experiments.records import BUSY, RunBusy
from experiments.run_files import read_status
from experiments.specs import FIGURE_NAMES, load_figure, select
from experiments.train import Execution, check_precision, prepare, run_dir


def at_least_one(text: str) -> int:
    """An option that counts something (seeds, devices, nodes, a micro-batch): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _execution_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results"), help="records go to RESULTS/<preset>/<run>")
    parser.add_argument("--data-dir", type=Path, help="folder holding cifar-10-batches-py (default $DREG_DATA_DIR)")
    parser.add_argument("--no-verify", action="store_true", help="skip the md5 check (local copies of CIFAR)")
    from lightning.pytorch.strategies import StrategyRegistry

    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu"))
    parser.add_argument("--devices", type=at_least_one, default=1, help="devices per node (DDP when > 1)")
    parser.add_argument("--num-nodes", type=at_least_one, default=1)
    parser.add_argument("--strategy", default="auto", choices=("auto", *StrategyRegistry.available_strategies()),
                        metavar="STRATEGY", help="Lightning strategy, e.g. ddp")  # fmt: skip
    parser.add_argument("--wandb", action="store_true", help="also log to W&B (offline unless logged in)")
    parser.add_argument("--wandb-project", default="dreg")
    parser.add_argument("--group", help="W&B group (a sweep uses the figure's name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--eval-batch", type=at_least_one, help="images per evaluation batch (default: 256 on a "
                        "CPU, the micro-batch on a GPU); changes no number")  # fmt: skip


def _run_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="mini", help="paper, mini, quick, full or smoke (experiments/presets.yaml)")
    parser.add_argument("--seeds", type=at_least_one, default=1, help="seeds 0..N-1 of every run")
    parser.add_argument("--dataset", help="run the figure on another dataset (e.g. cifar10 without CIFAR-100)")
    parser.add_argument("--micro-batch", type=at_least_one, help="per-device micro-batch (BatchNorm sees it)")
    parser.add_argument("--sync-batchnorm", action="store_true", help="BatchNorm over the global batch")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: the preset's (bf16-mixed at mini and quick)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {"dataset": args.dataset, "micro_batch": args.micro_batch, "precision": args.precision}
    values = {k: v for k, v in pairs.items() if v is not None}
    return {**values, **({"sync_batchnorm": True} if args.sync_batchnorm else {})}


def _execution(args: argparse.Namespace, group: str | None = None) -> Execution:
    return Execution(
        results=args.results, data_dir=args.data_dir, verify=not args.no_verify, accelerator=args.accelerator,
        devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy, wandb=args.wandb,
        wandb_project=args.wandb_project, group=args.group or group, progress=not args.no_progress,
        eval_batch=args.eval_batch,
    )  # fmt: skip


def _parse_value(text: str) -> Any:
    """A KEY=VALUE value as YAML, plus what a W&B agent writes with Python's ``str``: ``None``, and floats
    such as ``1e-05`` that YAML 1.1 reads as text. ``none`` stays text: it is a value of lr_scaling."""
    if text == "None":
        return None
    return float(text) if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", text) else yaml.safe_load(text)


def _key_values(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE run settings (``dreg_lambda=0.01``; ``--lr=0.1`` and ``warmup-fraction=0.05`` too)."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ExperimentError(f"expected KEY=VALUE, got {item!r} (e.g. dreg_lambda=0.01)")
        key = key.lstrip("-").replace("-", "_")
        if key in values:
            raise ExperimentError(f"{key} is given twice ({values[key]!r} and {text!r}): give each setting once")
        values[key] = _parse_value(text)
    return values


def cmd_list(args: argparse.Namespace) -> None:
    names = [args.figure] if args.figure else FIGURE_NAMES
    paper_runs: list[str] = []
    all_runs: list[str] = []
    for name in names:
        figure = load_figure(name, args.preset)
        all_runs += [r.name for r in figure.runs]
        paper_runs += [r.name for r in figure.runs] if name.startswith("fig") else []
        print(f"{name}: {figure.title} ({figure.paper}), {len(figure.runs)} runs")
        for panel, panel_runs in figure.panels.items():
            print(f"  panel {panel}:")
            for cfg in panel_runs:
                print(f"    {cfg.name}")
    if len(names) > 1:
        print(
            f"Figures 2-8: {len(paper_runs)} runs, {len(set(paper_runs))} distinct (a shared run is trained once); "
            f"with the controls: {len(set(all_runs))} distinct"
        )


def _data_preflight(runs: list[RunConfig], ex: Execution) -> None:
    """Missing, corrupt or md5-mismatched data fails once, up front, with the fix (e.g. CIFAR-100 not available:
    --dataset cifar10), instead of once in each run's process."""
    from datamodules import DATAMODULES, DataError

    for dataset in sorted({cfg.dataset for cfg in runs}):
        cfg = next(cfg for cfg in runs if cfg.dataset == dataset)
        try:
            datamodule = DATAMODULES[dataset](
                data_dir=ex.data_dir, verify=ex.verify, batch_size=cfg.global_batch, val_size=cfg.val_size,
                val_from_test=cfg.val_from_test, train_subset=cfg.train_subset, seed=cfg.seed,
            )  # fmt: skip
            datamodule.prepare_data()
            datamodule.setup("fit")  # reads every file (and checks the md5 sums)
        except DataError as err:
            hint = "; or pass --dataset cifar10 to run this figure on CIFAR-10" if dataset == "cifar100" else ""
            raise DataError(f"{err}{hint}") from err


def cmd_run(args: argparse.Namespace) -> int:
    from experiments.sweep import refuse_too_long, run_sweep

    overrides = {**_key_values(args.settings), **_overrides(args)}
    figure = load_figure(args.figure, args.preset, args.seeds, overrides)
    ex = _execution(args, group=args.figure)
    runs = [prepare(cfg, ex) for cfg in select(figure.runs, args.only)]  # every bad setting, before the data is read
    if not args.dry_run:
        if args.launcher != "slurm":  # what each run's process would refuse, once (a SLURM job checks its node)
            for first in {cfg.precision: cfg for cfg in runs}.values():
                check_precision(first, ex)
        if args.launcher == "local" and not args.insist:
            refuse_too_long(runs, ex, args.retry_failed)
        _data_preflight(runs, ex)
    slurm = {k: v for k, v in {"slurm_partition": args.partition, "timeout_min": args.timeout_min}.items() if v}
    shared = _shared_runs(args.figure, args.preset, args.seeds, overrides) if args.dry_run else None
    outcomes = run_sweep(
        runs, ex, retry_failed=args.retry_failed, parallel=args.parallel, launcher=args.launcher, slurm=slurm,
        dry_run=args.dry_run, shared=shared,
    )  # fmt: skip
    states = [read_status(run_dir(cfg, ex.results))["state"] for cfg, _ in outcomes]
    if states:
        print("[sweep] finished: " + ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))))
    crashed = any(outcome.startswith("exit") for _, outcome in outcomes)  # a run's process died or refused to run
    return 1 if "failed" in states or crashed else 0


def _shared_runs(figure: str, preset: str, seeds: int, overrides: dict[str, Any]) -> dict[str, list[str]]:
    """Per run of ``figure``, the other figures that have the same run (trained once, used by all)."""
    shared: dict[str, list[str]] = {}
    for other in FIGURE_NAMES:
        if other != figure:
            for cfg in load_figure(other, preset, seeds, overrides).runs:
                shared.setdefault(cfg.name, []).append(other)
    return shared


def cmd_status(args: argparse.Namespace) -> None:
    from experiments.train import resolve

    figure = load_figure(args.figure, args.preset, args.seeds, _overrides(args))
    placement = Execution(devices=args.devices, num_nodes=args.num_nodes)
    runs = [(cfg, read_status(run_dir(cfg, args.results))) for cfg in (resolve(c, placement) for c in figure.runs)]
    print(f"{args.figure} at preset {args.preset}: {figure.title}")  # after every status is read: all or nothing
    print(f"{'run':58s} {'state':9s} {'epoch':>9s} {'best val/acc':>13s}")
    counts: dict[str, int] = {}
    for cfg, status in runs:
        state = status["state"]
        if state == "running" and not _alive(status.get("pid")):
            state = "stopped"  # interrupted; the next `run` resumes it
        counts[state] = counts.get(state, 0) + 1
        best = f"{status['best_val_acc']:.4f} @{status['best_epoch']}" if "best_val_acc" in status else "-"
        epoch = f"{status.get('epoch', 0)}/{cfg.epochs}"
        print(f"{cfg.name:58s} {state:9s} {epoch:>9s} {best:>13s}")
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def cmd_train(args: argparse.Namespace) -> int:
    from experiments.train import train

    if args.prepared:  # a sweep's run, handed over as it was prepared: trained as it is
        if args.config or args.settings:
            raise ExperimentError("--prepared is a sweep's own run: give it no --config and no KEY=VALUE settings")
        cfg, ex = pickle.loads(args.prepared.read_bytes())
    else:
        cfg, ex = _single_run(args)
    status = train(cfg, ex)
    if status:
        print(f"{status['state']}: best val/acc {status.get('best_val_acc', float('nan')):.4f}")
    return 0 if status.get("state", "done") in ("done", "diverged") else 1


def _single_run(args: argparse.Namespace) -> tuple[RunConfig, Execution]:
    """The run that ``train``'s settings describe, prepared."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ExperimentError(f"cannot read the config {args.config}: {str(err).splitlines()[0]}") from err
        if not isinstance(loaded, dict):
            raise ExperimentError(
                f"the config {args.config} holds a {type(loaded).__name__}, not KEY: VALUE run settings "
                "(e.g. `dreg_lambda: 0.01`)"
            )
        values.update(loaded)
    values.update(_key_values(args.settings))
    values.update(_overrides(args))
    if args.preset:  # under the run's own settings: the preset's for the run's network
        values = {**preset_settings(args.preset, values.get("model", RunConfig.model)), **values}
    ex = _execution(args)
    return prepare(RunConfig.from_dict(values), ex), ex


def cmd_wandb_sweep(args: argparse.Namespace) -> None:
    """W&B sweep YAMLs (one per panel) whose agents call the single-run command."""
    figure = load_figure(args.figure, args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    for panel, runs in figure.panels.items():
        runs = [r for r in runs if r.dreg_site is not None]  # baselines are shared runs: use `run`
        table = [r.to_dict() for r in runs]
        parameters = {}
        for key in table[0]:
            values = list(dict.fromkeys(row[key] for row in table))
            parameters[key] = {"values": values} if len(values) > 1 else {"value": values[0]}
        sweep = {
            "name": f"{args.figure}{panel}-{args.preset}",
            "method": "grid",
            "parameters": parameters,
            "command": ["${env}", "${interpreter}", "-m", "experiments", "train", "--wandb", "--group",
                        args.figure, "${args_no_hyphens}"],
        }  # fmt: skip
        path = args.out / f"{args.figure}{panel}-{args.preset}.yaml"
        path.write_text(yaml.safe_dump(sweep, sort_keys=False))
        print(f"wrote {path}: `wandb sweep {path}`, then `wandb agent <sweep id>`")


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line (what is wrong, and where the help is) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m experiments", description=__doc__)
    top.add_argument("--debug", action="store_true", help="show an error's full traceback, not its one line")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="the figures, their panels and runs")
    p.add_argument("figure", nargs="?", choices=FIGURE_NAMES)
    p.add_argument("--preset", default="mini")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run (or resume) the sweep of a figure; KEY=VALUE settings apply to every run")
    p.add_argument("figure", choices=FIGURE_NAMES)
    p.add_argument("settings", nargs="*", help="KEY=VALUE run settings for every run, e.g. lr=0.05 epochs=5")
    _run_settings(p)
    p.add_argument("--only", help="only runs whose name matches this pattern, e.g. 'bs2048*'")
    p.add_argument("--dry-run", action="store_true", help="show what would run and its projected time, run nothing")
    p.add_argument("--insist", action="store_true", help="run on a CPU even when projected to take over a day")
    p.add_argument("--retry-failed", action="store_true", help="run `failed` runs again")
    p.add_argument("--parallel", type=at_least_one, default=1, help="runs at once on this machine (one per GPU)")
    p.add_argument("--launcher", choices=("local", "submitit-local", "slurm"), default="local")
    p.add_argument("--partition", help="SLURM partition (--launcher slurm)")
    p.add_argument("--timeout-min", type=at_least_one, help="SLURM time limit per run, minutes")
    _execution_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="a table of a figure's runs and their states")
    p.add_argument("figure", choices=FIGURE_NAMES)
    _run_settings(p)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--devices", type=at_least_one, default=1, help="as the runs were started with (sets micro-batch)")
    p.add_argument("--num-nodes", type=at_least_one, default=1)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("train", help="train (or resume) one run: --config FILE and/or KEY=VALUE settings")
    p.add_argument("--config", type=Path, help="YAML of run settings (see experiments/config.py RunConfig)")
    p.add_argument("settings", nargs="*", help="KEY=VALUE run settings, e.g. model=vgg16 dreg_site=R1")
    p.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)  # a sweep's run and execution, pickled
    _run_settings(p)
    p.set_defaults(preset=None)
    _execution_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("wandb-sweep", help="write W&B sweep YAMLs for a figure's DReg runs (e.g. fig6, fig7)")
    p.add_argument("figure", choices=FIGURE_NAMES)
    p.add_argument("--preset", default="mini")
    p.add_argument("--out", type=Path, default=Path("sweeps"))
    p.set_defaults(func=cmd_wandb_sweep)
    return top


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with KEY=VALUE settings wherever they stand.

    argparse fills a positional list once, so settings given after options (`run fig2 --preset mini lr=0.05`)
    come back unparsed; they join the command's settings here.
    """
    top = parser()
    args, extra = top.parse_known_args(argv)
    settings = [item for item in extra if "=" in item and not item.startswith("-")]
    if len(settings) < len(extra) or (settings and not hasattr(args, "settings")):
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    if settings:
        args.settings = [*args.settings, *settings]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from datamodules import DataError

    try:
        return args.func(args) or 0
    except RunBusy as err:
        print(f"skipped: {err}", file=sys.stderr)
        return BUSY
    except (ExperimentError, DataError, ValueError) as err:
        if args.debug or os.environ.get("DREG_DEBUG"):
            raise
        print(f"error: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
