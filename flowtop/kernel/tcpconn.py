"""Passive TCP tracking's userspace side: the TC program's connection map as samples.

bpf/tcprtt.h keeps one entry per TCP connection crossing an attached hook
(layout.TCP_CONN_KEY -> layout.TCP_CONN: handshake times, per direction an
observation point, RTT estimate and retransmits). TcpConnTable reads it,
turns it into layout.TCP_SAMPLE records (conn_samples) and deletes what is
finished; the kernel inserts, userspace deletes, the LRU evicts when full.
In-order data segments a CPU counts in its tcp_pkts row instead of the
entry (deferred) are added to the entry's data_segs here (add_deferred).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from flowtop.errors import KernelFeatureError
from flowtop.kernel import layout
from flowtop.kernel.bpfsys import map_info
from flowtop.kernel.maps import BatchReader, cpu_ids, delete_batch, read_rows

# A connection nobody has sent anything on for this long is forgotten (it is
# picked up again, without its handshake, if it wakes up).
TCP_IDLE_NS = 300 * 1_000_000_000


class TcpConnTable:
    """Userspace side of the passive TCP tracker (bpf/tcprtt.h): reads the
    connection map, turns it into layout.TCP_SAMPLE records and deletes what
    is finished.

    A closed connection (FIN both ways, or RST) is reported with its final
    figures once more, at the next read, and deleted then: the last ACK
    and any retransmitted FIN still land in the entry meanwhile. Idle ones
    (TCP_IDLE_NS) go at once. LRU evictions are what the kernel inserted
    minus what we deleted minus what is left; the figure is a lower bound
    while inserts race the read, exact when they don't.

    pkts_fd: the tcp_pkts map (layout.TCP_PKT, cpu_ids() rows of `slots`
    entries: ProgramOptions.cache_slots), whose deferred data segments
    samples() adds to the connections' (add_deferred); None: not read.
    """

    def __init__(self, fd: int, pkts_fd: int | None = None, slots: int = 0) -> None:
        self._fd = fd
        self._reader = BatchReader(
            4096, layout.TCP_CONN_KEY, layout.TCP_CONN, what="the TCP connection map"
        )
        self._pkts_fd = pkts_fd
        self._slots = slots
        self._pkts = np.zeros((cpu_ids() if pkts_fd is not None else 0, slots), layout.TCP_PKT)
        # read_rows() writes value_size bytes an entry: a map of another
        # layout (a per-CPU one, an older build's) would write past the
        # buffer. Refused at the read, so that a program built from other
        # sources (a benchmark's comparison) can still load and attach.
        self._pkts_error: str | None = None
        if pkts_fd is not None:
            info = map_info(pkts_fd)
            if info.value_size != layout.TCP_PKT.itemsize or info.max_entries != self._pkts.size:
                self._pkts_error = (
                    f"tcp_pkts has {info.max_entries} entries of {info.value_size} bytes,"
                    f" not {self._pkts.size} of {layout.TCP_PKT.itemsize}"
                )
        self._closed: set[bytes] = set()  # reported closed once; deleted at the next read
        self.deleted = 0
        self.evicted = 0

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The map's entries (views, valid until the next read)."""
        return self._reader.read(self._fd)

    def samples(self, now_ns: int, inserted: int, idle_ns: int = TCP_IDLE_NS) -> np.ndarray:
        keys, vals = self.read()
        self.evicted = max(self.evicted, inserted - self.deleted - len(keys))
        if self._pkts_error is not None:
            raise KernelFeatureError(self._pkts_error)
        if self._pkts_fd is not None:
            # Connections first, the rows second (see add_deferred): vals is
            # the reader's buffer, read again next time.
            read_rows(self._pkts_fd, 0, self._slots, self._slots, self._pkts)
            add_deferred(keys, vals, self._pkts)
        out = conn_samples(keys, vals)
        half = vals["side"]["half"]
        closed = ((vals["flags"] & layout.CONN_RST) != 0) | (
            (half["flags"][:, 0] & half["flags"][:, 1] & layout.HALF_FIN) != 0
        )
        idle = half["last_ns"].max(axis=1).astype(np.int64) + idle_ns < now_ns
        raw = keys.view(f"V{layout.TCP_CONN_KEY.itemsize}")
        go = idle.copy()
        if self._closed:
            was = np.fromiter((k in self._closed for k in raw[closed].tolist()), bool)
            go[np.flatnonzero(closed)[was]] = True
        self._closed = set(raw[closed & ~go].tolist())
        if go.any():
            self._delete(np.ascontiguousarray(keys[go]))
        return out

    def _delete(self, keys: np.ndarray) -> None:
        # A key gone meanwhile was evicted since we read it: the kernel was first.
        deleted, err = delete_batch(self._fd, keys)
        self.deleted += deleted
        if err:
            raise KernelFeatureError(f"deleting TCP connections failed: {os.strerror(err)}")


def _with_words(dtype: np.dtype, fields: dict[str, str]) -> np.dtype:
    """dtype with the named 16-byte address fields seen as two uint64 words:
    numpy copies V16 fields an element at a time, uint64 pairs in bulk."""
    assert dtype.fields is not None
    names = list(dtype.fields)
    formats: list[Any] = []
    offsets = []
    for n in names:
        sub, off = dtype.fields[n][:2]
        formats.append(("<u8", (2,)) if n in fields else sub)
        offsets.append(off)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": dtype.itemsize}
    )


_CONN_KEY_W = _with_words(layout.TCP_CONN_KEY, {"addr0": "", "addr1": ""})
_FLOW_KEY_W = _with_words(layout.FLOW_KEY, {"src": "", "dst": ""})
_SAMPLE_W = np.dtype(
    {
        "names": ["key"],
        "formats": [_FLOW_KEY_W],
        "offsets": [0],
        "itemsize": layout.TCP_SAMPLE.itemsize,
    }
)


