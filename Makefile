# Every target installs what it needs first (make setup), so a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The torch wheel for this machine (CPU build on disk). GPU users: make setup TORCH="torch==2.13.0 --index-url <cuda index>"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# make shards SRC=... DST=...: any fsspec URL (local folder or s3://bucket/prefix)
SRC ?= demo/hw3p2
DST ?= demo/shards
WORKERS ?= 2
SHARD_MB ?= 64
PYTEST_ARGS ?=

.PHONY: setup test lint format shards demo bench clean

# Idempotent: reinstalls only when pyproject.toml changed or TORCH differs from the last install.
setup:
	@if [ ! -x $(BIN)/python ]; then $(PYTHON) -m venv $(VENV); fi
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || [ "$$(cat $(STAMP))" != "$(TORCH)" ]; then \
		echo "installing into $(VENV) ($(TORCH) + project + test extra)"; \
		$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH) -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2) \
		&& echo "$(TORCH)" > $(STAMP); \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

shards: setup
	$(BIN)/python -m pipeline --src $(SRC) --dst $(DST) --workers $(WORKERS) --shard-mb $(SHARD_MB)

# Until the synthesised-speech corpus lands (issue 3), the demo shards a random HW3P2-layout set.
demo: setup
	$(BIN)/python -m tests.hw3p2_fixture demo/hw3p2
	$(MAKE) shards SRC=demo/hw3p2 DST=demo/shards SHARD_MB=4

bench: setup
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf demo .pytest_cache .ruff_cache
