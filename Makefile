# Two entry points for a fresh machine with only Python 3.11: `make demo` and `make test`.
# Both create .venv and install into it exactly the versions in requirements-lock.txt (the ones
# the tests ran with), with uv (bootstrapped into .venv by pip; version from the lock).
# Reruns only reinstall what changed: the stamp depends on pyproject.toml and the lock.
# `make lock` regenerates the lock after a change of the dependencies in pyproject.toml.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
UV := $(BIN)/uv
UV_VERSION := $(shell sed -n 's/^uv==\([^ ;]*\).*/\1/p' $(LOCK))

# torch: the lock pins torch==2.13.0, a version with a CPU build and CUDA builds (the nvidia-*
# wheels of PyPI's CUDA build are pinned too; a CPU build never installs them).
#   TORCH_BACKEND empty (default): the build that the package sources below offer: the CPU
#     wheel where pip is configured to find one (CI: find-links /opt/wheels); from plain PyPI
#     on Linux, the CUDA 13 build (about 5 GB with its nvidia-* wheels).
#   TORCH_BACKEND=cpu, cu126, cu128, cu130, ... or auto (CPU, or the CUDA build that the
#     installed driver supports): from download.pytorch.org (uv's --torch-backend).
# To switch an existing .venv: rm -rf .venv, then `make install TORCH_BACKEND=...`.
TORCH_BACKEND ?=

# Package sources: the ones pip is configured with (pip.conf; PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS), so that a mirror or a local wheelhouse serves uv as it
# serves pip; like pip, uv then takes the highest version that fits from any of them
# (unsafe-best-match; every version is pinned anyway). Set UV_SOURCES to override.
pip_config = $(shell $(BIN)/python -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$(1)='\(.*\)'$$/\1/p")
UV_SOURCES ?= $(addprefix --index-url=,$(firstword $(call pip_config,index-url))) \
	$(addprefix --extra-index-url=,$(sort $(call pip_config,extra-index-url))) \
	$(addprefix --find-links=,$(sort $(call pip_config,find-links))) --index-strategy=unsafe-best-match
# Bytecode: uv writes no .pyc files by default, and where PYTHONDONTWRITEBYTECODE is set (as on
# this project's CI machines) Python never writes them either, so every process compiled torch,
# MONAI and MLflow from source again: `import torch` 3-4 s instead of 1 s, a trial's imports
# 16-25 s instead of 6 s on a 2-core machine (python -m benchmarks trial-overhead). So the
# install compiles site-packages once (COMPILE_BYTECODE), all but the packages' own test
# suites (tests/ and test/ folders: 20 % of the code, never imported here; numpy.testing and
# torch.testing, which are, stay in) and torch's one Python 3.12-only test helper. Against uv's
# --compile-bytecode of everything, `make install` on fresh clones (2 cores, interleaved) took
# 34.0 and 37.7 s instead of 35.5 and 39.2 s, with 15-20 % less CPU. A file that does not
# compile only costs its importers that time again, so a failure warns instead of stopping.
UV_INSTALL = $(UV) pip install --python $(BIN)/python $(UV_SOURCES) \
	$(if $(TORCH_BACKEND),--torch-backend=$(TORCH_BACKEND)) --constraints $(LOCK) --build-constraints $(LOCK)
SITE_PACKAGES = $(shell $(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
COMPILE_BYTECODE = $(BIN)/python -m compileall -q -j0 -x '/tests?/|/py312_' $(SITE_PACKAGES) \
	|| echo "warning: some installed files did not compile to bytecode (above); they still import"
# `make lock` resolves against this index alone (the CUDA build of torch, with its nvidia-*
# wheels), for every platform and Python 3.11+ (--universal). LOCK_ARGS: e.g. --upgrade, or
# --upgrade-package mlflow; without them the versions already in the lock are kept.
LOCK_INDEX ?= https://pypi.org/simple
LOCK_ARGS ?=

.PHONY: install dev demo test lint format schema lock clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@touch $(UV)

# Makefile: a change of the install command (e.g. --compile-bytecode) reaches existing venvs.
$(STAMP): $(UV) pyproject.toml $(LOCK) Makefile
	$(UV_INSTALL) pip uv -e ".[dev]"
	$(COMPILE_BYTECODE)
	$(BIN)/python -m compileall -q src
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

# pip, uv and hatchling (the build backend) are locked too.
lock: $(UV)
	printf 'pip\nuv\nhatchling\n' | $(UV) pip compile pyproject.toml - --extra dev \
		--universal --python-version 3.11 --index-url $(LOCK_INDEX) --annotation-style line \
		--custom-compile-command "make lock" --output-file $(LOCK) --quiet $(LOCK_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
