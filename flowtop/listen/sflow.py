"""sFlow v5 datagrams (sflow.org sFlow Version 5): flow samples as flows,
counter samples as interface counters.

decode() walks one datagram with every length checked; a malformed datagram
is counted and dropped whole (nothing of it is kept). What a sound one
carries goes into the drain's Batch:

- flow samples (format 1, expanded 3): each raw packet header record
  (format 1) is a row (where its header is, its header protocol, the
  sample's rate and interfaces). Batch.flush() reads the rows' headers down
  to the flow key (headers.py: all at once with numpy, or one at a time for
  a handful) and each IP one counts as `sampling rate` packets of `rate x IP
  length` bytes: an estimate, marked like any sampled record
  (exporters.DomainState.scaled). Other flow record formats are skipped by
  their length.
- counter samples (format 2, expanded 4): generic interface counters
  (counter record format 1) go to ifcounters.IfCounters after the datagram
  is applied; other counter record formats are skipped by their length.

Other sample formats and enterprise-specific structures are skipped by their
length. The exporter is the datagram's source address, the domain its
sub-agent id; sequence numbers count datagrams (lost ones are counted as
listen_records_lost).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from flowtop.listen import counters as lc
from flowtop.listen import headers
from flowtop.listen.exporters import DomainState, Exporter, ExporterTable
from flowtop.listen.flows import Pending
from flowtop.listen.ifcounters import IF_COUNTERS, IfCounters, IfSample
from flowtop.listen.message import Malformed
from flowtop.listen.templates import Record

VERSION = 5
_HEAD = struct.Struct("!II")  # version, address type
_TAIL = struct.Struct("!IIII")  # sub-agent, seq, uptime, samples
_TL = struct.Struct("!II")  # a sample's or record's tag (format) and length
# Flow sample: seq, source id, rate, pool, drops, input, output, records
# (read: rate, input, output, records).
_FLOW = struct.Struct("!8xI8xIII")
# Expanded: seq, source type, index, rate, pool, drops, input format, input,
# output format, output, records (read: rate, input, output, records).
_XFLOW = struct.Struct("!12xI12xI4xII")
_COUNTERS = struct.Struct("!III")  # seq, source id, records
_XCOUNTERS = struct.Struct("!IIII")  # expanded: seq, source type, source index, records
# Raw packet header: header protocol, frame length, stripped, header length
# (read: protocol, header length).
_RAW = struct.Struct("!I8xI")
MAX_SAMPLES = 1024  # per datagram (a 64 KiB datagram holds far fewer real ones)
MAX_RECORDS = 64  # flow / counter records per sample
# Fewer raw headers than this in a drain are read one at a time (numpy's set-up
# costs more than it saves on a handful).
BULK_MIN = 32


@dataclass(slots=True)
class _Group:
    ex: Exporter
    sub_agent: int
    d: DomainState


ROW = 4  # ints per raw header row: offset in the batch's join, header length,
#          header protocol, the row's sample (an index into Batch.samples)
_SAMPLE = 5  # ints per flow sample: rate, in_if, out_if, group, sampled


@dataclass(slots=True)
class Batch:
    """What the sound datagrams of one drain carried, for flush(): their raw
    header rows, the flow samples the rows are of, and the groups (exporter,
    sub-agent) the datagrams are of."""

    bufs: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes in bufs: the next datagram's offset in their join
    rows: list[int] = field(default_factory=list)  # ROW ints per raw header record
    # ints per flow sample: rate, in_if, out_if, group, 1 if its datagram had a
    # rate > 1 (its records count as sampled)
    samples: list[int] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    _group_of: dict[tuple[int, int], int] = field(default_factory=dict)

    def group(self, ex: Exporter, sub_agent: int, d: DomainState) -> int:
        key = (id(ex), sub_agent)
        g = self._group_of.get(key)
        if g is None or self.groups[g].ex is not ex:
            g = self._group_of[key] = len(self.groups)
            self.groups.append(_Group(ex, sub_agent, d))
        return g

    def flush(self, pending: Pending, counters: dict[str, int], bulk: bool | None = None) -> None:
        """Every row's header read into pending's records; the batch emptied.
        bulk: None picks by size (BULK_MIN), True / False forces a reader."""
        if self.rows:
            big = len(self.rows) >= BULK_MIN * ROW if bulk is None else bulk
            (_bulk if big else _one_by_one)(self, pending, counters)
        self.bufs.clear()
        self.rows.clear()
        self.samples.clear()
        self.groups.clear()
        self._group_of.clear()
        self.size = 0


def decode(msg: bytes, ex: Exporter, table: ExporterTable, batch: Batch, ifc: IfCounters) -> bool:
    """One sFlow v5 datagram from ex: applied (True) or malformed, counted and dropped."""
    rows: list[int] = []
    samples: list[int] = []
    ifs: list[IfSample] = []
    first = len(batch.samples) // _SAMPLE
    try:
        sub_agent, seq, rate_max = _read(msg, batch.size, first, rows, samples, ifs)
        d = table.domain(ex, sub_agent)
        if d is None:
            raise Malformed("too many sub-agents")
    except (Malformed, struct.error):
        table.error(ex)
        return False
    if rows:
        g = batch.group(ex, sub_agent, d)
        batch.bufs.append(msg)
        batch.size += len(msg)
        batch.rows += rows
        s = int(rate_max > 1)
        for i in range(3, len(samples), _SAMPLE):  # the group and sampled slots
            samples[i], samples[i + 1] = g, s
        batch.samples += samples
    if rate_max > 1:
        d.scaled = rate_max
    if ifs:
        ifc.update(ex.address, sub_agent, ifs, table.counters)
    table.sequence(ex, d, seq, 1)  # datagram sequence numbers
    ex.protocol = "sflow5"
    ex.messages += 1
    table.counters[lc.MESSAGES] += 1
    return True


def _read(
    msg: bytes,
    base: int,
    first: int,
    rows: list[int],
    samples: list[int],
    ifs: list[IfSample],
) -> tuple[int, int, int]:
    """(sub-agent, sequence number, highest rate) of msg; its raw header rows
    (offsets plus base, samples numbered from first), its flow samples and its
    interface counter records appended; raises Malformed."""
    n = len(msg)
    if n < 8:
        raise Malformed("cut short")
    version, addr_type = _HEAD.unpack_from(msg, 0)
    if version != VERSION:
        raise Malformed("not sFlow v5")
    if addr_type not in (1, 2):
        raise Malformed(f"agent address type {addr_type}")
    pos = 12 if addr_type == 1 else 24
    if pos + _TAIL.size > n:
        raise Malformed("cut short")
    sub_agent, seq, _uptime, count = _TAIL.unpack_from(msg, pos)
    pos += _TAIL.size
    if count > MAX_SAMPLES:
        raise Malformed(f"{count} samples")
    rate_max = 1
    for _ in range(count):
        if pos + 8 > n:
            raise Malformed("cut short")
        tag, length = _TL.unpack_from(msg, pos)
        start, end = pos + 8, pos + 8 + length
        if end > n or length % 4:
            raise Malformed("sample length")
        if tag == 1 or tag == 3:  # (enterprise 0) flow sample, expanded
            rate = _flow_sample(msg, start, end, tag == 3, base, first, rows, samples)
            first += 1
            if rate > rate_max:
                rate_max = rate
        elif tag == 2 or tag == 4:  # counter sample, expanded
            _counter_sample(msg, start, end, tag == 4, ifs)
        pos = end
    if pos != n:
        raise Malformed("bytes after the last sample")
    return sub_agent, seq, rate_max


def _flow_sample(
    msg: bytes,
    pos: int,
    end: int,
    expanded: bool,
    base: int,
    sample: int,
    rows: list[int],
    samples: list[int],
) -> int:
    """One flow sample (number sample in the batch): its raw header rows and
    itself appended; its rate (at least 1)."""
    if expanded:
        if pos + _XFLOW.size > end:
            raise Malformed("flow sample cut short")
        rate, in_if, out_if, nrec = _XFLOW.unpack_from(msg, pos)
        pos += _XFLOW.size
    else:
        if pos + _FLOW.size > end:
            raise Malformed("flow sample cut short")
        rate, in_f, out_f, nrec = _FLOW.unpack_from(msg, pos)
        # the top two bits of input/output say what the rest is; 0: an ifIndex
        in_if = in_f & 0x3FFFFFFF if not in_f >> 30 else 0
        out_if = out_f & 0x3FFFFFFF if not out_f >> 30 else 0
        pos += _FLOW.size
    if nrec > MAX_RECORDS:
        raise Malformed(f"{nrec} flow records")
    rate = rate or 1
    for _ in range(nrec):
        if pos + 8 > end:
            raise Malformed("flow record header cut short")
        tag, length = _TL.unpack_from(msg, pos)
        body, rend = pos + 8, pos + 8 + length
        if rend > end or length % 4:
            raise Malformed("flow record length")
        if tag == 1:  # raw packet header
            if length < _RAW.size:
                raise Malformed("raw header record cut short")
            proto, hlen = _RAW.unpack_from(msg, body)
            if _RAW.size + hlen > length:
                raise Malformed("raw header length")
            rows += (base + body + _RAW.size, hlen, proto, sample)
        pos = rend
    if pos != end:
        raise Malformed("bytes after the last flow record")
    samples += (rate, in_if, out_if, 0, 0)  # group and sampled: decode() fills them
    return int(rate)


def _counter_sample(msg: bytes, pos: int, end: int, expanded: bool, ifs: list[IfSample]) -> None:
    head = _XCOUNTERS if expanded else _COUNTERS
    if pos + head.size > end:
        raise Malformed("counter sample cut short")
    f = head.unpack_from(msg, pos)
    seq, nrec = f[0], f[-1]
    if nrec > MAX_RECORDS:
        raise Malformed(f"{nrec} counter records")
    pos += head.size
    for _ in range(nrec):
        if pos + 8 > end:
            raise Malformed("counter record header cut short")
        tag, length = _TL.unpack_from(msg, pos)
        body, rend = pos + 8, pos + 8 + length
        if rend > end or length % 4:
            raise Malformed("counter record length")
        if tag == 1:  # generic interface counters
            if length < IF_COUNTERS.size:
                raise Malformed("interface counters cut short")
            ifs.append(IfSample(seq, *IF_COUNTERS.unpack_from(msg, body)))
        pos = rend
    if pos != end:
        raise Malformed("bytes after the last counter record")


def _one_by_one(batch: Batch, pending: Pending, counters: dict[str, int]) -> None:
    """headers.packet() per row: records per (group, IP version), as variable()'s."""
    big = b"".join(batch.bufs)
    recs: dict[tuple[int, int], list[Record]] = {}
    sampled = 0
    rows, smp = batch.rows, batch.samples
    for r in range(0, len(rows), ROW):
        off, hlen, proto, i = rows[r : r + ROW]
        rate, in_if, out_if, g, s = smp[i * _SAMPLE : (i + 1) * _SAMPLE]
        got = headers.packet(big[off : off + hlen], proto)
        if got is None:
            continue
        rec, version, ip_len = got
        rec.update(packets=rate, bytes=rate * ip_len, in_if=in_if, out_if=out_if)
        rec["direction"] = 0 if in_if else 1
        recs.setdefault((g, version), []).append(rec)
        sampled += s
    for (g, _version), part in recs.items():
        grp = batch.groups[g]
        pending.variable(grp.ex, grp.sub_agent, grp.d, part, 0, None)
    counters[lc.RECORDS_SAMPLED] += sampled


