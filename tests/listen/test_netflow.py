"""NetFlow v9 (RFC 3954) and v5 decoding over hand-built packets."""

from __future__ import annotations

import struct

from flowtop.listen import counters as lc
from tests.listen import build as b
from tests.listen.decoding import decoder, feed, flows

V9_FIELDS: list[b.Field] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (10, 2),
    (14, 2),
    (2, 4),
    (1, 4),
    (22, 4),
    (21, 4),
]


def _v9_rec(src: str, dst: str, packets: int, octets: int, first: int = 97_000) -> bytes:
    return (
        b.ip4(src)
        + b.ip4(dst)
        + struct.pack("!HHBBHH", 5000, 53, 17, 0, 4, 0)
        + struct.pack("!IIII", packets, octets, first, 99_000)
    )


def test_v9_template_data_and_sysuptime_age() -> None:
    d = decoder()
    tset = b.set_(0, b.template(260, V9_FIELDS))
    data = b.set_(
        260,
        _v9_rec("10.0.0.1", "10.0.0.2", 3, 300) + _v9_rec("10.0.0.3", "10.0.0.4", 4, 400),
        pad=2,
    )
    feed(d, [b.v9_packet([tset, data], seq=0, source=7, uptime=100_000)], protocol="netflow")
    got = flows(d)
    assert [(f.src, f.dst, f.sport, f.dport, f.proto, f.packets, f.bytes) for f in got] == [
        ("10.0.0.1", "10.0.0.2", 5000, 53, 17, 3, 300),
        ("10.0.0.3", "10.0.0.4", 5000, 53, 17, 4, 400),
    ]
    assert got[0].iface == "192.0.2.1#7/if4" and got[0].direction == 0
    assert got[0].age_ns == 3_000 * 10**6  # uptime 100 s at export, first packet at 97 s
    assert d.exporters()[0]["protocol"] == "netflow9"


def test_v9_sequence_counts_packets() -> None:
    d = decoder()
    tset = b.set_(0, b.template(260, V9_FIELDS))
    rec = b.set_(260, _v9_rec("10.0.0.1", "10.0.0.2", 1, 10))
    pkts = [b.v9_packet([tset, rec], seq=s) for s in (10, 11, 15, 16, 13)]
    feed(d, pkts, protocol="netflow")
    # 12, 13, 14 missing after 15; 13 arrives late: 12 and 14 still lost
    assert d.table.counters[lc.RECORDS_LOST] == 2
    assert sum(f.packets for f in flows(d)) == 5


def test_v9_options_sampling_and_interface_scope() -> None:
    d = decoder()
    opt = b.set_(1, b.v9_options_template(300, [(2, 4)], [(34, 4), (82, 8)]))
    orec = b.set_(300, struct.pack("!II", 4, 10) + b"uplink\0\0")
    feed(d, [b.v9_packet([opt, orec], seq=0)], protocol="netflow")
    tset = b.set_(0, b.template(260, V9_FIELDS))
    feed(
        d,
        [b.v9_packet([tset, b.set_(260, _v9_rec("10.0.0.1", "10.0.0.2", 2, 20))], seq=1)],
        protocol="netflow",
    )
    (f,) = flows(d)
    assert (f.packets, f.bytes) == (20, 200)
    assert f.iface.startswith("192.0.2.1/uplink")  # source id 0: no #domain
    assert d.exporters()[0]["sampling"] == 10


def test_v9_malformed() -> None:
    d = decoder()
    cases = [
        b.v9_packet([struct.pack("!HH", 260, 200)]),  # flowset longer than the packet
        b.v9_packet([b.set_(0, b.template(260, [(8, 0xFFFF)]))]),  # variable length: not v9
        b.v9_packet([b.set_(1, struct.pack("!HHH", 300, 3, 4) + b"\0" * 8)]),  # scope len % 4
        b.v9_packet([b.set_(0, b.template(12, [(8, 4)]))]),  # template id < 256
        struct.pack("!HH", 9, 0),  # header cut short
        struct.pack("!HH", 7, 0) + b"\0" * 20,  # no such version
    ]
    feed(d, cases, protocol="netflow")
    assert d.table.counters[lc.DECODE_ERRORS] == len(cases)
    assert d.table.counters[lc.MESSAGES] == 0


def test_v5_records_sampling_and_sequence() -> None:
    d = decoder()
    recs = [
        b.v5_record("10.0.0.1", "10.0.0.2", 1000, 80, 6, 1500, 3, ingress=2, flags=0x1B),
        b.v5_record("10.0.0.5", "10.0.0.6", 1001, 81, 6, 500, 1, ingress=2),
    ]
    feed(d, [b.v5_packet(recs, seq=100, engine=(1, 2))], protocol="netflow")
    feed(d, [b.v5_packet(recs[:1], seq=102, engine=(1, 2))], protocol="netflow")
    feed(d, [b.v5_packet(recs[:1], seq=110, engine=(1, 2))], protocol="netflow")  # 7 flows lost
    assert d.table.counters[lc.RECORDS_LOST] == 7
    got = flows(d)
    assert [(f.src, f.packets, f.bytes, f.flags) for f in got] == [
        ("10.0.0.1", 9, 4500, 0x1B),
        ("10.0.0.5", 1, 500, 0),
    ]
    assert got[0].iface == f"192.0.2.1#{1 << 8 | 2}/if2"
    assert got[0].age_ns == (100_000 - 90_000) * 10**6
    d2 = decoder()
    feed(d2, [b.v5_packet(recs, sampling=(1 << 14) | 50)], protocol="netflow")
    assert sorted(f.packets for f in flows(d2)) == [50, 150]
    assert d2.exporters()[0]["estimated"] is True
    bad = [b.v5_packet(recs)[:-1], b.v5_packet([]), b.v5_packet(recs * 16)]  # 32 > 30 records
    feed(d2, bad, protocol="netflow")
    assert d2.table.counters[lc.DECODE_ERRORS] == 3


def test_ipfix_on_the_netflow_port() -> None:
    d = decoder()
    t = b.set_(2, b.template(256, [(8, 4), (12, 4), (2, 4), (1, 4)]))
    rec = b.set_(256, b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + struct.pack("!II", 2, 20))
    feed(d, [b.ipfix_message([t, rec])], protocol="netflow")
    assert [(f.packets, f.bytes) for f in flows(d)] == [(2, 20)]
