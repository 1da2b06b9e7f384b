"""The bulk reader of sampled headers (headers.parse_many, numpy over every
row of a drain) against the one-at-a-time one (headers.packet): the same
flows, the same counters, on the bench's datagrams, on hand-built headers of
every kind cut at every length, and on mutated datagrams."""

from __future__ import annotations

import random
import struct

import numpy as np

from flowtop.listen import counters as lc
from flowtop.listen import headers
from flowtop.listen.collector import Decoder
from tests.listen import build as b
from tests.listen.decoding import decoder, feed, flows
from tests.listen.test_fuzz import _mutate


def _pair() -> tuple[Decoder, Decoder]:
    bulk, single = decoder(), decoder()
    bulk.sflow_bulk, single.sflow_bulk = True, False
    return bulk, single


def _same(msgs: list[bytes], addr: str = "192.0.2.1") -> list[object]:
    bulk, single = _pair()
    feed(bulk, msgs, addr=addr, protocol="sflow")
    feed(single, msgs, addr=addr, protocol="sflow")
    got, want = flows(bulk), flows(single)
    assert got == want
    assert bulk.table.counters == single.table.counters
    assert bulk.exporters() == single.exporters()
    return got


def _ip4_tcp(src: str, dst: str, ihl: int = 5, frag: int = 0, flags: int = 0x12) -> bytes:
    opts = b"\x01" * (4 * (ihl - 5))
    ip = struct.pack("!BBHHHBBH", 0x40 | ihl, 0x10, 4 * ihl + 20 + 30, 7, frag, 64, 6, 0)
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 1, 0x50, flags, 1000, 0, 0)
    return ip + b.ip4(src) + b.ip4(dst) + opts + tcp


def _ip4_icmp(src: str, dst: str) -> bytes:
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 28, 0, 0, 64, 1, 0) + b.ip4(src) + b.ip4(dst)
    return ip + struct.pack("!BBHHH", 8, 0, 0, 1, 1)


def _ip6_icmp(src: str, dst: str) -> bytes:
    ip = struct.pack("!IHBB", 0x6_0A_00000, 8, 58, 64) + b.ip6(src) + b.ip6(dst)
    return ip + struct.pack("!BBHHH", 128, 0, 0, 1, 1)


