# `make test` and `make demo` set up what they need: a .venv with the pinned set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

# Where make demo finds CIFAR-10: $DREG_DATA_DIR, else ~/.cache/dreg/data; where it is missing, the suite builds it
# from a local copy at ../shared/data/cifar10 when there is one (its files differ from the official ones, so the
# md5 check is skipped for it, and said), else fetches it with torchvision's md5-checked download.

# The quick preset trains in bf16, which is many times slower than float32 on a CPU without native bf16
# (no AVX512-BF16 or AMX): the demo trains in float32 there (evaluated once the .venv exists).
DEMO_PRECISION = $(shell $(PY) -c 'from experiments.train import bf16_is_native; bf16_is_native() or print("--precision 32-true")')

.PHONY: test test-fast lint demo clean-venv gpu-check

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n auto

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed
	@echo "make demo: Fig. 2's batch-2k pair at the quick scale (15 epochs: shapes, not verdicts)"
	$(PY) -m experiments run fig2 --only 'bs2048-' --preset quick --results results $(DEMO_PRECISION)
	$(PY) -m analysis figure fig2 --preset quick --results results
	$(PY) -m analysis report --preset quick --results results
	@echo "demo done: the figure and the report are in results/quick/analysis/; the same pair at the paper's 300 epochs"
	@echo "(seeds 0-2) is panel (a) of results/committed/mini/analysis/fig2.png, its verdicts in results/committed/REPORT.md"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)

# On a machine with a GPU (one command, < 8 minutes, no network, no wandb needed): the CUDA tests, the GPU
# benchmark, and 5 epochs of the mini 30k pair on the GPU from a packed copy of the mini images
# (`python -m experiments.carry pack ~/.cache/dreg/data .carry/mini-cifar10.npz` where the data is).
gpu-check:
	bash benchmarks/gpu_check.sh
