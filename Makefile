# The README's two commands: `make demo` and `make test`. Both set everything up on a new machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned and installed first: an unpinned request for torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# benchmarks/ and scripts/ are linted once they exist (ruff fails on a missing path).
LINT_PATHS := src tests $(wildcard benchmarks) $(wildcard scripts)

.PHONY: install test test-fast lint demo bench mutation clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,plots,inference,onnx]"
	touch $(STAMP)

test: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

demo: install
	$(BIN)/adapmtl demo

bench: install
	$(BIN)/python benchmarks/overhead.py

# Slow (mutmut, one forked pytest run per mutant; a sample of 8 per module): by hand, not in CI.
mutation: install
	$(BIN)/python benchmarks/mutation.py --sample 8 --seed 0 --markdown docs/results/mutation.md

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache mutants
