"""WirePackets (real DNS responses, ClientHellos, HTTP heads) through the
Feeder into WireNames: names joined to the connection's flows; split and
reordered hellos; what gives no name is counted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flowtop.kernel.layout import FLOW_KEY
from flowtop.kernel.wire_records import KIND_DNS, WirePacket
from flowtop.wirenames.feed import Feeder
from flowtop.wirenames.names import SOURCE_DNS, SOURCE_HTTP, SOURCE_SNI, WireNames, conn_key
from tests.unit.wirenames_bytes import (
    client_hello,
    dns_packet,
    dns_response,
    first_packet,
    flow_key,
    hostile_hello,
    http_request,
)

C, S, R = "10.1.0.2", "203.0.113.10", "10.1.0.53"  # client, server, resolver


def _join(w: WireNames, *keys: bytes) -> list[tuple[str | None, str | None, int]]:
    c = w.join(np.frombuffer(b"".join(keys), dtype=FLOW_KEY))
    return [
        (w.names.get(int(s)) if s else None, w.names.get(int(d)) if d else None, int(src))
        for s, d, src in zip(c.src_name, c.dst_name, c.source, strict=True)
    ]


def test_dns_over_udp_and_tcp() -> None:
    w = WireNames()
    f = Feeder(w)
    udp = dns_response("web.example", [("web.example.", 300, "CNAME", ["edge.cdn.test."]),
                                       ("edge.cdn.test.", 20, "A", [S])])  # fmt: skip
    tcp = dns_response("v6.example", [("v6.example.", 300, "AAAA", ["2001:db8::10"])], "AAAA")
    f.feed([dns_packet(R, C, udp), dns_packet("2001:db8::53", "2001:db8::2", tcp, tcp=True)])
    assert _join(w, flow_key(C, S, 40000, 443), flow_key("2001:db8::2", "2001:db8::10", 1, 2)) == [
        (None, "web.example", SOURCE_DNS), (None, "v6.example", SOURCE_DNS)]  # fmt: skip
    assert f.counts["dns_responses"] == 2 and f.counts["dns_answers"] == 2
    assert w.counters()["dns_answers"] == 2


def test_dns_that_gives_nothing_is_counted() -> None:
    f = Feeder(WireNames())
    wire = dns_response("a.test", [("a.test.", 60, "A", ["192.0.2.1"])])
    framed = len(wire).to_bytes(2, "big") + wire
    key = flow_key(R, C, 53, 40000, proto=17)
    tcp_key = flow_key(R, C, 53, 40001, proto=6)
    f.feed([
        WirePacket(key, KIND_DNS, 0, wire[:20], len(wire)),  # cut capture
        WirePacket(key, KIND_DNS, 0, b"\x12\x34\x81\x80\x00\x01\x00\x01" + b"\xff" * 22, 30),
        WirePacket(tcp_key, KIND_DNS, 0, framed[:30], len(framed) - 1),  # spans, capture cut
        WirePacket(b"short", KIND_DNS, 0, wire, len(wire)),
        WirePacket(key, 99, 0, wire, len(wire)),
    ])  # fmt: skip
    c = f.counts
    assert (c["dns_malformed"], c["dns_tcp_unparsed"], c["bad_packets"], c["dns_responses"]) == (
        2, 1, 2, 0)  # fmt: skip


@pytest.mark.parametrize("cut", [1, 2, 5, 6, 9, 40, 100, -60, -1])
def test_a_hello_split_over_two_segments_in_either_order(cut: int) -> None:
    hello = client_hello("split.example.net")
    at = cut % len(hello)
    a, b = hello[:at], hello[at:]
    for order in ((0, 1), (1, 0)):
        w = WireNames()
        f = Feeder(w)
        seq = 4_294_967_000
        segs = [first_packet(C, S, 40000, 8443, a, seq=seq),
                first_packet(C, S, 40000, 8443, b, seq=(seq + len(a)) % 2**32)]  # fmt: skip
        f.feed([segs[i] for i in order])  # the sequence numbers wrap between them
        assert _join(w, flow_key(S, C, 8443, 40000)) == [("split.example.net", None, SOURCE_SNI)]
        assert f.counts["hello_names"] == 1 and f.counts["first_incomplete"] == 0
        assert len(f.first) == 0


def test_a_hello_missing_its_second_segment_is_counted_incomplete() -> None:
    hello = client_hello("gap.example.net")
    w = WireNames()
    f = Feeder(w)
    f.feed([first_packet(C, S, 40000, 443, hello[:50], seq=1),
            first_packet(C, S, 40000, 443, hello[60:], seq=61)])  # a gap  # fmt: skip
    assert f.counts["first_incomplete"] == 1 and f.counts["hello_names"] == 0
    assert _join(w, flow_key(C, S, 40000, 443)) == [(None, None, 0)]


def test_http_host_and_other_protocols() -> None:
    w = WireNames()
    f = Feeder(w)
    f.feed([
        first_packet(C, S, 40001, 80, http_request("plain.example:80")),
        first_packet(C, S, 40002, 22, b"SSH-2.0-OpenSSH_9.2\r\n", seq=5),
        first_packet(C, S, 40002, 22, b"\x00\x00\x05\xdc", seq=26),
    ])  # fmt: skip
    assert _join(w, flow_key(C, S, 40001, 80), flow_key(C, S, 40002, 22)) == [
        (None, "plain.example", SOURCE_HTTP), (None, None, 0)]  # fmt: skip
    assert f.counts["http_names"] == 1 and len(f.first) == 0
    assert sum(f.counts[k] for k in ("first_malformed", "first_incomplete")) == 0


def test_hostile_names_from_every_source_are_clean() -> None:
    w = WireNames()
    f = Feeder(w)
    raw = b"\x1b[31mevil\x1b]52;c;QUJD\x07" + "\u202egnp.x".encode() + b"\x1b[2J"
    f.feed([
        first_packet(C, S, 40003, 443, hostile_hello(raw)),
        first_packet(C, S, 40004, 80,
                     b"GET / HTTP/1.1\r\nHost: " + b"\x1b[2Jh" * 100 + b"\r\n\r\n"),
    ])  # fmt: skip
    got = _join(w, flow_key(C, S, 40003, 443), flow_key(C, S, 40004, 80))
    assert got[0][1] == "evilgnp.x"
    name = got[1][1]
    assert name is not None and len(name) == 100 and set(name) == {"h"}
    for v in w.names.values[2:]:
        assert v is not None and v.isprintable() and "\u202e" not in v and len(v) <= 253


def _tcp_segments(wire: bytes, cuts: list[int], seq: int, cport: int = 40001) -> list[WirePacket]:
    """A DNS-over-TCP response (length prefix first) from R to C in segments
    cut at the given offsets of the framed message, sequence numbers from seq."""
    framed = len(wire).to_bytes(2, "big") + wire
    key = flow_key(R, C, 53, cport, proto=6)
    edges = [0, *cuts, len(framed)]
    return [
        WirePacket(key, KIND_DNS, (seq + a) % (1 << 32), framed[a:b], b - a)
        for a, b in itertools.pairwise(edges)
    ]


def _many_a(n: int) -> bytes:
    return dns_response(
        "big.example", [("big.example.", 300, "A", [f"198.51.100.{i + 1}" for i in range(n)])]
    )


@pytest.mark.parametrize("cuts", [[1], [2], [700], [300, 900]])
def test_a_tcp_response_spanning_segments_is_put_together(cuts: list[int]) -> None:
    """A response of 60 A records cut into two or three segments (and a
    sequence number that wraps): every address is learnt, none unparsed."""
    w = WireNames()
    f = Feeder(w)
    wire = _many_a(60)
    f.feed(_tcp_segments(wire, cuts, seq=(1 << 32) - 500))
    assert f.counts["dns_responses"] == 1 and f.counts["dns_answers"] == 60, f.counts
    assert f.counts["dns_tcp_unparsed"] == 0
    got = _join(w, flow_key(C, "198.51.100.60", 40000, 443))
    assert got == [(None, "big.example", SOURCE_DNS)]


def test_a_tcp_response_with_a_gap_or_out_of_order_is_counted_unparsed() -> None:
    wire = _many_a(60)
    for segs in (
        (lambda s: [s[0], s[2]])(_tcp_segments(wire, [300, 900], seq=1000)),  # a gap
        (lambda s: [s[0], s[2], s[1]])(_tcp_segments(wire, [300, 900], seq=1000)),  # reordered
    ):
        f = Feeder(WireNames())
        f.feed(segs)
        assert f.counts["dns_answers"] == 0 and f.counts["dns_tcp_unparsed"] >= 1, f.counts
        assert f.counts["dns_malformed"] <= 1  # a later segment read as a message start


def test_a_tcp_response_that_never_ends_is_counted_when_it_expires() -> None:
    w = WireNames()
    f = Feeder(w)
    (first, _rest) = _tcp_segments(_many_a(60), [300], seq=1000)
    f.feed([first])
    assert f.counts["dns_tcp_unparsed"] == 0 and f.streams.waiting(conn_key(first.key))
    w.now = lambda: 1e12  # type: ignore[method-assign]  # long after
    f.feed([])
    assert f.counts["dns_tcp_unparsed"] == 1 and not f.streams.waiting(conn_key(first.key))


def test_copies_of_a_tcp_responses_segments_are_skipped() -> None:
    """A router sees each segment twice (ingress on one leg, egress on the
    other), and a retransmit repeats one: the response is put together once."""
    f = Feeder(WireNames())
    a, b = _tcp_segments(_many_a(60), [700], seq=5000)
    f.feed([a, a, b, b, a])
    assert f.counts["dns_responses"] == 1 and f.counts["dns_answers"] == 60, f.counts
    assert f.counts["dns_tcp_unparsed"] == 0 and f.counts["dns_malformed"] == 0
