"""The filter language's socket owner terms, over a real FlowTable whose owner
columns are written with set_column (as the engine's owner join does) and
real OwnerTable name tables."""

from __future__ import annotations

import ipaddress
import pwd
from dataclasses import dataclass, field

import numpy as np
import pytest

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.owners import (
    OWNER_PENDING,
    STATE_ATTRIBUTED,
    STATE_NONE,
    STATE_UNATTRIBUTED,
    UID_NONE,
    OwnerNames,
    OwnerTable,
)
from flowtop.kernel import layout
from flowtop.query.filterexpr import FilterError, parse
from flowtop.query.owners import OwnerArrays
from flowtop.query.tablequery import query_table
from flowtop.query.types import ViewQuery, ViewRow

CTR = "3f2a" + "0b" * 30  # a 64-hex container id
CTR2 = "3f2b" + "cc" * 30
ROOT_UID = pwd.getpwnam("root").pw_uid


@dataclass(frozen=True)
class Owner:
    pid: int = 0
    uid: int = UID_NONE
    comm: str | None = None
    service: str | None = None
    container: str | None = None
    pod: str | None = None
    cgroup_id: int = 0
    state: int = STATE_ATTRIBUTED


# One flow per entry: (bytes, its owner). Ground truth for every test here.
FLOWS: list[tuple[int, Owner]] = [
    (9000, Owner(100, 33, "nginx", "nginx.service", cgroup_id=11)),
    (5000, Owner(101, 33, "nginx", "nginx.service", cgroup_id=11)),
    (3000, Owner(200, 1000, "curl", None, CTR, "6f1c2e4a-0000-4000-8000-000000000001", 22)),
    (2500, Owner(201, ROOT_UID, "Curl-X", "sshd.service", CTR2, cgroup_id=23)),
    (700, Owner(state=STATE_UNATTRIBUTED)),
    (400, Owner(state=STATE_NONE)),  # forwarded
    (100, Owner(state=OWNER_PENDING)),  # not joined yet: the column's blank
]
PATHS = {
    11: "/system.slice/nginx.service",
    22: f"/system.slice/docker-{CTR}.scope",
    23: f"/system.slice/sshd.service/docker-{CTR2}.scope",
}


@dataclass
class Owners:
    """The engine's OwnerTable as the view sees it: real name tables, and
    the cgroup paths of the ids above."""

    names: OwnerNames = field(default_factory=lambda: OwnerTable().names)
    paths: dict[int, str] = field(default_factory=lambda: dict(PATHS))

    def cgroup_path(self, cgroup_id: int) -> str | None:
        return self.paths.get(cgroup_id)


def keys(n: int) -> np.ndarray:
    k = np.zeros(n, dtype=layout.FLOW_KEY)
    for i in range(n):
        k[i]["ifindex"], k[i]["ip_version"], k[i]["proto"] = 2, 4, 6
        k[i]["src"] = ipaddress.ip_address(f"10.0.0.{i + 1}").packed.ljust(16, b"\0")
        k[i]["dst"] = ipaddress.ip_address("192.0.2.1").packed.ljust(16, b"\0")
        k[i]["sport"], k[i]["dport"] = 40000 + i, 443
    return k