def _eth(payload: bytes, etype: int, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    out = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
    for tpid, vid in tags:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", etype) + payload


def _headers() -> list[tuple[bytes, int]]:
    """(header, header protocol): every kind the readers tell apart."""
    v4 = _ip4_tcp("10.0.0.1", "10.0.0.2")
    v6 = b.eth_ipv6_tcp("2001:db8::1", "2001:db8::2", 40000, 443, 100, 0x18)[14:]
    return [
        (b.eth_ipv4_udp("10.0.0.1", "10.1.0.1", 1000, 53, 100), 1),
        (b.eth_ipv4_udp("10.0.0.1", "10.1.0.1", 1000, 53, 100, vlan=12), 1),
        (b.eth_ipv6_tcp("2001:db8::1", "2001:db8::2", 40000, 443, 100, 0x18), 1),
        (_eth(v4, 0x0800, ((0x88A8, 0), (0x8100, 33))), 1),  # QinQ, outer VLAN 0
        (_eth(v4, 0x0800, ((0x88A8, 7), (0x8100, 33))), 1),
        (_eth(v4, 0x0800, ((0x8100, 5), (0x8100, 6), (0x8100, 7))), 1),  # a third tag
        (_eth(_ip4_tcp("10.0.0.3", "10.0.0.4", ihl=15), 0x0800), 1),  # 40 bytes of options
        (_eth(_ip4_tcp("10.0.0.3", "10.0.0.4", ihl=4), 0x0800), 1),  # IHL too small
        (_eth(_ip4_tcp("10.0.0.5", "10.0.0.6", frag=0x2000), 0x0800), 1),  # first fragment
        (_eth(_ip4_tcp("10.0.0.5", "10.0.0.6", frag=0x00B9), 0x0800), 1),  # a later one
        (_eth(_ip4_icmp("10.0.0.7", "10.0.0.8"), 0x0800), 1),
        (_eth(_ip6_icmp("2001:db8::7", "2001:db8::8"), 0x86DD), 1),
        (_eth(v6, 0x0800), 1),  # IPv6 behind the IPv4 EtherType
        (_eth(v4, 0x86DD), 1),
        (_eth(b"\0" * 40, 0x0806), 1),  # ARP
        (v4, 11),
        (v6, 12),
        (v4, 12),
        (v6, 1),
        (v4, 7),  # PPP: not read
    ]


def test_each_header_cut_at_every_length_reads_the_same() -> None:
    hs, protos = [], []
    for h, proto in _headers():
        for n in range(len(h) + 1):
            hs.append(h[:n])
            protos.append(proto)
    _compare(hs, protos)


def test_random_bytes_behind_known_prefixes_read_the_same() -> None:
    rng = random.Random(5)
    hs, protos = [], []
    for _ in range(20_000):
        h, proto = rng.choice(_headers())
        m = bytearray(h[: rng.randint(0, len(h))])
        for _ in range(rng.randint(0, 6)):
            if m:
                m[rng.randrange(len(m))] = rng.randrange(256)
        hs.append(bytes(m))
        protos.append(proto)
    _compare(hs, protos)


def _compare(hs: list[bytes], protos: list[int]) -> None:
    # each header behind some junk and followed by more (the next record's
    # bytes): the bulk reader must not read past a header's end
    buf, offs = b"", []
    for h in hs:
        buf += b"\xee" * 3
        offs.append(len(buf))
        buf += h
    buf += b"\xff" * 200
    p = headers.parse_many(
        buf,
        np.array(offs),
        np.array([len(h) for h in hs]),
        np.array(protos),
    )
    keyed = 0
    for i, (h, proto) in enumerate(zip(hs, protos, strict=True)):
        want = headers.packet(h, proto)
        assert bool(p.keyed[i]) == (want is not None), (i, h.hex(), proto)
        if want is None:
            continue
        keyed += 1
        rec, version, ip_len = want
        assert int(p.ip_len[i]) == ip_len and int(p.cols["ipver"][i]) == version
        for col, v in rec.items():
            got = p.cols[col][i]
            assert (bytes(got) if isinstance(v, bytes) else int(got)) == v, (col, h.hex())
    assert 0 < keyed < len(hs)  # both kinds were there


def test_the_bench_datagrams_decode_the_same() -> None:
    raws = [
        b.sflow_raw_record(b.eth_ipv4_udp(f"10.0.0.{i}", "10.1.0.1", 1000 + i, 53, 100), 146)
        for i in range(8)
    ]
    dg = b.sflow_datagram([b.sflow_flow_sample([r], rate=64) for r in raws])
    bulk, single = _pair()
    for d in (bulk, single):
        for i in range(200):
            feed(d, [dg], addr=f"10.9.0.{i % 50}", protocol="sflow")
    got, want = flows(bulk), flows(single)
    assert got == want and len(got) == 8 * 50
    assert {(f.packets, f.bytes) for f in got} == {(4 * 64, 4 * 64 * 128)}  # 4 datagrams each
    assert bulk.table.counters == single.table.counters
    assert bulk.table.counters[lc.RECORDS] == 1600


def test_mixed_datagrams_of_several_exporters_decode_the_same() -> None:
    samples = []
    for i, (h, proto) in enumerate(_headers()):
        rec = b.sflow_raw_record(h, len(h) + 4, proto=proto)
        samples.append(b.sflow_flow_sample([rec], rate=1 + i % 3, in_if=i % 2, out_if=9))
    msgs = [
        b.sflow_datagram(samples[:7], seq=1, sub_agent=0),
        b.sflow_datagram(samples[7:14], seq=2, sub_agent=0),
        b.sflow_datagram(samples[14:], seq=1, sub_agent=3),
        b.sflow_datagram([samples[0], samples[1]], seq=9, sub_agent=3),  # rate 1 and 2
    ]
    got = _same(msgs)
    assert len(got) > 10


def test_mutated_datagrams_decode_the_same() -> None:
    from tests.listen.test_fuzz import _seeds

    (_, seed) = next(s for s in _seeds() if s[0] == "sflow")
    rng = random.Random(11)
    bulk, single = _pair()
    for i in range(1500):
        batch = [seed if j == 0 else _mutate(rng, seed) for j in range(40)]
        addr = f"198.51.100.{i % 7}"
        feed(bulk, batch, addr=addr, protocol="sflow")
        feed(single, batch, addr=addr, protocol="sflow")
        if i % 200 == 0:
            assert flows(bulk) == flows(single)
    assert flows(bulk) == flows(single)
    assert bulk.table.counters == single.table.counters
    c = bulk.table.counters
    assert c[lc.MESSAGES] + c[lc.DECODE_ERRORS] == 1500 * 40
    assert c[lc.DECODE_ERRORS] > 0 and c[lc.RECORDS] > 1500
