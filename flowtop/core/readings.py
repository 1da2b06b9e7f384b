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
from flowtop.core.tcphealth import HealthGroup, TcpUpdate
from flowtop.kernel.collector import Drain

if TYPE_CHECKING:
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
