"""Mutation fuzz: 100k damaged messages from a few valid ones, through all four
decoders (IPFIX, NetFlow v9, v5, sFlow v5). None may raise; each is either
applied or counted as malformed (listen_messages + listen_decode_errors ==
messages sent); state stays within its caps; flows() turns whatever was
accepted into batches."""

from __future__ import annotations

import random
import struct
import time

from flowtop.listen import counters as lc
from tests.listen import build as b
from tests.listen.decoding import decoder, feed

N = 100_000


def _seeds() -> list[tuple[str, bytes]]:
    t = b.set_(
        2, b.template(300, b.V4_FIELDS) + b.template(301, [(8, 4), (12, 4), (96, 0xFFFF), (2, 8)])
    )
    opt = b.set_(3, b.options_template(500, [(149, 4)], [(34, 4), (82, 0xFFFF)]))
    data = b.set_(300, b.v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1) * 3, pad=2)
    var = b.set_(301, b.ip4("10.0.0.3") + b.ip4("10.0.0.4") + b"\x02ab" + struct.pack("!Q", 5))
    odata = b.set_(500, struct.pack("!II", 1, 10) + b"\x03eth")
    ipfix = b.ipfix_message([t, opt, odata, data, var], seq=7)
    v9t = b.set_(0, b.template(260, [(8, 4), (12, 4), (4, 1), (2, 4), (1, 4), (22, 4)]))
    v9o = b.set_(1, b.v9_options_template(270, [(2, 4)], [(34, 4)]))
    v9d = b.set_(
        260, (b.ip4("10.0.0.1") + b.ip4("10.0.0.2") + struct.pack("!BIII", 17, 1, 2, 3)) * 2
    )
    v9 = b.v9_packet([v9t, v9o, b.set_(270, struct.pack("!II", 1, 4)), v9d], seq=3)
    v5 = b.v5_packet([b.v5_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)] * 2, seq=9)
    raw = b.sflow_raw_record(b.eth_ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, 10, vlan=5), 60)
    raw6 = b.sflow_raw_record(b.eth_ipv6_tcp("2001:db8::1", "2001:db8::2", 1, 2, 10, 2), 90)
    ifc = b.sflow_if_counters(3, 10_000, (10, 1, 0), 20_000, (20, 0, 1))
    sfl = b.sflow_datagram(
        [
            b.sflow_flow_sample([raw, raw6], rate=10),
            b.sflow_flow_sample([raw], 5, expanded=True),
            b.sflow_counter_sample([ifc], seq=2),
        ],
        seq=4,
    )
    return [("ipfix", ipfix), ("netflow", v9), ("netflow", v5), ("sflow", sfl)]


def _mutate(rng: random.Random, msg: bytes) -> bytes:
    m = bytearray(msg)
    kind = rng.randrange(6)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 4)):
            m[rng.randrange(len(m))] = rng.randrange(256)
    elif kind == 1:  # cut
        del m[rng.randrange(len(m)) :]
    elif kind == 2:  # extend
        m += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    elif kind == 3:  # a 16-bit field (a length, a count, an id) set to an edge value
        at = rng.randrange(0, len(m) - 1)
        m[at : at + 2] = struct.pack("!H", rng.choice((0, 1, 3, 4, 255, 256, 0x7FFF, 0xFFFF)))
    elif kind == 4:  # splice a part of the message into another place
        a, c = sorted(rng.randrange(len(m)) for _ in range(2))
        at = rng.randrange(len(m))
        m[at:at] = m[a:c]
    else:  # the header's length made to agree with a cut message (IPFIX)
        del m[rng.randrange(16, len(m)) :]
        if m[:2] == b"\x00\x0a":
            m[2:4] = struct.pack("!H", len(m))
    return bytes(m)


def test_100k_mutated_messages_never_raise_and_are_all_counted() -> None:
    rng = random.Random(17)
    seeds = _seeds()
    d = decoder(max_exporters=64, max_templates=16)
    t0 = time.monotonic()
    sent = 0
    for i in range(N):
        proto, msg = seeds[i % len(seeds)]
        batch = [msg] if i % 97 == 0 else [_mutate(rng, msg)]
        feed(d, batch, addr=f"198.51.100.{i % 80}", protocol=proto)
        sent += len(batch)
        if i % 20000 == 0:
            d.flows(time.monotonic_ns())
    d.flows(time.monotonic_ns())
    c = d.table.counters
    assert c[lc.MESSAGES] + c[lc.DECODE_ERRORS] == sent
    assert c[lc.DECODE_ERRORS] > N // 4  # most mutations break something...
    assert c[lc.MESSAGES] > N // 100  # ...and the intact ones still decode
    assert len(d.table) <= 64 and c[lc.EXPORTERS_EVICTED] > 0
    for ex in d.table:
        assert ex.template_count <= 16
        assert len(ex.domains) <= 16
    assert time.monotonic() - t0 < 60


def test_every_cut_ipfix_message_is_counted() -> None:
    _, msg = _seeds()[0]
    d = decoder()
    cuts = [msg[:n] for n in range(len(msg))]  # the header's length no longer agrees
    feed(d, cuts)
    assert d.table.counters[lc.DECODE_ERRORS] == len(cuts)
    assert d.table.counters[lc.MESSAGES] == 0
