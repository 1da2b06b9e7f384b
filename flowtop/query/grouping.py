"""Group-by over the flow table's arrays: each flow's group identity, and
one aggregated row per group.

Keys travel as layout.FLOW_KEY_WORDS words (the raw flow keys as uint64):
gathering and masking plain words is several times cheaper than structured
records, and a group's identity is the key with the members the group
ignores masked off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowtop.core.flowindex import hash_words
from flowtop.kernel import layout
from flowtop.query.names import NAME_COLUMNS
from flowtop.query.owners import OWNER_COLUMNS

_KEY = layout.FLOW_KEY_WORDS
# The key members that identify a group (port: see group_words).
_GROUP_MASKS = {
    "src": _KEY.mask(("ip_version", "src")),
    "dst": _KEY.mask(("ip_version", "dst")),
    "pair": _KEY.mask(("ip_version", "src", "dst")),
    "proto": _KEY.mask(("proto",)),
    "iface": _KEY.mask(("ifindex", "direction")),
}
_PROTO = _KEY.mask(("proto",))


def service_port(words: np.ndarray) -> np.ndarray:
    """The service side of each flow: the lower non-zero port (0 for ICMP)."""
    sp = _KEY.field(words, "sport").astype(np.int64)
    dp = _KEY.field(words, "dport").astype(np.int64)
    svc = np.where((dp != 0) & ((dp <= sp) | (sp == 0)), dp, sp)
    out: np.ndarray = np.where(np.isin(_KEY.field(words, "proto"), (1, 58)), 0, svc)
    return out


def group_words(words: np.ndarray, group: str) -> np.ndarray:
    """Key words identifying each flow's group (not "flow": its key is its identity)."""
    if group == "port":
        # The protocol in place and the service port in the sport member.
        g: np.ndarray = words & _PROTO
        _KEY.set_field(g, "sport", service_port(words))
        return g
    out: np.ndarray = words & _GROUP_MASKS[group]
    return out


@dataclass
class Aggregate:
    """The query's rows (flows or groups) as columns, before sorting; what
    ordering sorts and rows turns into ViewRows."""

    words: np.ndarray  # one representative flow key per row, as words
    rtt: np.ndarray  # worst (largest) known RTT of the row's flows, 0 = none
    retrans: np.ndarray  # retransmits summed over flows that know them
    retr_known: np.ndarray  # flows of the row that know their retransmits
    src_ent: np.ndarray  # entity ids of a representative flow (-1 = none)
    dst_ent: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    pps: np.ndarray
    bps: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    flags: np.ndarray
    flows: np.ndarray
    ids: np.ndarray  # u64 identity of each row (flow or group)
    # owners.OWNER_COLUMNS of a representative flow per row, when read
    owner: dict[str, np.ndarray] = field(default_factory=dict)
    # packets the kernel dropped, summed over the row's flows (core/drops.py)
    drops: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    # names.NAME_COLUMNS of a representative flow per row, when read
    wire: dict[str, np.ndarray] = field(default_factory=dict)


def _drops(cols: dict[str, np.ndarray], n: int) -> np.ndarray:
    # Column sets gathered without it (callers that do not show drops): none.
    got = cols.get("drop_packets")
    return got if got is not None else np.zeros(n, dtype=np.uint64)


def aggregate(
    words: np.ndarray, cols: dict[str, np.ndarray], group: str, gid: np.ndarray | None = None
) -> Aggregate:
    """One row per flow (group "flow") or per group of the flows' key words
    and gathered table columns; gid: each flow's group id when the caller
    knows it (entity and owner groups), else a hash of group_words. The
    owner columns in cols, when there, are carried (a representative's)."""
    owner = {n: cols[n] for n in OWNER_COLUMNS if n in cols}
    wire = {n: cols[n] for n in NAME_COLUMNS if n in cols}
    known = (cols["retrans_source"] > 0).astype(np.int64)
    if group == "flow":
        return Aggregate(
            words,
            cols["rtt_us"],
            cols["retrans"],
            known,
            cols["src_ent"],
            cols["dst_ent"],
            cols["packets"],
            cols["bytes"],
            cols["pps"],
            cols["bps"],
            cols["first_ns"],
            cols["last_ns"],
            cols["tcp_flags"],
            np.ones(len(words), dtype=np.int64),
            hash_words(words),
            owner,
            _drops(cols, len(words)),
            wire,
        )
    if gid is None:
        gid = hash_words(group_words(words, group))
    # One sort, then every reduction runs over contiguous runs of a group.
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))

    def red(ufunc: np.ufunc, col: np.ndarray) -> np.ndarray:
        out: np.ndarray = ufunc.reduceat(col[order], starts)
        return out

    rep = order[starts]
    return Aggregate(
        words[rep],
        red(np.maximum, cols["rtt_us"]),
        red(np.add, cols["retrans"] * known),
        red(np.add, known),
        cols["src_ent"][rep],
        cols["dst_ent"][rep],
        red(np.add, cols["packets"]),
        red(np.add, cols["bytes"]),
        red(np.add, cols["pps"]),
        red(np.add, cols["bps"]),
        red(np.minimum, cols["first_ns"]),
        red(np.maximum, cols["last_ns"]),
        red(np.bitwise_or, cols["tcp_flags"]),
        np.diff(np.concatenate((starts, [len(g)]))),
        g[starts],
        {n: c[rep] for n, c in owner.items()},
        np.add.reduceat(_drops(cols, len(words))[order], starts),
        {n: c[rep] for n, c in wire.items()},
    )
