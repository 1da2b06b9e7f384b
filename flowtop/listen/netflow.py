"""NetFlow v9 (RFC 3954) and v5 export packets, told apart by their version."""

from __future__ import annotations

import struct

from flowtop.listen import message
from flowtop.listen.exporters import Exporter, ExporterTable
from flowtop.listen.flows import Pending

V9_HEADER = struct.Struct("!HHIIII")  # version, count, sysUptime ms, unix secs, sequence, source id
V5_HEADER = struct.Struct("!HHIIIIBBH")  # + unix nsecs, flow sequence, engine type/id, sampling
V5_MAX_RECORDS = 30


def decode(msg: bytes, ex: Exporter, table: ExporterTable, pending: Pending, now: float) -> bool:
    """A v9 or v5 packet from ex: applied (True) or malformed, counted and dropped."""
    version = int.from_bytes(msg[:2], "big") if len(msg) >= 2 else 0
    try:
        if version == 9:
            return _v9(msg, ex, table, pending, now)
        if version == 5:
            return _v5(msg, ex, table, pending)
        raise message.Malformed(f"version {version}")
    except message.Malformed:
        table.error(ex)
        return False


def _v9(msg: bytes, ex: Exporter, table: ExporterTable, pending: Pending, now: float) -> bool:
    if len(msg) < V9_HEADER.size:
        raise message.Malformed("short header")
    _v, _count, uptime, unix_s, seq, source_id = V9_HEADER.unpack_from(msg)
    d = table.domain(ex, source_id)
    if d is None:
        raise message.Malformed("too many source ids")
    p = message.read(message.NETFLOW9, msg, V9_HEADER.size, ex, d, table, now, False)
    message.commit(p, ex, d, table)
    export_ms = unix_s * 1000
    for t, offset, count in p.fixed:
        pending.fixed(ex, source_id, d, t, msg, offset, count, export_ms, uptime)
    # v9 sequence numbers count export packets (RFC 3954 §5.1).
    table.sequence(ex, d, seq, 1)
    ex.protocol = "netflow9"
    ex.messages += 1
    table.counters["listen_messages"] += 1
    return True


def _v5(msg: bytes, ex: Exporter, table: ExporterTable, pending: Pending) -> bool:
    if len(msg) < V5_HEADER.size:
        raise message.Malformed("short header")
    _v, count, uptime, unix_s, unix_ns, seq, etype, eid, sampling = V5_HEADER.unpack_from(msg)
    if not 1 <= count <= V5_MAX_RECORDS or len(msg) != V5_HEADER.size + count * 48:
        raise message.Malformed(f"{count} records in {len(msg)} bytes")
    d = table.domain(ex, etype << 8 | eid)
    if d is None:
        raise message.Malformed("too many engines")
    interval = sampling & 0x3FFF  # the top two bits are the sampling mode
    d.sampling = interval if interval > 1 else 1
    export_ms = unix_s * 1000 + unix_ns // 1_000_000
    pending.v5(ex, etype << 8 | eid, d, msg, V5_HEADER.size, count, export_ms, uptime)
    table.sequence(ex, d, seq, count)  # v5 sequence numbers count flows
    ex.protocol = "netflow5"
    ex.messages += 1
    table.counters["listen_messages"] += 1
    return True
