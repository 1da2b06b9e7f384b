"""Zones: how much traffic goes between which zones, counted once per packet.

The zone of a flow end is its label's zone (`zone=` in the labels file), or
for this host's own addresses the configured host zone ([enrich] host_zone)
when no label gives one (enrich/enricher.py decides; query/entities.py has
it per entity as `zone` and `zone_id`).

zone_step() sums one interval's drained counters per (src zone, dst zone)
pair. A packet forwarded by this box is drained twice (ingress on one leg,
egress on the other): core/conversations.counted_once() keeps each packet
once, by the rule the conversation view uses: per oriented connection and
interval, the ingress records if there are any, else the egress ones.
Flows neither of whose ends has a zone are in no pair.

Per step (the engine observer, query/monitors.py) nothing is looked up
twice: drain_records() takes the rows the merge found for the drained keys
(FlowTable.merged_rows) and the conversation ids and legs the flow table
keeps per row (core/conversations.counted_by_legs: the counted-once rule over
those columns);
only records whose flow ended in the step are worked out from their keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowtop.core.conversations import counted_by_legs, ids_and_legs
from flowtop.kernel import layout
from flowtop.query.entities import EntityArrays

if TYPE_CHECKING:
    from flowtop.core.flowtable import FlowTable
    from flowtop.enrich import Enricher
    from flowtop.kernel.collector import Drain

_KEY = layout.FLOW_KEY_WORDS
UNKNOWN = "unknown"  # the zone label of an end without a zone (Prometheus, dump)
# Zone ids up to this many: zone_step sums pairs in a dense (zones x zones)
# array; more zones (a large labels file) take the sort.
_DENSE_ZONES = 64


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
    # bytes and packets as float64, the weights of the sums per zone pair
    # and per monitor (bincount; exact below 2**53 per interval), made once.
    weights: tuple[np.ndarray, np.ndarray]

    def __len__(self) -> int:
        return len(self.words)


def drain_records(drain: Drain, enricher: Enricher | None, table: FlowTable) -> DrainRecords:
    """The drain's batches together, after the step that merged them into
    table: the entity ids, conversation ids and legs of the records whose
    flow still has its row come from it (rows: what the merge found,
    FlowTable.merged_rows, else one lookup); the others' (ended in this
    step) are worked out here (entity ids 0 without an enricher)."""
    parts = [(k, s) for k, s in drain.batches if len(k)]
    if len(parts) == 1:
        keys, stats = parts[0]
    elif parts:
        keys = np.concatenate([k for k, _ in parts])
        stats = np.concatenate([s for _, s in parts])
    else:
        keys = np.zeros(0, dtype=layout.FLOW_KEY)
        stats = np.zeros(0, dtype=layout.FLOW_STATS)
    words = _KEY.view(keys)
    rows = table.merged_rows(drain.batches)
    if rows is None:
        rows = table.rows_of(keys) if len(keys) else np.zeros(0, dtype=np.int64)
    has = rows >= 0
    every = bool(has.all())
    at = rows if every else rows[has]
    src = np.asarray(table.column("src_ent", at), dtype=np.int64)
    dst = np.asarray(table.column("dst_ent", at), dtype=np.int64)
    conv = table.column("conv_id", at)
    leg = table.column("conv_leg", at)
    if not every:
        gone = ~has
        src, dst = _spread(src, has, -1), _spread(dst, has, -1)
        conv, leg = _spread(conv, has, 0), _spread(leg, has, 0)
        conv[gone], leg[gone] = ids_and_legs(words[gone])
    if enricher is not None:
        miss = np.flatnonzero(src < 0)  # not looked up yet, or no row
        if len(miss):
            ver = keys["ip_version"][miss]
            src[miss] = enricher.lookup(keys["src"][miss], ver)
            dst[miss] = enricher.lookup(keys["dst"][miss], ver)
    packets = stats["packets"].astype(np.int64)
    nbytes = stats["bytes"].astype(np.int64)
    return DrainRecords(
        words,
        keys,
        rows,
        np.maximum(src, 0),
        np.maximum(dst, 0),
        packets,
        nbytes,
        counted_by_legs(conv, leg),
        (nbytes.astype(np.float64), packets.astype(np.float64)),
    )


def _spread(values: np.ndarray, where: np.ndarray, fill: int) -> np.ndarray:
    """values at the True places of where, fill elsewhere."""
    out = np.full(len(where), fill, dtype=values.dtype)
    out[where] = values
    return out


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
    nz = int(zid.max()) + 1
    if nz <= _DENSE_ZONES:
        # Few zones: a dense pair index and bincount, no sort and no copy of
        # the records kept; pair (0, 0) (no zone at either end) is also
        # where the records that do not count go, and is left out. Pairs in
        # the same order as np.unique of (src << 32 | dst) gives.
        idx = zs * nz + zd
        if not recs.counted.all():
            idx = np.where(recs.counted, idx, 0)
        cnt = np.bincount(idx, minlength=nz * nz)
        cnt[0] = 0
        used = np.flatnonzero(cnt)
        if not len(used):
            return ZoneStep((), 0)
        nb = np.bincount(idx, weights=recs.weights[0], minlength=nz * nz)[used]
        npk = np.bincount(idx, weights=recs.weights[1], minlength=nz * nz)[used]
        uniq = (used // nz).astype(np.uint64) << np.uint64(32) | (used % nz).astype(np.uint64)
    else:
        keep = recs.counted & ((zs > 0) | (zd > 0))
        if not keep.any():
            return ZoneStep((), 0)
        pair = zs[keep].astype(np.uint64) << np.uint64(32) | zd[keep].astype(np.uint64)
        uniq, inv = np.unique(pair, return_inverse=True)
        inv = inv.ravel()
        nb = np.bincount(inv, weights=recs.weights[0][keep], minlength=len(uniq))
        npk = np.bincount(inv, weights=recs.weights[1][keep], minlength=len(uniq))
    out = []
    cross = 0
    for p, b, k in zip(uniq.tolist(), nb.tolist(), npk.tolist(), strict=True):
        s, d = p >> 32, p & 0xFFFF_FFFF
        names = (ea.zone_name(s) or UNKNOWN, ea.zone_name(d) or UNKNOWN)
        out.append((names, int(b), int(k)))
        if s and d and s != d:
            cross += int(b)
    return ZoneStep(tuple(out), cross)
