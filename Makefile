# Two entry points for a fresh machine with only Python 3.11: `make demo` and `make test`.
# Both create .venv, install torch==2.13.0 first (a CPU wheel here; an unpinned torch
# would pull a 5 GB CUDA build), then this package. Reruns only reinstall what changed.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
STAMP := $(VENV)/.installed

.PHONY: install dev demo test lint format schema clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m octopi.demo --output $(DEMO_DIR)

# Lint, the test suite, then the Slurm tests on a throw-away cluster (.ci/slurm/run_tests.sh
# installs Debian's Slurm packages, so it needs root and apt-get; elsewhere it is skipped).
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/python -m pytest -q -m "not slurm" --durations=15
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		bash .ci/slurm/run_tests.sh; \
	else \
		echo "skipping the Slurm tests: they start a throw-away cluster (needs root and apt-get)"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

schema: $(STAMP)
	$(BIN)/octopi schema --output workflow/schemas/config.schema.json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
