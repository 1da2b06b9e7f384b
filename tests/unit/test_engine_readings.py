"""Engine.readings(): the one read side the exports use (flowtop.core.readings).

Flows with known ends in the vendored MaxMind test databases go through a
real Enricher: the readings' remote bytes are what was sent, by direction and
the remote end's AS and country; the same numbers come out of /metrics.
"""

from __future__ import annotations

import errno
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from flowtop.config import Config, PrometheusConfig
from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.enrich import Enricher, EnrichOptions
from flowtop.kernel.collector import Drain
from flowtop.run.outputs import Outputs
from tests.unit.runparts import ASN_DB, BREDBAND, CITY_DB, NS, T0, TELSTRA, FakeCollector, flow

HOME = "10.0.0.1"


@pytest.fixture
def enricher() -> Iterator[Enricher]:
    e = Enricher(
        EnrichOptions(
            geoip_asn=str(ASN_DB),
            geoip_city=str(CITY_DB),
            search_default_paths=False,
            local_networks=[],
        )
    )
    try:
        yield e
    finally:
        e.close()


def interval(i: int) -> Drain:
    """Egress HOME -> TELSTRA (3 packets), ingress BREDBAND -> HOME (5 packets)."""
    now = T0 + i * NS
    return Drain(
        [
            flow(HOME, TELSTRA, 1000, 3, direction=1, now_ns=now),
            flow(BREDBAND, HOME, 2000, 5, direction=0, now_ns=now),
        ],
        now,
        1.0,
    )


def engine_with(script: list[Drain | BaseException], enricher: Enricher | None) -> Engine:
    collector = FakeCollector([], [])
    items = list(script)

    def drain() -> Drain:
        item = items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    collector.drain = drain  # type: ignore[method-assign]
    table = FlowTable(clock_offset=0.0, idle_timeout=3600, active_timeout=3600)
    return Engine(collector, table, interval=0.05, enricher=enricher)  # type: ignore[arg-type]


def remote_of(engine: Engine) -> dict[tuple[int, int, str], int]:
    r = engine.readings().remote
    assert r is not None
    out: dict[tuple[int, int, str], int] = {}
    for d, a, c, b in zip(r.direction, r.asn, r.country, r.nbytes, strict=True):
        key = (int(d), int(a), str(c))
        out[key] = out.get(key, 0) + int(b)
    return out


def test_readings_after_a_step(enricher: Enricher) -> None:
    engine = engine_with([interval(1), interval(2)], enricher)
    engine.step()
    r = engine.readings()
    assert r.drain is engine.last_drain and r.drain is not None
    assert remote_of(engine) == {(1, 1221, ""): 300, (0, 29518, "SE"): 500}
    assert r.names == {2: "eth1"} and [c.name for c in r.interfaces] == ["eth1"]
    assert r.active_flows == 2 and r.polls == 1 and r.poll_seconds > 0
    assert r.health.problems == 0
    engine.step()
    assert remote_of(engine) == {(1, 1221, ""): 300, (0, 29518, "SE"): 500}  # this interval's
    assert engine.readings().polls == 2


def test_a_failed_drain_leaves_nothing_new_to_add(enricher: Enricher) -> None:
    engine = engine_with([interval(1), OSError(errno.EBADF, "Bad file descriptor")], enricher)
    engine.step()
    engine.step()
    r = engine.readings()
    assert r.drain is None and r.remote is None and len(r.tcp.rows) == 0
    assert r.polls == 1 and r.health.drain_errors == 1 and r.active_flows == 2


def test_without_an_enricher_there_are_no_remote_bytes() -> None:
    engine = engine_with([interval(1)], None)
    engine.step()
    r = engine.readings()
    assert r.remote is None and r.drain is not None and r.active_flows == 2


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_prometheus_shows_the_remote_bytes_of_the_readings(enricher: Enricher) -> None:
    port = _free_port()
    outputs = Outputs(Config(prometheus=PrometheusConfig(listen=("127.0.0.1", port))))
    try:
        engine = engine_with([interval(1), interval(2)], enricher)
        outputs.attach(engine)
        engine.step()
        engine.step()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        outputs.close(0.2)
    lines = [ln for ln in text.splitlines() if ln.startswith("flowtop_remote_bytes_total{")]
    got = {ln.split("{", 1)[1].split("}", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines}
    assert got == {
        'asn="AS1221",country="unknown",direction="egress"': 600.0,
        'asn="AS29518",country="SE",direction="ingress"': 1000.0,
    }, lines
