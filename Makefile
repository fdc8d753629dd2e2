# `make test` and `make demo` set up what they need: a .venv with the pinned set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: test test-fast lint clean-venv

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
