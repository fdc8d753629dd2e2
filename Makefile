# `make test` and `make demo` set up what they need: a .venv with the pinned set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

# A local copy named by DREG_DATA_DIR is used as it is (its files need not match the official md5 sums);
# without it, CIFAR-10 is downloaded and md5-checked by torchvision.
DEMO_FLAGS := --preset mini --results results $(if $(DREG_DATA_DIR),--no-verify)

.PHONY: test test-fast lint demo clean-venv

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed
	$(PY) -m experiments run fig2 --only 'bs2048-' $(DEMO_FLAGS)
	$(PY) -m analysis figure fig2 --preset mini --results results
	$(PY) -m analysis report --preset mini --results results
	@echo "demo done: the figure and the report are in results/mini/analysis/"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
