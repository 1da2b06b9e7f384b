"""IpfixExporter end to end over loopback UDP and TCP: delivery, loss accounting, close."""

from __future__ import annotations

import socket
import time

from flowtop.export.ipfix import IpfixExporter

from .collectors import (
    TcpCollector,
    UdpCollector,
    decode_all,
    free_port,
    options_records,
)
from .expect import check
from .flows import many

FAST = {"reconnect_backoff": (0.02, 0.1), "connect_timeout": 1.0, "send_timeout": 1.0}


def test_udp_delivers_every_field() -> None:
    b = many(3000, v6_every=3)
    with UdpCollector() as col:
        exp = IpfixExporter([("127.0.0.1", col.port)], domain_id=42, process_id=77)
        local = exp.local_addresses()
        exp.flows_ended(b)
        assert exp.flush(10)
        exp.close(5)
        assert exp.local_addresses() == []
        raw = col.wait_options()
    msgs, flows = decode_all(raw)
    check(b, flows)
    assert all(m.domain == 42 and m.length <= 1400 for m in msgs)
    assert msgs[0].templates, "templates before the first data set"
    (opts,) = options_records(msgs)
    assert (opts[144], opts[166], opts[167], opts[168]) == (77, 0, 0, 0)
    st = exp.stats()
    assert st.records_sent == 3000 and st.not_sent_flows == 0 and st.send_errors == 0
    assert st.messages_sent == len(msgs)
    assert col.peers == set(local)


def test_udp_collector_down_then_back() -> None:
    port = free_port()
    exp = IpfixExporter([("127.0.0.1", port)], options_interval=None, **FAST)  # type: ignore[arg-type]
    lost = many(500, seed=2)
    for i in range(5):  # ECONNREFUSED comes back on the send after the one that hit
        exp.flows_ended(many(100, seed=10 + i))
        assert exp.flush(5)
    st = exp.stats()
    assert st.send_errors > 0 and "refused" in st.collectors[0].last_error.lower()
    assert 0 < st.not_sent_flows <= 500
    assert st.not_sent_packets > 0 and st.not_sent_octets > 0
    with UdpCollector(port) as col:
        exp.flows_ended(lost)  # the collector is back: these arrive, templates first
        assert exp.flush(5)
        raw = col.wait_flows(500)
        msgs, flows = decode_all(raw)
        assert msgs[0].templates
        check(lost, flows)
        before = exp.stats()
        exp.close(5)
        raw = col.wait_options()
    (opts,) = options_records(decode_all(raw)[0])
    assert opts[166] == before.not_sent_flows
    assert opts[167] == before.not_sent_packets
    assert opts[168] == before.not_sent_octets
    assert 0 < int(opts[323]) <= time.time() * 1000  # time first flow dropped


def test_full_queue_is_counted_not_blocking() -> None:
    with UdpCollector() as col:
        exp = IpfixExporter([("127.0.0.1", col.port)], max_queue_flows=100, start=False)
        keep, drop = many(80, seed=1), many(50, seed=2)
        exp.flows_ended(keep)
        exp.flows_ended(drop)  # 80 + 50 > 100: refused, counted
        st = exp.stats()
        assert st.dropped_batches == 1 and st.not_sent_flows == 50
        assert st.not_sent_packets == int(drop["packets"].sum())
        assert st.not_sent_octets == int(drop["bytes"].sum())
        exp.start()
        assert exp.flush(5)
        exp.close(5)
        raw = col.wait_flows(80)
    check(keep, decode_all(raw)[1])


def test_flows_ended_does_not_wait_for_a_dead_collector() -> None:
    b = many(100_000, v6_every=5)
    port = free_port(socket.SOCK_STREAM)
    for transport in ("tcp", "udp"):
        exp = IpfixExporter([("127.0.0.1", port)], transport, **FAST)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for _ in range(20):
            exp.flows_ended(b)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.05, f"{transport}: flows_ended took {elapsed:.3f}s"
        t0 = time.perf_counter()
        exp.close(0.3)
        assert time.perf_counter() - t0 < 2.0
        st = exp.stats()
        # Everything was either sent into the void (UDP) or counted; never forgotten.
        assert st.collectors[0].queued_flows == 0
        if transport == "tcp":
            assert st.not_sent_flows == 20 * 100_000
            assert st.connect_errors > 0


def test_close_sends_everything_queued() -> None:
    b = many(20_000, v6_every=7)
    with UdpCollector() as col:
        exp = IpfixExporter([("127.0.0.1", col.port)])
        exp.flows_ended(b)
        exp.close(10)  # no flush first: the SIGTERM path
        raw = col.wait_flows(20_000, timeout=10)
    check(b, decode_all(raw)[1])
    assert exp.stats().not_sent_flows == 0


