"""Conversation rows: the flow rows of one connection aggregated into one.

A conversation (core/conversations.py) is a flow key and its reverse over
every interface and direction: two flow rows on a host (egress for what it
sends, ingress for what it receives), four on a router (ingress on one leg
and egress on the other, each way). Here the matching flow rows of a query
become one row per conversation, vectorised: bincounts over (conversation,
direction, hook) buckets over a dense index of the conversation ids (the
flow table's conv_id and conv_leg columns, or computed from flow-end
records' keys). The view ranks every conversation by two bincounts over
the rows' conversation slots (ConvSlots keeps each row's slot from one
refresh to the next: no sort per refresh; top_groups) and aggregates fully
only those it shows.

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
    # One sort by (id, first seen): the dense groups (in id order, every
    # group with a row) and each group's earliest row, ties by position.
    order = np.lexsort((first_ns, cid))
    c = cid[order]
    head = np.empty(len(c), dtype=bool)
    head[:1] = True
    np.not_equal(c[1:], c[:-1], out=head[1:])
    inv = np.empty(len(c), dtype=np.int64)
    inv[order] = np.cumsum(head) - 1
    ids, firsts = c[head], order[head]
    # The ports decide, else the direction of the earliest row.
    ports = port_direction(canonical_words(words[firsts]))
    static = np.where(ports >= 0, ports, leg[firsts] >> 1).astype(np.int64)
    return Groups(inv, leg, static, ids)


# The sort keys top_groups ranks by from two bincounts (the others need
# every conversation's row: conversations()).
COUNTER_SORTS = ("bps", "pps", "bytes", "packets", "flows")


def top_groups(
    bucket: np.ndarray,
    ids: np.ndarray,
    values: np.ndarray | None,
    descending: bool,
    limit: int,
) -> tuple[np.ndarray, int]:
    """Which rows are in the first `limit` conversations by a COUNTER_SORTS
    column (values: each row's; None: by flows), ties by conversation id (a
    boolean mask over the rows), and how many conversations the rows have.
    bucket: each row's group * 4 + leg (ConvSlots.buckets; groups without a
    row are left out), ids: each group's conversation id. Two bincounts
    over the rows: only the conversations on screen are aggregated fully."""
    g = len(ids)
    # Strided views and adds, not sum(axis=...) over tiny axes (slower).
    cnt = np.bincount(bucket, minlength=4 * g)
    per = cnt[0::4] + cnt[1::4] + cnt[2::4] + cnt[3::4]
    present = np.flatnonzero(per)
    if values is None:
        total = per[present].astype(np.float64)
    else:
        s = np.bincount(bucket, weights=values, minlength=4 * g)
        way = np.where(cnt[0::2] > 0, s[0::2], s[1::2])  # (group, direction): counted once
        total = (way[0::2] + way[1::2])[present]
    if descending:
        np.negative(total, out=total)
    pid = ids[present]
    top = smallest(total, min(limit, len(present)))
    top = top[np.lexsort((pid[top], total[top]))[:limit]]
    on = np.zeros(g, dtype=bool)
    on[present[top]] = True
    keep: np.ndarray = on[bucket >> 2]
    return keep, len(present)


class ConvSlots:
    """Each flow row's conversation as a dense slot number, kept from one
    refresh to the next, so that a refresh of the conversation view
    bincounts over slots (top_groups) and sorts no ids.

    A row keeps its bucket (slot * 4 + leg) while it is live with the same
    conversation id and leg; a row that is new, or was reused by another
    flow, finds its conversation's slot, or a free one, by a binary search
    in the used slots' ids (a few rows per refresh). A row that ended keeps
    its slot until a sweep (when such rows are more than an eighth of the
    live ones): counts are taken over live rows only, so such a slot just
    has none; a slot no row holds is free.

    Memory: 16 bytes per table row (bucket, id) and about 24 per
    conversation. One per table (of()); the caller holds the table still
    while it asks (TableSource's lock)."""

    _of: weakref.WeakKeyDictionary[FlowTable, ConvSlots] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._bucket = np.zeros(0, dtype=np.int64)  # per table row: slot * 4 + leg, -1 none
        self._row_cid = np.zeros(0, dtype=np.uint64)  # the id it had when given its slot
        self._held = 0  # rows with a bucket
        self.ids = np.zeros(0, dtype=np.uint64)  # per slot: its conversation id
        self._refs = np.zeros(0, dtype=np.int64)  # per slot: rows holding it (0: free)
        self._free = np.zeros(0, dtype=np.int64)  # free slots, a stack
        self._by_id = np.zeros(0, dtype=np.uint64)  # the used slots' ids, sorted
        self._slot_by_id = np.zeros(0, dtype=np.int64)  # ... and their slots

    def __len__(self) -> int:
        """Slots in use (held by a row, live or ended and not swept yet)."""
        return len(self._by_id)

    @classmethod
    def of(cls, table: FlowTable) -> ConvSlots:
        got = cls._of.get(table)
        if got is None:
            got = cls._of[table] = cls()
        return got

    def buckets(
        self, table: FlowTable, rows: np.ndarray, live: np.ndarray | None = None
    ) -> np.ndarray:
        """The bucket (slot * 4 + leg) of each of rows (live rows, e.g. a
        filter's); live: table.live_rows() when the caller has it."""
        if live is None:
            live = table.live_rows()
        need = int(live.max(initial=-1)) + 1
        if need > len(self._bucket):
            grow = max(need, 2 * len(self._bucket)) - len(self._bucket)
            self._bucket = np.concatenate((self._bucket, np.full(grow, -1, dtype=np.int64)))
            self._row_cid = np.concatenate((self._row_cid, np.zeros(grow, dtype=np.uint64)))
        cid = table.column("conv_id", live)
        leg = table.column("conv_leg", live)
        b = self._bucket[live]
        ok = (b >= 0) & ((b & 3) == leg) & (self._row_cid[live] == cid)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            self._release(live[bad[b[bad] >= 0]])  # reused by another flow
            self._assign(live[bad], cid[bad], leg[bad])
        if self._held - len(live) > max(1024, len(live) // 8):
            ended = self._bucket >= 0
            ended[live] = False
            self._release(np.flatnonzero(ended))
        if rows is live:
            b[~ok] = self._bucket[live[~ok]]
            mine: np.ndarray = b
            return mine
        out: np.ndarray = self._bucket[rows]
        return out

    def _release(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        slots = self._bucket[rows] >> 2
        self._bucket[rows] = -1
        self._held -= len(rows)
        np.subtract.at(self._refs, slots, 1)
        freed = np.unique(slots[self._refs[slots] == 0])
        if len(freed):
            at = np.searchsorted(self._by_id, self.ids[freed])
            self._by_id = np.delete(self._by_id, at)
            self._slot_by_id = np.delete(self._slot_by_id, at)
            self._free = np.concatenate((self._free, freed))

    def _assign(self, rows: np.ndarray, cid: np.ndarray, leg: np.ndarray) -> None:
        uniq, inv = np.unique(cid, return_inverse=True)
        at = np.searchsorted(self._by_id, uniq)
        found = np.zeros(len(uniq), dtype=bool)
        inside = at < len(self._by_id)
        found[inside] = self._by_id[at[inside]] == uniq[inside]
        slot = np.empty(len(uniq), dtype=np.int64)
        slot[found] = self._slot_by_id[at[found]]
        missing = np.flatnonzero(~found)
        if len(missing):
            take = min(len(missing), len(self._free))
            got = self._free[len(self._free) - take :]
            self._free = self._free[: len(self._free) - take]
            extra = len(missing) - take
            if extra:
                start = len(self.ids)
                self.ids = np.concatenate((self.ids, np.zeros(extra, dtype=np.uint64)))
                self._refs = np.concatenate((self._refs, np.zeros(extra, dtype=np.int64)))
                got = np.concatenate((got, np.arange(start, start + extra, dtype=np.int64)))
            slot[missing] = got
            self.ids[got] = uniq[missing]
            self._by_id = np.insert(self._by_id, at[missing], uniq[missing])
            self._slot_by_id = np.insert(self._slot_by_id, at[missing], got)
        row_slot = slot[inv]
        self._bucket[rows] = row_slot * 4 + leg
        self._row_cid[rows] = cid
        self._held += len(rows)
        self._refs += np.bincount(row_slot, minlength=len(self._refs))


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


# The ViewRow fields row_fields gives, in its tuples' order. Literals: the
# keyword names must be interned strings, or each call matches them against
# ViewRow's parameters by comparing text (several times slower).
_ROW_FIELDS = (
    "role",
    "up_bps", "up_pps", "up_bytes", "up_packets", "up_retransmits",
    "down_bps", "down_pps", "down_bytes", "down_packets", "down_retransmits",
)  # fmt: skip


def row_fields(
    conv: Conversations, order: np.ndarray, ifnames: Mapping[int, str]
) -> tuple[list[str], list[dict[str, object]]]:
    """What only a conversation row has, for rows `order` of conv: each
    one's iface text (IN→OUT or the one interface; names cleaned) and the
    ViewRow fields role, up_*, down_*, up_/down_retransmits."""
    at = np.asarray(order, dtype=np.intp).reshape(-1)
    role = conv.role[at].tolist()
    ins, outs = conv.in_ifindex[at].tolist(), conv.out_ifindex[at].tolist()
    # One tolist per column (Python floats and ints), no per-field conversion.
    per: list[list[object]] = [[ROLES[r] for r in role]]
    for s in (conv.up, conv.down):
        retr = s.retrans[at].tolist()
        known = s.retr_known[at].tolist()
        per += [
            s.bps[at].tolist(), s.pps[at].tolist(), s.bytes[at].tolist(),
            s.packets[at].tolist(), [r if k else None for r, k in zip(retr, known, strict=True)],
        ]  # fmt: skip
    names: dict[int, str] = {}

    def name(ifindex: int) -> str:
        got = names.get(ifindex)
        if got is None:
            got = names[ifindex] = clean(ifnames.get(ifindex, f"if{ifindex}"))
        return got

    ifaces = [
        f"{name(i)}\u2192{name(o)}" if r == ROLE_FORWARDED else name(i)
        for r, i, o in zip(role, ins, outs, strict=True)
    ]
    more: list[dict[str, object]] = [
        dict(zip(_ROW_FIELDS, v, strict=True)) for v in zip(*per, strict=True)
    ]
    return ifaces, more
