# `make repro` and `make test` set up .venv on first use, then run the pipeline / the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`: make it the environment's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test test-fast lint dvc-yaml bench clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Write dvc.yaml from the stage declarations and imports (`frcnn dvc-yaml --check` verifies it).
dvc-yaml: $(STAMP)
	$(BIN)/frcnn dvc-yaml --write

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf data/raw data/*.zarr data/*.zarr.partial data/step* data/model data/eval
