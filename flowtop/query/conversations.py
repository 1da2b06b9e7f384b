"""Conversation rows: the flow rows of one connection aggregated into one.

A conversation (core/conversations.py) is a flow key and its reverse over
every interface and direction: two flow rows on a host (egress for what it
sends, ingress for what it receives), four on a router (ingress on one leg
and egress on the other, each way). Here the matching flow rows of a query
become one row per conversation, vectorised: bincounts over (conversation,
direction, hook) buckets over a dense index of the conversation ids (the
flow table's conv_id and conv_leg columns, or computed from flow-end
records' keys). The view ranks every conversation by two bincounts over
the rows in id order (RowOrder keeps that order from one refresh to the
next; top_groups) and aggregates fully only those it shows.

- the client end: the sender of a SYN without ACK (layout.TCP_SYN_ONLY in a
  row's tcp_flags) when exactly one direction sent one; else the end with
  the ephemeral port (the server has the lower non-zero port, as
  grouping.service_port decides); else the end seen first (the direction
  of the conversation's first flow row).
- up is client -> server, down the reverse. Each direction is counted once:
  the sum of its rows observed on ingress when it has any, else of its
  egress rows (a router counts the leg a packet arrived on; a host what it
  sends on egress and what it receives on ingress). Retransmits likewise.
- role: "forwarded" when a direction was seen both entering (ingress) and
  leaving (egress), with iface IN→OUT of the client -> server direction;
  else "client" when this host sends the up direction (or receives the
  down), else "server", with the one interface.

The filter is applied to the flow rows before this: a conversation is
shown when any of its rows matches, with the matching rows only.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flowtop.core.conversations import (
    canonical_words,
    conversation_ids,
    legs,
    port_direction,
)
from flowtop.core.flowtable import FlowTable
from flowtop.kernel import layout
from flowtop.query.grouping import Aggregate, _drops
from flowtop.query.names import NAME_COLUMNS
from flowtop.query.ordering import smallest
from flowtop.query.owners import OWNER_COLUMNS
from flowtop.sanitize import clean

_KEY = layout.FLOW_KEY_WORDS
ROLE_CLIENT, ROLE_SERVER, ROLE_FORWARDED = 0, 1, 2
ROLES = ("client", "server", "forwarded")
# Columns of an end, swapped when the representative row is server -> client.
_END_PAIRS = (("src_ent", "dst_ent"), ("src_name_id", "dst_name_id"))
_NO_IFINDEX = np.iinfo(np.int64).max


@dataclass
class Side:
    """One direction of each conversation, counted once."""

    packets: np.ndarray  # uint64
    bytes: np.ndarray  # uint64
    pps: np.ndarray  # float64
    bps: np.ndarray  # float64
    retrans: np.ndarray  # int64, over the rows that know them
    retr_known: np.ndarray  # int64: rows that know them (0: unknown)


@dataclass
class Conversations:
    """A query's conversation rows as columns, before sorting.

    agg is what ordering.sort_order and rows.view_rows read: words is the
    client -> server key (ifindex: the IN interface, or the one interface;
    direction 0), the counters both directions together (each counted
    once), flows the number of flow rows, ids the conversation ids. The rest
    is what only a conversation row has."""

    agg: Aggregate
    up: Side
    down: Side
    role: np.ndarray  # ROLE_* per conversation
    in_ifindex: np.ndarray  # the client -> server direction enters by (forwarded)
    out_ifindex: np.ndarray  # ... and leaves by; 0 when not forwarded


def _sums(b: np.ndarray, nb: int, values: np.ndarray) -> np.ndarray:
    # float64 bincount: exact while a bucket's sum stays below 2**53 (bytes
    # of one direction of one connection: 9 PB).
    out: np.ndarray = np.bincount(b, weights=values, minlength=nb)
    return out.reshape(-1, 2, 2)


def _counted(s: np.ndarray, has_in: np.ndarray) -> np.ndarray:
    """(G, 2): each direction's ingress sum when it has ingress rows, else its egress sum."""
    out: np.ndarray = np.where(has_in, s[:, :, 0], s[:, :, 1])
    return out


def client_direction(syn: np.ndarray, static_dir: np.ndarray) -> np.ndarray:
    """The canonical direction (0: low end -> high end) that is client ->
    server, per conversation: the one that sent a SYN without ACK when only
    one did (syn (G, 2)), else static_dir (ports, else first seen: groups_of)."""
    out: np.ndarray = np.where(
        syn[:, 0] & ~syn[:, 1], 0, np.where(syn[:, 1] & ~syn[:, 0], 1, static_dir)
    )
    return out


