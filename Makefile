# audioscore: `make demo` and `make test` set up everything on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install demo test test-full mutate lint format clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	# GE2E voice encoder weights (campp=ge2e). --no-deps: resemblyzer's `webrtcvad` pin builds from
	# source; webrtcvad-wheels (in pyproject.toml) provides the same module as a binary wheel.
	$(BIN)/python -m pip install --no-deps resemblyzer==0.1.4
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with dev extras

demo: $(STAMP)  ## synthetic corpus -> plan A/B training -> export -> scoring -> benchmark (CPU, minutes)
	$(BIN)/python scripts/demo.py

test: $(STAMP)  ## fast test suite (no GPU, no network)
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-full: $(STAMP)  ## everything, including slow end-to-end runs
	$(BIN)/python -m pytest -m "not gpu" -q

mutate: $(STAMP)  ## mutation testing of the contract modules -> docs/mutation.md (slow, not in CI)
	nice $(BIN)/python scripts/mutate.py $(MODULES)

lint: $(STAMP)  ## ruff lint + format check, layer contracts (import-linter), mypy on src/
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)  ## ruff format + autofix
	$(BIN)/ruff format src tests scripts && $(BIN)/ruff check --fix src tests scripts

clean:  ## remove outputs (keeps .venv)
	rm -rf outputs logs wandb .pytest_cache
