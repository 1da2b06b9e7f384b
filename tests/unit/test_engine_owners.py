"""The engine's owner join: drained OWNER_RECORDs onto the flow table's owner
columns, pending rows retried and settled, ended flows settled, the
unattributed ones counted once, live flows' entries kept alive, and what
dump prints of them.

A scripted collector (test_engine_errors.Scripted) hands out Drains made
here: flow keys of a host 10.0.0.1 and the socket reports the cgroup
programs would make for them (synthetic OWNER_RECORDs). The OwnerTable is
the real one, on a cgroup tree made under tmp_path.
"""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import numpy as np

from flowtop.core.cgroups import CgroupPaths
from flowtop.core.engine import Engine
from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.joins import OWNER_RETRY_INTERVALS
from flowtop.core.model import TCP_FIN, CollectorHealth
from flowtop.core.owners import (
    OWNER_PENDING,
    STATE_ATTRIBUTED,
    STATE_NONE,
    STATE_UNATTRIBUTED,
    UID_NONE,
    OwnerTable,
)
from flowtop.core.procsockets import ProcSnapshot
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain
from flowtop.kernel.owner_records import (
    OWNER_FROM_PACKET,
    OWNER_FROM_PROC,
    OWNER_RECORD,
    OWNER_UNKNOWN,
)
from flowtop.run.dump import Extras, FlowAccumulator, emit

from .test_engine_errors import Scripted

T0 = 1_000 * NS
TCP, UDP = 6, 17
ID64 = "c8b38413c88eefe063b8cd3f01c16be5e3bda9693a19a68a88807baca9feb937"
HOST = "10.0.0.1"