@dataclass
class Groups:
    """Each flow row's conversation as a dense index (gidx, every group has
    a row), its leg (canonical direction * 2 + hook), and per group the
    static client direction (the ports, else the earliest row's direction)
    and the conversation id."""

    gidx: np.ndarray
    leg: np.ndarray
    static_dir: np.ndarray
    ids: np.ndarray


def dense(cid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(each row's dense group index, the groups' ids in id order, the sort
    order of the rows): one argsort (np.unique's inverse costs several)."""
    order = np.argsort(cid)
    c = cid[order]
    head = np.empty(len(c), dtype=bool)
    head[:1] = True
    np.not_equal(c[1:], c[:-1], out=head[1:])
    inv = np.empty(len(c), dtype=np.int64)
    inv[order] = np.cumsum(head) - 1
    return inv, c[head], order


def groups_of(
    words: np.ndarray,
    first_ns: np.ndarray,
    cid: np.ndarray | None = None,
    leg: np.ndarray | None = None,
) -> Groups:
    """The conversation groups of flow rows: cid and leg as the flow table
    keeps them (conv_id, conv_leg), computed from the keys when None
    (flow-end records)."""
    if cid is None:
        cid = conversation_ids(words)
    if leg is None:
        leg = legs(words)
    inv, ids, _ = dense(cid)
    # The ports decide, else the direction of the earliest row.
    order = np.lexsort((first_ns, inv))
    g = inv[order]
    firsts = order[np.concatenate(([True], g[1:] != g[:-1]))]
    ports = port_direction(canonical_words(words[firsts]))
    static = np.where(ports >= 0, ports, leg[firsts] >> 1).astype(np.int64)
    return Groups(inv, leg, static, ids)


# The sort keys top_groups ranks by from two bincounts (the others need
# every conversation's row: conversations()).
COUNTER_SORTS = ("bps", "pps", "bytes", "packets", "flows")


def top_groups(
    inv: np.ndarray,
    ids: np.ndarray,
    leg: np.ndarray,
    values: np.ndarray | None,
    descending: bool,
    limit: int,
) -> np.ndarray:
    """Which rows are in the first `limit` conversations by a COUNTER_SORTS
    column (values: each row's; None: by flows), ties by conversation id (a
    boolean mask over the rows); inv, ids: the rows' dense groups (dense,
    RowOrder). Two bincounts over the rows: only the conversations on
    screen are aggregated fully."""
    g = len(ids)
    if values is None:
        total = np.bincount(inv, minlength=g).astype(np.float64)
    else:
        # Strided views and adds, not sum(axis=...) over tiny axes (slower).
        b = inv * 4 + leg
        cnt = np.bincount(b, minlength=4 * g)
        s = np.bincount(b, weights=values, minlength=4 * g)
        way = np.where(cnt[0::2] > 0, s[0::2], s[1::2])  # (group, direction): counted once
        total = way[0::2] + way[1::2]
    if descending:
        np.negative(total, out=total)
    top = smallest(total, min(limit, g))
    top = top[np.lexsort((ids[top], total[top]))[:limit]]
    on = np.zeros(g, dtype=bool)
    on[top] = True
    keep: np.ndarray = on[inv]
    return keep


class RowOrder:
    """A flow table's live rows sorted by conversation id, kept from one
    refresh to the next: rows that are still live with the same id keep
    their places, the new ones are sorted (a few) and merged in, so a
    refresh does not sort 100k ids again (several ms).

    One per table (of()); the caller holds the table still while it asks
    (TableSource's lock)."""

    _of: weakref.WeakKeyDictionary[FlowTable, RowOrder] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.rows = np.zeros(0, dtype=np.int64)
        self.cid = np.zeros(0, dtype=np.uint64)

    @classmethod
    def of(cls, table: FlowTable) -> RowOrder:
        got = cls._of.get(table)
        if got is None:
            got = cls._of[table] = cls()
        return got

    def update(self, table: FlowTable) -> None:
        """Catch up with the table's live rows."""
        live = table.live_rows()
        if len(self.rows):
            still = table.column("live", self.rows) & (
                table.column("conv_id", self.rows) == self.cid
            )
            kept, kcid = self.rows[still], self.cid[still]
        else:
            kept, kcid = self.rows, self.cid
        mark = np.zeros(int(max(live.max(initial=0), kept.max(initial=0))) + 1, dtype=bool)
        mark[kept] = True
        new = live[~mark[live]]
        if len(new) or len(kept) != len(self.rows):
            ncid = table.column("conv_id", new)
            o = np.argsort(ncid)
            new, ncid = new[o], ncid[o]
            at = np.searchsorted(kcid, ncid)
            self.rows, self.cid = np.insert(kept, at, new), np.insert(kcid, at, ncid)

    def of_rows(self, table: FlowTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows (live rows, e.g. a filter's), sorted by conversation id: (rows, ids)."""
        self.update(table)
        if len(rows) == len(self.rows):  # all of them (no filter)
            return self.rows, self.cid
        mark = np.zeros(int(self.rows.max(initial=0)) + 1, dtype=bool)
        mark[rows] = True
        sel = mark[self.rows]
        return self.rows[sel], self.cid[sel]


def dense_sorted(cid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense group index, group ids) of ids already in order."""
    head = np.empty(len(cid), dtype=bool)
    head[:1] = True
    np.not_equal(cid[1:], cid[:-1], out=head[1:])
    inv: np.ndarray = np.cumsum(head) - 1
    return inv, cid[head]


def conversations(words: np.ndarray, cols: dict[str, np.ndarray], groups: Groups) -> Conversations:
    """One row per conversation of the flow rows' key words, gathered
    columns (grouping.aggregate's, owner and name columns carried when
    there) and groups (groups_of, slot_groups)."""
    inv, leg = groups.gidx, groups.leg.astype(np.int64)
    g = len(groups.ids)
    nb = 4 * g
    d = leg >> 1  # each row's canonical direction
    b = inv * 4 + leg
    cnt = np.bincount(b, minlength=nb).reshape(g, 2, 2)
    has_in, has_eg = cnt[:, :, 0] > 0, cnt[:, :, 1] > 0

    # The client end.
    bd = inv * 2 + d
    flags = cols["tcp_flags"].astype(np.uint64)
    syn_rows = ((flags & np.uint64(layout.TCP_SYN_ONLY)) != 0).astype(np.float64)
    syn = np.bincount(bd, weights=syn_rows, minlength=2 * g).reshape(g, 2) > 0
    up_d = client_direction(syn, groups.static_dir)
    gi = np.arange(g)
    dn_d = 1 - up_d

    known = (cols["retrans_source"] > 0).astype(np.float64)
    kn = _sums(b, nb, known)
    retr = _sums(b, nb, cols["retrans"].astype(np.float64) * known)
    retr_in = kn[:, :, 0] > 0  # retransmits: ingress rows when they know them
    sides = (
        _counted(_sums(b, nb, cols["packets"].astype(np.float64)), has_in).astype(np.uint64),
        _counted(_sums(b, nb, cols["bytes"].astype(np.float64)), has_in).astype(np.uint64),
        _counted(_sums(b, nb, cols["pps"]), has_in),
        _counted(_sums(b, nb, cols["bps"]), has_in),
        _counted(retr, retr_in).astype(np.int64),
        _counted(kn, retr_in).astype(np.int64),
    )
    up = Side(*(c[gi, up_d] for c in sides))
    down = Side(*(c[gi, dn_d] for c in sides))

    # Interfaces and role.
    ifx_flat = np.full(nb, _NO_IFINDEX, dtype=np.int64)
    np.minimum.at(ifx_flat, b, _KEY.field(words, "ifindex").astype(np.int64))
    ifx = ifx_flat.reshape(g, 2, 2)
    fwd_up = has_in[gi, up_d] & has_eg[gi, up_d]
    fwd_dn = has_in[gi, dn_d] & has_eg[gi, dn_d]
    forwarded = fwd_up | fwd_dn
    in_ifx = np.where(fwd_up, ifx[gi, up_d, 0], ifx[gi, dn_d, 1])
    out_ifx = np.where(fwd_up, ifx[gi, up_d, 1], ifx[gi, dn_d, 0])
    sends = has_eg[gi, up_d] | has_in[gi, dn_d]
    role = np.where(forwarded, ROLE_FORWARDED, np.where(sends, ROLE_CLIENT, ROLE_SERVER))
    one_if = ifx.reshape(g, 4).min(axis=1)
    in_ifx = np.where(forwarded, in_ifx, one_if)
    out_ifx = np.where(forwarded, out_ifx, 0)

    # The representative: a client -> server row when there is one (its
    # owner, names and entities), else a server -> client row with its ends
    # swapped.
    rows = np.arange(len(words))
    is_up = d == up_d[inv]
    rep = np.empty(g, dtype=np.int64)
    rep[inv[~is_up]] = rows[~is_up]
    rep[inv[is_up]] = rows[is_up]
    flip = ~is_up[rep]
    kw = words[rep]
    if flip.any():
        kw[flip] = _KEY.reversed(kw[flip])
    _KEY.set_field(kw, "ifindex", in_ifx)
    _KEY.set_field(kw, "direction", np.zeros(g, dtype=np.uint64))
    carried = {n: cols[n][rep] for n in (*OWNER_COLUMNS, *NAME_COLUMNS, "src_ent", "dst_ent")
               if n in cols}  # fmt: skip
    for a, z in _END_PAIRS:
        if a in carried and z in carried and flip.any():
            carried[a][flip], carried[z][flip] = carried[z][flip], carried[a][flip].copy()

    def red(ufunc: np.ufunc, c: np.ndarray, blank: int) -> np.ndarray:
        out = np.full(g, blank, dtype=c.dtype)
        ufunc.at(out, inv, c)
        return out

    agg = Aggregate(
        kw,
        red(np.maximum, cols["rtt_us"], 0),
        up.retrans + down.retrans,
        up.retr_known + down.retr_known,
        carried["src_ent"],
        carried["dst_ent"],
        up.packets + down.packets,
        up.bytes + down.bytes,
        up.pps + down.pps,
        up.bps + down.bps,
        red(np.minimum, cols["first_ns"], np.iinfo(cols["first_ns"].dtype).max),
        red(np.maximum, cols["last_ns"], 0),
        red(np.bitwise_or, cols["tcp_flags"], 0),
        cnt.reshape(g, 4).sum(axis=1).astype(np.int64),
        groups.ids,
        {n: carried[n] for n in OWNER_COLUMNS if n in carried},
        np.bincount(inv, weights=_drops(cols, len(words)), minlength=g).astype(np.uint64),
        {n: carried[n] for n in NAME_COLUMNS if n in carried},
    )
    return Conversations(agg, up, down, role, in_ifx, out_ifx)


def row_fields(
    conv: Conversations, order: np.ndarray, ifnames: Mapping[int, str]
) -> tuple[list[str], list[dict[str, object]]]:
    """What only a conversation row has, for rows `order` of conv: each
    one's iface text (IN→OUT or the one interface; names cleaned) and the
    ViewRow fields role, up_*, down_*, up_/down_retransmits."""
    at = np.asarray(order, dtype=np.intp).reshape(-1)
    role = conv.role[at].tolist()
    ins, outs = conv.in_ifindex[at].tolist(), conv.out_ifindex[at].tolist()
    per = {}
    for side, s in (("up", conv.up), ("down", conv.down)):
        per[side] = (
            s.bps[at].tolist(), s.pps[at].tolist(), s.bytes[at].tolist(),
            s.packets[at].tolist(), s.retrans[at].tolist(), s.retr_known[at].tolist(),
        )  # fmt: skip
    names: dict[int, str] = {}

    def name(ifindex: int) -> str:
        got = names.get(ifindex)
        if got is None:
            got = names[ifindex] = clean(ifnames.get(ifindex, f"if{ifindex}"))
        return got

    ifaces: list[str] = []
    more: list[dict[str, object]] = []
    for j in range(len(at)):
        r = role[j]
        ifaces.append(
            f"{name(ins[j])}\u2192{name(outs[j])}" if r == ROLE_FORWARDED else name(ins[j])
        )
        d: dict[str, object] = {"role": ROLES[r]}
        for side, (bps, pps, nbytes, packets, retr, known) in per.items():
            d[f"{side}_bps"] = float(bps[j])
            d[f"{side}_pps"] = float(pps[j])
            d[f"{side}_bytes"] = int(nbytes[j])
            d[f"{side}_packets"] = int(packets[j])
            d[f"{side}_retransmits"] = int(retr[j]) if known[j] else None
        more.append(d)
    return ifaces, more
