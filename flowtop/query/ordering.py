"""Sorting and top-N: the order of the query's rows and the first few of it.

Ties are broken by row identity everywhere, so that rows with equal values
do not swap places between refreshes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flowtop.kernel import layout
from flowtop.query.grouping import Aggregate

_KEY = layout.FLOW_KEY_WORDS


def smallest(vals: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest values, plus every value tied with the k-th.

    Ties are all returned so that the caller's tie-break by identity decides
    the last places, and equal rows do not swap between refreshes. With many
    values, a threshold from a sample first narrows the partition to a few
    hundred candidates (partitioning 100k values costs ~1 ms; this ~0.1 ms).
    """
    n = len(vals)
    if k >= n:
        return np.arange(n)
    cand = None
    if n > 20 * k and n > 4096:
        step = n // 2048
        sample = vals[::step]
        m = min(len(sample) - 1, 2 * (k * len(sample) // n + 1))
        thresh = np.partition(sample, m)[m]
        idx = np.flatnonzero(vals <= thresh)
        if k <= len(idx) <= n // 4:
            cand = idx
    if cand is None:
        cand = np.arange(n)
    part = cand[np.argpartition(vals[cand], k - 1)[:k]]
    edge = vals[part].max()
    out: np.ndarray = np.union1d(part, np.flatnonzero(vals == edge))
    return out


def sort_order(
    a: Aggregate, by: str, descending: bool, limit: int, ifnames: Mapping[int, str]
) -> np.ndarray:
    """Indices of the first `limit` rows of `a` sorted by `by` (a SORT_KEYS
    entry; iface: by interface name, then direction)."""
    n = len(a.ids)
    counters = {
        "bps": a.bps,
        "pps": a.pps,
        "bytes": a.bytes,
        "packets": a.packets,
        "flows": a.flows,
        "first_seen": a.first_ns,
        "last_seen": a.last_ns,
        "rtt": a.rtt,
        "retrans": a.retrans,
        "drops": a.drops,
    }
    if by in counters or by in ("sport", "dport", "proto"):
        col = counters[by] if by in counters else _KEY.field(a.words, by)
        vals = col.astype(np.float64)
        if descending:
            vals = -vals
        # Ties broken by identity so rows do not jump between equal refreshes.
        if limit < n:
            part = np.argpartition(vals, limit - 1)[:limit]
            out: np.ndarray = part[np.lexsort((a.ids[part], vals[part]))]
            return out
        out = np.lexsort((a.ids, vals))
        return out
    if by in ("src", "dst"):
        be = _KEY.span(a.words, by).byteswap()  # network byte order as numbers: address order
        # lexsort's last key is the primary one: version, then the address's
        # words from the first.
        order = np.lexsort((a.ids, *be.T[::-1], _KEY.field(a.words, "ip_version")))
    else:  # iface: by name, then direction
        rank = {n: i for i, n in enumerate(sorted(set(ifnames.values())))}
        ifx = _KEY.field(a.words, "ifindex")
        by_index = np.array([rank.get(ifnames.get(int(i), ""), -1) for i in ifx], dtype=np.int64)
        order = np.lexsort((a.ids, _KEY.field(a.words, "direction"), by_index))
    if descending:
        order = order[::-1]
    out = order[:limit]
    return out
