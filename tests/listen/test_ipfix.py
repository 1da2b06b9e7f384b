"""IPFIX decoding (RFC 7011) over hand-built messages: every value checked."""

from __future__ import annotations

import struct

from flowtop.listen import counters as lc
from flowtop.listen.exporters import MODULUS
from tests.listen import build as b
from tests.listen.decoding import decoder, feed, flows

T = 300


def _msg(records: list[bytes], seq: int = 0, with_template: bool = True, **kw: int) -> bytes:
    sets = [b.set_(2, b.template(T, b.V4_FIELDS))] if with_template else []
    sets.append(b.set_(T, b"".join(records), pad=3))  # 3 octets of padding after the records
    return b.ipfix_message(sets, seq=seq, **kw)


def test_template_and_data_decode_every_field() -> None:
    d = decoder()
    r1 = b.v4_record(
        "10.1.0.1",
        "10.2.0.2",
        40000,
        443,
        6,
        15000,
        10,
        ingress=7,
        flags=0x18,
        tos=0xB8,
        start=995,
        end=999,
    )
    r2 = b.v4_record("10.1.0.3", "10.2.0.4", 53, 5353, 17, 300, 3, ingress=0, egress=9)
    feed(d, [_msg([r1, r2], export=1000)])
    got = flows(d)
    assert len(got) == 2
    tcp = next(f for f in got if f.proto == 6)
    assert (tcp.src, tcp.dst, tcp.sport, tcp.dport) == ("10.1.0.1", "10.2.0.2", 40000, 443)
    assert (tcp.packets, tcp.bytes, tcp.flags, tcp.dscp) == (10, 15000, 0x18, 0xB8 >> 2)
    assert tcp.iface == "192.0.2.1#1/if7" and tcp.direction == 0  # ingress: ingressInterface
    assert tcp.age_ns == 5 * 10**9  # export 1000 s - start 995 s, by the exporter's clock
    udp = next(f for f in got if f.proto == 17)
    assert udp.iface == "192.0.2.1#1/if9" and udp.direction == 1  # no ingress: egress
    assert (udp.packets, udp.bytes) == (3, 300)
    assert d.table.counters[lc.RECORDS] == 2 and d.table.counters[lc.DECODE_ERRORS] == 0


def test_flow_direction_picks_the_interface_and_both_interfaces_key_ingress() -> None:
    d = decoder()
    fields: list[b.Field] = [(8, 4), (12, 4), (4, 1), (10, 4), (14, 4), (61, 1), (2, 8), (1, 8)]
    rec = b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + struct.pack("!BIIBQQ", 17, 3, 4, 1, 2, 200)
    rec_in = b.ip4("10.0.0.1") + b.ip4("10.0.0.3") + struct.pack("!BIIBQQ", 17, 3, 4, 0, 1, 100)
    t = b.set_(2, b.template(400, fields))
    feed(d, [b.ipfix_message([t, b.set_(400, rec + rec_in)])])
    got = {f.dst: f for f in flows(d)}
    assert got["10.0.0.2"].direction == 1 and got["10.0.0.2"].iface.endswith("/if4")
    assert got["10.0.0.3"].direction == 0 and got["10.0.0.3"].iface.endswith("/if3")
    # Without flowDirection, a record with both interfaces is one ingress flow.
    d2 = decoder()
    feed(d2, [_msg([b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 100, 1, ingress=5, egress=6)])])
    (f,) = flows(d2)
    assert f.direction == 0 and f.iface.endswith("/if5")


def test_ipv6_and_icmp() -> None:
    d = decoder()
    fields: list[b.Field] = [(27, 16), (28, 16), (4, 1), (139, 2), (10, 4), (2, 8), (1, 8)]
    rec = b.ip6("2001:db8::1") + b.ip6("2001:db8::2") + struct.pack("!BHIQQ", 58, 0x8000, 1, 4, 416)
    feed(d, [b.ipfix_message([b.set_(2, b.template(256, fields)), b.set_(256, rec)])])
    (f,) = flows(d)
    assert (f.src, f.dst, f.proto, f.sport, f.dport) == (
        "2001:db8::1",
        "2001:db8::2",
        58,
        0,
        0x8000,
    )
    assert (f.packets, f.bytes) == (4, 416)


