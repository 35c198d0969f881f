# The two set-up commands the README gives: `make demo` and `make test`.
# Both create .venv and install the project into it; nothing else is needed.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(EXTRAS)

.PHONY: demo test lint typecheck check bench bench-smoke clean

EXTRAS ?= dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-dev
	$(PY) -m examples.telephony_flow simulate --calls 300 --concurrency 50

test: $(VENV)/.installed-dev
	$(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check bridge
	$(VENV)/bin/mypy bridge

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
