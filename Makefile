# flowtop: every target sets the machine up first (scripts/setup.sh is idempotent).
#   make run ARGS="-i veth0"       start flowtop with arguments
#   make test PYTEST_ARGS="-x -k doctor"
.PHONY: setup run test lint

VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/bin/flowtop $(ARGS)

test: setup
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
