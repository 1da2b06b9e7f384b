"""Zones: how much traffic goes between which zones, counted once per packet.

The zone of a flow end is its label's zone (`zone=` in the labels file), or
for this host's own addresses the configured host zone ([enrich] host_zone)
when no label gives one (enrich/enricher.py decides; query/entities.py has
it per entity as `zone` and `zone_id`).

zone_step() sums one interval's drained counters per (src zone, dst zone)
pair. A packet forwarded by this box is drained twice (ingress on one leg,
egress on the other): core/conversations.counted_once() keeps each packet
once, by the rule the conversation view uses: per oriented connection and
interval, the ingress records if there are any, else the egress ones. Flows neither of whose ends has a zone are in no pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowtop.core.conversations import conversation_ids, counted_once
from flowtop.kernel import layout
from flowtop.query.entities import EntityArrays, zone_pair_ids

if TYPE_CHECKING:
    from flowtop.core.flowtable import FlowTable
    from flowtop.enrich import Enricher
    from flowtop.kernel.collector import Drain

_KEY = layout.FLOW_KEY_WORDS
UNKNOWN = "unknown"  # the zone label of an end without a zone (Prometheus, dump)


@dataclass(frozen=True, slots=True)
class DrainRecords:
    """One interval's drained records as one set of arrays: key words, the
    entity ids of both ends, packets and bytes, and which count (counted_once)."""

    words: np.ndarray
    keys: np.ndarray  # layout.FLOW_KEY
    rows: np.ndarray  # each record's flow table row after the step (-1: ended in it)
    src_ent: np.ndarray
    dst_ent: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    counted: np.ndarray

    def __len__(self) -> int:
        return len(self.words)


def drain_records(drain: Drain, enricher: Enricher | None, table: FlowTable) -> DrainRecords:
    """The drain's batches together, after the step that merged them into
    table: the entity ids and conversation ids of the records whose flow
    still has its row come from it (the engine looked them up once); the
    others' (ended in this step) are looked up (ids 0 without an enricher)."""
    parts = [(k, s) for k, s in drain.batches if len(k)]
    if parts:
        keys = np.concatenate([k for k, _ in parts])
        stats = np.concatenate([s for _, s in parts])
    else:
        keys = np.zeros(0, dtype=layout.FLOW_KEY)
        stats = np.zeros(0, dtype=layout.FLOW_STATS)
    words = _KEY.view(keys)
    rows = table.rows_of(keys) if len(keys) else np.zeros(0, dtype=np.int64)
    has = rows >= 0
    at = rows[has]
    src = np.zeros(len(keys), dtype=np.int64)
    dst = np.zeros(len(keys), dtype=np.int64)
    src[has] = table.column("src_ent", at)
    dst[has] = table.column("dst_ent", at)
    if enricher is not None:
        miss = np.flatnonzero((src < 0) | ~has)
        if len(miss):
            ver = keys["ip_version"][miss]
            src[miss] = enricher.lookup(keys["src"][miss], ver)
            dst[miss] = enricher.lookup(keys["dst"][miss], ver)
    conv = np.zeros(len(keys), dtype=np.uint64)
    conv[has] = table.column("conv_id", at)
    if not has.all():
        conv[~has] = conversation_ids(words[~has])
    return DrainRecords(
        words,
        keys,
        rows,
        np.maximum(src, 0),
        np.maximum(dst, 0),
        stats["packets"].astype(np.int64),
        stats["bytes"].astype(np.int64),
        counted_once(words, conv),
    )


@dataclass(frozen=True, slots=True)
class ZoneStep:
    """One interval's traffic per zone pair: ((src zone, dst zone), bytes,
    packets), zones as names (UNKNOWN for an end without one); cross_bytes:
    the bytes between two different known zones."""

    pairs: tuple[tuple[tuple[str, str], int, int], ...]
    cross_bytes: int


def zone_step(recs: DrainRecords, ea: EntityArrays) -> ZoneStep:
    """The interval's counted bytes and packets per zone pair."""
    if not len(recs):
        return ZoneStep((), 0)
    zid = ea.attr("zone_id")
    zs = zid[np.maximum(recs.src_ent, 0)]
    zd = zid[np.maximum(recs.dst_ent, 0)]
    keep = recs.counted & ((zs > 0) | (zd > 0))
    if not keep.any():
        return ZoneStep((), 0)
    pair = zs[keep].astype(np.uint64) << np.uint64(32) | zd[keep].astype(np.uint64)
    uniq, inv = np.unique(pair, return_inverse=True)
    inv = inv.ravel()
    nb = np.bincount(inv, weights=recs.bytes[keep].astype(np.float64), minlength=len(uniq))
    npk = np.bincount(inv, weights=recs.packets[keep].astype(np.float64), minlength=len(uniq))
    out = []
    cross = 0
    for p, b, k in zip(uniq.tolist(), nb.tolist(), npk.tolist(), strict=True):
        s, d = p >> 32, p & 0xFFFF_FFFF
        names = (ea.zone_name(s) or UNKNOWN, ea.zone_name(d) or UNKNOWN)
        out.append((names, int(b), int(k)))
        if s and d and s != d:
            cross += int(b)
    return ZoneStep(tuple(out), cross)


def zone_counted(
    words: np.ndarray,
    cols: dict[str, np.ndarray],
    ents: tuple[np.ndarray, np.ndarray] | None,
    ea: EntityArrays | None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The zone pair group of flow rows (entities.zone_pair_ids) and their
    columns with the counters of rows that do not count (counted_once: the
    egress leg of a forwarded flow) zeroed, so a group's traffic is each
    packet once, as in the Prometheus zone series."""
    gid = zone_pair_ids(len(words), ents, ea)
    keep = counted_once(words)
    if keep.all():
        return gid, cols
    out = dict(cols)
    for name in ("packets", "bytes", "pps", "bps"):
        out[name] = np.where(keep, cols[name], 0).astype(cols[name].dtype)
    return gid, out