def test_variable_length_fields() -> None:
    d = decoder()
    # applicationName (96) of variable length between the addresses and the counters
    fields: list[b.Field] = [(8, 4), (12, 4), (96, 0xFFFF), (4, 1), (2, 8), (1, 8)]
    short = b"\x03abc"
    long = b"\xff" + struct.pack("!H", 300) + b"x" * 300  # the 3-octet length form
    recs = [
        b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + short + struct.pack("!BQQ", 6, 5, 500),
        b.ip4("10.0.0.3") + b.ip4("10.0.0.4") + long + struct.pack("!BQQ", 17, 7, 700),
    ]
    feed(d, [b.ipfix_message([b.set_(2, b.template(256, fields)), b.set_(256, b"".join(recs))])])
    got = {f.src: (f.dst, f.proto, f.packets, f.bytes) for f in flows(d)}
    assert got == {"10.0.0.1": ("10.0.0.2", 6, 5, 500), "10.0.0.3": ("10.0.0.4", 17, 7, 700)}
    # a length running past the set: the whole message is dropped and counted
    bad = b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + b"\x40ab" + struct.pack("!BQQ", 6, 1, 1)
    feed(d, [b.ipfix_message([b.set_(256, bad)], seq=2)])
    assert d.table.counters[lc.DECODE_ERRORS] == 1
    assert flows(d) == []


def test_options_sampling_scales_and_marks_estimates() -> None:
    d = decoder()
    opt = b.options_template(500, [(149, 4)], [(34, 4)])  # scope: domain; samplingInterval
    orec = struct.pack("!II", 1, 100)
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 1000, 2)
    feed(d, [b.ipfix_message([b.set_(3, opt), b.set_(500, orec)], seq=0)])
    feed(d, [_msg([rec], seq=1)])
    (f,) = flows(d)
    assert (f.packets, f.bytes) == (200, 100_000)
    (ex,) = d.exporters()
    assert ex["sampling"] == 100 and ex["estimated"] is True
    assert d.table.counters[lc.RECORDS_SAMPLED] == 1
    assert d.table.counters[lc.OPTIONS_RECORDS] == 1
    assert d.table.counters[lc.RECORDS_LOST] == 0  # the options record counted in the sequence


def test_options_interface_names() -> None:
    d = decoder()
    opt = b.options_template(501, [(10, 4)], [(82, 0xFFFF)])
    orec = struct.pack("!I", 7) + b"\x08core\x1b[0m"  # an escape sequence in the name
    feed(d, [b.ipfix_message([b.set_(3, opt), b.set_(501, orec)])])
    feed(d, [_msg([b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1, ingress=7)], seq=1)])
    (f,) = flows(d)
    assert f.iface.startswith("192.0.2.1#1/core") and "\x1b" not in f.iface


def test_withdrawal_and_redefinition() -> None:
    d = decoder()
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1)
    feed(d, [_msg([rec], seq=0)])
    feed(d, [b.ipfix_message([b.set_(2, b.withdrawal(T))], seq=1)])
    feed(d, [_msg([rec], seq=1, with_template=False)])
    assert d.table.counters[lc.TEMPLATES_MISSING] == 1
    # redefined with another layout: (src, dst, packets 8, octets 8)
    t2 = b.template(T, [(8, 4), (12, 4), (2, 8), (1, 8)])
    r2 = b.ip4("10.9.9.9") + b.ip4("10.8.8.8") + struct.pack("!QQ", 3, 33)
    feed(d, [b.ipfix_message([b.set_(2, t2), b.set_(T, r2)], seq=2)])
    got = sorted((f.src, f.packets, f.bytes) for f in flows(d))
    assert got == [("10.0.0.1", 1, 10), ("10.9.9.9", 3, 33)]
    # withdraw all templates (id 2 in set 2)
    feed(d, [b.ipfix_message([b.set_(2, b.withdrawal(2))], seq=3)])
    assert d.exporters()[0]["templates"] == 0


