"""Analysis of run records: tidy tables, the paper's figures and claims, the replication report.

- ``records``: ``results/<preset>/<run>/`` -> one tidy DataFrame; a figure's lines (mean and range over seeds).
- ``claims``: speed-ups, rankings, trends, and a verdict per claim by a fixed rule.
- ``figures``: one function per paper figure (and the controls), PNG and PDF.
- ``report``: the markdown replication report.
- ``notebook``: what the notebooks in ``notebooks/`` call; ``fake``: made-up records for tests.

CLI: ``python -m analysis figure FIG|all`` and ``python -m analysis report``. Training code never imports this
package, and it reads only the records, so it works on results copied from elsewhere.
"""
