"""Fixtures for the kernel tests: test namespaces and topologies.

Each fixture deletes what it made when the test ends, failed or not
(processes inside are killed first). A session-level janitor also removes
`ftt-` namespaces of this run and of runs whose process is gone (a crashed or
killed pytest), but never those of another pytest that is still running.
The creator's pid in every name keeps pytest-xdist's workers apart too: each
is a pytest process of its own, with its own namespaces, cgroups and tmux
sockets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from . import netns


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session", autouse=True)
def _netns_janitor() -> Iterator[None]:
    if not _is_root():
        yield
        return
    netns.cleanup_stale(own_pid=None)
    try:
        yield
    finally:
        netns.cleanup_stale(own_pid=os.getpid())


@pytest.fixture
def pair() -> Iterator[netns.Pair]:
    """A <-> B over one veth pair (va/vb), IPv4 10.200.1.0/24 and IPv6 fd00:200:1::/64."""
    p = netns.make_pair(ipv6=True)
    try:
        yield p
    finally:
        p.delete()


@pytest.fixture
def quiet_pair() -> Iterator[netns.Pair]:
    """Like `pair` but IPv4 only: no IPv6 (no MLD), static neighbours, ARP off.
    Nothing crosses va/vb but what the test sends."""
    p = netns.make_pair(ipv6=False)
    try:
        yield p
    finally:
        p.delete()


@pytest.fixture
def router() -> Iterator[netns.Router]:
    """client (vc) <-> (vr1) router (vr2) <-> (vs) server; the router forwards."""
    r = netns.make_router(ipv6=True)
    try:
        yield r
    finally:
        r.delete()