def _a(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def flow(
    src: str, sport: int, dst: str, dport: int, proto: int = UDP, packets: int = 1,
    t: int = T0, direction: int = layout.DIR_EGRESS, flags: int = 0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One flow's key and one interval's stats (100-byte packets)."""
    k = np.zeros(1, layout.FLOW_KEY)
    k["ifindex"], k["direction"], k["ip_version"], k["proto"] = 2, direction, 4, proto
    k["src"], k["dst"], k["sport"], k["dport"] = _a(src), _a(dst), sport, dport
    s = np.zeros(1, layout.FLOW_STATS)
    s["packets"], s["bytes"] = packets, 100 * packets
    s["first_seen_ns"] = s["last_seen_ns"] = t
    s["tcp_flags"] = flags
    return k, s


def batch(*fs: tuple[np.ndarray, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.concatenate([k for k, _ in fs]), np.concatenate([s for _, s in fs]))]


def report(
    local: str, lport: int, remote: str, rport: int, proto: int = UDP, pid: int = 0,
    uid: int = 0, comm: bytes = b"", cgroup_id: int = 0, flags: int = 0,
) -> np.ndarray:  # fmt: skip
    """The OWNER_RECORD a socket's cgroup program reports for its tuple."""
    r = np.zeros(1, OWNER_RECORD)
    t, o = r["tuple"], r["owner"]
    t["family"], t["proto"], t["lport"], t["rport"] = 4, proto, lport, rport
    t["local"], t["remote"] = _a(local), _a(remote)
    o["tgid"], o["uid"], o["comm"], o["cgroup_id"], o["flags"] = pid, uid, comm, cgroup_id, flags
    return r


def drain(i: int, flows: list[tuple[np.ndarray, np.ndarray]], *owners: np.ndarray) -> Drain:
    recs = np.concatenate(owners) if owners else np.zeros(0, OWNER_RECORD)
    return Drain(batch(*flows) if flows else [], T0 + i * NS, 1.0, owners=recs)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(
    script: list[Drain | BaseException], owners: OwnerTable | None
) -> tuple[Engine, FlowAccumulator]:
    table = FlowTable(clock_offset=0.0, idle_timeout=3600, active_timeout=3600)
    engine = Engine(Scripted(script), table, interval=1.0)  # type: ignore[arg-type]
    if owners is not None:
        engine.use_owners(owners)
    acc = FlowAccumulator(0.0)
    engine.sinks.append(acc)
    return engine, acc


def state_of(engine: Engine, sport: int) -> dict[str, int]:
    t = engine.table
    rows = t.live_rows()
    row = rows[t.keys_at(rows)["sport"] == sport]
    assert len(row) == 1, sport
    cols = ("pid", "uid", "cgroup_id", "comm_id", "service_id", "container_id", "owner_state")
    return {c: int(t.column(c, row)[0]) for c in cols}


def dump_json(engine: Engine, acc: FlowAccumulator) -> dict[int, dict[str, object]]:
    """dump --json's flow lines by source port (the run shut down first)."""
    engine.shutdown()
    out = io.StringIO()
    emit(acc.per_key(), {2: "eth1"}, [], engine.health(), as_json=True, out=out,
         extras=Extras(owners=engine.owners))  # fmt: skip
    text = out.getvalue()
    assert text.isascii()  # every name escaped by json.dumps
    lines = [json.loads(x) for x in text.splitlines()]
    return {int(x["sport"]): x for x in lines if x["type"] == "flow"}  # type: ignore[arg-type]


def cgroup_tree(tmp: Path) -> tuple[Path, Path]:
    svc = tmp / "system.slice" / "ft-unit.service"
    ctr = tmp / "system.slice" / f"docker-{ID64}.scope"
    for p in (svc, ctr):
        p.mkdir(parents=True)
    return svc, ctr


def test_new_rows_get_their_sockets_owner_and_dump_prints_it(tmp_path: Path) -> None:
    svc, ctr = cgroup_tree(tmp_path)
    owners = OwnerTable(CgroupPaths(str(tmp_path)))
    d1 = drain(
        1,
        [
            flow(HOST, 40000, "192.0.2.1", 53, packets=3),  # egress, the socket sent it
            # ingress TCP to a socket of the container: its dst is the local end
            flow("192.0.2.9", 443, HOST, 40001, TCP, 2, direction=layout.DIR_INGRESS),
            flow("10.9.9.9", 5000, "10.8.8.8", 80, TCP),  # forwarded: nobody's
        ],
        report(HOST, 40000, "192.0.2.1", 53, pid=4242, uid=1000, comm=b"dig",
               cgroup_id=svc.stat().st_ino),
        report(HOST, 40001, "192.0.2.9", 443, TCP, pid=77, uid=0, comm=b"app",
               cgroup_id=ctr.stat().st_ino),
    )  # fmt: skip
    engine, acc = make([d1], owners)
    engine.step()
    dig, app = state_of(engine, 40000), state_of(engine, 443)
    assert (dig["pid"], dig["uid"], dig["owner_state"]) == (4242, 1000, STATE_ATTRIBUTED)
    assert owners.names.comm.get(dig["comm_id"]) == "dig"
    assert owners.names.service.get(dig["service_id"]) == "ft-unit.service"
    assert (dig["container_id"], dig["cgroup_id"]) == (0, svc.stat().st_ino)
    assert (app["pid"], app["uid"], app["owner_state"]) == (77, 0, STATE_ATTRIBUTED)
    assert owners.names.container.get(app["container_id"]) == ID64
    # the forwarded flow may still get a report: pending for now
    fwd = state_of(engine, 5000)
    assert fwd["owner_state"] == OWNER_PENDING and fwd["uid"] == UID_NONE
    got = dump_json(engine, acc)
    assert {k: got[40000][k] for k in ("pid", "comm", "uid", "cgroup", "service", "container",
                                       "pod", "bytes")} == {
        "pid": 4242, "comm": "dig", "uid": 1000, "cgroup": "/system.slice/ft-unit.service",
        "service": "ft-unit.service", "container": None, "pod": None, "bytes": 300,
    }  # fmt: skip
    assert (got[443]["pid"], got[443]["comm"], got[443]["container"]) == (77, "app", ID64)
    assert got[443]["cgroup"] == f"/system.slice/docker-{ID64}.scope"
    assert got[443]["service"] is None  # a docker scope is a container, not a service
    owner_keys = ("pid", "comm", "uid", "cgroup", "service", "container", "pod")
    assert [got[5000][k] for k in owner_keys] == [None] * 7
    assert engine.health().owners_unattributed == 0


def test_a_report_one_interval_late_is_retried_then_unknown_flows_settle() -> None:
    owners = OwnerTable()
    late = flow("192.0.2.7", 1234, HOST, 5353, direction=layout.DIR_INGRESS)
    never = flow("10.9.9.9", 6000, "10.8.8.8", 80)
    script: list[Drain | BaseException] = [drain(1, [late, never])]
    # the socket's report comes with the next drain (read after the flows)
    script.append(drain(2, [], report(HOST, 5353, "192.0.2.7", 1234, pid=99, comm=b"mdns")))
    script += [drain(i, []) for i in range(3, 3 + OWNER_RETRY_INTERVALS + 1)]
    engine, acc = make(script, owners)
    engine.step()
    assert state_of(engine, 1234)["owner_state"] == OWNER_PENDING
    engine.step()
    assert state_of(engine, 1234)["owner_state"] == STATE_ATTRIBUTED
    assert state_of(engine, 1234)["pid"] == 99
    assert state_of(engine, 6000)["owner_state"] == OWNER_PENDING  # still young
    for _ in range(OWNER_RETRY_INTERVALS):
        engine.step()
    # first packet at T0 + 1 s, now T0 + 5 s: past 3 intervals, settled
    assert state_of(engine, 6000)["owner_state"] == STATE_NONE
    got = dump_json(engine, acc)
    assert (got[1234]["pid"], got[1234]["comm"]) == (99, "mdns")
    assert got[6000]["pid"] is None and got[6000]["comm"] is None
    assert engine.health().owners_unattributed == 0


def test_unknown_owner_settles_unattributed_counted_once() -> None:
    owners = OwnerTable()
    # a socket older than flowtop that the snapshot did not see
    old = report(HOST, 22, "192.0.2.50", 50000, TCP, flags=OWNER_UNKNOWN)
    f = flow(HOST, 22, "192.0.2.50", 50000, TCP, t=T0 + NS)
    script: list[Drain | BaseException] = [drain(1, [f], old)]
    script += [drain(i, [flow(HOST, 22, "192.0.2.50", 50000, TCP, t=T0 + i * NS)])
               for i in range(2, 10)]  # fmt: skip
    engine, acc = make(script, owners)
    for _ in range(9):
        engine.step()
    assert state_of(engine, 22)["owner_state"] == STATE_UNATTRIBUTED
    h = engine.health()
    assert h.owners_unattributed == 1  # one flow, however many intervals
    assert h.as_dict()["owners_unattributed"] == 1 and h.problems == 1
    got = dump_json(engine, acc)
    assert got[22]["pid"] is None and got[22]["uid"] is None
    out = io.StringIO()
    emit(acc.per_key(), {2: "eth1"}, [], engine.health(), as_json=False, out=out,
         extras=Extras(owners=engine.owners))  # fmt: skip
    lines = out.getvalue().splitlines()
    assert lines[0].split()[-1] == "PROCESS" and lines[1].endswith("(unattributed)")
    assert "owners_unattributed=1" in out.getvalue()


def test_the_snapshot_attributes_older_sockets() -> None:
    owners = OwnerTable()
    snap = report(HOST, 22, "192.0.2.50", 50000, TCP, pid=600, comm=b"sshd",
                  flags=OWNER_FROM_PROC)  # fmt: skip
    old = report(HOST, 22, "192.0.2.50", 50000, TCP, flags=OWNER_UNKNOWN)
    engine, acc = make([drain(1, [flow(HOST, 22, "192.0.2.50", 50000, TCP)], old)], None)
    engine.use_owners(owners, ProcSnapshot(snap, 1, 1, 1, 0))
    engine.step()
    assert state_of(engine, 22)["pid"] == 600
    assert dump_json(engine, acc)[22]["comm"] == "sshd"


def test_flows_ending_in_their_first_interval_leave_settled() -> None:
    owners = OwnerTable()
    fin = flow(HOST, 41000, "192.0.2.1", 80, TCP, flags=TCP_FIN)
    fwd_fin = flow("10.9.9.9", 41001, "10.8.8.8", 80, TCP, flags=TCP_FIN)
    d = drain(1, [fin, fwd_fin], report(HOST, 41000, "192.0.2.1", 80, TCP, pid=5, comm=b"curl"))
    engine, _acc = make([d], owners)
    ended = engine.step()
    assert len(ended) == 2 and len(engine.table) == 0
    by = {int(k["sport"]): i for i, k in enumerate(ended.keys)}
    assert ended["owner_state"][by[41000]] == STATE_ATTRIBUTED
    assert ended["pid"][by[41000]] == 5
    # no report for the forwarded one: settled as nobody's, not left pending
    assert ended["owner_state"][by[41001]] == STATE_NONE
    assert engine.health().owners_unattributed == 0


def test_live_flows_keep_their_entries_alive_past_the_owner_timeout() -> None:
    clock = Clock()
    owners = OwnerTable(idle_timeout=4.0, clock=clock)
    rep = report(HOST, 40000, "192.0.2.1", 53, pid=1, comm=b"a")
    script: list[Drain | BaseException] = [
        drain(1, [flow(HOST, 40000, "192.0.2.1", 53), flow(HOST, 40002, "192.0.2.1", 53,
                                                          flags=TCP_FIN, proto=TCP)],
              rep, report(HOST, 40002, "192.0.2.1", 53, TCP, pid=2, comm=b"b")),
    ]  # fmt: skip
    script += [drain(i, [flow(HOST, 40000, "192.0.2.1", 53, t=T0 + i * NS)]) for i in range(2, 13)]
    engine, _acc = make(script, owners)
    for _ in range(12):
        clock.now += 1.0
        engine.step()
    # 12 s with a 4 s owner timeout: the live flow's entry is still there, the
    # entry of the flow that ended in its first interval went
    assert len(owners) == 1
    assert owners.counters()["expired"] == 1
    # a new flow of that tuple (the old row gone) still finds its owner
    assert owners.join(batch(flow(HOST, 40000, "192.0.2.1", 53))[0][0]).pid.tolist() == [1]


def test_without_owners_rows_stay_pending_and_dump_prints_nulls() -> None:
    engine, acc = make([drain(1, [flow(HOST, 40000, "192.0.2.1", 53)])], None)
    engine.step()
    assert state_of(engine, 40000)["owner_state"] == OWNER_PENDING
    got = dump_json(engine, acc)
    for k in ("pid", "comm", "uid", "cgroup", "service", "container", "pod"):
        assert k in got[40000] and got[40000][k] is None
    out = io.StringIO()
    emit(acc.per_key(), {2: "eth1"}, [], CollectorHealth(), as_json=False, out=out)
    assert "PROCESS" not in out.getvalue()


def test_hostile_names_reach_dump_cleaned(tmp_path: Path) -> None:
    # a path near PATH_MAX (4096 with tmp_path's prefix): 18 levels of
    # 200-byte names, the last a unit named with escape sequences and a bidi override
    deep = tmp_path.joinpath(*(f"{i:02d}" + "x" * 198 for i in range(18)))
    evil = deep / "\x1b]0;pwn\x07evil\u202e.service"
    evil.mkdir(parents=True)
    assert len(str(evil.relative_to(tmp_path)).encode()) > 3600
    owners = OwnerTable(CgroupPaths(str(tmp_path)))
    d = drain(1, [flow(HOST, 40000, "192.0.2.1", 53)],
              report(HOST, 40000, "192.0.2.1", 53, pid=3, comm=b"\x1b[2Jx\xe2\x80\xaey",
                     cgroup_id=evil.stat().st_ino))  # fmt: skip
    engine, acc = make([d], owners)
    engine.step()
    got = dump_json(engine, acc)[40000]
    for k in ("comm", "cgroup", "service"):
        v = got[k]
        assert isinstance(v, str) and v, k
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in v), k
    assert got["comm"] == "xy"
    assert str(got["service"]).endswith("evil.service") and len(str(got["cgroup"])) < 3600
    out = io.StringIO()
    emit(acc.per_key(), {2: "eth1"}, [], engine.health(), as_json=False, out=out,
         extras=Extras(owners=engine.owners))  # fmt: skip
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert "xy/3" in out.getvalue()


def test_the_kernels_own_tcp_replies_have_no_owner() -> None:
    """A SYN to a closed port: the RST leaves from the namespace's TCP control
    socket (no creator, no peer: tuple from the packet). Not unattributed."""
    owners = OwnerTable()
    rst = report(HOST, 7200, "192.0.2.9", 40000, TCP, flags=OWNER_UNKNOWN | OWNER_FROM_PACKET)
    # an older listener the snapshot did see gets its SYNs' owner as before
    listener = report(HOST, 22, "0.0.0.0", 0, TCP, pid=600, comm=b"sshd", flags=OWNER_FROM_PROC)
    syn = report(HOST, 22, "192.0.2.9", 40001, TCP, flags=OWNER_UNKNOWN | OWNER_FROM_PACKET)
    script: list[Drain | BaseException] = [
        drain(1, [flow("192.0.2.9", 40000, HOST, 7200, TCP, direction=layout.DIR_INGRESS),
                  flow(HOST, 7200, "192.0.2.9", 40000, TCP),
                  flow("192.0.2.9", 40001, HOST, 22, TCP, direction=layout.DIR_INGRESS)],
              rst, syn),
    ]  # fmt: skip
    script += [drain(i, []) for i in range(2, 3 + OWNER_RETRY_INTERVALS)]
    engine, _acc = make(script, None)
    engine.use_owners(owners, ProcSnapshot(listener, 1, 1, 1, 0))
    for _ in range(len(script)):
        engine.step()
    assert state_of(engine, 7200)["owner_state"] == STATE_NONE  # the RST flow
    assert state_of(engine, 40000)["owner_state"] == STATE_NONE  # the SYN to it
    assert (state_of(engine, 40001)["owner_state"], state_of(engine, 40001)["pid"]) == (
        STATE_ATTRIBUTED, 600,
    )  # fmt: skip
    assert engine.health().owners_unattributed == 0
    assert owners.counters()["kernel_replies"] == 1
