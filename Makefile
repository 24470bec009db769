# lorastream: `make demo` runs the main job, `make test` runs the tests.
# Both set up everything a fresh machine needs (a virtualenv, the Kafka jars).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EVENTS ?= 2000
RATE ?= 30
PYTEST_ARGS ?=

.PHONY: setup tools demo test lint unit test-slow test-all bench clean test-reliability

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
	$(PY) -m deploy.kafka fetch >/dev/null

demo: setup
	$(VENV)/bin/lorastream demo --events $(EVENTS) --rate $(RATE)

# Prometheus and promtool (Debian's package) for the observability tests.
tools:
	deploy/prometheus/install.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m schemas.export --check
	$(PY) -m deploy.grafana.dashboard --check

# Everything but the tests marked slow (a few minutes); test-slow runs those (CI runs both).
unit: setup tools
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test: lint unit

test-slow: setup tools
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: lint setup tools
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault-injection suite at full size: writes benchmarks/results/reliability.json.
test-reliability: setup tools
	$(PY) -m pytest tests/reliability --reliability=full $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks spine
	$(PY) -m benchmarks speed
	$(PY) -m benchmarks freshness
	$(PY) -m benchmarks quality

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache checkpoints