def _bulk(batch: Batch, pending: Pending, counters: dict[str, int]) -> None:
    """headers.parse_many() over every row; one block of columns per group."""
    a = np.array(batch.rows, dtype=np.int64).reshape(-1, ROW)
    p = headers.parse_many(b"".join(batch.bufs), a[:, 0], a[:, 1], a[:, 2])
    keep = np.flatnonzero(p.keyed)
    if not len(keep):
        return
    smp = np.array(batch.samples, dtype=np.int64).reshape(-1, _SAMPLE)[a[keep, 3]]
    counters[lc.RECORDS_SAMPLED] += int(smp[:, 4].sum())
    rate = smp[:, 0].astype(np.uint64)
    in_if, grp = smp[:, 1], smp[:, 3]
    cols = {k: v[keep] for k, v in p.cols.items()}
    cols["packets"] = rate
    cols["bytes"] = rate * p.ip_len[keep]
    cols["in_if"] = in_if.astype(np.uint64)
    cols["out_if"] = smp[:, 2].astype(np.uint64)
    cols["direction"] = np.where(in_if != 0, 0, 1).astype(np.uint64)
    if batch.groups[1:]:
        order = np.argsort(grp, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(grp[order]) != 0])
        ends = np.r_[bounds[1:], len(order)]
        parts = [order[lo:hi] for lo, hi in zip(bounds, ends, strict=True)]
    else:
        parts = [np.arange(len(keep))]
    for idx in parts:
        g = batch.groups[int(grp[idx[0]])]
        pending.columns(g.ex, g.sub_agent, g.d, {k: v[idx] for k, v in cols.items()})
