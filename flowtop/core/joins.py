"""Per-flow facts from elsewhere, joined onto the flow table once per flow.

Socket owners (core/owners.py) and names from the wire (wirenames/) have the
same shape: a flow's row is created pending, joined to the fact's table after
each drain until the fact is there or the row is past its retry window (the
fact may be read an interval after the flow's first packets), then settled;
a flow that ends while pending is joined once more in its flow-end record.
OwnerJoin and NameJoin are those two joins; the engine (core/engine.py)
calls rows() after each merge and ended() on each batch of ended flows, and
counts what they raise (they never lose the flows: a failed join leaves the
rows pending). Drops (core/drops.py) are joined by key each drain instead:
they are counts, not a fact that settles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowtop.core.flowtable import FlowBatch, FlowTable
from flowtop.core.owners import (
    OWNER_PENDING,
    STATE_ATTRIBUTED,
    STATE_UNATTRIBUTED,
    OwnerColumns,
    OwnerTable,
)
from flowtop.kernel.collector import Drain
from flowtop.wirenames.names import (
    NAME_NAMED,
    NAME_PENDING,
    NAME_UNNAMED,
    NameColumns,
    WireNames,
)

# Socket owners (fields.OWNER). A flow is joined to the OwnerTable while its
# owner_state is OWNER_PENDING: first in the interval that created its row. A
# flow whose first packets were counted before its socket's report was read
# (an incoming first packet: TC ingress counts it before the socket's
# cgroup hook reports the tuple, and a drain can fall in between) is joined
# again for this many intervals after its first packet before it settles
# with no owner (or unattributed).
OWNER_RETRY_INTERVALS = 3
# OwnerColumns field -> flow table column.
OWNER_COLUMNS = (
    ("pid", "pid"), ("uid", "uid"), ("cgroup_id", "cgroup_id"), ("comm", "comm_id"),
    ("service", "service_id"), ("container", "container_id"), ("pod", "pod_id"),
)  # fmt: skip

# Names from the wire (fields.WIRE). A row is joined to the WireNames while its
# name_state is NAME_PENDING, for this many intervals after its first packet
# (the DNS answer or ClientHello may be read by the feeder thread after the
# flow's first packets were drained); then it settles, named or not. Unnamed
# live rows are joined again, a 1/NAME_REJOIN_EVERY slice per interval and
# only while WireNames learnt something since, so that a long flow is named
# by an answer that came later (each such row at most every few seconds).
NAME_RETRY_INTERVALS = 3
NAME_REJOIN_EVERY = 5
# NameColumns field -> flow table column.
NAME_COLUMNS = (("src_name", "src_name_id"), ("dst_name", "dst_name_id"),
                ("cname", "name_cname_id"), ("source", "name_source"))  # fmt: skip


def _young(
    table: FlowTable, rows: np.ndarray, d: Drain, interval: float, retries: int
) -> np.ndarray:
    """Which rows' first packet is within `retries` intervals of this drain."""
    retry_ns = int(retries * max(interval, d.interval) * 1e9)
    young: np.ndarray = table.column("first_ns", rows).astype(np.int64) > d.now_ns - retry_ns
    return young


