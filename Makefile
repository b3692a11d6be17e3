# hookhub — the three first commands: make install, make run, make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run CONFIG=my.yaml` serves your own config; ARGS adds options, e.g. ARGS='--port 9090'.
CONFIG ?= $(or $(HOOKHUB_CONFIG),hookhub.example.yaml)
ARGS   ?=
STAMP  := $(VENV)/.installed
AMQP   ?= $(or $(HOOKHUB_BENCH_RABBITMQ),amqp://guest:guest@127.0.0.1:5672/%2F)

.PHONY: install run test lint bench image clean

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

# `make bench BENCH_BACKLOG=100000` shortens the backlog runs (default: 1,000,000 events waiting).
bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.ingest --only single --workers 2
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.fanout --only latency --rate 300
	$(BIN)/python -m bench.fanout --workers 2
	$(BIN)/python -m bench.fanout --only latency --broker sqlite --store sqlite
	$(BIN)/python -m bench.resend
	$(BIN)/python -m bench.archive
	$(BIN)/python -m bench.archive --broker '$(AMQP)'
	$(BIN)/python -m bench.backlog --broker '$(AMQP)' --store postgres --backlog $(or $(BENCH_BACKLOG),1000000)
	$(BIN)/python -m bench.backlog --broker sqlite --store sqlite --backlog $(or $(BENCH_BACKLOG),1000000)

# `make image` builds the one image every function runs from (Dockerfile) with the first engine
# that answers; where none does (`docker info` fails) it prints what to run elsewhere and fails.
IMAGE  ?= ghcr.io/hookhub/hookhub:latest
ENGINE ?= $(shell for e in docker podman; do $$e info >/dev/null 2>&1 && { echo $$e; break; }; done)

image:
	@if [ -z '$(ENGINE)' ]; then \
	  echo "make image: no container engine answers here (docker info / podman info failed)."; \
	  echo "On a machine with Docker or Podman, from the repository root, run:"; \
	  echo "  docker build -t $(IMAGE) . && docker push $(IMAGE)"; \
	  exit 1; \
	fi
	$(ENGINE) build -t '$(IMAGE)' .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
