"""What the exports read of the engine after a step: EngineReadings.

The engine's one read side for the outputs (Prometheus /metrics): a frozen
snapshot taken on the engine's thread right after a step, so that an
exporter never reaches into the engine's attributes or aggregates raw flow
keys itself. Engine.readings() makes one; Outputs' observer asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.core.owners import STATE_UNATTRIBUTED
from flowtop.core.tcphealth import HealthGroup, TcpUpdate
from flowtop.kernel.collector import Drain

if TYPE_CHECKING:
    from flowtop.core.flowtable import FlowTable
    from flowtop.core.owners import OwnerTable
    from flowtop.enrich import Enricher


@dataclass(frozen=True, slots=True)
class RemoteBytes:
    """One interval's bytes by (direction, remote AS, remote country): the
    remote end is the source of an ingress flow and the destination of an
    egress one. Parallel arrays, one entry per distinct (direction, entity)."""

    direction: np.ndarray  # int64: 0 ingress, 1 egress
    asn: np.ndarray  # int64, 0 = unknown
    country: np.ndarray  # object (str), "" = unknown
    nbytes: np.ndarray  # int64


@dataclass(frozen=True, slots=True)
class OwnerBytes:
    """One interval's bytes and packets of local flows by their socket
    owner's service and container (object arrays of names, None: none), one
    entry per distinct (service, container); unattributed: live flows of a
    local socket whose owner is unknown, now."""

    service: np.ndarray
    container: np.ndarray
    nbytes: np.ndarray  # int64
    packets: np.ndarray  # int64
    unattributed: int


@dataclass(frozen=True, slots=True)
class EngineReadings:
    """The engine after its last step, for the exports (engine thread).

    drain is None when that step's drain failed: nothing new to add (the
    interval before must not be counted twice); the counters still move.
    remote is None without an enricher or a drain.
    """

    drain: Drain | None
    remote: RemoteBytes | None
    tcp: TcpUpdate  # this step's TCP samples (RTT, retransmit deltas)
    names: dict[int, str]  # ifindex -> interface name
    interfaces: list[InterfaceCounters]
    active_flows: int
    health: CollectorHealth  # with every part's <part>_errors
    poll_seconds: float  # how long the last successful step took
    polls: int
    tcp_groups: tuple[HealthGroup, ...]  # TCP verdicts, worst first
    owners: OwnerBytes | None = None  # None without socket owners or a drain


def remote_bytes(drain: Drain, enricher: Enricher) -> RemoteBytes:
    """The drain's bytes by direction and remote entity's AS and country."""
    dirs: list[np.ndarray] = []
    asns: list[np.ndarray] = []
    countries: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    for keys, stats in drain.batches:
        if len(keys) == 0:
            continue
        ingress = keys["direction"] == 0
        remote = np.where(ingress, keys["src"], keys["dst"])
        eids = enricher.lookup(remote, keys["ip_version"])
        uniq, inv = np.unique(
            np.stack([keys["direction"].astype(np.int64), eids.astype(np.int64)], axis=1),
            axis=0,
            return_inverse=True,
        )
        nbytes = np.bincount(inv.ravel(), weights=stats["bytes"].astype(np.float64))
        ents = [enricher.entity(int(e)) for e in uniq[:, 1]]
        dirs.append(uniq[:, 0])
        asns.append(np.array([e.asn or 0 for e in ents], dtype=np.int64))
        countries.append(np.array([e.country or "" for e in ents], dtype=object))
        sizes.append(nbytes.astype(np.int64))
    if not dirs:
        empty = np.zeros(0, dtype=np.int64)
        return RemoteBytes(empty, empty, np.zeros(0, dtype=object), empty)
    return RemoteBytes(
        np.concatenate(dirs), np.concatenate(asns), np.concatenate(countries), np.concatenate(sizes)
    )


def owner_bytes(drain: Drain, owners: OwnerTable, table: FlowTable) -> OwnerBytes:
    """The drain's bytes and packets by the service and container of each
    flow's socket owner (OwnerTable.join of the drained keys: the reports of
    this interval are in), and the table's unattributed flows."""
    ids: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    for keys, stats in drain.batches:
        if len(keys) == 0:
            continue
        cols = owners.join(keys)
        # (service id, container id) as one word: a 1-D unique is much cheaper.
        ids.append(cols.service.astype(np.uint64) << np.uint64(32) | cols.container)
        sizes.append(np.stack([stats["bytes"], stats["packets"]], axis=1).astype(np.float64))
    live = table.live_rows()
    unattributed = int((table.column("owner_state", live) == STATE_UNATTRIBUTED).sum())
    if not ids:
        empty = np.zeros(0, dtype=np.int64)
        none = np.zeros(0, dtype=object)
        return OwnerBytes(none, none, empty, empty, unattributed)
    uniq, inv = np.unique(np.concatenate(ids), return_inverse=True)
    both = np.concatenate(sizes)
    inv = inv.ravel()
    return OwnerBytes(
        owners.names.service.texts(uniq >> np.uint64(32)),
        owners.names.container.texts(uniq & np.uint64(0xFFFF_FFFF)),
        np.bincount(inv, weights=both[:, 0], minlength=len(uniq)).astype(np.int64),
        np.bincount(inv, weights=both[:, 1], minlength=len(uniq)).astype(np.int64),
        unattributed,
    )
