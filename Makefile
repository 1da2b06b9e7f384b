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

# The suite runs on TEST_JOBS pytest-xdist workers (default: one per CPU): most of its
# time is spent waiting (drains, traffic, timeouts) or in CPU-bound TUI tests, and the
# kernel tests are isolated (tests/conftest.py: a kernel test file stays on one worker,
# tests marked `exclusive` run alone). TEST_JOBS=1, PYTEST_ARGS="-n 0" or a debugging flag (--pdb,
# --trace, -s) run it in one process.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
SERIAL_FLAGS := -n0 --pdb --trace -s --capture=no
XDIST_ARGS = $(if $(filter-out 0 1,$(TEST_JOBS)),$(if $(filter $(SERIAL_FLAGS),$(PYTEST_ARGS)),,-n $(TEST_JOBS) --dist loadgroup))

test: setup
	$(PY) -m pytest -q tests $(XDIST_ARGS) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" WHEEL="$(WHEEL)" bash scripts/install.sh

wheel:
	bash scripts/install.sh --wheel dist
