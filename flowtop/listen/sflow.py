"""sFlow v5 datagrams (sflow.org sFlow Version 5): flow samples as flows.

Each flow sample's raw packet header record (format 1) is read down to the
flow key (Ethernet with up to two VLAN tags, IPv4, IPv6 without extension
headers; TCP/UDP ports and TCP flags, ICMP type/code in dport as the kernel
keys it) and counts as `sampling rate` packets of `rate x IP length` bytes:
an estimate, marked like any sampled record (exporters.DomainState.scaled).
Flow samples (format 1) and expanded ones (format 3) are read; counter
samples, other record formats and enterprise-specific structures are
skipped by their length. The exporter is the datagram's source address, the
domain its sub-agent id; sequence numbers count datagrams (lost ones are
counted as listen_records_lost). Every length is checked: a malformed
datagram is dropped whole.
"""

from __future__ import annotations

import struct

from flowtop.listen import counters as lc
from flowtop.listen.exporters import Exporter, ExporterTable
from flowtop.listen.flows import Pending
from flowtop.listen.message import Malformed
from flowtop.listen.templates import Record

VERSION = 5
_U32 = struct.Struct("!I")
_FLOW = struct.Struct("!IIIIIIII")  # seq, source id, rate, pool, drops, input, output, records
_XFLOW = struct.Struct("!IIIIIIIIIII")  # expanded: seq, type, index, rate, pool, drops, in fmt,
#                                         in value, out fmt, out value, records
_RAW = struct.Struct("!IIII")  # header protocol, frame length, stripped, header length
MAX_SAMPLES = 1024  # per datagram (a 64 KiB datagram holds far fewer real ones)
MAX_RECORDS = 64  # flow records per sample
_ETH, _IPV4, _IPV6 = 1, 11, 12
_VLAN_TYPES = (0x8100, 0x88A8)


def decode(msg: bytes, ex: Exporter, table: ExporterTable, pending: Pending) -> bool:
    """One sFlow v5 datagram from ex: applied (True) or malformed, counted and dropped."""
    try:
        recs, sub_agent, seq, rate_max = _read(msg)
        d = table.domain(ex, sub_agent)
        if d is None:
            raise Malformed("too many sub-agents")
    except (Malformed, struct.error):
        table.error(ex)
        return False
    for version in (4, 6):
        part = [r for r, v in recs if v == version]
        if part:
            pending.variable(ex, sub_agent, d, part, 0, None)
    if rate_max > 1:
        d.scaled = rate_max
        table.counters[lc.RECORDS_SAMPLED] += len(recs)
    table.sequence(ex, d, seq, 1)  # datagram sequence numbers
    ex.protocol = "sflow5"
    ex.messages += 1
    table.counters[lc.MESSAGES] += 1
    return True


def _read(msg: bytes) -> tuple[list[tuple[Record, int]], int, int, int]:
    n = len(msg)
    pos = 0

    def u32() -> int:
        nonlocal pos
        if pos + 4 > n:
            raise Malformed("cut short")
        (v,) = _U32.unpack_from(msg, pos)
        pos += 4
        return int(v)

    if u32() != VERSION:
        raise Malformed("not sFlow v5")
    addr_type = u32()
    if addr_type not in (1, 2):
        raise Malformed(f"agent address type {addr_type}")
    pos += 4 if addr_type == 1 else 16
    sub_agent, seq, _uptime, count = u32(), u32(), u32(), u32()
    if count > MAX_SAMPLES:
        raise Malformed(f"{count} samples")
    out: list[tuple[Record, int]] = []
    rate_max = 1
    for _ in range(count):
        tag, length = u32(), u32()
        start, end = pos, pos + length
        if end > n or length % 4:
            raise Malformed("sample length")
        if tag >> 12 == 0 and tag & 0xFFF in (1, 3):
            rate_max = max(rate_max, _sample(msg, start, end, tag & 0xFFF == 3, out))
        pos = end
    if pos != n:
        raise Malformed("bytes after the last sample")
    return out, sub_agent, seq, rate_max


def _sample(msg: bytes, pos: int, end: int, expanded: bool, out: list[tuple[Record, int]]) -> int:
    head = _XFLOW if expanded else _FLOW
    if pos + head.size > end:
        raise Malformed("flow sample cut short")
    f = head.unpack_from(msg, pos)
    if expanded:
        rate, in_if, out_if, nrec = f[3], f[7], f[9], f[10]
    else:  # the top two bits of input/output say what the rest is; 0: an ifIndex
        rate, nrec = f[2], f[7]
        in_if = f[5] & 0x3FFFFFFF if not f[5] >> 30 else 0
        out_if = f[6] & 0x3FFFFFFF if not f[6] >> 30 else 0
    if nrec > MAX_RECORDS:
        raise Malformed(f"{nrec} flow records")
    rate = max(rate, 1)
    pos += head.size
    for _ in range(nrec):
        if pos + 8 > end:
            raise Malformed("flow record header cut short")
        tag, length = struct.unpack_from("!II", msg, pos)
        body, rend = pos + 8, pos + 8 + length
        if rend > end or length % 4:
            raise Malformed("flow record length")
        if tag == 1:  # raw packet header
            if length < _RAW.size:
                raise Malformed("raw header record cut short")
            proto, _frame, _stripped, hlen = _RAW.unpack_from(msg, body)
            if _RAW.size + hlen > length:
                raise Malformed("raw header length")
            hdr = msg[body + _RAW.size : body + _RAW.size + hlen]
            got = _packet(hdr, proto)
            if got is not None:
                rec, version, ip_len = got
                rec.update(packets=rate, bytes=rate * ip_len, in_if=in_if, out_if=out_if)
                rec["direction"] = 0 if in_if else 1
                out.append((rec, version))
        pos = rend
    if pos != end:
        raise Malformed("bytes after the last flow record")
    return int(rate)


def _packet(h: bytes, proto: int) -> tuple[Record, int, int] | None:
    """(columns, IP version, IP length) of a sampled header; None: not IP or cut
    before the addresses (sampled, not malformed: such a packet is not a flow)."""
    vlan = 0
    if proto == _ETH:
        if len(h) < 14:
            return None
        etype, pos = int.from_bytes(h[12:14], "big"), 14
        for _ in range(2):
            if etype not in _VLAN_TYPES or len(h) < pos + 4:
                break
            vlan = vlan or int.from_bytes(h[pos : pos + 2], "big") & 0x0FFF
            etype, pos = int.from_bytes(h[pos + 2 : pos + 4], "big"), pos + 4
        if etype == 0x0800:
            proto, h = _IPV4, h[pos:]
        elif etype == 0x86DD:
            proto, h = _IPV6, h[pos:]
        else:
            return None
    rec: Record = {"vlan": vlan}
    if proto == _IPV4 and len(h) >= 20 and h[0] >> 4 == 4:
        ihl = (h[0] & 0x0F) * 4
        ip_len, l4, frag = int.from_bytes(h[2:4], "big"), h[9], int.from_bytes(h[6:8], "big")
        rec.update(src4=h[12:16], dst4=h[16:20], tos=h[1], proto=l4)
        l4h = h[ihl:] if frag & 0x1FFF == 0 and ihl >= 20 else b""
        version = 4
    elif proto == _IPV6 and len(h) >= 40 and h[0] >> 4 == 6:
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
