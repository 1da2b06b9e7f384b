"""DNS responses (dnspython's wire format) to answers: names, chains, TTLs,
and every malformed or cut message a status, never an exception."""

from __future__ import annotations

import ipaddress
import random

import dns.message
import dns.rrset

from flowtop.wirenames.dnsanswers import (
    TTL_CAP,
    TTL_FLOOR,
    Status,
    clamp_ttl,
    parse_response,
    strip_tcp_length,
)
from tests.unit.wirenames_bytes import dns_response


def _addrs(answers: list) -> set[str]:  # type: ignore[type-arg]
    return {str(ipaddress.ip_address(a.address)) for a in answers}


def test_a_records_of_the_queried_name() -> None:
    wire = dns_response(
        "Www.Example.COM", [("www.example.com.", 120, "A", ["192.0.2.1", "192.0.2.2"])]
    )
    got, st = parse_response(wire)
    assert st is Status.OK
    assert _addrs(got) == {"192.0.2.1", "192.0.2.2"}
    assert {(a.qname, a.cname_end, a.ttl, a.version) for a in got} == {
        ("www.example.com", None, 120, 4)
    }


def test_cname_chain_gives_queried_name_chain_end_and_the_smallest_ttl() -> None:
    wire = dns_response(
        "shop.example", [
            ("shop.example.", 300, "CNAME", ["shop.example.cdn.test."]),
            ("shop.example.cdn.test.", 45, "CNAME", ["e1234.edge.test."]),
            ("e1234.edge.test.", 90, "AAAA", ["2001:db8::7"]),
            ("e1234.edge.test.", 90, "A", ["198.51.100.7"]),
            ("unrelated.test.", 90, "A", ["203.0.113.9"]),  # not on the chain
        ],
    )  # fmt: skip
    got, st = parse_response(wire)
    assert st is Status.OK
    assert _addrs(got) == {"2001:db8::7", "198.51.100.7"}
    assert {(a.qname, a.cname_end, a.ttl) for a in got} == {("shop.example", "e1234.edge.test", 45)}
    assert {a.version for a in got} == {4, 6}


def test_chain_loop_and_no_address_give_nothing() -> None:
    loop = dns_response("a.test", [("a.test.", 60, "CNAME", ["b.test."]),
                                   ("b.test.", 60, "CNAME", ["a.test."])])  # fmt: skip
    assert parse_response(loop) == ([], Status.OK)
    mx = dns_response("m.test", [("m.test.", 60, "MX", ["10 mail.test."])], qtype="MX")
    assert parse_response(mx) == ([], Status.OK)


def test_queries_and_errors_are_not_responses() -> None:
    q = dns.message.make_query("x.test", "A").to_wire()
    assert parse_response(q) == ([], Status.NOT_RESPONSE)
    r = dns.message.make_response(dns.message.make_query("x.test", "A"))
    r.set_rcode(3)  # NXDOMAIN
    assert parse_response(r.to_wire()) == ([], Status.NOT_RESPONSE)


def test_every_cut_of_a_response_is_malformed_or_fewer_answers_never_raises() -> None:
    wire = dns_response("c.test", [("c.test.", 60, "CNAME", ["d.test."]),
                                   ("d.test.", 60, "A", ["192.0.2.5", "192.0.2.6"])])  # fmt: skip
    full, _ = parse_response(wire)
    assert len(full) == 2
    for n in range(len(wire)):
        got, st = parse_response(wire[:n])
        assert st is Status.MALFORMED, n
        assert got == []


def test_garbage_and_hostile_pointers_are_malformed() -> None:
    rng = random.Random(16)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        parse_response(blob)  # must not raise
    # A response whose question name is a pointer to itself.
    head = bytes.fromhex("1234 8180 0001 0001 0000 0000".replace(" ", ""))
    assert parse_response(head + b"\xc0\x0c\x00\x01\x00\x01") == ([], Status.MALFORMED)
    # A forward pointer.
    assert parse_response(head + b"\xc0\x20\x00\x01\x00\x01" + b"\0" * 40)[1] is Status.MALFORMED


def test_hostile_names_come_out_clean() -> None:
    evil = "\x1b[31mred\x1b]52;c;QUJD\x07\u202eevil.test"
    r = dns.message.make_response(dns.message.make_query("x.test", "A"))
    # dnspython escapes such bytes in its text form: build the wire by hand.
    label = evil.encode()
    wire = bytearray(r.to_wire())
    qname = b"".join(bytes([len(p)]) + p for p in label.split(b".")) + b"\0"
    wire = wire[:12] + qname + b"\x00\x01\x00\x01"
    wire[6:8] = b"\x00\x01"  # one answer: a pointer to the question's name
    wire += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    (a,), st = parse_response(bytes(wire))
    assert st is Status.OK
    assert a.qname == "redevil.test"
    long = ".".join(["x" * 63] * 4)[:250]
    w2 = dns_response(long, [(long + ".", 60, "A", ["192.0.2.9"])])
    (b,), _ = parse_response(w2)
    assert b.qname == long  # 250 characters: kept whole


def test_tcp_length_prefix() -> None:
    wire = dns_response("t.test", [("t.test.", 60, "A", ["192.0.2.3"])])
    framed = len(wire).to_bytes(2, "big") + wire
    assert strip_tcp_length(framed, len(framed)) == (wire, Status.OK)
    # the response runs on in the next segment
    assert strip_tcp_length(framed[:20], 20) == (None, Status.UNPARSED_TCP)
    # in the packet, but the capture was cut
    assert strip_tcp_length(framed[:20], len(framed)) == (None, Status.MALFORMED)
    assert strip_tcp_length(b"\x00", 1) == (None, Status.MALFORMED)


def test_ttl_floor_and_cap() -> None:
    assert clamp_ttl(0) == TTL_FLOOR and clamp_ttl(86400) == TTL_CAP and clamp_ttl(600) == 600


def test_agrees_with_dnspython_on_many_responses() -> None:
    rng = random.Random(7)
    for i in range(300):
        name = f"h{i}.z{rng.randrange(9)}.test"
        v4 = [
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{j}" for j in range(rng.randrange(1, 4))
        ]
        ttl = rng.randrange(0, 100000)
        rrsets = [(name + ".", ttl, "A", v4)]
        if i % 2:
            rrsets.insert(0, (name + ".", ttl + 5, "CNAME", [f"edge{i}.cdn.test."]))
            rrsets[1] = (f"edge{i}.cdn.test.", ttl, "A", v4)
        wire = dns_response(name, rrsets)
        msg = dns.message.from_wire(wire)  # the ground truth
        want = {str(rd.address) for rs in msg.answer if rs.rdtype == 1 for rd in rs}
        got, st = parse_response(wire)
        assert st is Status.OK and _addrs(got) == want
        assert {a.ttl for a in got} == {min(rs.ttl for rs in msg.answer)}
