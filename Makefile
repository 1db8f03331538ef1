# The two commands of the README. Both create .venv if missing and install edgekd with its train and dev extras.
# make test: Python 3.10 syntax (vermin), the import contracts in pyproject.toml (lint-imports), then pytest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup clean

run: $(STAMP)
	$(BIN)/edgekd quickstart --force

test: $(STAMP)
	$(BIN)/vermin -q --no-tips --violations -t=3.10- edgekd scripts tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
