"""Sampled packet headers (sFlow raw packet header records) read down to the
flow key, many at once with numpy; and one at a time (packet()), the
reference the bulk reader must agree with (tests/listen/test_sflow_fast.py).

What is read, both ways: Ethernet with up to two VLAN tags (802.1Q, 802.1ad;
the first non-zero VLAN id), IPv4 (options skipped by IHL; a non-first
fragment has no ports), IPv6 without extension headers; TCP/UDP ports and
TCP flags, ICMP type/code (as "icmp", the kernel's dport). Header protocols
other than Ethernet (1), IPv4 (11) and IPv6 (12), other EtherTypes, and a
header cut before the addresses are not flows (None / not keyed): sampled
packets, not malformed datagrams.

Every read is checked against the header's own length: a header is never
read past its end (the bulk reader reads such bytes of the next record or
datagram, but masks each of them by these checks: never used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtop.listen.templates import Columns, Record

ETHERNET, IPV4, IPV6 = 1, 11, 12
VLAN_TYPES = (0x8100, 0x88A8)


def packet(h: bytes, proto: int) -> tuple[Record, int, int] | None:
    """(columns, IP version, IP length) of one sampled header; None: not a flow."""
    vlan = 0
    if proto == ETHERNET:
        if len(h) < 14:
            return None
        etype, pos = int.from_bytes(h[12:14], "big"), 14
        for _ in range(2):
            if etype not in VLAN_TYPES or len(h) < pos + 4:
                break
            vlan = vlan or int.from_bytes(h[pos : pos + 2], "big") & 0x0FFF
            etype, pos = int.from_bytes(h[pos + 2 : pos + 4], "big"), pos + 4
        if etype == 0x0800:
            proto, h = IPV4, h[pos:]
        elif etype == 0x86DD:
            proto, h = IPV6, h[pos:]
        else:
            return None
    rec: Record = {"vlan": vlan}
    if proto == IPV4 and len(h) >= 20 and h[0] >> 4 == 4:
        ihl = (h[0] & 0x0F) * 4
        ip_len, l4, frag = int.from_bytes(h[2:4], "big"), h[9], int.from_bytes(h[6:8], "big")
        rec.update(src4=h[12:16], dst4=h[16:20], tos=h[1], proto=l4)
        l4h = h[ihl:] if frag & 0x1FFF == 0 and ihl >= 20 else b""
        version = 4
    elif proto == IPV6 and len(h) >= 40 and h[0] >> 4 == 6:
        ip_len, l4 = 40 + int.from_bytes(h[4:6], "big"), h[6]
        tc = (int.from_bytes(h[0:2], "big") >> 4) & 0xFF
        rec.update(src6=h[8:24], dst6=h[24:40], tos=tc, proto=l4)
        l4h = h[40:]
        version = 6
    else:
        return None
    if l4 in (6, 17) and len(l4h) >= 4:
        rec["sport"] = int.from_bytes(l4h[0:2], "big")
        rec["dport"] = int.from_bytes(l4h[2:4], "big")
        if l4 == 6 and len(l4h) >= 14:
            rec["flags"] = l4h[13]
    elif l4 in (1, 58) and len(l4h) >= 2:
        rec["icmp"] = l4h[0] << 8 | l4h[1]
    for col in ("sport", "dport", "flags", "icmp"):
        rec.setdefault(col, 0)
    return rec, version, ip_len


@dataclass(slots=True)
class Parsed:
    """packet() over n headers: keyed rows (IP) and their columns (every row;
    a row that is not keyed has zeros), ipver 4/6, ip_len."""

    keyed: np.ndarray  # bool (n,)
    cols: Columns  # vlan, src4, dst4, src6, dst6, tos, proto, sport, dport, flags, icmp, ipver
    ip_len: np.ndarray  # uint64 (n,)


def parse_many(buf: bytes, offsets: np.ndarray, lengths: np.ndarray, protos: np.ndarray) -> Parsed:
    """The headers at buf[offsets[i] : offsets[i] + lengths[i]] of header protocol
    protos[i], read as packet() reads each (the same checks, every row at once)."""
    n = len(offsets)
    data = np.frombuffer(buf, dtype=np.uint8)
    if len(data) == 0:
        data = np.zeros(1, dtype=np.uint8)
    last = len(data) - 1
    base = offsets.astype(np.int64)
    hlen = lengths.astype(np.int64)

    # Byte k after pos of each header (pos: per row, from the header's start).
    # Reads past a header's end are clipped to the buffer and never used: every
    # value below is masked by a length check of its own.
    def b8(pos: np.ndarray, k: int) -> np.ndarray:
        out: np.ndarray = data[np.minimum(base + pos + k, last)].astype(np.int64)
        return out

    def b16(pos: np.ndarray, k: int) -> np.ndarray:
        out: np.ndarray = b8(pos, k) << 8 | b8(pos, k + 1)
        return out

    def span(pos: np.ndarray, k: int, size: int) -> np.ndarray:
        out: np.ndarray = data[np.minimum((base + pos + k)[:, None] + np.arange(size), last)]
        return out

    zero = np.zeros(n, dtype=np.int64)
    eth = (protos == ETHERNET) & (hlen >= 14)
    etype = np.where(eth, b16(zero, 12), 0)
    pos = np.where(eth, 14, 0)
    vlan = zero.copy()
    for _ in range(2):
        tag = eth & np.isin(etype, VLAN_TYPES) & (hlen >= pos + 4)
        vlan = np.where(tag & (vlan == 0), b16(pos, 0) & 0x0FFF, vlan)
        etype = np.where(tag, b16(pos, 2), etype)
        pos = np.where(tag, pos + 4, pos)
    kind4 = np.where(eth, etype == 0x0800, protos == IPV4)
    kind6 = np.where(eth, etype == 0x86DD, protos == IPV6)
    left = hlen - pos  # len(h) after the link layer
    first = b8(pos, 0)
    v4 = kind4 & (left >= 20) & (first >> 4 == 4)
    v6 = kind6 & (left >= 40) & (first >> 4 == 6)
    keyed = v4 | v6

    ihl = (first & 0x0F) * 4
    frag = b16(pos, 6)
    l4_at = np.where(v6, pos + 40, pos + ihl)
    l4_left = np.where(v6, left - 40, np.where((frag & 0x1FFF == 0) & (ihl >= 20), left - ihl, 0))
    l4_left = np.where(keyed, np.maximum(l4_left, 0), 0)
    l4 = np.where(v6, b8(pos, 6), np.where(v4, b8(pos, 9), 0))
    ip_len = np.where(v6, 40 + b16(pos, 4), np.where(v4, b16(pos, 2), 0))
    tos = np.where(v6, (b16(pos, 0) >> 4) & 0xFF, np.where(v4, b8(pos, 1), 0))

    ports = np.isin(l4, (6, 17)) & (l4_left >= 4)
    icmp_ok = np.isin(l4, (1, 58)) & (l4_left >= 2)
    flags_ok = ports & (l4 == 6) & (l4_left >= 14)
    u64 = np.uint64
    cols: Columns = {
        "vlan": np.where(keyed, vlan, 0).astype(u64),
        "tos": tos.astype(u64),
        "proto": l4.astype(u64),
        "sport": np.where(ports, b16(l4_at, 0), 0).astype(u64),
        "dport": np.where(ports, b16(l4_at, 2), 0).astype(u64),
        "flags": np.where(flags_ok, b8(l4_at, 13), 0).astype(u64),
        "icmp": np.where(icmp_ok, b16(l4_at, 0), 0).astype(u64),
        "ipver": np.where(v6, 6, 4).astype(u64),
        "src4": np.where(v4[:, None], span(pos, 12, 4), 0).astype(np.uint8),
        "dst4": np.where(v4[:, None], span(pos, 16, 4), 0).astype(np.uint8),
        "src6": np.where(v6[:, None], span(pos, 8, 16), 0).astype(np.uint8),
        "dst6": np.where(v6[:, None], span(pos, 24, 16), 0).astype(np.uint8),
    }
    return Parsed(keyed, cols, ip_len.astype(u64))
