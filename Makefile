# flowtop: run, test and lint set the machine up first (scripts/setup.sh is idempotent).
#   make run ARGS="-i veth0"       start flowtop with arguments
#   make test PYTEST_ARGS="-x -k doctor"
# Installing for a router (no setup needed; scripts/install.sh says what goes where):
#   make install [WHEEL=dist/flowtop-*.whl] [DESTDIR=/tmp/root] [PREFIX=/opt/flowtop]
#   make wheel                     dist/flowtop-VERSION-py3-none-any.whl
.PHONY: setup run test lint install wheel

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

install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" WHEEL="$(WHEEL)" bash scripts/install.sh

wheel:
	bash scripts/install.sh --wheel dist