def owned_table(flows: list[tuple[int, Owner]] = FLOWS) -> tuple[FlowTable, Owners]:
    """A table with one row per flow (row i = flow i) and its owner columns set."""
    t = FlowTable(clock_offset=0.0)
    stats = np.zeros(len(flows), dtype=layout.FLOW_STATS)
    stats["bytes"] = [b for b, _ in flows]
    stats["packets"] = [max(1, b // 100) for b, _ in flows]
    stats["first_seen_ns"] = stats["last_seen_ns"] = 1000 * NS
    t.merge(keys(len(flows)), stats, interval=1.0)
    rows = t.live_rows()
    assert len(rows) == len(flows)
    owners = Owners()
    nm = owners.names
    # Rows are allocated in key order; map each key's row by its sport.
    order = np.argsort(t.keys_at(rows)["sport"])
    rows = rows[order]
    for row, (_b, o) in zip(rows.tolist(), flows, strict=True):
        r = np.array([row])
        if o.state == OWNER_PENDING:
            continue  # left as the table made it
        t.set_column("pid", r, o.pid)
        t.set_column("uid", r, o.uid)
        t.set_column("cgroup_id", r, o.cgroup_id)
        t.set_column("comm_id", r, nm.comm.intern(o.comm))
        t.set_column("service_id", r, nm.service.intern(o.service))
        t.set_column("container_id", r, nm.container.intern(o.container))
        t.set_column("pod_id", r, nm.pod.intern(o.pod))
        t.set_column("owner_state", r, o.state)
    return t, owners


def rows_of(expr: str, group: str = "flow") -> list[ViewRow]:
    t, owners = owned_table()
    query = ViewQuery(filter=expr, group_by=group, limit=100)
    rows, _ = query_table(t, query, parse(expr), {2: "eth1"}, None, OwnerArrays(owners))
    return rows


def hits(expr: str) -> list[int]:
    """Indexes into FLOWS of the flows the filter keeps (by source port)."""
    return sorted(int(r.sport or 0) - 40000 for r in rows_of(expr))


def truth(pred: object) -> list[int]:
    assert callable(pred)
    return [i for i, (_b, o) in enumerate(FLOWS) if pred(o)]


@pytest.mark.parametrize(
    ("expr", "pred"),
    [
        ("proc nginx", lambda o: o.comm == "nginx"),
        ("proc 'c*'".replace("'", ""), lambda o: o.comm == "curl"),  # glob, case-sensitive
        ("proc [Cc]url*", lambda o: o.comm in ("curl", "Curl-X")),
        ("proc *", lambda o: o.comm is not None),  # a glob never matches "no name"
        ("pid 101", lambda o: o.pid == 101),
        ("pid 7", lambda o: False),
        ("user 33", lambda o: o.uid == 33),
        ("user root", lambda o: o.uid == ROOT_UID),
        ("service nginx.service", lambda o: o.service == "nginx.service"),
        ("service *.service", lambda o: o.service is not None),
        ("container 3f2a", lambda o: o.container == CTR),
        ("container 3F2", lambda o: o.container is not None),  # prefix, any case
        (f"container {CTR}", lambda o: o.container == CTR),
        ("unattributed", lambda o: o.state == STATE_UNATTRIBUTED),
        ("not unattributed", lambda o: o.state != STATE_UNATTRIBUTED),
        ("proc nginx and not pid 100", lambda o: o.comm == "nginx" and o.pid != 100),
        ("service sshd.service or container 3f2a", lambda o: o.container is not None),
        ("tcp and proc curl", lambda o: o.comm == "curl"),
    ],
)
def test_owner_terms_keep_exactly_the_flows_of_that_owner(expr: str, pred: object) -> None:
    assert hits(expr) == truth(pred)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("user no-such-user-flowtop", "unknown user: 'no-such-user-flowtop' (at 6)"),
        ("user 4294967295", "uid out of range"),
        ("container xyz", "not a container id prefix (hex): 'xyz' (at 11)"),
        ("pid 0", "expected a process id (1-4294967295), not '0'"),
        ("pid x", "expected a process id"),
        ("proc", "expected a process name (at the end)"),
        ("service", "expected a service name (at the end)"),
        ("container", "expected a container id prefix (at the end)"),
    ],
)
def test_bad_owner_terms_are_one_line_errors(expr: str, message: str) -> None:
    with pytest.raises(FilterError) as exc:
        parse(expr)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_owner_terms_without_attribution_say_so() -> None:
    t, _ = owned_table()
    query = ViewQuery(filter="proc nginx")
    with pytest.raises(FilterError, match="proc: no socket owners"):
        query_table(t, query, parse(query.filter), {2: "eth1"}, None, None)
    # a filter without owner terms works as before
    _rows, matched = query_table(t, ViewQuery(filter="tcp"), parse("tcp"), {2: "eth1"})
    assert matched == len(FLOWS)


def test_names_added_later_are_matched() -> None:
    """The per-name results are cached until a name table grows."""
    t, owners = owned_table()
    oa = OwnerArrays(owners)
    flt = parse("proc late*")
    q = ViewQuery(filter="proc late*")
    assert query_table(t, q, flt, {}, None, oa)[1] == 0
    row = t.live_rows()[np.argsort(t.keys_at(t.live_rows())["sport"])][5]
    t.set_column("comm_id", np.array([row]), owners.names.comm.intern("latecomer"))
    t.set_column("owner_state", np.array([row]), STATE_ATTRIBUTED)
    rows, matched = query_table(t, q, flt, {}, None, oa)
    assert matched == 1 and rows[0].comm == "latecomer" and rows[0].sport == 40005


def test_flow_rows_carry_their_owner() -> None:
    by_port = {int(r.sport or 0) - 40000: r for r in rows_of("")}
    for i, (_b, o) in enumerate(FLOWS):
        r = by_port[i]
        assert r.pid == (o.pid or None)
        assert r.uid == (None if o.uid == UID_NONE else o.uid)
        assert (r.comm, r.service, r.container, r.pod) == (o.comm, o.service, o.container, o.pod)
        assert r.cgroup == PATHS.get(o.cgroup_id)
        assert r.owner_state == o.state
