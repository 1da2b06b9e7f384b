"""query_table: one ViewQuery answered over a FlowTable, vectorised.

Filter (filterexpr), group (grouping), sort and cut to the top rows
(ordering), and only those rows become ViewRows (rows). The default view,
flows by a counter, takes a shorter path that reads the keys of the rows on
screen only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from flowtop.core import fields
from flowtop.core.conversations import counted_by_legs
from flowtop.core.drops import DropRows, DropTable
from flowtop.core.flowtable import FlowTable
from flowtop.kernel import layout
from flowtop.query.conversations import (
    COUNTER_SORTS,
    ConvSlots,
    conversations,
    groups_of,
    row_fields,
    top_groups,
)
from flowtop.query.entities import EntityArrays, entity_groups, zone_pair_ids
from flowtop.query.exporters import OTHER, ExporterArrays
from flowtop.query.filterexpr import Columns, Filter
from flowtop.query.grouping import Aggregate, aggregate
from flowtop.query.names import NameArrays, NameRows, name_columns, shown_id
from flowtop.query.ordering import smallest, sort_order
from flowtop.query.owners import (
    GROUP_COLUMN,
    OwnerArrays,
    OwnerRows,
    owner_columns,
    owner_groups,
)
from flowtop.query.rows import view_rows
from flowtop.query.types import (
    CONVERSATION_GROUPS,
    ENTITY_GROUPS,
    FLEET_GROUPS,
    NAME_GROUPS,
    OWNER_GROUPS,
    ZONE_GROUPS,
    ViewQuery,
    ViewRow,
)

# Sort keys of the flow view that are one table column each: the counters and
# times the kernel gives and the rates the table derives (core/fields.py).
_FLOW_SORT_COLUMNS = {
    sort: f.name
    for sort, f in fields.SORTABLE.items()
    if f.origin in (fields.KERNEL, fields.RATE, fields.DROP)
}
_FLOW_SORT_COLUMNS["flows"] = "packets"  # one flow per row: order by packets
_KEY = layout.FLOW_KEY_WORDS


def _ents(table: FlowTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return table.column("src_ent", rows), table.column("dst_ent", rows)


def _columns(
    table: FlowTable,
    rows: np.ndarray,
    group: str,
    oa: OwnerArrays | None,
    na: NameArrays | None = None,
) -> dict[str, np.ndarray]:
    """The view's columns at rows, with the owner columns the group shows
    when attribution is on (all for flows, the group's own and owner_state
    for an owner group), and the name columns (flows, the name group) when
    names from the wire are on."""
    cols = table.gather_columns(rows)
    if na is not None and (group == "flow" or group in NAME_GROUPS):
        cols.update(name_columns(table, rows))
    if oa is not None and group == "flow":
        cols.update(owner_columns(table, rows))
    elif oa is not None and group in OWNER_GROUPS:
        cols.update(owner_columns(table, rows, (GROUP_COLUMN[group], "owner_state")))
    return cols


# The groups whose rows show every leg of a forwarded connection (each
# interface's, each exporter's own figures); every other group counts each
# packet once (core/conversations.counted_by_legs), as conversations do.
EVERY_LEG_GROUPS = ("flow", "iface", "exporter")


def _counted_once(
    table: FlowTable, rows: np.ndarray, cols: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """cols with the counters of the rows that do not count zeroed: a packet
    this box forwarded is in an ingress row and an egress row, and only the
    ingress one counts (per conversation and direction, among rows)."""
    keep = counted_by_legs(table.column("conv_id", rows), table.column("conv_leg", rows))
    if keep.all():
        return cols
    out = dict(cols)
    for name in ("packets", "bytes", "pps", "bps"):
        out[name] = np.where(keep, cols[name], 0).astype(cols[name].dtype)
    return out


@dataclass(frozen=True, slots=True)
class _Arrays:
    """What a query reads beside the flow table (query_table's arguments):
    interface names, and the entity, owner, drop, name and exporter tables
    (None: that part is off)."""

    ifnames: Mapping[int, str]
    ea: EntityArrays | None
    oa: OwnerArrays | None
    dt: DropTable | None
    na: NameArrays | None
    fa: ExporterArrays | None


def _matching(table: FlowTable, flt: Filter, a: _Arrays) -> tuple[np.ndarray, np.ndarray | None]:
    """Live rows passing the filter (and their key words, when read)."""
    ifnames, ea, oa, dt, na, fa = a.ifnames, a.ea, a.oa, a.dt, a.na, a.fa
    rows = table.live_rows()
    if not flt.text or len(rows) == 0:
        return rows, None
    words = table.words_at(rows)
    ents = _ents(table, rows) if ea is not None else None
    owners = OwnerRows(table, rows, oa) if oa is not None else None
    drops = DropRows(table, rows, dt) if dt is not None else None
    names = NameRows(table, rows, na) if na is not None else None
    keep = flt(Columns(words, ifnames, ents, ea, owners, drops, names, fa))
    return rows[keep], words[keep]


def _top_flows(
    table: FlowTable, query: ViewQuery, flt: Filter, a: _Arrays
) -> tuple[list[ViewRow], int]:
    """The flow view sorted by a counter: only the top rows are gathered.

    The sort column alone is read for every (matching) flow; keys and the
    other columns only for the rows on screen, so a refresh costs little
    more with 100k flows than with 1k.
    """
    ifnames, ea, oa, dt, na = a.ifnames, a.ea, a.oa, a.dt, a.na
    rows, _ = _matching(table, flt, a)
    matched = len(rows)
    if matched == 0:
        return [], 0
    vals = np.asarray(table.column(_FLOW_SORT_COLUMNS[query.sort], rows), dtype=np.float64)
    if query.descending:
        # Partition at the front: introselect near the end of an array full
        # of equal values (idle flows at rate 0) is several times slower.
        np.negative(vals, out=vals)
    limit = min(query.limit, matched)
    top = smallest(vals, limit)
    sel = rows[top]
    agg = aggregate(table.words_at(sel), _columns(table, sel, "flow", oa, na), "flow")
    order = np.lexsort((agg.ids, vals[top]))[:limit]
    off = table.clock_offset
    out = view_rows(agg, order, "flow", off, ifnames, ea, None, oa, na)
    return _drop_reasons(out, agg, order, dt), matched


def _drop_reasons(
    out: list[ViewRow], agg: Aggregate, order: np.ndarray, dt: DropTable | None
) -> list[ViewRow]:
    """The flow rows on screen with drops get their drops by reason (one
    DropTable lookup for all of them; the detail screen lists them)."""
    if dt is None or not len(agg.drops):
        return out
    at = [j for j, i in enumerate(order.tolist()) if agg.drops[i]]
    if not at:
        return out
    keys = np.ascontiguousarray(agg.words[order[at]]).view(layout.FLOW_KEY).reshape(-1)
    for j, per in zip(at, dt.by_key(keys), strict=True):
        out[j] = replace(out[j], drop_reasons=tuple(per.items()))
    return out


def _conversations(
    table: FlowTable, query: ViewQuery, flt: Filter, a: _Arrays
) -> tuple[list[ViewRow], int]:
    """One row per conversation of the matching flows (query/conversations.py):
    the filter picks flow rows, their conversations aggregate them."""
    ifnames, ea, oa, na = a.ifnames, a.ea, a.oa, a.na
    rows, _ = _matching(table, flt, a)
    if len(rows) == 0:
        return [], 0
    if query.sort in COUNTER_SORTS:
        # Every conversation ranked by two bincounts over the rows' slots
        # (kept from the last refresh); only the top ones' rows are gathered
        # and aggregated.
        slots = ConvSlots.of(table)
        bucket = slots.buckets(table, rows, None if flt.text else rows)
        col = _FLOW_SORT_COLUMNS[query.sort] if query.sort != "flows" else None
        vals = np.asarray(table.column(col, rows), np.float64) if col is not None else None
        keep, matched = top_groups(bucket, slots.ids, vals, query.descending, query.limit)
        rows = rows[keep]
        leg = table.column("conv_leg", rows)
        cid = table.column("conv_id", rows)
    else:
        cid = table.column("conv_id", rows)
        leg = table.column("conv_leg", rows)
    cols = _columns(table, rows, "flow", oa, na)
    words = table.words_at(rows)
    conv = conversations(words, cols, groups_of(words, cols["first_ns"], cid, leg))
    if query.sort not in COUNTER_SORTS:
        matched = len(conv.agg.ids)
    order = sort_order(conv.agg, query.sort, query.descending, query.limit, ifnames)
    more = row_fields(conv, order, ifnames)
    off = table.clock_offset
    out = view_rows(conv.agg, order, "conversation", off, ifnames, ea, None, oa, na, more)
    return out, matched


def conversation_flows(
    table: FlowTable,
    conv_id: int,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
    oa: OwnerArrays | None = None,
    dt: DropTable | None = None,
    na: NameArrays | None = None,
) -> list[ViewRow]:
    """The live flow rows of one conversation (every leg and direction), as
    the flow view shows them, most bytes first: a conversation's detail."""
    live = table.live_rows()
    rows = live[table.column("conv_id", live) == np.uint64(conv_id)]
    if len(rows) == 0:
        return []
    agg = aggregate(table.words_at(rows), _columns(table, rows, "flow", oa, na), "flow")
    order = np.lexsort((agg.ids, -agg.bytes.astype(np.float64)))
    out = view_rows(agg, order, "flow", table.clock_offset, ifnames, ea, None, oa, na)
    return _drop_reasons(out, agg, order, dt)


def query_table(
    table: FlowTable,
    query: ViewQuery,
    flt: Filter,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
    oa: OwnerArrays | None = None,
    dt: DropTable | None = None,
    na: NameArrays | None = None,
    fa: ExporterArrays | None = None,
) -> tuple[list[ViewRow], int]:
    """The query's top rows and how many rows (flows or groups) matched;
    oa: the socket owners' names (None: attribution off, every flow in the
    "-" group of an owner group); fa: the exporters of received flows (None:
    not listening, every flow in the OTHER group of the exporter group)."""
    a = _Arrays(ifnames, ea, oa, dt, na, fa)
    if query.group_by in CONVERSATION_GROUPS:
        return _conversations(table, query, flt, a)
    if query.group_by == "flow" and query.sort in _FLOW_SORT_COLUMNS:
        return _top_flows(table, query, flt, a)
    rows, words = _matching(table, flt, a)
    if len(rows) == 0:
        return [], 0
    if words is None:
        words = table.words_at(rows)
    gid = None
    group_eid = None
    if query.group_by in ENTITY_GROUPS:
        ents = _ents(table, rows) if ea is not None else None
        gid, group_eid = entity_groups(query.group_by, words, ents, ea)
    cols = _columns(table, rows, query.group_by, oa, na)
    if query.group_by in NAME_GROUPS:
        gid = shown_id(cols) if na is not None else np.zeros(len(rows), dtype=np.uint64)
    if query.group_by in OWNER_GROUPS:
        gid = (
            owner_groups(query.group_by, cols)
            if oa is not None
            else np.zeros(len(rows), dtype=np.uint64)
        )
    if query.group_by in ZONE_GROUPS:
        gid = zone_pair_ids(len(words), _ents(table, rows) if ea is not None else None, ea)
    if query.group_by not in EVERY_LEG_GROUPS:  # each packet once, also when forwarded
        cols = _counted_once(table, rows, cols)
    if query.group_by in FLEET_GROUPS:
        ifx = _KEY.field(words, "ifindex")
        gid = (
            fa.exporter_ids(ifx).astype(np.uint64)
            if fa is not None
            else np.zeros(len(rows), dtype=np.uint64)
        )
    agg = aggregate(words, cols, query.group_by, gid)
    order = sort_order(agg, query.sort, query.descending, query.limit, ifnames)
    out = view_rows(agg, order, query.group_by, table.clock_offset, ifnames, ea, group_eid, oa, na)
    if query.group_by == "flow":
        out = _drop_reasons(out, agg, order, dt)
    if query.group_by in FLEET_GROUPS:
        out = [
            replace(r, group=fa.address(int(agg.ids[i])) if fa is not None else OTHER)
            for r, i in zip(out, order.tolist(), strict=True)
        ]
    return out, len(agg.ids)
