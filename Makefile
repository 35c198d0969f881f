# The two set-up commands the README gives: `make demo` and `make test`.
# Both create .venv and install the project into it; nothing else is needed.
# `make test-all` and `make test-long` (below) build on the same .venv.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test test-all test-long lint check bench bench-quick bench-smoke bench-cluster cluster-netns docs clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# .installed-dev installs .[dev]; .installed-dev,bench installs .[dev,bench].
$(VENV)/.installed-%: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-dev
	$(PY) -m examples.telephony_flow simulate --calls 300 --concurrency 50

# The sip extra (pjsua2) has wheels only for CPython 3.10-3.12 on Linux x86_64 and
# Windows; where pip cannot install one, tests/test_telephony_sip.py skips and
# `make test` still works. CI sets BRIDGE_REQUIRE_SIP=1 to make that skip a failure.
$(VENV)/.installed-sip: pyproject.toml | $(VENV)/.installed-dev
	$(PY) -m pip install --quiet --only-binary=pjsua2-python -e ".[dev,sip]" \
		|| echo "note: no pjsua2 wheel for this Python or platform; the sip tests will skip"
	touch $@

test: $(VENV)/.installed-dev $(VENV)/.installed-sip
	$(PY) -m pytest

# The library's tests on the other supported Pythons, 3.10, 3.12 and 3.13, one
# after the other, each in a virtualenv under .nox/ that nox (from .[dev]) makes
# and keeps. The examples', docs' and browser tests run on 3.11 only (`make test`;
# noxfile.py's ON_311_ONLY lists them).
# noxfile.py finds the interpreters (PATH, then ~/.pyenv/versions) and skips a
# missing one, or fails it when BRIDGE_REQUIRE_ALL_PYTHONS=1, as CI sets.
# NOX_ARGS passes arguments on: NOX_ARGS='-s "tests(3.12)" -- -k cancel -x'.
NOX_ARGS ?=
test-all: $(VENV)/.installed-dev
	$(VENV)/bin/nox $(NOX_ARGS)

# The suite with many more hypothesis examples (the "long" profile that
# tests/conftest.py registers; CI uses the "ci" profile).
test-long: $(VENV)/.installed-dev $(VENV)/.installed-sip
	HYPOTHESIS_PROFILE=long $(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check bridge
	$(VENV)/bin/mypy bridge

check: lint test

# Benchmarks (bench/README.md): every case in one run, fresh process per
# measurement, interleaved repetitions; results go to bench/results/.
bench: $(VENV)/.installed-dev,bench
	$(PY) -m bench

# The cases with targets, smaller sizes, 3 repetitions: under 3 minutes, for
# comparing Pythons; writes to a temporary directory (BENCH_ARGS='--out DIR').
BENCH_ARGS ?=
bench-quick: $(VENV)/.installed-dev,bench
	$(PY) -m bench --quick $(BENCH_ARGS)

# Every benchmark case with tiny sizes, in seconds; writes to a temporary directory.
bench-smoke: $(VENV)/.installed-dev,bench
	$(PY) -m bench --smoke

# The documentation site (docs/, mkdocs.yml): MkDocs with Material and
# mkdocstrings, from the docs extra; built offline into site/, and --strict
# turns every warning (a broken link, a missing reference) into a failure.
# NO_MKDOCS_2_WARNING silences Material's end-of-life notice (docs/about-these-docs.md).
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The telephony example's cluster (Kamailio + N sip agents, sipp calling): calls/s
# and callback-to-job p99 at 1, 2, 4 and 8 agents, the rate stepped up until calls
# fail or p99 passes 50 ms; writes bench/results/cluster.md (about 10 minutes).
# Needs kamailio, sipp (sip-tester) and the sip extra.
bench-cluster: $(VENV)/.installed-sip
	$(PY) -m bench.cluster --out bench/results/cluster.md

# The same cluster across four network namespaces (proxy, two agents, sipp) on
# 198.18.0.0/24, which exists only inside them. Root only (skips otherwise);
# removes its namespaces on every exit path. Not part of .ci/run.
cluster-netns: $(VENV)/.installed-sip
	examples/telephony_flow/cluster/netns.sh $(PY)

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache build dist
