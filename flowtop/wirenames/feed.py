"""WirePackets (kernel/wire_records.py) parsed and put into WireNames.

DNS responses (KIND_DNS) give answers; a connection's first data segments
(KIND_TCP_FIRST) give the TLS ClientHello's SNI or the HTTP Host, QUIC
Initials (KIND_QUIC) the SNI of the ClientHello inside them. Every
packet that gives nothing for a reason flowtop should know of is counted
(WireNames.counters, via WireNames.parse): nothing here raises on input.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowtop.kernel.layout import FLOW_KEY
from flowtop.kernel.wire_records import KIND_DNS, KIND_QUIC, KIND_TCP_FIRST, WirePacket
from flowtop.wirenames import dnsanswers, httphost, quic, tlshello
from flowtop.wirenames.dnstcp import DnsStreams
from flowtop.wirenames.firstdata import FirstData
from flowtop.wirenames.names import (
    KEY_OFFSET,
    SOURCE_HTTP,
    SOURCE_SNI,
    DnsBatch,
    WireNames,
    conn_key,
)

_TCP, _UDP = 6, 17
_KEY_SIZE = FLOW_KEY.itemsize
_PROTO, _DST = KEY_OFFSET["proto"], KEY_OFFSET["dst"]
# The feeder's counters (WireNames.counters, CollectorHealth through the engine).
PARSE_COUNTERS = (
    "dns_responses",  # DNS responses read
    "dns_answers",  # addresses learnt
    "dns_malformed",  # not a readable DNS message (garbage, a cut capture)
    "dns_tcp_unparsed",  # a TCP response spanning segments not put together (dnstcp.py)
    "hello_names",  # SNI names learnt
    "http_names",  # Host names learnt
    "first_malformed",  # a TLS handshake whose lengths do not add up
    "first_incomplete",  # a hello or request head still cut after its segments
    "first_dropped",  # connections waiting for a segment dropped for room
    "bad_packets",  # a WirePacket flowtop cannot read (its key's size, its kind)
    "read_errors",  # reads of the capture that failed (wirenames/reader.py)
    *quic.COUNTERS,  # QUIC Initials (wirenames/quic.py)
)


class Feeder:
    """Parses WirePackets into a WireNames (one thread: the reader's)."""

    def __init__(self, names: WireNames, first: FirstData | None = None) -> None:
        self.names = names
        self.first = first if first is not None else FirstData()
        self.streams = DnsStreams()
        self.quic = quic.QuicInitials()
        self._streams_dropped = 0
        self.counts = dict.fromkeys(PARSE_COUNTERS, 0)

    def feed(self, packets: Iterable[WirePacket]) -> None:
        now = self.names.now()
        c = self.counts
        # DNS answers go into the table together at the end, one lock hold
        # (the order kept: a later answer for a client and address wins),
        # parsed straight into the insert's lists.
        batch = DnsBatch()
        ok, malformed = dnsanswers.Status.OK, dnsanswers.Status.MALFORMED
        parse_into = dnsanswers.parse_into
        n_resp = n_bad = 0
        for p in packets:
            key = p.key
            kind = p.kind
            if len(key) != _KEY_SIZE:
                c["bad_packets"] += 1
            elif kind == KIND_DNS:
                wire = p.payload
                if key[_PROTO] == _TCP:
                    message = self._tcp_dns(p, now)
                    if message is None:
                        continue
                    wire = message
                status = parse_into(wire, key[_DST : _DST + 16], batch)
                if status is ok:
                    n_resp += 1
                elif status is malformed:
                    n_bad += 1
            elif kind == KIND_TCP_FIRST:
                self._first(p, now)
            elif kind == KIND_QUIC:
                self._quic(p, now)
            else:
                c["bad_packets"] += 1
        c["dns_responses"] += n_resp
        c["dns_malformed"] += n_bad
        if batch.keys:
            c["dns_answers"] += self.names.add_batch(batch, now)
        self.first.expire(now)
        c["first_dropped"] = self.first.dropped
        self.streams.expire(now)
        if self.streams.dropped != self._streams_dropped:  # their messages unparsed
            c["dns_tcp_unparsed"] += self.streams.dropped - self._streams_dropped
            self._streams_dropped = self.streams.dropped
        self.quic.expire(now)
        c.update(self.quic.counts)
        self.names.parse = dict(c)  # one reference swap: the engine thread reads it

    def _tcp_dns(self, p: WirePacket, now: float) -> bytes | None:
        """The DNS message of a TCP segment from a DNS port, without its
        length prefix, or of the segments before it and this one (a
        response spanning segments: dnstcp.py); None when it gives none
        (counted, unless it waits for the next segment)."""
        conn = conn_key(p.key)
        whole = p.payload_len == len(p.payload)
        streams = self.streams
        if streams.seen(conn, p.seq, p.payload_len):
            return None  # a copy (a retransmit, or the router's other hook)
        if streams.waiting(conn):
            message = streams.add(conn, p.seq, p.payload, whole)
            if message is not None or streams.waiting(conn):
                return message
            self.counts["dns_tcp_unparsed"] += 1  # out of order, or cut by the capture
            return None
        got, status = dnsanswers.strip_tcp_length(p.payload, p.payload_len)
        if got is None:
            if whole and (status is dnsanswers.Status.UNPARSED_TCP or p.payload_len == 1):
                streams.start(conn, p.seq, p.payload, now)  # the rest comes next
            else:
                self.counts["dns_tcp_unparsed" if status is dnsanswers.Status.UNPARSED_TCP
                            else "dns_malformed"] += 1  # fmt: skip
        return got

    def _quic(self, p: WirePacket, now: float) -> None:
        whole = p.payload_len == len(p.payload)
        status, name = self.quic.feed(conn_key(p.key), p.payload, whole, now)
        if status is quic.Status.NAMED:
            self.names.add_connection(p.key, name, SOURCE_SNI, now)

    def _first(self, p: WirePacket, now: float) -> None:
        c = self.counts
        conn = conn_key(p.key)
        data = self.first.add(conn, p.seq, p.payload, p.payload_len == len(p.payload), now)
        if data is None:
            return  # named (or given up on) already
        last = self.first.full(conn)
        if tlshello.looks_like_tls(data):
            got = tlshello.server_name(data)
            if isinstance(got, str):
                self.names.add_connection(p.key, got, SOURCE_SNI, now)
                c["hello_names"] += 1
            elif got is tlshello.Hello.NEED_MORE and not last:
                return  # the next segment may complete it
            elif got is tlshello.Hello.MALFORMED:
                c["first_malformed"] += 1
            elif got is tlshello.Hello.NEED_MORE:
                c["first_incomplete"] += 1
        elif httphost.looks_like_http(data):
            got_h = httphost.host(data)
            if isinstance(got_h, str):
                self.names.add_connection(p.key, got_h, SOURCE_HTTP, now)
                c["http_names"] += 1
            elif got_h is httphost.Request.NEED_MORE and not last:
                return
            elif got_h is httphost.Request.NEED_MORE:
                c["first_incomplete"] += 1
        elif not last:
            # Another protocol, too short to tell, or a later segment that
            # came first: the one before may still come (bounded wait).
            return
        self.first.done(conn, now)
