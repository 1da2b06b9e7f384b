"""Enrichment in the view: the enricher's entities as arrays, the
entity-keyed groups (asn, country, label) of the remote end of each flow,
and the zone pair group (each end's zone: its label's, or the host zone for
this host's own addresses; enrich/enricher.py decides).

The flow table holds an entity id per end (src_ent, dst_ent; -1: not looked
up yet, 0: nothing known); these turn ids into attribute arrays the filter
language and the group-by index with numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flowtop.kernel import layout

if TYPE_CHECKING:
    from flowtop.enrich import Enricher, Entity

# The entity attribute each entity group is keyed by (an integer per entity).
_GROUP_ATTR = {"asn": "asn", "country": "country_id", "label": "label_id"}


class EntityArrays:
    """The enricher's entities as numpy arrays (index: entity id), rebuilt as it grows."""

    def __init__(self, enricher: Enricher) -> None:
        self._enricher = enricher
        self._n = -1
        self._attrs: dict[str, np.ndarray] = {}
        # zone name -> id, in order of appearance ("" = no zone: 0), kept
        # across rebuilds so a zone pair group keeps its row key.
        self._zone_ids: dict[str, int] = {"": 0}

    def _refresh(self) -> None:
        ents = self._enricher.entities
        if len(ents) == self._n:
            return
        self._attrs = {
            "asn": np.array([e.asn or 0 for e in ents], dtype=np.int64),
            "country": np.array([e.country or "" for e in ents], dtype=object),
            "label": np.array([e.label or "" for e in ents], dtype=object),
            "local": np.array([e.local for e in ents], dtype=bool),
            "zone": np.array([e.zone or "" for e in ents], dtype=object),
        }
        zones = self._zone_ids
        for z in self._attrs["zone"].tolist():
            zones.setdefault(z, len(zones))
        self._attrs["zone_id"] = np.array(
            [zones[z] for z in self._attrs["zone"].tolist()], dtype=np.int64
        )
        labels = {v: i for i, v in enumerate(sorted(set(self._attrs["label"].tolist())))}
        self._attrs["label_id"] = np.array(
            [labels[v] for v in self._attrs["label"].tolist()], dtype=np.int64
        )
        self._attrs["country_id"] = np.array(
            [
                int.from_bytes(c.encode()[:4].ljust(4, b"\0"), "little")
                for c in self._attrs["country"].tolist()
            ],
            dtype=np.int64,
        )
        self._n = len(ents)

    def attr(self, name: str) -> np.ndarray:
        self._refresh()
        return self._attrs[name]

    def entity(self, eid: int) -> Entity:
        return self._enricher.entity(max(eid, 0))

    def zone_name(self, zone_id: int) -> str | None:
        """The zone of a zone_id (None: 0, no zone)."""
        self._refresh()
        for name, i in self._zone_ids.items():
            if i == zone_id:
                return name or None
        return None

    @property
    def zoned(self) -> bool:
        """Any zone configured (labels with zone=, or a host zone)."""
        return bool(getattr(self._enricher, "zoned", False))


NO_ZONE = "-"  # a flow end without a zone, in a zone pair


def zone_pair_ids(
    n: int, ents: tuple[np.ndarray, np.ndarray] | None, ea: EntityArrays | None
) -> np.ndarray:
    """The zone pair group of each of n flows: src zone id << 32 | dst zone
    id (0 without enrichment or zones)."""
    if ea is None or ents is None:
        return np.zeros(n, dtype=np.uint64)
    zid = ea.attr("zone_id")
    src = zid[np.maximum(ents[0], 0)].astype(np.uint64)
    dst = zid[np.maximum(ents[1], 0)].astype(np.uint64)
    out: np.ndarray = src << np.uint64(32) | dst
    return out


def zone_pair_text(ea: EntityArrays | None, pair: int) -> str:
    """'a→b' of a zone_pair_ids value ('-' for an end without a zone)."""
    if ea is None:
        return f"{NO_ZONE}→{NO_ZONE}"
    src = ea.zone_name(pair >> 32) or NO_ZONE
    dst = ea.zone_name(pair & 0xFFFF_FFFF) or NO_ZONE
    return f"{src}→{dst}"


def remote_entities(
    words: np.ndarray, ents: tuple[np.ndarray, np.ndarray], ea: EntityArrays
) -> np.ndarray:
    """The entity of each flow's remote end: the end that is not local; when
    both or neither are, the source of ingress and the destination of egress."""
    src, dst = np.maximum(ents[0], 0), np.maximum(ents[1], 0)
    local = ea.attr("local")
    sl, dl = local[src], local[dst]
    ingress = layout.FLOW_KEY_WORDS.field(words, "direction") == layout.DIR_INGRESS
    use_src = np.where(sl != dl, dl, ingress)
    out: np.ndarray = np.where(use_src, src, dst)
    return out


def entity_groups(
    group: str,
    words: np.ndarray,
    ents: tuple[np.ndarray, np.ndarray] | None,
    ea: EntityArrays | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(group id of each flow, the remote entity of each group in group id
    order) for an entity group; without enrichment every flow is in group 0."""
    if ea is not None and ents is not None:
        remote = remote_entities(words, ents, ea)
        gid = ea.attr(_GROUP_ATTR[group])[remote].astype(np.uint64)
    else:
        remote = np.zeros(len(words), dtype=np.int64)
        gid = np.zeros(len(words), dtype=np.uint64)
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    group_eid: np.ndarray = remote[order[starts]]
    return gid, group_eid


class _Nothing:
    asn: int | None = None
    as_org: str | None = None
    country: str | None = None
    label: str | None = None


_NOTHING = _Nothing()


def group_value(group: str, ea: EntityArrays | None, eid: int) -> str:
    """The text of an entity group's value (an AS, a country, a label)."""
    e: Entity | _Nothing = ea.entity(eid) if ea is not None else _NOTHING
    if group == "asn":
        if not e.asn:
            return "unknown AS"
        return f"AS{e.asn} {e.as_org}" if e.as_org else f"AS{e.asn}"
    if group == "country":
        return e.country or "unknown country"
    return e.label or "(no label)"
