"""DNS responses as "client asked for NAME and got ADDRESS" facts.

A response's answer section is read by a bounded hand parse (see
parse_response for why not dnspython's): for every A/AAAA record reached
from the queried name through its CNAME chain, one Answer with the
queried name, the chain's end (the owner name of the address records)
and the smallest TTL on the way. Anything that does not read (a truncated
capture, garbage) is a status, never an exception.
The parser's ground truth in the tests is dnspython's wire format.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import NamedTuple, Protocol

from flowtop.wirenames.hostname import NAME_MAX_LEN, shown_name

# How long a DNS mapping is kept: the record's TTL (the smallest over the
# CNAME chain), at least TTL_FLOOR (a TTL of 0 or a few seconds is common
# for CDNs, and the client's connection may reach flowtop's join an
# interval or two after the answer) and at most TTL_CAP (a day-long TTL
# must not keep a stale address named; the table is bounded anyway).
# TTL_FLOOR is the default of [names] min_ttl (config.NamesConfig).
TTL_FLOOR = 30
TTL_CAP = 3600
# CNAME links followed from the queried name (a loop or a longer chain stops there).
MAX_CHAIN = 16


class Status(Enum):
    """Why a DNS payload gave no answers (counted by WireNames)."""

    OK = "ok"
    MALFORMED = "malformed"  # not a DNS response dnspython could read (truncated too)
    UNPARSED_TCP = "unparsed_tcp"  # a TCP response whose length runs past the segment
    NOT_RESPONSE = "not_response"  # a query, or not rcode NOERROR: nothing to learn


class Answer(NamedTuple):
    """One address the queried name resolved to, with its names cleaned.

    address: 4 (A) or 16 (AAAA) bytes; qname: the name the client asked
    for; cname_end: the chain's last name (the address records' owner),
    None when the answer had no CNAME; ttl: seconds, before TTL_FLOOR/CAP."""

    address: bytes
    version: int
    qname: str
    cname_end: str | None
    ttl: int


def strip_tcp_length(payload: bytes, payload_len: int) -> tuple[bytes | None, Status]:
    """A DNS-over-TCP segment's message without its 2-byte length prefix;
    None when the message does not end inside this (captured) segment."""
    if len(payload) < 2:
        return None, Status.MALFORMED
    n = int.from_bytes(payload[:2], "big")
    if n + 2 > payload_len:
        return None, Status.UNPARSED_TCP  # spans segments: left unparsed, counted
    if n + 2 > len(payload):
        return None, Status.MALFORMED  # in the packet, cut by the capture
    return payload[2 : 2 + n], Status.OK


class _Bad(Exception):
    """A malformed message (internal: parse_response turns it into a status)."""


_MAX_POINTERS = 32  # compression pointers followed in one name


# Names decoded in one message, by offset: (name, its wire size). Answers'
# owner names are pointers to the question's or an earlier record's name:
# each is decoded once per message.
_Memo = dict[int, tuple[bytes, int]]


def _name(wire: bytes, at: int, memo: _Memo) -> tuple[bytes, int]:
    """The name at offset `at` as lower-case labels joined by b"." (no final
    dot; b"" the root), and the offset after it in place. Pointers must go
    backwards and are bounded; the name at most 255 octets (RFC 1035)."""
    if at + 1 < len(wire) and wire[at] >= 0xC0:  # the usual owner name: one pointer
        target = ((wire[at] & 0x3F) << 8) | wire[at + 1]
        known = memo.get(target)
        if known is not None and target < at:
            return known[0], at + 2
    labels: list[bytes] = []
    size = 0
    end = -1
    pos = at
    jumps = 0
    n = len(wire)
    tail = b""
    while True:
        if pos >= n:
            raise _Bad
        ln = wire[pos]
        if ln == 0:
            if end < 0:
                end = pos + 1
            break
        if ln & 0xC0 == 0xC0:
            if pos + 1 >= n:
                raise _Bad
            target = ((ln & 0x3F) << 8) | wire[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if target >= pos or jumps > _MAX_POINTERS:
                raise _Bad  # forward pointers and loops
            known = memo.get(target)
            if known is not None:
                tail, more = known
                size += more
                if size > 255:
                    raise _Bad
                break
            pos = target
            continue
        if ln & 0xC0:
            raise _Bad  # extended label types (RFC 6891 reserved them)
        label = wire[pos + 1 : pos + 1 + ln]
        if len(label) != ln:
            raise _Bad
        size += ln + 1
        if size > 255:
            raise _Bad
        labels.append(label)
        pos += 1 + ln
    if tail:
        labels.append(tail)
    name = b".".join(labels).lower()
    memo[at] = (name, size)
    return name, end


# Response bytes after the id -> its parse (bounded; cleared when full).
_SEEN: dict[bytes, Parsed] = {}
_SEEN_MAX = 4096

# Wire name -> shown name: cleaning is most of a parse's cost, and a box
# asks for the same few thousand names again and again.
_SHOWN: dict[bytes, str | None] = {}
_SHOWN_MAX = 8192


# Bytes of the usual host name (lower case: _name lowers them): a name of
# only these, not ending in a dot and not too long, is its own shown_name.
_HOST_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789-_."


def _text(name: bytes) -> str | None:
    """shown_name of a name from _name (lower-case wire bytes)."""
    # strip() leaves nothing of a name whose every byte is a host byte (half
    # of translate()'s time: this runs twice a response).
    if 0 < len(name) <= NAME_MAX_LEN and name[-1] != 0x2E and not name.strip(_HOST_BYTES):
        return name.decode("ascii")  # nothing to clean (tests check it against shown_name)
    got = _SHOWN.get(name, _SHOWN)
    if got is _SHOWN:
        if len(_SHOWN) >= _SHOWN_MAX:
            _SHOWN.clear()
        got = _SHOWN[name] = shown_name(name.decode("utf-8", "replace"))
    return got  # type: ignore[return-value]


_HEADER = struct.Struct("!HHHH")  # id, flags, question and answer counts
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdata length
_PTR_RR = struct.Struct("!HHHIH")  # an owner name that is one pointer, then _RR
# Sections' record types and classes (RFC 1035, 3596).
_A, _CNAME, _AAAA, _IN = 1, 5, 28, 1
_MAX_ANSWERS = 64  # answer records read from one message (the rest ignored)
_PAD = bytes(12)  # an IPv4 address to 16 bytes, as in a flow key


class Parsed(NamedTuple):
    """One DNS message's facts as parse gives them (and parse_into, the
    feeder's path, puts them into its batch):
    no object per answer beyond its tuple. qname, cname_end: as in Answer
    (None when status is not OK); addrs: per A/AAAA record of the chain's
    end, (version 4 or 6, the address as 16 bytes with IPv4 in the first 4
    as in a flow key, its TTL: the smallest on the chain)."""

    status: Status
    qname: str | None
    cname_end: str | None
    addrs: tuple[tuple[int, bytes, int], ...]


_NOT_RESPONSE = Parsed(Status.NOT_RESPONSE, None, None, ())
_MALFORMED = Parsed(Status.MALFORMED, None, None, ())


def parse_response(wire: bytes) -> tuple[list[Answer], Status]:
    """The answers of one DNS message (UDP payload, or TCP without its prefix).

    A bounded hand parse of the header, the first question and the answer
    section (every length checked against the bytes there): dnspython's
    dns.message.from_wire parsed about 2.5k responses/s on the test machine,
    far below the 50k/s the names side must sustain, and the authority and
    additional sections are not needed. tests/unit/test_wirenames_dns.py
    checks this against messages dnspython builds. A response seen before
    (the same bytes after the id) is not parsed again."""
    got = parse(wire)
    qname = got.qname
    if qname is None:
        return [], got.status
    out = [Answer(a if v == 6 else a[:4], v, qname, got.cname_end, t) for v, a, t in got.addrs]
    return out, got.status


def parse(wire: bytes) -> Parsed:
    """parse_response's facts as one Parsed (parse_into's for a response
    seen before, or one the lean parse defers): the
    common shape of a response by a lean parse (_quick), anything else by
    the full one (_parse); a response seen before from the cache."""
    # A resolver gives many clients (and one client again and again) the
    # same answer: the same bytes but for the message id.
    key = wire[2:]
    got = _SEEN.get(key)
    if got is None:
        got = _quick(wire)
        if got is None:
            try:
                got = _parse(wire)
            except _Bad:
                got = _MALFORMED
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[key] = got
    return got


def _plain_question(wire: bytes) -> tuple[bytes, int, int, int] | None:
    """The start both lean reads share: a NOERROR response with one
    question whose name is plain labels from offset 12 (a pointer there, a
    label over 63 octets, a name over 255 or anything cut: None, for
    _parse). Returns the question's name (lower case), its size as _name
    counts it (octets before the root label), the offset of the first
    answer and the answer count (at most _MAX_ANSWERS)."""
    n = len(wire)
    if n < 17:
        return None
    _id, flags, qd, an = _HEADER.unpack_from(wire, 0)
    if flags & 0x800F != 0x8000 or qd != 1 or an > _MAX_ANSWERS:
        return None
    labels = []
    pos = 12
    ln = wire[12]
    while ln:
        if ln > 63:
            return None
        end = pos + 1 + ln
        if end >= n:
            return None
        labels.append(wire[pos + 1 : end])
        pos = end
        ln = wire[pos]
    size = pos - 12
    if size > 255:
        return None
    pos += 5  # the root label, qtype, qclass
    if pos > n:
        return None
    return b".".join(labels).lower(), size, pos, an


def _quick(wire: bytes) -> Parsed | None:
    """The common response read with fewer steps, or None to leave it to
    _parse: one question whose name is plain labels, at most _MAX_ANSWERS
    answers, nothing cut or malformed. An answer's owner that is one pointer
    to a name read before (the question's or a CNAME's target: how servers
    compress) costs one unpack; other owners are read by _name as _parse
    reads them. Where it answers, it answers exactly what _parse does
    (tests/unit/test_wirenames_dnsfast.py compares the two over real and
    mutated responses); every bound of _parse holds here too: lengths
    against the bytes there, 255 octets a name (the question's label walk
    is bounded by the message), pointers backwards and _MAX_POINTERS of
    them (in _name), MAX_CHAIN links, _MAX_ANSWERS records, the names
    cleaned."""
    q = _plain_question(wire)
    if q is None:
        return None
    qname, size, pos, an = q
    n = len(wire)
    memo: _Memo = {12: (qname, size)}
    cnames: dict[bytes, tuple[bytes, int]] = {}  # owner -> (target, ttl)
    owners: list[bytes] = []  # of each address record in found
    found: list[tuple[int, bytes, int]] = []  # (version, address as 16 bytes, ttl)
    for _ in range(an):
        if pos + 12 > n:
            return None
        ptr, rtype, rclass, ttl, rdlen = _PTR_RR.unpack_from(wire, pos)
        known = memo.get(ptr & 0x3FFF) if ptr >= 0xC000 else None  # behind pos
        if known is not None:
            owner = known[0]
            rdata = pos + 12
        else:  # an owner written out, or a pointer into a name: as _parse reads it
            try:
                owner, pos = _name(wire, pos, memo)
            except _Bad:
                return None
            if pos + 10 > n:
                return None
            rtype, rclass, ttl, rdlen = _RR.unpack_from(wire, pos)
            rdata = pos + 10
        pos = rdata + rdlen
        if pos > n:
            return None
        if rclass != _IN:
            continue
        if rtype == _A:
            if rdlen == 4:
                owners.append(owner)
                found.append((4, wire[rdata:pos] + _PAD, ttl & 0x7FFF_FFFF))
        elif rtype == _AAAA:
            if rdlen == 16:
                owners.append(owner)
                found.append((6, wire[rdata:pos], ttl & 0x7FFF_FFFF))
        elif rtype == _CNAME:
            try:
                target, after = _name(wire, rdata, memo)
            except _Bad:
                return None
            if after > pos:
                return None
            cnames.setdefault(owner, (target, ttl & 0x7FFF_FFFF))
    return _answers(qname, cnames, owners, found)


def _answers(
    qname: bytes,
    cnames: dict[bytes, tuple[bytes, int]],
    owners: list[bytes],
    found: list[tuple[int, bytes, int]],
) -> Parsed:
    """The Parsed of a message read: the chain from qname through cnames,
    and the address records (found, owned by owners) of its end (the same
    step for both parses)."""
    name = qname
    low: int | None = None
    for _ in range(MAX_CHAIN):
        link = cnames.get(name)
        if link is None:
            break
        name, t = link
        low = t if low is None else min(low, t)
    shown = _text(qname)
    if shown is None:
        return _MALFORMED
    end = _text(name) if name != qname else None
    # A record's own tuple unless the chain's TTL is lower (one tuple fewer each).
    if low is None:
        addrs = tuple([x for o, x in zip(owners, found, strict=True) if o == name])
    else:
        addrs = tuple([x if x[2] <= low else (x[0], x[1], low)
                       for o, x in zip(owners, found, strict=True) if o == name])  # fmt: skip
    return Parsed(Status.OK, shown, end, addrs)


def _parse(wire: bytes) -> Parsed:
    if len(wire) < 12:
        raise _Bad
    _id, flags, qd, an = _HEADER.unpack_from(wire, 0)
    if not flags & 0x8000 or flags & 0x000F or qd == 0:
        return _NOT_RESPONSE  # a query, or an error rcode
    memo: _Memo = {}
    qname, pos = _name(wire, 12, memo)
    pos += 4  # qtype, qclass
    for _ in range(qd - 1):  # other questions (never seen in practice): skipped
        pos = _name(wire, pos, memo)[1] + 4
    if pos > len(wire):
        raise _Bad
    cnames: dict[bytes, tuple[bytes, int]] = {}  # owner -> (target, ttl)
    owners: list[bytes] = []  # of each address record in found
    found: list[tuple[int, bytes, int]] = []  # (version, address as 16 bytes, ttl)
    for _ in range(min(an, _MAX_ANSWERS)):
        owner, pos = _name(wire, pos, memo)
        if pos + 10 > len(wire):
            raise _Bad
        rtype, rclass, ttl, rdlen = _RR.unpack_from(wire, pos)
        ttl &= 0x7FFF_FFFF
        rdata = pos + 10
        pos = rdata + rdlen
        if pos > len(wire):
            raise _Bad
        if rclass != _IN:
            continue
        if rtype == _CNAME:
            target, after = _name(wire, rdata, memo)
            if after > pos:
                raise _Bad
            cnames.setdefault(owner, (target, ttl))
        elif rtype == _A and rdlen == 4:
            owners.append(owner)
            found.append((4, wire[rdata:pos] + _PAD, ttl))
        elif rtype == _AAAA and rdlen == 16:
            owners.append(owner)
            found.append((6, wire[rdata:pos], ttl))
    return _answers(qname, cnames, owners, found)


# Response bytes after the id, of responses the lean parse read once
# (bounded; cleared when full): one seen again is parsed into a Parsed and
# cached in _SEEN. A response seen once costs no object that outlives the
# batch (a cached Parsed is four, kept until _SEEN is cleared: work for
# the garbage collector when nearly every response is distinct).
_ONCE: set[bytes] = set()
_ONCE_MAX = 8192


class AnswerSink(Protocol):
    """Where parse_into puts a response's answers: names.DnsBatch, the lists
    WireNames.add_batch inserts from (so that an answer is no object of its
    own between the parse and the table). Per answer: its store key (head()
    of the version and the client, then the address as 16 bytes) and TTL
    (the smallest on the CNAME chain, before TTL_FLOOR/CAP); per response
    with answers: its shown qname, CNAME chain end and answer count."""

    keys: list[bytes]
    ttls: list[int]
    qnames: list[str]
    ends: list[str | None]
    counts: list[int]

    def head(self, version: int, client: bytes) -> bytes: ...

    def add(self, client: bytes, got: Parsed) -> None: ...


def parse_into(wire: bytes, client: bytes, sink: AnswerSink) -> Status:
    """parse(wire)'s answers for `client` (16 bytes, as in a flow key) put
    into sink, in the record order parse gives; its status. A response
    seen for the first time is read by _lean when it has the usual shape
    (it answers exactly what parse does, or defers to it), one seen before
    through parse and its cache."""
    key = wire[2:]
    got = _SEEN.get(key)
    if got is None:
        if key not in _ONCE:
            status = _lean(wire, client, sink)
            if status is not None:
                if len(_ONCE) >= _ONCE_MAX:
                    _ONCE.clear()
                _ONCE.add(key)
                return status
        got = parse(wire)
    if got.addrs:
        sink.add(client, got)
    return got.status


def _lean(wire: bytes, client: bytes, sink: AnswerSink) -> Status | None:
    """The usual response straight into sink, or None (sink untouched) to
    leave it to parse. The usual shape: a NOERROR response, one question of
    plain labels, then answers in chain order, each record owned by a
    pointer to where the chain's current name was written: CNAMEs first
    (the question's, then each target's), then the IN A/AAAA records of
    the chain's end. Anything else (another record type or class, an owner
    written out, a CNAME after an address, a CNAME target already on the
    chain, a chain longer than MAX_CHAIN, a question name that cleans to
    nothing) defers, so that where this answers, the chain, its end, the
    records kept and the TTLs are what _answers makes of _parse's reading
    (tests/unit/test_wirenames_dnslean.py compares them over real and
    mutated responses). Bounds as in _parse: every length against the
    bytes there, 255 octets a name, pointers only backwards and at most
    _MAX_POINTERS of them (a CNAME target with a pointer is read by _name),
    MAX_CHAIN links, _MAX_ANSWERS records, names cleaned (_text)."""
    q = _plain_question(wire)
    if q is None:
        return None
    qname, qsize, pos, an = q
    n = len(wire)
    shown = _text(qname)
    if shown is None:
        return None  # parse says MALFORMED
    owner = 0xC00C  # the pointer to the chain's current name: the question's
    name = qname
    chain: list[bytes] | None = None  # the chain's names, once it has a link
    low = -1  # the chain's smallest TTL (-1: no link yet)
    keys, ttls = sink.keys, sink.ttls
    got = 0  # addresses put into sink
    h4 = h6 = b""
    for _ in range(an):
        if pos + 12 > n:
            break
        ptr, rtype, rclass, ttl, rdlen = _PTR_RR.unpack_from(wire, pos)
        if ptr != owner or rclass != _IN:
            break
        rdata = pos + 12
        pos = rdata + rdlen
        if pos > n:
            break
        ttl &= 0x7FFF_FFFF
        if low >= 0 and ttl > low:
            ttl = low
        if rtype == _A and rdlen == 4:
            if not h4:
                h4 = sink.head(4, client)
            keys.append(h4 + wire[rdata:pos] + _PAD)
            ttls.append(ttl)
            got += 1
        elif rtype == _AAAA and rdlen == 16:
            if not h6:
                h6 = sink.head(6, client)
            keys.append(h6 + wire[rdata:pos])
            ttls.append(ttl)
            got += 1
        elif rtype == _CNAME and not got:
            # The target: plain labels ending inside the rdata, read here;
            # anything else (a pointer in it) by _name, as _parse reads it.
            tl = []
            at = rdata
            ln = wire[at]
            while 0 < ln < 64:
                end = at + 1 + ln
                if end >= pos:
                    break
                tl.append(wire[at + 1 : end])
                at = end
                ln = wire[at]
            if ln == 0 and at - rdata <= 255:
                target = b".".join(tl).lower()
            else:
                try:
                    target, after = _name(wire, rdata, {12: (qname, qsize)})
                except _Bad:
                    break
                if after > pos:
                    break
            if chain is None:
                chain = [qname]
            if target in chain or len(chain) > MAX_CHAIN:
                break  # a loop, or past MAX_CHAIN links: _answers' walk says
            chain.append(target)
            name = target
            # The pointer to the target (none reaches past 0x3FFF: -1 matches no owner).
            owner = 0xC000 | rdata if rdata < 0x4000 else -1
            low = ttl  # the smaller of this link's TTL and the chain's before
        else:
            break
    else:
        if got:
            sink.qnames.append(shown)
            sink.ends.append(_text(name) if chain is not None else None)
            sink.counts.append(got)
        return Status.OK
    if got:
        del keys[-got:], ttls[-got:]
    return None


def clamp_ttl(ttl: int, floor: int = TTL_FLOOR) -> int:
    """Seconds a mapping is kept: ttl, at least floor, at most TTL_CAP."""
    return max(floor, min(TTL_CAP, ttl))
