"""Interfaces that appear or disappear while flowtop runs; SIGTERM detaches."""

from __future__ import annotations

import json
import signal
import time

import pytest

from . import netns
from .dump import Collector
from .netns import flowtop_filters

pytestmark = pytest.mark.kernel


def _wait_for(cond, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            return float("inf")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_glob_attaches_new_interface_within_2s_and_survives_its_removal(
    pair: netns.Pair,
) -> None:
    a, b = pair.a, pair.b
    col = Collector(a, ["hp*"]).start()
    try:
        col.wait_ready()
        a.ip("link", "add", "hp0", "type", "veth", "peer", "name", "hq0", "netns", b.name)
        elapsed = _wait_for(
            lambda: flowtop_filters(a, "hp0", "ingress") and flowtop_filters(a, "hp0", "egress"),
            timeout=5.0,
        )
        assert elapsed < 2.0, f"attached after {elapsed:.2f}s:\n{col.stderr}"
        a.ip("addr", "add", "10.200.9.1/24", "dev", "hp0")
        b.ip("addr", "add", "10.200.9.2/24", "dev", "hq0")
        a.ip("link", "set", "hp0", "up")
        b.ip("link", "set", "hq0", "up")
        a.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.200.9.2")
        a.ip("link", "del", "hp0")
        time.sleep(0.5)
        assert col.proc is not None and col.proc.poll() is None, col.stderr
        res = col.stop()
    finally:
        if col.proc is not None and col.proc.poll() is None:
            col.proc.kill()
            col.proc.wait()
    echo = res.flow(iface="hp0", direction="egress", proto=1, src="10.200.9.1", dst="10.200.9.2")
    assert echo is not None, res.stdout
    assert echo["packets"] == 3
    assert echo["dport"] == 8 << 8  # echo request, code 0
    reply = res.flow(iface="hp0", direction="ingress", proto=1, src="10.200.9.2")
    assert reply is not None and reply["packets"] == 3


def test_sigterm_prints_results_and_detaches(pair: netns.Pair) -> None:
    a = pair.a
    col = Collector(a, ["va"]).start()
    col.wait_ready()
    assert len(flowtop_filters(a, "va", "ingress")) == 1
    a.exec("ping", "-c", "2", "-i", "0.2", "10.200.1.2")
    assert col.proc is not None
    col.proc.send_signal(signal.SIGTERM)
    rc = col.proc.wait(timeout=10)
    res = col.stop()
    assert rc == 0, col.stderr
    assert res.flow(iface="va", direction="egress", proto=1, dst="10.200.1.2")["packets"] == 2
    assert flowtop_filters(a, "va", "ingress") == []
    assert flowtop_filters(a, "va", "egress") == []
    stats = [json.loads(x) for x in col.stdout.splitlines() if '"stats"' in x]
    assert len(stats) == 1
