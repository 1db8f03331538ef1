# The two commands of the README. Both create .venv if missing and install edgekd with its train and dev extras.
# make test: syntax for the oldest Python each part supports (vermin: 3.8 for the device side, whose JetPack 5.1
# runs Python 3.8; 3.10 for training), the import contracts in pyproject.toml (lint-imports), pytest, and the core
# and device-wing tests again under Python 3.8 and 3.10 in venvs with the device dependencies only. pytest runs in
# TEST_WORKERS processes (pytest-xdist; one file per worker at a time, one thread each: see tests/conftest.py).
DEVICE_PYTHONS ?= 3.8 3.10
TEST_WORKERS ?= 2
DEVICE_SIDE := edgekd/core edgekd/device edgekd/targets edgekd/cli.py edgekd/quickstart.py edgekd/__init__.py \
               edgekd/__main__.py edgekd/training/__init__.py edgekd/training/config.py \
               tests/core tests/device tests/faults tests/conftest.py tests/helpers.py
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup clean

run: $(STAMP)
	$(BIN)/edgekd quickstart --force

test: $(STAMP)
	$(BIN)/vermin -q --no-tips --violations -t=3.8- $(DEVICE_SIDE)
	$(BIN)/vermin -q --no-tips --violations -t=3.10- edgekd scripts tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	TEST_WORKERS=$(TEST_WORKERS) scripts/harness/test_device_wing.sh "$(DEVICE_PYTHONS)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .venv-device-* runs .pytest_cache
