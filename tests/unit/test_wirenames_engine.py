"""The engine's name join: WirePackets from a fake WireCapture (real DNS
responses and ClientHellos, keys matching the flows) read by the real
WireNameReader into a real WireNames, joined onto the flow table's name
columns: pending rows retried, later names picked up, TTL expiry on a fake
clock, SNI over DNS, ended flows settled, counters in the health, and what
dump prints."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import numpy as np

from flowtop.core.engine import Engine
from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.joins import NAME_REJOIN_EVERY, NAME_RETRY_INTERVALS
from flowtop.core.model import TCP_FIN, CollectorHealth
from flowtop.kernel.collector import Drain
from flowtop.kernel.wire_records import WirePacket
from flowtop.run.dump import Extras, FlowAccumulator, emit
from flowtop.wirenames.names import (
    NAME_NAMED,
    NAME_PENDING,
    NAME_UNNAMED,
    SOURCE_DNS,
    SOURCE_SNI,
    WireNames,
)
from flowtop.wirenames.reader import WireNameReader
from tests.unit.wirenames_bytes import client_hello, dns_packet, dns_response, first_packet

from .test_engine_errors import Scripted
from .test_engine_owners import T0, batch, flow

C, R = "10.0.0.1", "10.0.0.53"  # the client, its resolver


class FakeCapture:
    """A WireCapture: WirePackets the test queues, a pipe as its fd."""

    def __init__(self) -> None:
        self.queue: list[WirePacket] = []
        self.r, self.w = os.pipe()

    def put(self, *pkts: WirePacket) -> None:
        self.queue.extend(pkts)
        os.write(self.w, b"x")

    def read(self, max_events: int) -> list[WirePacket]:
        out, self.queue = self.queue[:max_events], self.queue[max_events:]
        if not self.queue:
            with contextlib.suppress(BlockingIOError):
                os.read(self.r, 4096)
        return out

    def fileno(self) -> int:
        return self.r

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def answer(name: str, addr: str, ttl: int = 60, cname: str | None = None) -> WirePacket:
    rr = [(name + ".", ttl, "A", [addr])]
    if cname:
        rr = [(name + ".", ttl, "CNAME", [cname + "."]), (cname + ".", ttl, "A", [addr])]
    return dns_packet(R, C, dns_response(name, rr))


def make(n_steps: int, flows_at: dict[int, list[tuple[np.ndarray, np.ndarray]]]):  # type: ignore[no-untyped-def]
    script = [Drain(batch(*flows_at[i]) if flows_at.get(i) else [], T0 + i * NS, 1.0)
              for i in range(n_steps)]  # fmt: skip
    table = FlowTable(clock_offset=0.0, idle_timeout=3600, active_timeout=3600)
    engine = Engine(Scripted(script), table, interval=1.0)  # type: ignore[arg-type]
    clock = Clock()
    names = WireNames(idle_timeout=300, clock=clock)
    engine.use_names(names)
    acc = FlowAccumulator(0.0)
    engine.sinks.append(acc)
    cap = FakeCapture()
    reader = WireNameReader(cap, names)
    return engine, names, reader, cap, clock, acc


def names_of(engine: Engine, sport: int) -> tuple[str | None, str | None, int, int]:
    t = engine.table
    rows = t.live_rows()
    row = rows[t.keys_at(rows)["sport"] == sport]
    assert len(row) == 1, sport
    assert engine.names is not None
    get = engine.names.names.get
    s, d = int(t.column("src_name_id", row)[0]), int(t.column("dst_name_id", row)[0])
    return (get(s) if s else None, get(d) if d else None,
            int(t.column("name_source", row)[0]), int(t.column("name_state", row)[0]))  # fmt: skip


def test_an_answer_read_before_the_flow_names_both_directions_and_dump_shows_it() -> None:
    fl = [flow(C, 40000, "192.0.2.80", 443, proto=6),
          flow("192.0.2.80", 443, C, 40000, proto=6, direction=0),
          flow(C, 40001, "192.0.2.99", 443, proto=6)]  # fmt: skip
    engine, names, reader, cap, _clock, acc = make(2, {0: fl})
    cap.put(answer("www.example.com", "192.0.2.80", cname="edge.cdn.test"))
    assert reader.pump() == 1
    engine.step()
    assert names_of(engine, 40000) == (None, "www.example.com", SOURCE_DNS, NAME_NAMED)
    assert names_of(engine, 443) == ("www.example.com", None, SOURCE_DNS, NAME_NAMED)
    assert names_of(engine, 40001)[3] == NAME_PENDING  # may still come: retried
    engine.shutdown()
    out = io.StringIO()
    emit(acc.per_key(), {2: "veth0"}, [], engine.health(), as_json=True, out=out,
         extras=Extras(wire=names))  # fmt: skip
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    by_port = {f["sport"]: f for f in lines if f["type"] == "flow"}
    assert (by_port[40000]["src_name"], by_port[40000]["dst_name"]) == (None, "www.example.com")
    assert by_port[40000]["name_source"] == "dns"
    assert (by_port[443]["src_name"], by_port[443]["name_source"]) == ("www.example.com", "dns")
    assert (by_port[40001]["dst_name"], by_port[40001]["name_source"]) == (None, None)
    # --resolve: reverse DNS fills in where the wire named nothing, marked rdns
    out = io.StringIO()
    rdns = {"192.0.2.99": "ptr.example", "192.0.2.80": "cdn-edge.example"}.get
    emit(acc.per_key(), {2: "veth0"}, [], engine.health(), as_json=True, out=out,
         extras=Extras(wire=names, name_of=rdns))  # fmt: skip
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    by_port = {f["sport"]: f for f in lines if f["type"] == "flow"}
    assert (by_port[40001]["dst_name"], by_port[40001]["name_source"]) == ("ptr.example", "rdns")
    assert (by_port[40000]["dst_name"], by_port[40000]["name_source"]) == ("www.example.com", "dns")
    text = io.StringIO()
    emit(acc.per_key(), {2: "veth0"}, [], CollectorHealth(), as_json=False, out=text,
         extras=Extras(wire=names))  # fmt: skip
    head, *rows = text.getvalue().splitlines()
    assert "NAME" in head.split()
    assert any("www.example.com (dns)" in r and "192.0.2.80:443" in r for r in rows)
    cap.close()


def test_a_name_read_after_the_first_packet_is_joined_while_pending() -> None:
    fl = {i: [flow(C, 40000, "192.0.2.80", 443, proto=6, t=T0 + i * NS)] for i in range(6)}
    engine, _names, reader, cap, _clock, _acc = make(6, fl)
    engine.step()
    assert names_of(engine, 40000)[3] == NAME_PENDING
    engine.step()
    cap.put(answer("late.example", "192.0.2.80"))
    reader.pump()
    engine.step()
    assert names_of(engine, 40000) == (None, "late.example", SOURCE_DNS, NAME_NAMED)
    cap.close()


def test_unnamed_settled_flows_pick_up_a_later_name() -> None:
    n = NAME_RETRY_INTERVALS + 2 + 2 * NAME_REJOIN_EVERY
    fl = {i: [flow(C, 40000 + j, "192.0.2.80", 443, proto=6, t=T0 + i * NS) for j in range(20)]
          for i in range(n)}  # fmt: skip
    engine, _names, reader, cap, _clock, _acc = make(n, fl)
    for _ in range(NAME_RETRY_INTERVALS + 2):
        engine.step()
    assert {names_of(engine, 40000 + j)[3] for j in range(20)} == {NAME_UNNAMED}
    cap.put(answer("long.example", "192.0.2.80"))
    reader.pump()
    for _ in range(NAME_REJOIN_EVERY):  # one round of slices covers every row
        engine.step()
    assert {names_of(engine, 40000 + j) for j in range(20)} == {
        (None, "long.example", SOURCE_DNS, NAME_NAMED)}  # fmt: skip
    cap.close()


def test_ttl_expiry_on_a_fake_clock() -> None:
    fl = {0: [flow(C, 40000, "192.0.2.80", 443, proto=6)],
          1: [flow(C, 40001, "192.0.2.80", 443, proto=6, t=T0 + NS)],
          2: [flow(C, 40002, "192.0.2.80", 443, proto=6, t=T0 + 2 * NS)]}  # fmt: skip
    engine, names, reader, cap, clock, _acc = make(3, fl)
    cap.put(answer("ttl.example", "192.0.2.80", ttl=120))
    reader.pump()
    engine.step()
    clock.t += 119
    engine.step()
    assert names_of(engine, 40001)[1] == "ttl.example"  # inside the TTL
    clock.t += 2
    engine.step()
    assert names_of(engine, 40002)[1] is None  # after it: a new flow is not named
    assert names_of(engine, 40000)[1] == "ttl.example"  # the named ones keep theirs
    assert names.counters()["dns_entries"] == 0 and names.counters()["expired"] == 1
    cap.close()


def test_sni_over_dns_for_the_exact_connection_from_a_split_hello() -> None:
    hello = client_hello("api.example.org")
    fl = [flow(C, 40000, "192.0.2.80", 443, proto=6), flow(C, 40001, "192.0.2.80", 443, proto=6)]
    engine, _names, reader, cap, _clock, _acc = make(1, {0: fl})
    cap.put(answer("cdn.example.net", "192.0.2.80"),
            first_packet(C, "192.0.2.80", 40000, 443, hello[:100], seq=7),
            first_packet(C, "192.0.2.80", 40000, 443, hello[100:], seq=107))  # fmt: skip
    reader.pump()
    engine.step()
    assert names_of(engine, 40000) == (None, "api.example.org", SOURCE_SNI, NAME_NAMED)
    assert names_of(engine, 40001) == (None, "cdn.example.net", SOURCE_DNS, NAME_NAMED)
    cap.close()


def test_ended_flows_settle_and_counters_reach_the_health() -> None:
    fl = [flow(C, 40000, "192.0.2.80", 443, proto=6, flags=TCP_FIN)]
    engine, _names, reader, cap, _clock, _acc = make(1, {0: fl})
    wire = dns_response("a.test", [("a.test.", 60, "A", ["192.0.2.1"])])
    cap.put(dns_packet(R, C, wire[:15]), dns_packet(R, C, wire + b"", tcp=True))
    # a TCP response whose length runs on into the next segment, the capture
    # cut (so it cannot be put together with the next one: wirenames/dnstcp.py)
    full = cap.queue[-1].payload
    cap.queue[-1] = WirePacket(cap.queue[-1].key, 1, 0, full[:20], len(full) - 1)
    reader.pump()
    ended = engine.step()
    assert len(ended) == 1 and int(ended["name_state"][0]) == NAME_UNNAMED
    h = engine.health()
    assert (h.names_malformed, h.names_unparsed, h.names_dropped) == (1, 1, 0)
    assert h.as_dict()["names_unparsed"] == 1 and h.problems >= 1
    cap.close()


def test_the_reader_thread_feeds_and_stops() -> None:
    names = WireNames()
    cap = FakeCapture()
    reader = WireNameReader(cap, names)
    reader.start()
    try:
        cap.put(answer("thread.example", "192.0.2.7"))
        deadline = time.monotonic() + 5
        while names.counters().get("dns_answers", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert names.counters()["dns_answers"] == 1
    finally:
        t0 = time.monotonic()
        reader.stop()
        assert time.monotonic() - t0 < 1.0
        assert not reader._thread.is_alive()
        cap.close()


def test_an_answer_still_in_the_capture_at_the_end_names_the_ended_flows() -> None:
    """shutdown() reads what the capture holds before its last join (the
    reader thread may not have got to it): the flow-end records are named."""
    fl = [flow(C, 40000, "192.0.2.80", 443, proto=6)]
    engine, names, reader, cap, _clock, _acc = make(2, {0: fl})
    engine.use_names(names, reader.catch_up)
    cap.put(answer("last.example", "192.0.2.80"))  # never pumped by the thread
    ended = engine.shutdown()
    assert len(ended) == 1
    get = names.names.get
    assert get(int(ended.columns["dst_name_id"][0])) == "last.example"
    assert int(ended.columns["name_source"][0]) == SOURCE_DNS
    cap.close()