def add_deferred(keys: np.ndarray, vals: np.ndarray, rows: np.ndarray) -> None:
    """Adds the tcp_pkts entries' deferred data segments (rows: layout.TCP_PKT,
    any shape) to the data_segs of the connection halves they belong to, in
    place in vals (layout.TCP_CONN, keys: their layout.TCP_CONN_KEY).

    An entry's connection and direction are those of its flow key, as the
    kernel's ft_conn_key() canonicalises it; it counts for that half only
    while the half's stamp is the entry's (another stamp: a new connection on
    the same 4-tuple). Entries without a connection, with stamp 0 or another
    stamp are left out (deleted, evicted or reused); several CPUs' entries
    for one half add up.

    The connection map must be read before the rows: the kernel moves a
    row's count into the entry by zeroing the row first and adding to the
    entry second, so a move between the two reads is in neither copy (an
    undercount, made good at the next read) and never in both.
    """
    e = rows.ravel()
    e = e[(e["deferred"] > 0) & (e["stamp"] != 0)]
    if not len(e) or not len(keys):
        return
    w = layout.FLOW_KEY_WORDS.view(e["key"])
    src, dst = w[:, layout.FLOW_KEY_WORDS.spans["src"]], w[:, layout.FLOW_KEY_WORDS.spans["dst"]]
    sport = layout.FLOW_KEY_WORDS.field(w, "sport")
    dport = layout.FLOW_KEY_WORDS.field(w, "dport")
    # ft_conn_key(): endpoint 0 is the lower address (words compared as
    # little-endian u64s, first word first), then the lower port.
    d = np.where(
        src[:, 0] != dst[:, 0],
        src[:, 0] > dst[:, 0],
        np.where(src[:, 1] != dst[:, 1], src[:, 1] > dst[:, 1], sport > dport),
    )  # bool: the packet goes from endpoint 1 to endpoint 0
    flip = d[:, None]
    ck = np.empty((len(e), 5), dtype=np.uint64)
    ck[:, 0:2] = np.where(flip, dst, src)
    ck[:, 2:4] = np.where(flip, src, dst)
    ver = layout.FLOW_KEY_WORDS.field(w, "ip_version")
    p0, p1 = np.where(d, dport, sport), np.where(d, sport, dport)
    ck[:, 4] = p0 | p1 << np.uint64(16) | ver << np.uint64(32)
    want = ck.view(f"V{layout.TCP_CONN_KEY.itemsize}").ravel()
    have = np.ascontiguousarray(keys).view(f"V{layout.TCP_CONN_KEY.itemsize}").ravel()
    order = np.argsort(have)
    pos = np.minimum(np.searchsorted(have[order], want), len(have) - 1)
    conn = order[pos]
    half = vals["side"]["half"]
    side = d.astype(np.intp)
    ok = (have[conn] == want) & (half["stamp"][conn, side] == e["stamp"])
    np.add.at(half["data_segs"], (conn[ok], side[ok]), e["deferred"][ok])


def conn_samples(keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """layout.TCP_SAMPLE records of connections (layout.TCP_CONN_KEY/TCP_CONN):
    one per direction that carried data, src = that direction's sender.

    The RTT fields describe the whole path, the same in both records: the
    sum of the two halves' smoothed RTTs (mean deviations, minima), 0 until
    both halves have a sample; rtt_samples counts both halves' samples.
    """
    half = vals["side"]["half"]
    rtt = vals["side"]["rtt"]
    u32 = np.iinfo(np.uint32).max

    def pair(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return col[:, 0], col[:, 1]

    s0, s1 = pair(rtt["srtt_ns"])
    both = (s0 > 0) & (s1 > 0)

    def us(col: np.ndarray, floor: int) -> np.ndarray:
        a, b = pair(col)
        v = np.where(both, np.maximum((a + b) // 1000, floor), 0)
        return np.minimum(v, u32).astype(np.uint32)

    srtt_us = us(rtt["srtt_ns"], 1)
    rttvar_us = us(rtt["mdev_ns"], 0)
    min_us = us(rtt["min_ns"], 1)
    n0, n1 = pair(rtt["samples"])
    samples = np.minimum(n0.astype(np.uint64) + n1, u32)
    l0, l1 = pair(half["last_ns"])
    last = np.maximum(l0, l1)
    kw = keys.view(_CONN_KEY_W)
    client = vals["client"]
    sels = [np.flatnonzero(half["data_segs"][:, d] > 0) for d in (0, 1)]
    out = np.zeros(len(sels[0]) + len(sels[1]), dtype=layout.TCP_SAMPLE)
    for d, sel in enumerate(sels):
        rec = out[: len(sel)] if d == 0 else out[len(sels[0]) :]
        k = rec.view(_SAMPLE_W)["key"]
        k["ip_version"] = keys["ip_version"][sel]
        k["proto"] = 6
        k["src"] = kw[f"addr{d}"][sel]
        k["dst"] = kw[f"addr{1 - d}"][sel]
        k["sport"] = keys[f"port{d}"][sel]
        k["dport"] = keys[f"port{1 - d}"][sel]
        rec["srtt_us"] = srtt_us[sel]
        rec["rttvar_us"] = rttvar_us[sel]
        rec["min_rtt_us"] = min_us[sel]
        rec["rtt_samples"] = samples[sel]
        rec["retrans"] = half["retrans"][sel, d]
        rec["data_segs"] = half["data_segs"][sel, d]
        rec["source"] = layout.TCP_SOURCE_PASSIVE
        c = client[sel]
        rec["server"] = np.where(c == d + 1, 1, np.where(c == 2 - d, 2, 0))
        rec["last_ns"] = last[sel]
    return out
