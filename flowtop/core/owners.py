"""Socket owners joined to flows: which process, user, service, container and
pod is behind each end of a flow that starts or ends on this host.

Inputs are OWNER_RECORDs (kernel/owner_records.py): the kernel's, one per
local socket tuple (local address/port, remote address/port, proto), and the
start-up snapshot of core/procsockets.py (sockets older than flowtop).
`OwnerTable.join` gives, for a batch of flow keys, per-flow owner columns the
flow table can store (integers only; names through small interned tables).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from flowtop.core.cgroups import CgroupPaths
from flowtop.core.procsockets import ProcSnapshot
from flowtop.kernel.layout import FLOW_KEY_WORDS
from flowtop.kernel.owner_records import (
    OWNER_FROM_PACKET,
    OWNER_RECORD,
    OWNER_TUPLE_WORDS,
    OWNER_UNKNOWN,
)
from flowtop.sanitize import clean

# OwnerColumns.state, per flow
STATE_NONE = 0  # no end is a local socket flowtop knows (a forwarded flow)
STATE_ATTRIBUTED = 1  # an end's socket has a known owner
# an end is a local socket of unknown owner (older than flowtop, not in the snapshot)
STATE_UNATTRIBUTED = 2
# The flow table's owner_state before the engine's join settled it (its blank):
# a new row, or one whose socket's report may still come (core/joins.OwnerJoin).
OWNER_PENDING = 255
# OwnerColumns.end: which end of the flow key the owner is
END_NONE = 0
END_SRC = 1  # src/sport is the owner's socket (it sent the flow's packets)
END_DST = 2  # dst/dport is
UID_NONE = 0xFFFF_FFFF  # (uid_t)-1: never a real uid; uid 0 is root
NAME_NONE = 0  # id of "nothing known" in every NameTable
NAME_OTHER = 1  # id every name gets once its table is full (counted in `full`)
COMM_MAX_LEN = 16
_TCP = 6

_T = OWNER_TUPLE_WORDS
_K = FLOW_KEY_WORDS
# The tuple words that identify a socket: everything but the pad.
_TUPLE_MASK = _T.mask(("family", "proto", "lport", "rport", "local", "remote"))
_LOCAL_WORDS = _T.spans["local"]
_REMOTE_WORDS = _T.spans["remote"]
# flow_tuple_columns() builds the tuple's words in this order: word 0
# (family, proto, ports), local (2 words), remote (2 words).
assert _T.count == 5 and _T.fields["family"].word == _T.fields["rport"].word == 0
assert (_LOCAL_WORDS.start, _LOCAL_WORDS.stop, _REMOTE_WORDS.stop) == (1, 3, 5)
# An entry's fields (one _ENTRY record per socket tuple).
_COLUMNS = (
    ("pid", "<u4"),
    ("uid", "<u4"),
    ("cgroup_id", "<u8"),
    ("comm", "<u4"),
    ("service", "<u4"),
    ("container", "<u4"),
    ("pod", "<u4"),
    ("flags", "<u4"),
    ("unknown", "?"),
    ("last_used", "<f8"),
)
# What OwnerColumns carries per flow, from the entry columns.
_OWNER_FIELDS = ("pid", "uid", "cgroup_id", "comm", "service", "container", "pod")


class NameTable:
    """Display strings interned to small integer ids, so that a flow table
    column holds a uint32 per flow instead of a string: id 0 (NAME_NONE) is
    None, id 1 (NAME_OTHER) is what every new name gets once `max_size`
    names are held (counted in `full`); ids are never reused."""

    def __init__(self, max_size: int = 65536) -> None:
        self.values: list[str | None] = [None, "(too many names)"]
        self._ids: dict[str, int] = {}
        self.max_size = max_size
        self.full = 0

    def __len__(self) -> int:
        return len(self.values)

    def intern(self, name: str | None) -> int:
        if not name:
            return NAME_NONE
        got = self._ids.get(name)
        if got is not None:
            return got
        if len(self.values) >= self.max_size:
            self.full += 1
            return NAME_OTHER
        self._ids[name] = len(self.values)
        self.values.append(name)
        return len(self.values) - 1

    def get(self, nid: int) -> str | None:
        return self.values[nid] if 0 <= nid < len(self.values) else None

    def texts(self, ids: np.ndarray) -> np.ndarray:
        """The names of an id array (object array; None for NAME_NONE)."""
        table = np.array(self.values, dtype=object)
        out: np.ndarray = table[np.clip(np.asarray(ids, dtype=np.int64), 0, len(table) - 1)]
        return out


@dataclass(frozen=True)
class OwnerNames:
    """The name tables OwnerColumns' ids point into."""

    comm: NameTable
    service: NameTable
    container: NameTable
    pod: NameTable


