# Supercomputing for AI: the two commands are `make book` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# Where a profile other than cpu builds (keeps its own execution cache).
BOOK_OUT := $(if $(filter cpu,$(PROFILE)),.,_build/profiles/$(PROFILE))
RUN := PATH=$(abspath $(BIN)):$$PATH $(BIN)/python

.PHONY: help setup book figures notebooks classroom test lint clean gpu-check

help:
	@echo "make book        set up, draw figures, execute each notebook once (PROFILE=$(PROFILE)), build HTML"
	@echo "make test        set up, then run the whole test suite"
	@echo "make figures     draw the code-drawn figures into figures/generated/"
	@echo "make notebooks   papermill batch run into _build/executed/<PROFILE>/ (PROFILE=smoke|cpu|gpu|cluster)"
	@echo "make classroom   executed notebooks + nbval sanitize file in _build/classroom/"
	@echo "make lint        ruff"
	@echo "make gpu-check   run every GPU path of the book on this machine's CUDA GPU (<= 10 min; PYTHON=...)"
	@echo "make clean       remove build outputs and generated figures (keeps .venv)"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

figures: $(STAMP)
	$(BIN)/python figures/build.py

# The profile is checked first (unknown, or not runnable here: `error: ...`, nothing drawn or
# executed); then figures; then scripts/build_book.py executes each notebook once and builds.
book: $(STAMP)
	@$(RUN) scripts/build_book.py --profile $(PROFILE) --check-only
	$(RUN) figures/build.py
	$(RUN) scripts/build_book.py --profile $(PROFILE) --out $(BOOK_OUT)

notebooks: $(STAMP)
	$(RUN) scripts/run_notebooks.py --profile $(PROFILE)

classroom: $(STAMP)
	$(RUN) scripts/classroom.py --profile $(PROFILE)

# Two workers: while one builds and checks the smoke book, the other runs every other
# test file (tests/conftest.py schedules them); TEST_WORKERS=0 runs all in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q tests \
	  $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

lint: $(STAMP)
	$(BIN)/ruff check hpcai scripts figures tests _ext

clean:
	rm -rf _build figures/generated .pytest_cache

# On a GPU machine, with its own Python and CUDA build of PyTorch: PYTHON=... or the first of
# .venv/bin/python and python3 that has one. No setup: no venv, nothing installed.
gpu-check:
	$(if $(filter command line environment,$(origin PYTHON)),$(PYTHON) scripts/gpu_check.py --python $(PYTHON),python3 scripts/gpu_check.py)
