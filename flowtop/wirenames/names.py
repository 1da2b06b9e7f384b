"""WireNames: what the wire called each connection's server end, and the
vectorised join of flow keys to it.

Two stores, both bounded and both keyed by five uint64 words:
- DNS: (ip version, client address, answered address) -> the queried name
  and the CNAME chain's end, until the answer's TTL runs out
  (dnsanswers.clamp_ttl);
- connections: the client's 5-tuple (core/owners.flow_tuple_columns' words
  of its packet's key: the client as the local end) -> the SNI or HTTP Host
  name, until no join matched it for `idle_timeout` seconds.
`join(keys)` gives per flow the name ids of both ends, the source of the
name shown and the CNAME end, for both directions' flows of a connection.
A feeder thread (wirenames/reader.py) adds while the engine's thread joins:
every public method takes the lock.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowtop.core.owners import NAME_NONE, NameTable, flow_tuple_columns, hash_columns
from flowtop.kernel.layout import FLOW_KEY, FLOW_KEY_WORDS
from flowtop.kernel.owner_records import OWNER_TUPLE_WORDS
from flowtop.wirenames.dnsanswers import TTL_CAP, TTL_FLOOR, Answer, Parsed, clamp_ttl

# NameColumns.source, and the flow table's name_source column
SOURCE_NONE = 0
SOURCE_DNS = 1
SOURCE_SNI = 2
SOURCE_HTTP = 3
SOURCE_NAMES = {SOURCE_DNS: "dns", SOURCE_SNI: "sni", SOURCE_HTTP: "http"}
# The flow table's name_state: NAME_PENDING until the engine's join settled it
# (named, or unnamed after its retries; wirenames joins again later anyway).
NAME_UNNAMED = 0
NAME_NAMED = 1
NAME_PENDING = 255
# What the view marks a reverse DNS name with (no wire name: the fallback).
RDNS = "rdns"
# Entries each store holds by default (config has no key for it: a busy
# resolver's few thousand answers a minute fit many times over).
MAX_ENTRIES = 65536

_WORDS = 5
_T = OWNER_TUPLE_WORDS
_K = FLOW_KEY_WORDS
assert FLOW_KEY.fields is not None
# Byte offsets of the flow key members a WirePacket's key is read at.
KEY_OFFSET = {
    n: int(FLOW_KEY.fields[n][1]) for n in ("ip_version", "proto", "src", "dst", "sport", "dport")
}
_O = KEY_OFFSET
_PORTS = struct.Struct("<HH")


def conn_key(key: bytes) -> bytes:
    """The 40-byte store key of a flow key's connection, its src as the
    client: the words flow_tuple_columns(keys)[0] gives for the key."""
    ver, proto = key[_O["ip_version"]], key[_O["proto"]]
    sport, dport = _PORTS.unpack_from(key, _O["sport"])
    f = _T.fields
    w0 = (ver << f["family"].shift) | (proto << f["proto"].shift)
    w0 |= (sport << f["lport"].shift) | (dport << f["rport"].shift)
    src, dst = _O["src"], _O["dst"]
    return struct.pack("<Q", w0) + key[src : src + 16] + key[dst : dst + 16]


_VERSION = {4: struct.pack("<Q", 4), 6: struct.pack("<Q", 6)}  # dns_key's first word


def dns_key(version: int, client: bytes, address: bytes) -> bytes:
    """The 40-byte store key of "client got address" (addresses as in a
    flow key: 16 bytes, IPv4 in the first 4)."""
    return struct.pack("<Q", version) + client.ljust(16, b"\0") + address.ljust(16, b"\0")


class _Store:
    """Entries keyed by 40 bytes (five words) in numpy columns, at most
    max_entries. `put`/`put_many` only stage entries (the feeder thread's
    cost per entry is its key's append; put_many's other columns are kept
    as the arrays it was given, put()'s in one list per column); staged
    entries go into the columns at once, vectorised, before anything reads
    them (`flush`). `find` is a vectorised lookup through a sorted hash index
    rebuilt when entries were added or removed since the last lookup."""

    # Entries staged at most before a put flushes them itself (bounded,
    # whoever reads next).
    STAGED_MAX = 65536

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.rows: dict[bytes, int] = {}
        self._free: list[int] = []
        self.words = np.zeros((0, _WORDS), dtype=np.uint64)
        self.name = np.zeros(0, dtype=np.uint32)
        self.cname = np.zeros(0, dtype=np.uint32)
        self.source = np.zeros(0, dtype=np.uint8)
        self.deadline = np.zeros(0, dtype=np.float64)  # dropped after this
        self.live = np.zeros(0, dtype=bool)
        # The staged entries: their keys in one list; their other columns
        # (name, cname, source, deadline) as chunks of arrays (put_many's),
        # and one list per column of the put()s since the last chunk.
        self._sk: list[bytes] = []
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._sn: list[int] = []
        self._sc: list[int] = []
        self._ss: list[int] = []
        self._sd: list[float] = []
        self._dirty = True
        self._hash = np.zeros(0, dtype=np.uint64)
        self._order = np.zeros(0, dtype=np.int64)
        self.evicted = 0

    def __len__(self) -> int:
        self.flush()
        return len(self.rows)

    def _grow(self, need: int) -> None:
        old = len(self.live)
        new = min(self.max_entries, max(64, 2 * old, need))
        for attr in ("name", "cname", "source", "deadline", "live"):
            a = getattr(self, attr)
            b = np.zeros(new, dtype=a.dtype)
            b[:old] = a
            setattr(self, attr, b)
        w = np.zeros((new, _WORDS), dtype=np.uint64)
        w[:old] = self.words
        self.words = w
        self._free.extend(range(new - 1, old - 1, -1))

    def put(self, key: bytes, name: int, cname: int, source: int, deadline: float) -> None:
        """Key's entry set (a new one, or a replaced one), when next flushed."""
        self._sk.append(key)
        self._sn.append(name)
        self._sc.append(cname)
        self._ss.append(source)
        self._sd.append(deadline)
        if len(self._sk) >= self.STAGED_MAX:
            self.flush()

    def put_many(
        self, keys: list[bytes], names: np.ndarray, cnames: np.ndarray, source: int,
        deadlines: np.ndarray,
    ) -> None:  # fmt: skip
        """put() of each keys[i] with names[i], cnames[i], source, deadlines[i]
        (arrays of the columns' dtypes, kept as they are until the flush)."""
        self._chunk()
        self._sk += keys
        self._chunks.append((names, cnames, np.full(len(keys), source, dtype=np.uint8), deadlines))
        if len(self._sk) >= self.STAGED_MAX:
            self.flush()

    def _chunk(self) -> None:
        """The put()s since the last chunk, as a chunk (the order kept)."""
        if self._sn:
            self._chunks.append((
                np.array(self._sn, dtype=np.uint32), np.array(self._sc, dtype=np.uint32),
                np.array(self._ss, dtype=np.uint8), np.array(self._sd, dtype=np.float64),
            ))  # fmt: skip
            self._sn, self._sc, self._ss, self._sd = [], [], [], []

    def flush(self) -> None:
        """The staged entries into the columns: the last of each key wins;
        room made by dropping the entries soonest to go (counted)."""
        staged = self._sk
        if not staged:
            return
        self._chunk()
        chunks = self._chunks
        self._sk, self._chunks = [], []
        if len(chunks) == 1:
            names, cnames, sources, deadlines = chunks[0]
        else:
            names, cnames, sources, deadlines = (
                np.concatenate(c) for c in zip(*chunks, strict=True)
            )
        # key -> its last entry
        last = dict(zip(staged, range(len(staged)), strict=True))
        held = self.rows
        new = [k for k in last if k not in held]
        if len(new) > self.max_entries:  # the batch alone overflows: its first go
            self.evicted += len(new) - self.max_entries
            for k in new[: len(new) - self.max_entries]:
                del last[k]
            new = new[len(new) - self.max_entries :]
        over = len(self.rows) + len(new) - self.max_entries
        if over > 0:
            self._evict(max(over, self.max_entries // 8))
            new = [k for k in last if k not in self.rows]  # an evicted key comes back
        if len(new) > len(self._free):
            self._grow(len(self.rows) + len(new))
        at = np.zeros(0, dtype=np.int64)
        if new:
            free = self._free
            rows_new = free[len(free) - len(new) :][::-1]  # as many pop()s
            del free[len(free) - len(new) :]
            self.rows.update(zip(new, rows_new, strict=True))
            at = np.array(rows_new, dtype=np.int64)
            self.words[at] = np.frombuffer(b"".join(new), dtype="<u8").reshape(-1, _WORDS)
            self.live[at] = True
            self._dirty = True
        if len(new) == len(last):  # every key new: their rows, in last's order
            rows = at
        else:
            rows = np.fromiter(map(self.rows.__getitem__, last), dtype=np.int64, count=len(last))
        if len(last) == len(staged):  # no key twice: every entry is its key's last
            pick: slice | np.ndarray = slice(None)
        else:
            pick = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        self.name[rows] = names[pick]
        self.cname[rows] = cnames[pick]
        self.source[rows] = sources[pick]
        self.deadline[rows] = deadlines[pick]

    def _evict(self, k: int) -> None:
        """Room for new entries: the k soonest to go, dropped (counted)."""
        live = np.flatnonzero(self.live)
        k = min(k, len(live))
        if k <= 0:
            return
        self._delete(live[np.argpartition(self.deadline[live], k - 1)[:k]])
        self.evicted += k

    def _delete(self, rows: np.ndarray) -> None:
        for r in rows.tolist():
            del self.rows[self.words[r].tobytes()]
            self._free.append(r)
        self.live[rows] = False
        self._dirty = True

    def expire(self, now: float) -> int:
        self.flush()
        gone = np.flatnonzero(self.live & (self.deadline < now))
        if len(gone):
            self._delete(gone)
        return len(gone)

    def find(self, cols: tuple[np.ndarray, ...], now: float) -> np.ndarray:
        """Row of each key given as five word columns (-1: absent or past its deadline)."""
        self.flush()
        n = len(cols[0])
        if not self.rows or not n:
            return np.full(n, -1, dtype=np.int64)
        if self._dirty:
            rows = np.flatnonzero(self.live)
            h = hash_columns(tuple(self.words[rows, i] for i in range(_WORDS)))
            order = np.argsort(h, kind="stable")
            self._hash, self._order = h[order], rows[order]
            self._dirty = False
        h = hash_columns(cols)
        i = np.minimum(np.searchsorted(self._hash, h), len(self._hash) - 1)
        row = self._order[i]
        ok = self._hash[i] == h
        for w, c in enumerate(cols):  # a hash collision is a miss, never a wrong name
            ok &= self.words[row, w] == c
        ok &= self.deadline[row] >= now
        out: np.ndarray = np.where(ok, row, -1)
        return out


@dataclass(frozen=True)
class NameColumns:
    """The wire names of each flow of a join, in key order.

    src_name, dst_name: WireNames.names ids of each end's name (0: none);
    cname: the CNAME chain end of the DNS answer naming the server end (0:
    none); source: SOURCE_* of the shown (server end's) name."""

    src_name: np.ndarray
    dst_name: np.ndarray
    cname: np.ndarray
    source: np.ndarray

    @property
    def named(self) -> np.ndarray:
        out: np.ndarray = self.source != SOURCE_NONE
        return out


class DnsBatch:
    """The answers of many DNS responses, gathered for one insert
    (WireNames.add_batch): dnsanswers.parse_into writes them here, the
    feeder gathers a read's worth. Per answer its store key (dns_key's
    bytes: head(), then the address as 16 bytes) and its TTL; per response
    with answers its shown qname, CNAME chain end and how many answers.
    Lists of bytes, str and int: no object per answer beyond its key."""

    __slots__ = ("counts", "ends", "keys", "qnames", "ttls")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.ttls: list[int] = []
        self.qnames: list[str] = []
        self.ends: list[str | None] = []
        self.counts: list[int] = []

    @staticmethod
    def head(version: int, client: bytes) -> bytes:
        """A DNS store key's first 24 bytes: the version word, the client."""
        return _VERSION[version] + client

    def add(self, client: bytes, got: Parsed) -> None:
        """The answers of one Parsed for client (16 bytes)."""
        for v, a, t in got.addrs:
            self.keys.append(_VERSION[v] + client + a)
            self.ttls.append(t)
        if got.addrs:
            self.qnames.append(got.qname)  # type: ignore[arg-type]  # OK: a name
            self.ends.append(got.cname_end)
            self.counts.append(len(got.addrs))


class WireNames:
    """Names learnt from the wire, and the name of each flow's server end.

    Fed by add_answer (a DNS response's client and answer) and add_connection
    (a TLS or HTTP client's first data: its packet's flow key and the name);
    joined by `join(keys)` (see NameColumns). The server end is the address
    the client asked about (DNS) or connected to (SNI, HTTP), in both
    directions' flows; SNI/HTTP win over DNS (they name the exact
    connection). Names are interned in `names` (cleaned before: they come
    from wirenames/hostname.py)."""

    def __init__(
        self,
        idle_timeout: float = 300.0,
        max_entries: int = MAX_ENTRIES,
        max_names: int = 65536,
        clock: Callable[[], float] = time.monotonic,
        ttl_floor: int = TTL_FLOOR,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.ttl_floor = ttl_floor  # a DNS mapping lives max(TTL, this) seconds
        self.names = NameTable(max_names)
        self._clock = clock
        self._dns = _Store(max_entries)
        self._conn = _Store(max_entries)
        self._lock = threading.Lock()
        self.generation = 0  # entries added so far (the engine re-joins when it moved)
        self._stats = {"expired": 0}
        self.parse: dict[str, int] = {}  # the feeder's counts (wirenames/feed.py)

    def now(self) -> float:
        return self._clock()

    def add_answer(
        self, version: int, client: bytes, address: bytes, name: str, cname: str | None,
        ttl: float, now: float | None = None,
    ) -> None:  # fmt: skip
        """The client (a DNS response's destination) got address for name."""
        now = self._clock() if now is None else now
        with self._lock:
            nid, cid = self.names.intern(name), self.names.intern(cname)
            self._dns.put(dns_key(version, client, address), nid, cid, SOURCE_DNS, now + ttl)
            self.generation += 1

    def add_answers(self, client: bytes, answers: list[Answer], now: float) -> None:
        """add_answer for every answer of one response (one lock for all)."""
        head = client.ljust(16, b"\0")
        with self._lock:
            ids: dict[str | None, int] = {}  # one response: one or two names
            for a in answers:
                q = ids.get(a.qname)
                if q is None:
                    q = ids[a.qname] = self.names.intern(a.qname)
                c = ids.get(a.cname_end)
                if c is None:
                    c = ids[a.cname_end] = self.names.intern(a.cname_end)
                key = _VERSION[a.version] + head + a.address.ljust(16, b"\0")
                self._dns.put(key, q, c, SOURCE_DNS, now + clamp_ttl(a.ttl, self.ttl_floor))
            self.generation += len(answers)

    def add_responses(self, responses: list[tuple[bytes, Parsed]], now: float) -> int:
        """The answers of many DNS responses, each with its client (the
        response's destination: 16 bytes, as in a flow key), in order (a
        later answer for the same client and address wins), under one lock
        hold; how many answers (add_batch of their DnsBatch)."""
        batch = DnsBatch()
        for client, got in responses:
            batch.add(client, got)
        return self.add_batch(batch, now)

    def add_batch(self, batch: DnsBatch, now: float) -> int:
        """The answers a DnsBatch gathered, in order (a later answer for the
        same client and address wins), under one lock hold; how many. The
        feeder's path (wirenames/feed.py)."""
        keys = batch.keys
        if not keys:
            return 0
        counts = batch.counts
        with self._lock:
            # Interned in the order add_answers would: each response's qname,
            # then its CNAME end (which names a full table turns away).
            both: list[str | None] = [None] * (2 * len(counts))
            both[0::2] = batch.qnames
            both[1::2] = batch.ends
            ids = np.array(list(map(self.names.intern, both)), dtype=np.uint32)
            qids, cids = ids[0::2], ids[1::2]
            ttl = np.array(batch.ttls, dtype=np.int64)
            # clamp_ttl over the column: the cap first, then the floor (above the cap too)
            keep = np.maximum(np.minimum(ttl, TTL_CAP), self.ttl_floor)
            self._dns.put_many(
                keys, np.repeat(qids, counts), np.repeat(cids, counts), SOURCE_DNS, now + keep
            )
            self.generation += len(keys)
        return len(keys)

    def add_connection(self, key: bytes, name: str, source: int, now: float | None = None) -> None:
        """The connection whose client sent the packet of flow key `key` named
        its server `name` (SOURCE_SNI or SOURCE_HTTP)."""
        now = self._clock() if now is None else now
        with self._lock:
            nid = self.names.intern(name)
            self._conn.put(conn_key(key), nid, 0, source, now + self.idle_timeout)
            self.generation += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._dns) + len(self._conn)

    def name(self, nid: int) -> str | None:
        with self._lock:
            return self.names.get(nid) if nid != NAME_NONE else None

    def join(self, keys: np.ndarray, now: float | None = None) -> NameColumns:
        """The wire names of flow keys (layout.FLOW_KEY); connections matched
        are kept alive, and entries past their time dropped after."""
        now = self._clock() if now is None else now
        n = len(keys)
        fwd, rev = flow_tuple_columns(keys)
        kw = _K.view(keys)
        ver = _K.field(kw, "ip_version")
        with self._lock:
            c = self._conn
            cf, cr = c.find(fwd, now), c.find(rev, now)
            hit = np.concatenate([cf[cf >= 0], cr[cr >= 0]])
            c.deadline[hit] = now + self.idle_timeout
            d = self._dns
            df = d.find((ver, *fwd[1:]), now)  # src the client: the dst is named
            dr = d.find((ver, *rev[1:]), now)  # dst the client: the src is named
            dst = np.zeros(n, dtype=np.uint32)
            src = np.zeros(n, dtype=np.uint32)
            cname = np.zeros(n, dtype=np.uint32)
            source = np.zeros(n, dtype=np.uint8)
            for rows, out, rank in ((dr, src, 1), (df, dst, 2), (cr, src, 3), (cf, dst, 4)):
                at = rows >= 0
                store = d if rank <= 2 else c
                out[at] = store.name[rows[at]]
                source[at] = store.source[rows[at]]  # the later (stronger) wins
                if rank <= 2:
                    cname[at] = d.cname[rows[at]]
            self._expire(now)
        return NameColumns(src, dst, cname, source)

    def _expire(self, now: float) -> None:
        self._stats["expired"] += self._dns.expire(now) + self._conn.expire(now)

    def expire(self, now: float | None = None) -> None:
        with self._lock:
            self._expire(self._clock() if now is None else now)

    def counters(self) -> dict[str, int]:
        """dns_entries, conn_entries, evicted (entries dropped for room),
        expired, names_full, and the feeder's parse counts."""
        with self._lock:
            return {
                "dns_entries": len(self._dns),
                "conn_entries": len(self._conn),
                "evicted": self._dns.evicted + self._conn.evicted,
                **self._stats,
                "names_full": self.names.full,
                **self.parse,
            }
