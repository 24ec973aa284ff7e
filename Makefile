# fedvfer: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: venv system-deps demo test lint unit bench fuzz clean pi-check test-py313 docker-images docker-demo

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

# SECURE=1: the rounds run secure aggregation on the provisioned TLS/ACL fleet (5 nodes, one group)
demo: venv
	$(PY) -m training demo $(if $(filter 1,$(SECURE)),--secure)

bench: venv system-deps
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

# The node on a Raspberry Pi's CPU: arm64 Debian roots under qemu, the Pi installer, the node's
# commands and a federation round (root; caches in /var/cache/fedvfer; docs/deployment.md).
PI_RELEASES ?= bookworm trixie
PI_CHECK_ARGS ?=
pi-check: venv system-deps
	@bash deploy/heavy-deps.sh pi-check
	$(PY) -m provisioning pi-check $(foreach r,$(PI_RELEASES),--release $(r)) $(PI_CHECK_ARGS)

# The suite on Python 3.13 (Raspberry Pi OS 13, Trixie) in its own venv; PYTHON313 names the
# interpreter (pyenv's 3.13 when there, else python3.13 on PATH).
PYTHON313 ?= $(shell ls $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | tail -1 || true)$(if $(wildcard $(HOME)/.pyenv/versions/3.13*),,$(shell command -v python3.13))
VENV313 := .venv313
STAMP313 := $(VENV313)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
$(STAMP313): pyproject.toml
	@test -n "$(PYTHON313)" || { echo "test-py313: no python3.13 (set PYTHON313=...)"; exit 1; }
	@test -x $(VENV313)/bin/python || $(PYTHON313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --upgrade pip
	$(VENV313)/bin/python -m pip install --quiet -e '.[all]'
	@rm -f $(VENV313)/.installed-*
	@touch $@

test-py313: $(STAMP313) system-deps
	$(VENV313)/bin/python --version
	$(VENV313)/bin/mypy --python-version 3.13
	$(VENV313)/bin/pytest $(PYTEST_ARGS)

# The demo's fleet in real containers (broker, aggregator, one per node) from deploy/docker/;
# the same report as `make demo` in demo-output/ (root or the docker group; docs/simulation.md).
# `make docker-images` builds the three images only (a rerun is the layer cache's: seconds).
DOCKER_DEMO_ARGS ?=
docker-images: venv
	@bash deploy/heavy-deps.sh docker
	@if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt deploy/docker/ca/host.crt; fi
	$(PY) -m training docker-build --base "$$(bash deploy/docker/base.sh)"

docker-demo: docker-images
	$(PY) -m training docker-demo --no-build $(DOCKER_DEMO_ARGS)
	$(PY) -m training docker-faults

clean:
	rm -rf $(VENV) $(VENV313) .mypy_cache .ruff_cache .pytest_cache demo-output benchmarks/results
