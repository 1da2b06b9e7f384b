"""IPFIX messages (RFC 7011): the header, then message.read/commit over its sets."""

from __future__ import annotations

import struct

from flowtop.listen import message
from flowtop.listen.exporters import Exporter, ExporterTable
from flowtop.listen.flows import Pending

VERSION = 10
HEADER = struct.Struct("!HHIII")  # version, length, export time (s), sequence, domain id


def decode(
    msg: bytes,
    ex: Exporter,
    table: ExporterTable,
    pending: Pending,
    now: float,
    tcp: bool = False,
) -> bool:
    """One IPFIX message from ex: applied (True) or malformed, counted and dropped."""
    try:
        if len(msg) < HEADER.size:
            raise message.Malformed("short header")
        version, length, export_s, seq, domain_id = HEADER.unpack_from(msg)
        if version != VERSION or length != len(msg):
            raise message.Malformed(f"version {version}, length {length} of {len(msg)}")
        d = table.domain(ex, domain_id)
        if d is None:
            raise message.Malformed("too many observation domains")
        p = message.read(message.IPFIX, msg, HEADER.size, ex, d, table, now, tcp)
    except message.Malformed:
        table.error(ex)
        return False
    message.commit(p, ex, d, table)
    export_ms = export_s * 1000
    for t, offset, count in p.fixed:
        pending.fixed(ex, domain_id, d, t, msg, offset, count, export_ms, None)
    for _t, recs in p.variable:
        pending.variable(ex, domain_id, d, recs, export_ms, None)
    # Sequence numbers count data records, options ones too (RFC 7011 §3.1).
    table.sequence(ex, d, seq, None if p.missing else p.records)
    ex.protocol = "ipfix"
    ex.messages += 1
    table.counters["listen_messages"] += 1
    return True