def test_two_exporters_same_template_id_different_layouts() -> None:
    d = decoder()
    ta = b.template(256, [(8, 4), (12, 4), (2, 4), (1, 4)])
    tb = b.template(256, [(1, 8), (2, 8), (12, 4), (8, 4)])
    ra = b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + struct.pack("!II", 5, 50)
    rb = struct.pack("!QQ", 70, 7) + b.ip4("10.0.0.4") + b.ip4("10.0.0.3")
    feed(d, [b.ipfix_message([b.set_(2, ta)])], addr="198.51.100.1")
    feed(d, [b.ipfix_message([b.set_(2, tb)])], addr="198.51.100.2")
    feed(d, [b.ipfix_message([b.set_(256, ra)], seq=0)], addr="198.51.100.1")
    feed(d, [b.ipfix_message([b.set_(256, rb)], seq=0)], addr="198.51.100.2")
    got = {f.iface.split("#")[0]: (f.src, f.dst, f.packets, f.bytes) for f in flows(d)}
    assert got == {
        "198.51.100.1": ("10.0.0.1", "10.0.0.2", 5, 50),
        "198.51.100.2": ("10.0.0.3", "10.0.0.4", 7, 70),
    }


def test_sequence_gaps_counted_exactly() -> None:
    d = decoder()
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1)
    feed(d, [_msg([rec] * 3, seq=0)])  # next 3
    feed(d, [_msg([rec] * 2, seq=3, with_template=False)])  # next 5
    feed(d, [_msg([rec] * 1, seq=12, with_template=False)])  # 7 lost, next 13
    assert d.table.counters[lc.RECORDS_LOST] == 7
    feed(d, [_msg([rec] * 4, seq=5, with_template=False)])  # late: 4 of the 7 arrive
    assert d.table.counters[lc.RECORDS_LOST] == 3
    assert d.exporters()[0]["lost"] == 3
    # wrap-around: 2^32 - 2 with 4 records -> the next is 2
    d2 = decoder()
    feed(d2, [_msg([rec] * 4, seq=MODULUS - 2)])
    feed(d2, [_msg([rec], seq=2, with_template=False)])
    feed(d2, [_msg([rec], seq=5, with_template=False)])  # 2 lost (3, 4)
    assert d2.table.counters[lc.RECORDS_LOST] == 2
    # a restart (far behind) starts counting again, nothing lost
    feed(d2, [_msg([rec], seq=1_000_000_000, with_template=False)])
    assert d2.table.counters[lc.RECORDS_LOST] == 2 + (1_000_000_000 - 6)


def test_missing_template_counted_and_sequence_resyncs() -> None:
    d = decoder()
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1)
    feed(d, [_msg([rec] * 2, seq=0, with_template=False)])
    assert d.table.counters[lc.TEMPLATES_MISSING] == 1 and flows(d) == []
    feed(d, [_msg([rec], seq=2)])  # the record count of the first was unknown: no gap counted
    feed(d, [_msg([rec], seq=3, with_template=False)])
    assert d.table.counters[lc.RECORDS_LOST] == 0
    assert len(flows(d)) == 1


def test_udp_templates_expire_tcp_ones_do_not() -> None:
    d = decoder(template_lifetime=60.0)
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1)
    feed(d, [_msg([rec])], now=1000.0)
    feed(d, [_msg([rec], seq=1, with_template=False)], now=1059.0)
    feed(d, [_msg([rec], seq=2, with_template=False)], now=1061.0)
    assert d.table.counters[lc.TEMPLATES_MISSING] == 1
    assert sum(f.packets for f in flows(d)) == 2
    d2 = decoder(template_lifetime=60.0)
    feed(d2, [_msg([rec])], now=1000.0, tcp=True)
    feed(d2, [_msg([rec], seq=1, with_template=False)], now=5000.0, tcp=True)
    assert d2.table.counters[lc.TEMPLATES_MISSING] == 0


