# hookhub — the three first commands: make install, make run, make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run CONFIG=my.yaml` serves your own config; ARGS adds options, e.g. ARGS='--port 9090'.
CONFIG ?= $(or $(HOOKHUB_CONFIG),hookhub.example.yaml)
ARGS   ?=
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
	$(BIN)/hookhub run --config '$(CONFIG)' $(ARGS)

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.resend
	$(BIN)/python -m bench.archive

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
