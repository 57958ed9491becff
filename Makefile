# The two quick-start commands: `make demo` and `make test`.
# Each creates .venv on first use and installs memvirt into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench

$(BIN)/memvirt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/memvirt

demo: $(BIN)/memvirt
	$(BIN)/memvirt demo --out out/demo

lint: $(BIN)/memvirt
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(BIN)/memvirt
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py
