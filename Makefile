# hookhub — the three first commands: make install, make run, make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= hookhub.example.yaml
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes, so `make run` / `make test` can depend on it cheaply.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/hookhub run --config $(CONFIG)

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.fanout

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