@dataclass(frozen=True)
class OwnerColumns:
    """The owner of each flow of a join, one array per field, in key order.

    pid (0: none), uid (UID_NONE: none), cgroup_id (0: none): uint; comm,
    service, container, pod: NameTable ids (names.comm.texts(cols.comm)
    gives the strings; 0: none). state: STATE_* per flow; end: END_*, which
    end of the key the owner's socket is."""

    pid: np.ndarray
    uid: np.ndarray
    cgroup_id: np.ndarray
    comm: np.ndarray
    service: np.ndarray
    container: np.ndarray
    pod: np.ndarray
    state: np.ndarray
    end: np.ndarray
    names: OwnerNames

    @property
    def attributed(self) -> np.ndarray:
        out: np.ndarray = self.state == STATE_ATTRIBUTED
        return out

    @property
    def unattributed(self) -> np.ndarray:
        out: np.ndarray = self.state == STATE_UNATTRIBUTED
        return out

    def texts(self, column: str) -> np.ndarray:
        """One name column as strings (None where unknown): comm, service,
        container or pod."""
        table: NameTable = getattr(self.names, column)
        out: np.ndarray = table.texts(getattr(self, column))
        return out


def tuple_words(tuples: np.ndarray) -> np.ndarray:
    """OWNER_TUPLEs as (n, 5) uint64 words, normalised for comparison: pad
    zeroed, and the 12 bytes after an IPv4 address zeroed."""
    words: np.ndarray = _T.view(tuples) & _TUPLE_MASK  # a new array
    v4 = _T.field(words, "family") == 4
    if v4.any():
        lo = np.uint64(0xFFFF_FFFF)
        for span in (_LOCAL_WORDS, _REMOTE_WORDS):
            words[v4, span.start] &= lo
            words[v4, span.start + 1] = 0
    return words


_H = tuple(
    np.uint64(k)
    for k in (
        0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
        0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
    )
)  # fmt: skip
_S33 = np.uint64(33)