def test_tcp_templates_on_every_connection_and_reconnect() -> None:
    first, second = many(400, v6_every=2, seed=3), many(300, seed=4)
    col = TcpCollector()
    port = col.port
    with col:
        exp = IpfixExporter([("127.0.0.1", port)], "tcp", **FAST)  # type: ignore[arg-type]
        exp.flows_ended(first)
        assert exp.flush(5)
        col.wait_flows(400)
        local = exp.local_addresses()
        assert local and local[0] in col.peers
    # The collector restarts: the exporter notices, reconnects and sends templates first.
    with TcpCollector(port) as col2:
        exp.flows_ended(second)
        assert exp.flush(5)
        col2.wait_flows(300)
        exp.close(5)
        col2.wait_options()
        conns = col2.connections
    assert len(col.connections) == 1 and len(conns) == 1
    for conn, b in ((col.connections[0], first), (conns[0], second)):
        msgs, flows = decode_all(conn)
        assert msgs[0].templates and msgs[0].sequence == 0
        check(b, flows)
        seq = 0
        for m in msgs:  # a new stream: sequence numbers start again at 0
            assert m.sequence == seq
            seq += len(m.records)
    st = exp.stats()
    assert st.not_sent_flows == 0 and st.collectors[0].connects == 2


def test_tcp_collector_late_start_loses_nothing() -> None:
    b = many(2000, seed=5)
    port = free_port(socket.SOCK_STREAM)
    exp = IpfixExporter([("127.0.0.1", port)], "tcp", **FAST)  # type: ignore[arg-type]
    exp.flows_ended(b)
    time.sleep(0.2)  # a few refused connects, with backoff
    assert exp.stats().connect_errors >= 1
    with TcpCollector(port) as col:
        assert exp.flush(5)
        exp.close(5)
        raw = col.wait_flows(2000)
    check(b, decode_all(raw)[1])
    assert exp.stats().not_sent_flows == 0


def test_close_with_tcp_down_counts_everything() -> None:
    b = many(1000, seed=6)
    port = free_port(socket.SOCK_STREAM)
    exp = IpfixExporter([("127.0.0.1", port)], "tcp", **FAST)  # type: ignore[arg-type]
    exp.flows_ended(b)
    t0 = time.perf_counter()
    exp.close(0.5)
    assert time.perf_counter() - t0 < 1.5
    st = exp.stats()
    assert st.not_sent_flows == 1000
    assert st.not_sent_packets == int(b["packets"].sum())
    assert st.not_sent_octets == int(b["bytes"].sum())


def test_options_records_are_periodic() -> None:
    with UdpCollector() as col:
        exp = IpfixExporter([("127.0.0.1", col.port)], options_interval=0.05, process_id=5)
        raw = col.wait_options(3)
        exp.close(1)
    msgs, _ = decode_all(raw)
    opts = options_records(msgs)
    assert len(opts) >= 3 and {o[144] for o in opts} == {5}
    assert msgs[0].templates  # the options template went first


def test_ipv6_collector() -> None:
    b = many(200, v6_every=2)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        sock.settimeout(5)
        exp = IpfixExporter([("::1", sock.getsockname()[1])], options_interval=None)
        exp.flows_ended(b)
        assert exp.flush(5)
        exp.close(5)
        raw = [sock.recv(65535) for _ in range(exp.stats().messages_sent)]
    check(b, decode_all(raw)[1])


def test_a_sender_bug_costs_only_its_batch() -> None:
    """An unexpected exception in the sender thread (here: the encoder, on the
    first batch) is counted, that batch is counted as not sent, and the
    batches after it are still delivered: the export goes on."""
    bad, good = many(50), many(3000, v6_every=3)
    with UdpCollector() as col:
        exp = IpfixExporter([("127.0.0.1", col.port)], options_interval=None, start=False)
        (link,) = exp._links
        encode, calls = link._encode, []

        def flaky(batch):  # type: ignore[no-untyped-def]
            calls.append(len(batch))
            if len(calls) == 1:
                raise RuntimeError("boom")
            return encode(batch)

        link._encode = flaky
        exp.flows_ended(bad)
        exp.start()
        assert exp.flush(10)
        exp.flows_ended(good)
        assert exp.flush(10)
        raw = col.wait_flows(3000, timeout=10)
        exp.close(5)
    check(good, decode_all(raw)[1])
    st = exp.stats()
    assert st.internal_errors == 1 and st.not_sent_flows == 50, st
    assert st.records_sent == 3000
    assert "boom" in st.collectors[0].last_error
