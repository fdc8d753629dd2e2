"""The README and the manual (docs/manual.md): the example runs and every command exists as written."""

import re
import shlex
from pathlib import Path

import pytest

from experiments.__main__ import parse

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MANUAL = README + (ROOT / "docs" / "manual.md").read_text()  # the README's commands and the manual's


def test_the_dreg_example_runs():
    (example,) = re.findall(r"## DReg on your own network.*?```python\n(.*?)```", README, re.S)
    namespace: dict = {}
    exec(compile(example, "README example", "exec"), namespace)
    assert type(namespace["plain"]).__name__ == "ResNet"
    assert namespace["dreg"].net.layer4[1].conv2.weight.grad is not None


@pytest.mark.parametrize(
    "line", [m.strip() for m in re.findall(r"^python -m experiments (.*?)(?:\s+#.*)?$", MANUAL, re.M)]
)
def test_each_experiments_command_in_the_readme_parses(line):
    args = parse(shlex.split(line.replace("~", "/tmp")))
    assert callable(args.func)


COMMANDS = [
    f"{tool} {line}".strip()
    for tool, line in re.findall(r"^python -m (experiments|analysis) (.*?)(?:\s+#.*)?$", MANUAL, re.M)
]


SCALES = ("mini", "quick", "full")  # the presets a test runs at the smoke scale instead


def _test_sized(line: str, tmp: Path, data: Path) -> list[str] | None:
    """The README's command in a form that runs here in seconds, or None where it cannot (a file of yours)."""
    argv = shlex.split(line)
    tool, command = argv[0], argv[1]
    if "--config" in argv:
        return None
    if tool == "analysis":
        return [*[a if a not in SCALES else "smoke" for a in argv[1:]], "--results", str(tmp)]
    if command == "run":  # the plan, not the training: --dry-run reads no data and writes nothing
        return [*argv[1:], *([] if "--dry-run" in argv else ["--dry-run"]), "--results", str(tmp / "dry")]
    if command == "train":  # trained for real, at the smoke scale
        argv = [a if a not in SCALES else "smoke" for a in argv]
        return [*argv[1:], "--data-dir", str(data), "--no-verify", "--accelerator", "cpu", "--no-progress",
                "--results", str(tmp / "train")]  # fmt: skip
    if command == "wandb-sweep":
        return [*argv[1:], "--out", str(tmp / "sweeps")]
    return argv[1:]


@pytest.fixture(scope="module")
def readme_world(tmp_path_factory) -> tuple[Path, Path]:
    from analysis.fake_records import write_fake_records
    from datamodules import write_fake_cifar

    tmp = tmp_path_factory.mktemp("readme")
    for figure in ("fig2", "mechanism"):
        write_fake_records(tmp, figure, "smoke")
    write_fake_records(tmp, "fig2", "quick")  # the summary reads the scales that test the paper
    return tmp, write_fake_cifar(tmp / "data", "cifar10", n_train=600, n_test=100)


@pytest.mark.parametrize("line", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_each_command_of_the_readme_runs_in_a_test_sized_form(line, readme_world, capsys):
    from analysis.__main__ import main as analysis_main
    from experiments.__main__ import main as experiments_main

    tmp, data = readme_world
    argv = _test_sized(line, tmp, data)
    if argv is None:
        pytest.skip("needs a file of the user's")
    main = analysis_main if line.startswith("analysis") else experiments_main
    assert main(argv) == 0, capsys.readouterr().err