def hash_columns(cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """64-bit hash of tuples given as their 5 word columns: each word times
    its own odd constant, xored, then mixed (murmur3's finaliser). Cheaper
    than a word-by-word chain; equal tuples hash equal, and the index
    compares whole tuples on a hash hit, so collisions cost a probe only."""
    h = cols[0] * _H[0]
    for c, k in zip(cols[1:], _H[1:], strict=False):
        h ^= c * k
    h ^= h >> _S33
    h *= _H[5]
    h ^= h >> _S33
    return h


def _columns(words: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(words[:, i] for i in range(_T.count))


def flow_tuple_columns(keys: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Flow keys (layout.FLOW_KEY) as tuple word columns twice: src as the
    local end (src, sport -> local, lport), and dst as the local end. The
    address columns are views of the keys' words (no copies)."""
    kw = _K.view(keys)
    sport, dport = _K.field(kw, "sport"), _K.field(kw, "dport")
    head = _K.field(kw, "ip_version") << np.uint64(_T.fields["family"].shift)
    head |= _K.field(kw, "proto") << np.uint64(_T.fields["proto"].shift)
    lp, rp = np.uint64(_T.fields["lport"].shift), np.uint64(_T.fields["rport"].shift)
    fwd0 = head | (sport << lp) | (dport << rp)
    rev0 = head | (dport << lp) | (sport << rp)
    src = [kw[:, i] for i in range(_K.spans["src"].start, _K.spans["src"].stop)]
    dst = [kw[:, i] for i in range(_K.spans["dst"].start, _K.spans["dst"].stop)]
    return (fwd0, *src, *dst), (rev0, *dst, *src)


def flow_tuple_words(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """flow_tuple_columns as (n, 5) word arrays."""
    fwd, rev = flow_tuple_columns(keys)
    return np.stack(fwd, axis=1), np.stack(rev, axis=1)


_EMPTY = -1
_TOMBSTONE = -2
_ENTRY = np.dtype(list(_COLUMNS))


class _Entries:
    """Socket tuples (as tuple words) -> owner columns (one _ENTRY record per
    row), at most `max_rows` rows, with a vectorised open-addressing hash
    index over the words: each slot holds a row and its tuple's hash, so a
    probe compares one word, and the whole tuple only on a hash hit."""

    def __init__(self, max_rows: int, initial: int = 1024) -> None:
        self.max_rows = max_rows
        cap = max(1, min(initial, max_rows))
        self.words = np.zeros((cap, _T.count), dtype=np.uint64)
        self.cols = self._blank(cap)
        self.live = np.zeros(cap, dtype=bool)
        self.slot_of_row = np.full(cap, -1, dtype=np.int64)
        self.count = 0
        self._size = 0
        self._used = 0  # slots live or tombstoned
        self._slot_row = np.zeros(0, dtype=np.int64)
        self._slot_hash = np.zeros(0, dtype=np.uint64)
        self._resize(cap)

    @staticmethod
    def _blank(n: int) -> np.ndarray:
        out = np.zeros(n, dtype=_ENTRY)
        out["uid"] = UID_NONE
        return out

    def _resize(self, capacity: int) -> None:
        """A new slot table for `capacity` live rows (load <= 1/2), rehashed."""
        size = 1 << max(4, (2 * max(capacity, 1) - 1).bit_length())
        self._size = size
        self._slot_row = np.full(size, _EMPTY, dtype=np.int64)
        self._slot_hash = np.zeros(size, dtype=np.uint64)
        self._used = 0
        self.slot_of_row[:] = -1
        rows = np.flatnonzero(self.live)
        if len(rows):
            self._place(hash_columns(_columns(self.words[rows])), rows)

    def _place(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        mask = np.uint64(self._size - 1)
        slot = (hashes & mask).astype(np.int64)
        pending = np.arange(len(rows))
        reused = 0
        while len(pending):
            free = np.flatnonzero(self._slot_row[slot] < 0)
            keep = np.ones(len(pending), dtype=bool)
            if len(free):
                # Several rows may want one free slot: the first of each wins.
                uniq, first = np.unique(slot[free], return_index=True)
                won = free[first]
                reused += int((self._slot_row[uniq] == _TOMBSTONE).sum())
                r = rows[pending[won]]
                self._slot_row[uniq] = r
                self._slot_hash[uniq] = hashes[pending[won]]
                self.slot_of_row[r] = uniq
                keep[won] = False
            pending = pending[keep]
            slot = (slot[keep] + 1) & (self._size - 1)
        self._used += len(rows) - reused

    def find_columns(self, cols: tuple[np.ndarray, ...]) -> np.ndarray:
        """Row of each tuple (given as word columns), -1 where absent."""
        n = len(cols[0])
        rows = np.full(n, -1, dtype=np.int64)
        if not self.count or not n:
            return rows
        hashes = hash_columns(cols)
        slot = (hashes & np.uint64(self._size - 1)).astype(np.int64)
        pending = np.arange(n)
        size_mask = self._size - 1
        while len(pending):
            sr = self._slot_row[slot]
            hit = np.flatnonzero((sr >= 0) & (self._slot_hash[slot] == hashes[pending]))
            if len(hit):
                q, r = pending[hit], sr[hit]
                same = np.ones(len(hit), dtype=bool)
                for i, c in enumerate(cols):
                    same &= self.words[r, i] == c[q]
                rows[q[same]] = r[same]
                hit = hit[same]  # a hash collision probes on
            done = sr == _EMPTY
            done[hit] = True
            keep = ~done
            pending = pending[keep]
            slot = (slot[keep] + 1) & size_mask
        return rows

    def find(self, words: np.ndarray) -> np.ndarray:
        """Row of each tuple (n, 5) words, -1 where absent."""
        return self.find_columns(_columns(words))

    def delete(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        self._slot_row[self.slot_of_row[rows]] = _TOMBSTONE
        self.slot_of_row[rows] = -1
        self.live[rows] = False
        self.cols.view(f"V{_ENTRY.itemsize}")[rows] = _BLANK_RAW
        self.count -= len(rows)

    def oldest(self, k: int) -> np.ndarray:
        """The k live rows least recently used."""
        rows = np.flatnonzero(self.live)
        if k >= len(rows):
            return rows
        last = self.cols["last_used"][rows]
        out: np.ndarray = rows[np.argpartition(last, k)[:k]]
        return out

    def _grow(self, need: int) -> None:
        cap = len(self.live)
        if need <= cap:
            return
        new = min(self.max_rows, max(need, 2 * cap))
        words = np.zeros((new, _T.count), dtype=np.uint64)
        words[:cap] = self.words
        self.words = words
        cols = self._blank(new)
        cols[:cap] = self.cols
        self.cols = cols
        live = np.zeros(new, dtype=bool)
        live[:cap] = self.live
        self.live = live
        slot_of_row = np.full(new, -1, dtype=np.int64)
        slot_of_row[:cap] = self.slot_of_row
        self.slot_of_row = slot_of_row

    def insert(self, words: np.ndarray) -> tuple[np.ndarray, int]:
        """Rows for distinct absent tuples (the columns are the caller's to
        set), and how many were dropped to make room: the least recently
        used entries first, then the batch's first tuples when it alone is
        larger than max_rows (those get row -1)."""
        n = len(words)
        dropped = 0
        rows = np.full(n, -1, dtype=np.int64)
        take = np.arange(n)
        if n > self.max_rows:
            dropped += n - self.max_rows
            take = take[n - self.max_rows :]
        over = self.count + len(take) - self.max_rows
        if over > 0:
            self.delete(self.oldest(over))
            dropped += over
        self._grow(self.count + len(take))
        free = np.flatnonzero(~self.live)[: len(take)]
        self.words[free] = words[take]
        self.live[free] = True
        self.count += len(free)
        if 2 * self.count > self._size or self._used + len(free) > (3 * self._size) // 4:
            self._resize(self.count)  # places every live row, the new ones too
        else:
            self._place(hash_columns(_columns(self.words[free])), free)
        rows[take] = free
        return rows, dropped


_BLANK_RAW = _Entries._blank(1).view(f"V{_ENTRY.itemsize}")[0]


class OwnerTable:
    """Who owns each local socket tuple, and the owner of each flow.

    What it gives the engine: `join(keys)`, for a batch of flow keys
    (layout.FLOW_KEY, any direction and interface), an `OwnerColumns`: per
    flow the pid, uid, cgroup id and the comm/service/container/pod name ids
    of the local socket at one of its ends, and whether the flow is
    attributed, unattributed (a local socket of unknown owner) or has no
    owner (no end is a local socket: forwarded). The socket is looked for
    with the key's src as the local end first (the flow's sender), then its
    dst; the first end whose owner is known wins.

    Entries come from `add()` (kernel records and the snapshot; a record
    for a tuple already held replaces its owner, except that a record of
    unknown owner never replaces a known one) and `add_snapshot()`. A
    kernel record of unknown owner is filled from a snapshot entry of the
    same tuple, or from a snapshot socket with no remote end (a listener, an
    unconnected UDP socket) bound to its local address (or any address) and
    port. Those no-remote entries are kept apart (at most `max_wildcards`),
    used only for that filling, and do not expire. A TCP record of unknown
    owner with its tuple read from the packet that nothing fills is the
    kernel's own reply (a RST, a TIME_WAIT ACK) and is dropped: its flows
    have no owner, as forwarded ones. Every other entry is
    dropped when no join matched it for `idle_timeout` seconds, so a flow
    keeps its owner after the process exits for as long as the flow lives.
    At most `max_entries` tuples are held: when full, the least recently
    used go first (counted in dropped_full).
    """

    def __init__(
        self,
        cgroups: CgroupPaths | None = None,
        idle_timeout: float = 300.0,
        max_entries: int = 262144,
        max_wildcards: int = 65536,
        max_names: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cgroups = cgroups
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._exact = _Entries(max_entries)
        self._wild = _Entries(max_wildcards)
        self.names = OwnerNames(
            NameTable(max_names), NameTable(max_names), NameTable(max_names), NameTable(max_names)
        )
        self._workloads: dict[int, tuple[int, int, int]] = {}  # cgroup id -> name ids
        self._comms: dict[bytes, int] = {}
        self._stats = dict.fromkeys(
            ("unattributed", "dropped_full", "expired", "filled", "snapshot_errors",
             "kernel_replies"), 0,
        )  # fmt: skip

    def __len__(self) -> int:
        return self._exact.count

    def cgroup_path(self, cgroup_id: int) -> str | None:
        """The cleaned cgroup v2 path of an id (None: 0, unknown, or no cgroups)."""
        if not cgroup_id or self.cgroups is None:
            return None
        return self.cgroups.path(cgroup_id)

    # -- adding -------------------------------------------------------------
    def add_snapshot(self, snap: ProcSnapshot, now: float | None = None) -> None:
        """The start-up snapshot's records, and its read errors counted."""
        self._stats["snapshot_errors"] += snap.errors
        self.add(snap.records, now)

    def add(self, records: np.ndarray, now: float | None = None) -> None:
        """OWNER_RECORDs (kernel or snapshot), in the order they happened:
        of several for one tuple, the last counts."""
        recs = np.ascontiguousarray(records, dtype=OWNER_RECORD)
        if not len(recs):
            return
        now = self._clock() if now is None else now
        words = tuple_words(recs["tuple"])
        # The last record of each tuple: unique over the reversed batch.
        raw = np.ascontiguousarray(words[::-1]).view(f"V{8 * _T.count}").ravel()
        _u, first = np.unique(raw, return_index=True)
        keep = np.sort(len(recs) - 1 - first)
        # Rows picked on raw bytes: numpy copies nested records field by field.
        words = words[keep]
        recs = recs.view(f"V{OWNER_RECORD.itemsize}")[keep].view(OWNER_RECORD)
        cols = self._owner_columns(recs, now)
        wild = ~words[:, _REMOTE_WORDS].any(axis=1) & (_T.field(words, "rport") == 0)
        if wild.any():
            known = np.flatnonzero(wild & ~cols["unknown"])  # unknown ones fill nothing
            if len(known):
                self._upsert(self._wild, words[known], {n: c[known] for n, c in cols.items()})
                # Earlier entries of unknown owner may be filled now.
                self._fill(np.flatnonzero(self._exact.live & self._exact.cols["unknown"]))
            sel = np.flatnonzero(~wild)
            words = words[sel]
            cols = {n: c[sel] for n, c in cols.items()}
        rows = self._upsert(self._exact, words, cols)
        rows = rows[rows >= 0]
        self._fill(rows[self._exact.cols["unknown"][rows]])
        self._drop_kernel_replies(rows)

    def _drop_kernel_replies(self, rows: np.ndarray) -> None:
        """TCP tuples of unknown owner read from the packet (a socket with no
        peer) that no snapshot listener filled are the kernel's own replies:
        RSTs to closed ports and TIME_WAIT ACKs leave from the namespace's
        TCP control socket, which no process created. Their flows have no
        owner (STATE_NONE), like forwarded ones, rather than counting as
        unattributed; counted in kernel_replies."""
        ex = self._exact
        c = ex.cols
        kern = rows[c["unknown"][rows] & ((c["flags"][rows] & OWNER_FROM_PACKET) != 0)]
        kern = kern[_T.field(ex.words[kern], "proto") == _TCP]
        if len(kern):
            ex.delete(kern)
            self._stats["kernel_replies"] += len(kern)

    def _upsert(
        self, ents: _Entries, words: np.ndarray, cols: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Entries for distinct tuples set to the given owner columns (a known
        owner is not replaced by an unknown one); their rows (-1: dropped)."""
        rows = ents.find(words)
        have = rows >= 0
        # A held tuple: an unknown-owner record only refreshes it.
        upd = np.flatnonzero(have & ~cols["unknown"])
        ents.cols["last_used"][rows[have]] = cols["last_used"][have]
        for n, c in cols.items():
            ents.cols[n][rows[upd]] = c[upd]
        new = np.flatnonzero(~have)
        if len(new):
            got, dropped = ents.insert(words[new])
            self._stats["dropped_full"] += dropped
            ok = got >= 0
            for n, c in cols.items():
                ents.cols[n][got[ok]] = c[new[ok]]
            rows[new] = got
        return rows

    def _fill(self, rows: np.ndarray) -> None:
        """Exact entries of unknown owner given the owner of a no-remote
        snapshot socket on their local end: bound to that address, else to
        any address of the family, else (IPv4) a dual-stack [::] socket."""
        ex, wl = self._exact, self._wild
        if not len(rows) or not wl.count:
            return
        w = ex.words[rows].copy()
        w[:, _REMOTE_WORDS] = 0
        w[:, _T.fields["rport"].word] &= ~np.uint64(_T.fields["rport"].bits)
        found = wl.find(w)
        w[:, _LOCAL_WORDS] = 0
        miss = found < 0
        found[miss] = wl.find(w[miss])
        v4 = (found < 0) & (_T.field(w, "family") == 4)
        if v4.any():
            _T.set_field(w, "family", np.full(len(w), 6))
            found[v4] = wl.find(w[v4])
        hit = found >= 0
        for n in (*_OWNER_FIELDS, "flags"):
            ex.cols[n][rows[hit]] = wl.cols[n][found[hit]]
        ex.cols["unknown"][rows[hit]] = False
        self._stats["filled"] += int(hit.sum())

    def _owner_columns(self, recs: np.ndarray, now: float) -> dict[str, np.ndarray]:
        o = recs["owner"]
        n = len(recs)
        flags = o["flags"].astype(np.uint32)
        unknown = (flags & OWNER_UNKNOWN) != 0
        cols = {
            "pid": o["tgid"].astype(np.uint32),
            "uid": np.where(unknown, UID_NONE, o["uid"]).astype(np.uint32),
            "cgroup_id": o["cgroup_id"].astype(np.uint64),
            "flags": flags,
            "unknown": unknown,
            "last_used": np.full(n, now, dtype=np.float64),
        }
        # One Python step per distinct comm and per distinct cgroup.
        comms, inv = np.unique(o["comm"], return_inverse=True)
        cols["comm"] = np.array([self._comm_id(c) for c in comms.tolist()], np.uint32)[inv]
        cgs, inv = np.unique(cols["cgroup_id"], return_inverse=True)
        ids = np.array([self._workload_ids(int(c)) for c in cgs.tolist()], np.uint32)
        ids = ids.reshape(len(cgs), 3)[inv.ravel()]
        cols["service"], cols["container"], cols["pod"] = ids[:, 0], ids[:, 1], ids[:, 2]
        return cols

    def _comm_id(self, raw: bytes) -> int:
        got = self._comms.get(raw)
        if got is None:
            # Untrusted: any process names itself (prctl PR_SET_NAME).
            text = clean(raw.decode("utf-8", "replace"), COMM_MAX_LEN)
            got = self._comms[raw] = self.names.comm.intern(text)
        return got

    def _workload_ids(self, cgid: int) -> tuple[int, int, int]:
        if cgid == 0 or self.cgroups is None:
            return (NAME_NONE, NAME_NONE, NAME_NONE)
        got = self._workloads.get(cgid)
        if got is None:
            info = self.cgroups.get(cgid)
            if info is None:
                # Not cached: a cgroup made after the last walk may show later.
                return (NAME_NONE, NAME_NONE, NAME_NONE)
            wl = info.workload
            got = (
                self.names.service.intern(wl.service),
                self.names.container.intern(wl.container),
                self.names.pod.intern(wl.pod),
            )
            if len(self._workloads) >= 65536:
                self._workloads.clear()
            self._workloads[cgid] = got
        return got

    # -- joining ------------------------------------------------------------
    def join(self, keys: np.ndarray, now: float | None = None) -> OwnerColumns:
        """The owner of each flow key (see the class doc); entries matched
        are kept alive, and entries idle for idle_timeout dropped after."""
        now = self._clock() if now is None else now
        ex = self._exact
        n = len(keys)
        fwd, rev = flow_tuple_columns(keys)
        unknown = ex.cols["unknown"]
        r1 = ex.find_columns(fwd)
        known1 = r1 >= 0
        known1[known1] = ~unknown[r1[known1]]
        # The dst end only where the src end gave no known owner.
        rest = np.flatnonzero(~known1)
        r2 = np.full(n, -1, dtype=np.int64)
        if len(rest) and ex.count:
            r2[rest] = ex.find_columns(tuple(c[rest] for c in rev))
        known2 = r2 >= 0
        known2[known2] = ~unknown[r2[known2]]
        row = np.where(known1, r1, np.where(known2, r2, -1))
        has = row >= 0
        end = np.where(known1, END_SRC, np.where(known2, END_DST, END_NONE)).astype(np.uint8)
        state = has.astype(np.uint8)  # STATE_ATTRIBUTED or STATE_NONE
        state[~has & ((r1 >= 0) | (r2 >= 0))] = STATE_UNATTRIBUTED
        self._stats["unattributed"] = int((state == STATE_UNATTRIBUTED).sum())
        last = ex.cols["last_used"]
        last[r1[r1 >= 0]] = now
        last[r2[r2 >= 0]] = now
        # One gather of whole entry records, then the rows without an owner
        # blanked; on raw bytes: numpy copies structured records field by
        # field, ten times slower.
        raw = ex.cols.view(f"V{_ENTRY.itemsize}")
        got = raw[np.where(has, row, 0)]
        got[~has] = _BLANK_RAW
        rec = got.view(_ENTRY)
        out = {name: rec[name] for name in _OWNER_FIELDS}
        self.expire(now)
        return OwnerColumns(**out, state=state, end=end, names=self.names)

    def expire(self, now: float | None = None) -> int:
        """Drops exact entries no join matched for idle_timeout seconds; how many."""
        now = self._clock() if now is None else now
        ex = self._exact
        idle = np.flatnonzero(ex.live & (ex.cols["last_used"] < now - self.idle_timeout))
        ex.delete(idle)
        self._stats["expired"] += len(idle)
        return len(idle)

    def counters(self) -> dict[str, int]:
        """entries (socket tuples held), unknown_entries (of unknown owner),
        wildcards (no-remote snapshot sockets), unattributed (flows of the
        last join), dropped_full, expired, filled (unknown owners filled
        from the snapshot), snapshot_errors, kernel_replies (tuples of the
        kernel's own TCP replies, dropped), names_full, cgroup_misses."""
        ex = self._exact
        return {
            "entries": ex.count,
            "unknown_entries": int((ex.live & ex.cols["unknown"]).sum()),
            "wildcards": self._wild.count,
            **self._stats,
            "names_full": sum(t.full for t in vars(self.names).values()),
            "cgroup_misses": self.cgroups.misses if self.cgroups is not None else 0,
        }
