"""Shared pytest setup.

Tests marked `kernel` need root (they build network namespaces, load BPF and
attach TC filters). Without root they are skipped, never failed; every other
missing piece (bcc, tc, a broken collector) is a failure.

The program cache (flowtop/kernel/progcache.py) is a directory of this
session's own (FLOWTOP_CACHE_DIR, removed at the end): each distinct build
compiles once, every other start of the suite loads it. Tests of the
compile path turn it off (FLOWTOP_PROGRAM_CACHE=0: tests/kernel/test_build.py,
and test_lifecycle.py's interrupts during the compile and the attach).

Under pytest-xdist (`make test` runs `-n <CPUs> --dist loadgroup`) the
workers share the controller's cache directory (a build compiled by one
worker is loaded by the other); a kernel test, or one with a module fixture,
runs on its file's worker (its xdist_group is its file unless it is marked
with one), the others go one by one to whichever worker is free. Tests
marked `exclusive` assert or change machine-wide state (every bpf link, the
root cgroup's sock_ops programs): one runs while no other test does, the
other workers waiting (RunLock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from typing import Any

import pytest

_CACHE_DIR: str | None = None  # made by this process: removed at the end
_LOCK_DIR: str | None = None
_RUN_LOCK: RunLock | None = None

# workerinput keys (controller -> workers)
_CACHE_KEY = "flowtop_cache_dir"
_LOCK_KEY = "flowtop_lock_dir"


class RunLock:
    """A readers-writer lock between the xdist workers of one run, over two
    flock(2)ed files in a directory the controller made. Every test holds it
    shared; an `exclusive` test holds it alone. The gate gives the exclusive
    side precedence: a worker takes the gate before its shared hold, and an
    exclusive test keeps the gate while it waits for the shared holders to
    finish, so the other workers cannot keep it waiting by starting new
    tests. A worker that dies releases its holds with its files."""

    def __init__(self, directory: str) -> None:
        self._gate = os.open(os.path.join(directory, "gate"), os.O_RDWR | os.O_CREAT, 0o600)
        self._main = os.open(os.path.join(directory, "main"), os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        if exclusive:
            try:
                fcntl.flock(self._main, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(self._main, fcntl.LOCK_UN)
            finally:
                fcntl.flock(self._gate, fcntl.LOCK_UN)
            return
        try:
            fcntl.flock(self._main, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._gate)
        os.close(self._main)


def pytest_configure(config: pytest.Config) -> None:
    global _CACHE_DIR, _RUN_LOCK
    shared: dict[str, Any] | None = getattr(config, "workerinput", None)
    if shared is not None and _CACHE_KEY in shared:  # an xdist worker: the controller's
        os.environ["FLOWTOP_CACHE_DIR"] = shared[_CACHE_KEY]
        _RUN_LOCK = RunLock(shared[_LOCK_KEY])
        return
    _CACHE_DIR = tempfile.mkdtemp(prefix="flowtop-progcache-")  # 0700, ours
    os.environ["FLOWTOP_CACHE_DIR"] = _CACHE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    global _LOCK_DIR
    if _RUN_LOCK is not None:
        _RUN_LOCK.close()
    if _LOCK_DIR is not None:
        shutil.rmtree(_LOCK_DIR, ignore_errors=True)
        _LOCK_DIR = None
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)
        if os.environ.get("FLOWTOP_CACHE_DIR") == _CACHE_DIR:
            del os.environ["FLOWTOP_CACHE_DIR"]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist (controller), before each worker starts: the directories it shares."""
    global _LOCK_DIR
    if _LOCK_DIR is None:
        _LOCK_DIR = tempfile.mkdtemp(prefix="flowtop-runlock-")
    node.workerinput[_CACHE_KEY] = _CACHE_DIR
    node.workerinput[_LOCK_KEY] = _LOCK_DIR


def _file_bound(item: pytest.Item) -> bool:
    """Whether a test runs on its file's worker: a kernel test (its file's
    tests run in the order written, on one machine's view of its own
    namespaces) or one with a fixture wider than the test (set up once).
    The others go one by one to whichever worker is free."""
    if item.get_closest_marker("kernel") is not None:
        return True
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d and d[-1].scope in ("class", "module", "package") for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook has no order)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config.option, "loadgroup", False):  # an xdist worker of --dist loadgroup
        for item in items:
            if item.get_closest_marker("xdist_group") is None and _file_bound(item):
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel tests need root (network namespaces, BPF, TC)")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """The whole of a test (its fixtures' set-up and teardown included) under
    the run lock, when there are workers to share the machine with."""
    if _RUN_LOCK is None:
        return (yield)
    with _RUN_LOCK.hold(item.get_closest_marker("exclusive") is not None):
        return (yield)
