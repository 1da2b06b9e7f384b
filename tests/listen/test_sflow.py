"""sFlow v5 decoding over hand-built datagrams (the sFlow v5 spec's layout,
written out here)."""

from __future__ import annotations

import struct

from flowtop.listen import counters as lc
from tests.listen import build as b
from tests.listen.decoding import decoder, feed, flows


def test_flow_samples_scaled_by_their_rate() -> None:
    d = decoder()
    udp = b.sflow_raw_record(b.eth_ipv4_udp("10.0.0.1", "10.0.0.2", 4000, 53, 100, vlan=12), 146)
    tcp = b.sflow_raw_record(
        b.eth_ipv6_tcp("2001:db8::1", "2001:db8::2", 40000, 443, 1000, 0x18), 1074
    )
    # a counter sample without records (seq, source id, 0 records): no flow
    counters = struct.pack("!II", 2, 12) + struct.pack("!III", 1, 3, 0)
    samples = [
        b.sflow_flow_sample([udp], rate=100, in_if=3),
        b.sflow_flow_sample([udp], rate=100, in_if=3),
        b.sflow_flow_sample([tcp], rate=50, in_if=0, out_if=7, expanded=True),
        counters,
    ]
    feed(d, [b.sflow_datagram(samples, sub_agent=2)], protocol="sflow")
    got = {f.proto: f for f in flows(d)}
    u = got[17]
    assert (u.src, u.dst, u.sport, u.dport) == ("10.0.0.1", "10.0.0.2", 4000, 53)
    assert (u.packets, u.bytes, u.dscp) == (200, 200 * 128, 0x28 >> 2)
    assert u.iface == "192.0.2.1#2/if3" and u.direction == 0
    t = got[6]
    assert (t.src, t.dport, t.flags) == ("2001:db8::1", 443, 0x18)
    assert (t.packets, t.bytes) == (50, 50 * 1060)  # IPv6: 40 + payload length
    assert t.iface == "192.0.2.1#2/if7" and t.direction == 1
    (ex,) = d.exporters()
    assert ex["protocol"] == "sflow5" and ex["estimated"] is True and ex["sampling"] == 100
    assert d.table.counters[lc.RECORDS_SAMPLED] == 3


def test_datagram_sequence_and_malformed() -> None:
    d = decoder()
    udp = b.sflow_raw_record(b.eth_ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, 10), 56)
    ok = [b.sflow_datagram([b.sflow_flow_sample([udp], rate=1)], seq=s) for s in (1, 2, 6)]
    feed(d, ok, protocol="sflow")
    assert d.table.counters[lc.RECORDS_LOST] == 3  # datagrams 3, 4, 5
    good = ok[0]
    bad = [
        good[:-1],  # cut
        good + b"\0\0\0\0",  # bytes after the samples
        struct.pack("!I", 4) + good[4:],  # version 4
        good[:4] + b"\0\0\0\x09" + good[8:],  # agent address type
        good[:24] + struct.pack("!I", 5000) + good[28:],  # sample count
    ]
    feed(d, bad, protocol="sflow")
    assert d.table.counters[lc.DECODE_ERRORS] == len(bad)
    assert sum(f.packets for f in flows(d)) == 3