def test_malformed_messages_change_nothing() -> None:
    d = decoder()
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1)
    good_t = b.set_(2, b.template(T, b.V4_FIELDS))
    bad_set = struct.pack("!HH", T, 400)  # longer than the message
    cases = [
        b.ipfix_message([good_t, bad_set]),  # a template, then a broken set
        b.ipfix_message([good_t])[:-1],  # length field says more than there is
        b.ipfix_message([b.set_(2, struct.pack("!HH", 10, 1) + b"\0\x08\0\x04")]),  # id < 256
        b.ipfix_message([b.set_(3, struct.pack("!HHH", 600, 2, 3) + b"\0" * 8)]),  # scope > count
        b.ipfix_message([b.set_(2, struct.pack("!HH", 700, 2) + b"\0\x08\0\x04")]),  # cut short
        b.ipfix_message([b.set_(1, b"\0" * 4)]),  # reserved set id
        b.ipfix_message([b.set_(2, b.template(800, [(8, 0), (12, 0)]))]),  # zero-length records
        struct.pack("!HHIII", 9, 16, 0, 0, 0),  # not version 10
        b"\x00\x0a\x00",
    ]
    feed(d, cases)
    assert d.table.counters[lc.DECODE_ERRORS] == len(cases)
    assert d.exporters()[0]["templates"] == 0 and d.exporters()[0]["errors"] == len(cases)
    feed(d, [_msg([rec], with_template=False)])
    assert d.table.counters[lc.TEMPLATES_MISSING] == 1  # the broken message defined nothing


def test_exporters_are_capped_and_evicted_least_recent_first() -> None:
    d = decoder(max_exporters=4)
    msg = _msg([b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1)])
    for i in range(10):
        feed(d, [msg], addr=f"203.0.113.{i}")
    assert len(d.table) == 4
    assert d.table.counters[lc.EXPORTERS_EVICTED] == 6
    assert sorted(e["exporter"] for e in d.exporters()) == [f"203.0.113.{i}" for i in range(6, 10)]
    assert sum(f.packets for f in flows(d)) == 10  # what was decoded before an eviction counts


def test_templates_per_exporter_capped() -> None:
    d = decoder(max_templates=3)
    sets = [b.set_(2, b.template(256 + i, [(8, 4), (12, 4)])) for i in range(5)]
    feed(d, [b.ipfix_message(sets)])
    assert d.exporters()[0]["templates"] == 3
    assert d.table.counters[lc.TEMPLATES_DROPPED] == 2


def test_same_key_in_one_drain_is_one_flow() -> None:
    d = decoder()
    rec = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1, flags=0x02)
    rec2 = b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 200, 2, flags=0x10)
    feed(d, [_msg([rec, rec2]), _msg([rec], seq=2, with_template=False)])
    (f,) = flows(d)
    assert (f.packets, f.bytes, f.flags) == (4, 400, 0x12)


def test_interface_cap_overflow_counted() -> None:
    d = decoder(max_interfaces=2)
    recs = [b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 10, 1, ingress=i) for i in (1, 2, 3, 4)]
    feed(d, [_msg(recs)])
    got = {f.iface: f.packets for f in flows(d)}
    # if3 and if4 share the overflow index: one flow of both records
    assert got == {"(other)": 2, "192.0.2.1#1/if1": 1, "192.0.2.1#1/if2": 1}
    assert d.table.counters[lc.IFINDEX_EXHAUSTED] == 2


def test_scaled_counters_saturate_instead_of_wrapping() -> None:
    d = decoder()
    opt = b.options_template(500, [(149, 4)], [(34, 4)])
    fields: list[b.Field] = [(8, 4), (12, 4), (2, 8), (1, 8)]
    rec = b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + struct.pack("!QQ", 1 << 62, 3)
    sets = [
        b.set_(3, opt),
        b.set_(500, struct.pack("!II", 1, 1 << 20)),
        b.set_(2, b.template(256, fields)),
        b.set_(256, rec),
    ]
    feed(d, [b.ipfix_message(sets)])
    (f,) = flows(d)
    assert (f.packets, f.bytes) == ((1 << 64) - 1, 3 << 20)
