"""The notebooks run headless against records of a real smoke sweep (Fig. 2, batch 2k) and made-up ones."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from paths import ROOT

from analysis.fake_records import write_fake_records
from analysis.notebooks import build

NOTEBOOKS = build.NOTEBOOKS


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Fig. 2's 2k pair trained for real at the smoke preset on fake CIFAR-10; the other figures made up."""
    root = tmp_path_factory.mktemp("records")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    run = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 600}
    data = subprocess.run([sys.executable, "-m", "datamodules.fake_cifar", str(root / "data"), "--dataset", "cifar10",
                           "--n-train", "600"], **run)  # fmt: skip
    assert data.returncode == 0, data.stderr[-2000:]
    sweep = subprocess.run([
        sys.executable, "-m", "experiments", "run", "fig2", "--preset", "smoke", "--only", "bs2048-", "--data-dir",
        str(root / "data"), "--no-verify", "--results", str(root / "results"), "--accelerator", "cpu", "--no-progress",
    ], **run)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    write_fake_records(root / "results", "fig3")
    for name in ("fig4", "fig5", "fig6", "fig7", "fig8", "controls"):
        write_fake_records(root / "results", name, dataset="cifar10")
    write_fake_records(root / "results", "mechanism", skip=("bs2048-base-m0.9-s0", "bs2048-dreg0.1-R1-m0.9-s0"))
    return root / "results"


def test_notebooks_are_built_and_saved_without_outputs(tmp_path):
    for name, (title, text, figures) in NOTEBOOKS.items():
        saved = nbformat.read(ROOT / "analysis" / "notebooks" / f"{name}.ipynb", as_version=4)
        assert saved == build.notebook(name, title, text, figures), f"{name}: run analysis/notebooks/build.py"
        assert all(not cell.get("outputs") for cell in saved.cells)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_and_writes_its_figures(results, tmp_path, monkeypatch, name):
    from nbclient import NotebookClient

    monkeypatch.setenv("DREG_RESULTS", str(results))
    monkeypatch.setenv("DREG_PRESET", "smoke")
    monkeypatch.setenv("DREG_OUT", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(ROOT / "analysis" / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    for figure in NOTEBOOKS[name][2]:
        assert (tmp_path / f"{figure}.png").stat().st_size > 1000
        assert (tmp_path / f"{figure}.pdf").stat().st_size > 1000
    shown = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "display_data"]
    assert sum("image/png" in o["data"] for o in shown) == len(NOTEBOOKS[name][2])
    if name == "convergence":  # the real records: Fig. 2's 2k pair is drawn and compared
        assert any("BS 2k (run: 16)" in o["data"].get("text/markdown", "") for o in shown)