@dataclass
class OwnerJoin:
    """Flows to the OwnerTable's socket owners (pid, comm, cgroup, ...)."""

    owners: OwnerTable
    what = "socket owners"
    # Flows settled as STATE_UNATTRIBUTED so far (CollectorHealth.owners_unattributed).
    unattributed: int = 0
    _steps: int = 0

    def rows(self, t: FlowTable, d: Drain, interval: float) -> None:
        """The interval's socket reports in; pending rows joined, and settled
        when attributed or past their retry window. Live attributed rows are
        joined too, a 1/k slice per interval, only so that their OwnerTable
        entries stay alive as long as the flows (a flow that idles out and
        comes back finds its socket's entry: the kernel reports a tuple
        once)."""
        owners = self.owners
        if d.owners is not None and len(d.owners):
            owners.add(d.owners)
        live = t.live_rows()
        state = t.column("owner_state", live)
        pending = live[state == OWNER_PENDING]
        self._steps += 1
        k = max(1, int(owners.idle_timeout / (2 * max(interval, 1e-3))))
        refresh = live[(state == STATE_ATTRIBUTED) & (live % k == self._steps % k)]
        if not len(pending) and not len(refresh):
            owners.expire()
            return
        rows = np.concatenate([pending, refresh])
        cols = owners.join(t.keys_at(rows))
        n = len(pending)
        young = _young(t, pending, d, interval, OWNER_RETRY_INTERVALS)
        settle = np.flatnonzero((cols.state[:n] == STATE_ATTRIBUTED) | ~young)
        if len(settle):
            for name, v in self._settle(cols, settle).items():
                t.set_column(name, pending[settle], v)

    def ended(self, batch: FlowBatch) -> None:
        """Flow-end records still pending (ended inside their retry window, or
        never had a row) joined once more and settled, in place."""
        ext = batch.columns
        at = np.flatnonzero(ext["owner_state"] == OWNER_PENDING)
        if not len(at):
            return
        vals = self._settle(self.owners.join(batch.keys[at]), np.arange(len(at)))
        for name, v in vals.items():
            ext[name][at] = v

    def _settle(self, cols: OwnerColumns, at: np.ndarray) -> dict[str, np.ndarray]:
        """The owner columns (flow table names) of the joined rows at `at`,
        their state final; counts the unattributed ones."""
        out = {col: getattr(cols, name)[at] for name, col in OWNER_COLUMNS}
        out["owner_state"] = st = cols.state[at]
        self.unattributed += int((st == STATE_UNATTRIBUTED).sum())
        return out


@dataclass
class NameJoin:
    """Flows to the WireNames' names of their server ends (DNS, SNI, HTTP)."""

    names: WireNames
    what = "names from the wire"
    _steps: int = 0
    _generation: int = -1
    _changed_step: int = 0

    def rows(self, t: FlowTable, d: Drain, interval: float) -> None:
        """Pending rows joined and settled when named or past their retry
        window; unnamed settled rows joined again in slices while names
        grows (NAME_REJOIN_EVERY). A named row keeps its name."""
        names = self.names
        live = t.live_rows()
        state = t.column("name_state", live)
        pending = live[state == NAME_PENDING]
        self._steps += 1
        if names.generation != self._generation:
            self._generation = names.generation
            self._changed_step = self._steps
        k = NAME_REJOIN_EVERY
        again = np.zeros(0, dtype=live.dtype)
        if self._steps - self._changed_step < k:  # each slice once since
            again = live[(state == NAME_UNNAMED) & (live % k == self._steps % k)]
        if not len(pending) and not len(again):
            names.expire()
            return
        rows = np.concatenate([pending, again])
        cols = names.join(t.keys_at(rows))
        young = np.zeros(len(rows), dtype=bool)
        young[: len(pending)] = _young(t, pending, d, interval, NAME_RETRY_INTERVALS)
        at = np.flatnonzero(cols.named | ~young)
        if len(at):
            for name, v in self._values(cols, at).items():
                t.set_column(name, rows[at], v)

    def ended(self, batch: FlowBatch) -> None:
        """Flow-end records still pending joined once more and settled, in place."""
        ext = batch.columns
        at = np.flatnonzero(ext["name_state"] == NAME_PENDING)
        if not len(at):
            return
        vals = self._values(self.names.join(batch.keys[at]), np.arange(len(at)))
        for name, v in vals.items():
            ext[name][at] = v

    @staticmethod
    def _values(cols: NameColumns, at: np.ndarray) -> dict[str, np.ndarray]:
        """The name columns (flow table names) of the joined rows at `at`, settled."""
        out = {col: getattr(cols, name)[at] for name, col in NAME_COLUMNS}
        out["name_state"] = np.where(cols.named[at], NAME_NAMED, NAME_UNNAMED).astype(np.uint8)
        return out
