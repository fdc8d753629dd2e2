"""The README is the user's manual: its example runs and its commands exist as written."""

import re
import shlex
from pathlib import Path

import pytest

from experiments.__main__ import parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_dreg_example_runs():
    (example,) = re.findall(r"## DReg on your own network.*?```python\n(.*?)```", README, re.S)
    namespace: dict = {}
    exec(compile(example, "README example", "exec"), namespace)
    assert type(namespace["plain"]).__name__ == "ResNet"
    assert namespace["dreg"].net.layer4[1].conv2.weight.grad is not None


@pytest.mark.parametrize(
    "line", [m.strip() for m in re.findall(r"^python -m experiments (.*?)(?:\s+#.*)?$", README, re.M)]
)
def test_each_experiments_command_in_the_readme_parses(line):
    args = parser().parse_args(shlex.split(line.replace("~", "/tmp")))
    assert callable(args.func)
