"""Writes the notebooks of this folder, without outputs: `python analysis/notebooks/build.py`.

The notebooks only call the `analysis` package; edit them here so that they stay thin and in step.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SETUP = """from analysis.notebook import settings, show

results, preset, out = settings()
print(f"records: {results / preset}; figures go to {out}")"""
ENV = (
    "Records are read from `$DREG_RESULTS/$DREG_PRESET` (default: the repository's `results/`, preset `mini`); "
    "figures (PNG and PDF) go to `$DREG_OUT` (default `<results>/<preset>/analysis`). "
    "The same figures and the full report come from `python -m analysis figure all` and `python -m analysis report`."
)
NOTEBOOKS = {
    "convergence": (
        "Convergence: Figs. 2-5",
        "Validation accuracy per epoch with and without DReg (λ=0.1 at R1, momentum 0.9) at batch sizes 2k-30k, "
        "and the paper's claims: DReg reaches the baseline's best accuracy 2-3x sooner, more so at larger batch.",
        ["fig2", "fig3", "fig4", "fig5"],
    ),
    "topology": (
        "Topology: Fig. 6",
        "DReg at sites R1 (nearest the output) to R7 (MobileNetV2) or R4 (ResNet18), batch 30k, against the "
        "baseline; the paper: closer to the output works better.",
        ["fig6"],
    ),
    "lambda": (
        "Lambda: Fig. 7",
        "The DReg weight λ in {0.001, 0.01, 0.1, 1, 0} at R1, batch 30k; the paper: every λ beats the baseline, "
        "small λ slightly better.",
        ["fig7"],
    ),
    "momentum": (
        "Momentum: Fig. 8",
        "Plain SGD and momentum 0.5 / 0.9 with and without DReg (λ=0.01), batch 30k; the paper: DReg helps at "
        "every momentum, more with larger momentum.",
        ["fig8"],
    ),
    "controls": (
        "Controls (beyond the paper)",
        "Does a speed-up survive `path_loss: mean` (no doubled gradient in the shared prefix) and the bounded "
        "cosine form, and does the penalty add anything to the second path (λ=0)?",
        ["controls"],
    ),
    "mechanism": (
        "Mechanism study (beyond the paper)",
        "VGG16 on CIFAR-10 at 30k and 2k: the doubled-gradient baseline, a learning-rate grid, scaling rules with "
        "warm-up, `path_loss: mean`, λ=0 and three readings of Eq. 3; the questions M1-M8, decided per seed "
        "(docs/method.md §7). The stability of the DReg distance (M7) is `python -m analysis stability`.",
        ["mechanism"],
    ),
}


def notebook(key: str, title: str, text: str, figures: list[str]) -> nbformat.NotebookNode:
    cells = [new_markdown_cell(f"# {title}\n\n{text}\n\n{ENV}"), new_code_cell(SETUP)]
    cells += [new_code_cell(f'{name} = show("{name}", results, preset, out)') for name in figures]
    for i, cell in enumerate(cells):
        cell.id = f"{key}-{i}"  # stable ids: rebuilding changes nothing that was not edited
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main() -> None:
    for name, (title, text, figures) in NOTEBOOKS.items():
        nbformat.write(notebook(name, title, text, figures), HERE / f"{name}.ipynb")
        print(f"wrote {HERE / f'{name}.ipynb'}")


if __name__ == "__main__":
    main()
