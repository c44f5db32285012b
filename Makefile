# Development shortcuts; README.md "Development" explains each.
PYTHON ?= python

.PHONY: install test test-all lint format bench

install:
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest

test-all:
	$(PYTHON) -m pytest -m "slow or not slow"

lint:
	ruff check .
	ruff format --check .

format:
	ruff format .
	ruff check --fix .

bench:
	$(PYTHON) bench/throughput.py
	$(PYTHON) bench/registry_cli.py
	$(PYTHON) bench/generate.py
	$(PYTHON) bench/runs_cli.py
	$(PYTHON) bench/startup.py
