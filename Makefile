# fedvfer: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: venv system-deps demo test lint unit bench fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

# Debian packages the tests and the demo use (mosquitto, chromium, mtools, ...).
# Installs only what is missing, and only where it can (root with apt-get).
system-deps:
	@bash deploy/system-deps.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv system-deps
	$(VENV)/bin/pytest

test: lint unit

# The aggregator fuzzer with a long budget (the test suite runs 50 examples); figures in
# benchmarks/results/fuzz.json and docs/mqtt.md ("Fuzzer").
FUZZ_EXAMPLES ?= 5000
fuzz: venv system-deps
	@mkdir -p benchmarks/results
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_REPORT=benchmarks/results/fuzz.json \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_aggregator_fuzz.py

demo: venv
	$(PY) -m training demo

bench: venv system-deps
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-output benchmarks/results
