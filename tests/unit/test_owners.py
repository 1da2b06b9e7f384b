"""OwnerTable: socket tuples joined to flow keys (both ends), expiry, bounds,
unknown owners filled from the start-up snapshot, unattributed flows."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest

from flowtop.core import owners, procsockets
from flowtop.core.cgroups import CgroupPaths
from flowtop.core.owners import (
    END_DST,
    END_NONE,
    END_SRC,
    STATE_ATTRIBUTED,
    STATE_NONE,
    STATE_UNATTRIBUTED,
    UID_NONE,
    OwnerTable,
)
from flowtop.core.procsockets import ProcSnapshot
from flowtop.kernel import layout
from flowtop.kernel.owner_records import OWNER_FROM_PROC, OWNER_RECORD, OWNER_UNKNOWN

TCP, UDP = 6, 17
ID64 = "c8b38413c88eefe063b8cd3f01c16be5e3bda9693a19a68a88807baca9feb937"


def _a(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def _ver(addr: str) -> int:
    return ipaddress.ip_address(addr).version


def rec(
    local: str,
    lport: int,
    remote: str,
    rport: int,
    proto: int = TCP,
    pid: int = 0,
    uid: int = 0,
    comm: bytes = b"",
    cgroup_id: int = 0,
    flags: int = 0,
) -> np.ndarray:
    r = np.zeros(1, OWNER_RECORD)
    t, o = r["tuple"], r["owner"]
    t["family"], t["proto"], t["lport"], t["rport"] = _ver(local), proto, lport, rport
    t["local"], t["remote"] = _a(local), _a(remote)
    o["tgid"], o["uid"], o["comm"], o["cgroup_id"], o["flags"] = pid, uid, comm, cgroup_id, flags
    return r


def recs(*rs: np.ndarray) -> np.ndarray:
    return np.concatenate(rs)


def key(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    proto: int = TCP,
    direction: int = layout.DIR_EGRESS,
    ifindex: int = 3,
) -> np.ndarray:
    k = np.zeros(1, layout.FLOW_KEY)
    k["ifindex"], k["direction"], k["ip_version"], k["proto"] = ifindex, direction, _ver(src), proto
    k["src"], k["dst"], k["sport"], k["dport"] = _a(src), _a(dst), sport, dport
    return k


def keys(*ks: np.ndarray) -> np.ndarray:
    return np.concatenate(ks)


def test_join_both_orientations_v4_and_v6() -> None:
    t = OwnerTable(idle_timeout=60)
    t.add(
        recs(
            rec("10.0.0.1", 40000, "192.0.2.9", 443, pid=101, uid=1000, comm=b"curl"),
            rec("fd00::1", 50000, "2001:db8::9", 443, pid=202, uid=0, comm=b"wget"),
        ),
        now=0,
    )
    ks = keys(
        key("10.0.0.1", 40000, "192.0.2.9", 443),  # egress: src is the socket
        key("192.0.2.9", 443, "10.0.0.1", 40000, direction=layout.DIR_INGRESS),
        key("fd00::1", 50000, "2001:db8::9", 443),
        key("2001:db8::9", 443, "fd00::1", 50000, direction=layout.DIR_INGRESS),
        key("10.0.0.1", 40001, "192.0.2.9", 443),  # another port: no socket
        key("192.0.2.9", 443, "10.0.0.1", 40000, proto=UDP),  # other proto
        key("10.0.0.2", 1234, "192.0.2.7", 80),  # forwarded
    )
    c = t.join(ks, now=1)
    assert c.pid.tolist() == [101, 101, 202, 202, 0, 0, 0]
    assert c.uid.tolist() == [1000, 1000, 0, 0, UID_NONE, UID_NONE, UID_NONE]
    assert c.end.tolist() == [END_SRC, END_DST, END_SRC, END_DST, END_NONE, END_NONE, END_NONE]
    assert c.state.tolist() == [STATE_ATTRIBUTED] * 4 + [STATE_NONE] * 3
    assert c.texts("comm").tolist() == ["curl", "curl", "wget", "wget", None, None, None]
    assert t.counters()["unattributed"] == 0
    # a v4 tuple never matches the same bytes as v6
    v6 = key("::a00:1", 40000, "::c000:209", 443)
    assert t.join(v6, now=1).state.tolist() == [STATE_NONE]


def test_udp_one_socket_many_remotes() -> None:
    t = OwnerTable()
    # an unconnected UDP socket: the kernel reports one tuple per remote
    t.add(
        recs(
            rec("10.0.0.1", 5353, "10.0.0.53", 53, UDP, pid=7, comm=b"resolver"),
            rec("10.0.0.1", 5353, "10.0.0.54", 53, UDP, pid=7, comm=b"resolver"),
        ),
        now=0,
    )
    c = t.join(
        keys(
            key("10.0.0.1", 5353, "10.0.0.53", 53, UDP),
            key("10.0.0.54", 53, "10.0.0.1", 5353, UDP, direction=layout.DIR_INGRESS),
            key("10.0.0.1", 5353, "10.0.0.55", 53, UDP),  # a remote not reported
        ),
        now=1,
    )
    assert c.pid.tolist() == [7, 7, 0]
    assert c.state.tolist() == [STATE_ATTRIBUTED, STATE_ATTRIBUTED, STATE_NONE]


def test_both_ends_local_the_sender_wins() -> None:
    t = OwnerTable()
    t.add(
        recs(
            rec("127.0.0.1", 40000, "127.0.0.1", 8080, pid=1, comm=b"client"),
            rec("127.0.0.1", 8080, "127.0.0.1", 40000, pid=2, comm=b"server"),
        ),
        now=0,
    )
    c = t.join(
        keys(
            key("127.0.0.1", 40000, "127.0.0.1", 8080), key("127.0.0.1", 8080, "127.0.0.1", 40000)
        ),
        now=1,
    )
    assert c.pid.tolist() == [1, 2] and c.end.tolist() == [END_SRC, END_SRC]


def test_newest_record_wins_unknown_never_replaces_known() -> None:
    t = OwnerTable()
    t.add(rec("10.0.0.1", 1000, "10.0.0.2", 80, pid=5), now=0)
    t.add(rec("10.0.0.1", 1000, "10.0.0.2", 80, pid=6), now=1)  # port reused by a new socket
    assert t.join(key("10.0.0.1", 1000, "10.0.0.2", 80), now=2).pid.tolist() == [6]
    t.add(rec("10.0.0.1", 1000, "10.0.0.2", 80, flags=OWNER_UNKNOWN), now=3)
    c = t.join(key("10.0.0.1", 1000, "10.0.0.2", 80), now=4)
    assert c.pid.tolist() == [6] and c.state.tolist() == [STATE_ATTRIBUTED]
    # several records for one tuple in one batch: the last counts
    t.add(
        recs(
            rec("10.0.0.1", 2000, "10.0.0.2", 80, pid=8),
            rec("10.0.0.1", 2000, "10.0.0.2", 80, pid=9),
        ),
        now=5,
    )
    assert t.join(key("10.0.0.1", 2000, "10.0.0.2", 80), now=6).pid.tolist() == [9]
    assert t.counters()["entries"] == 2


def test_tuple_bytes_outside_the_address_are_ignored() -> None:
    t = OwnerTable()
    r = rec("10.0.0.1", 1000, "10.0.0.2", 80, pid=5)
    r["tuple"]["pad"] = 0xBEEF
    raw = bytearray(_a("10.0.0.1"))
    raw[4:] = b"\xaa" * 12  # junk after an IPv4 address
    r["tuple"]["local"] = bytes(raw)
    t.add(r, now=0)
    assert t.join(key("10.0.0.1", 1000, "10.0.0.2", 80), now=1).pid.tolist() == [5]


def test_expiry_keeps_what_flows_still_match() -> None:
    t = OwnerTable(idle_timeout=10)
    t.add(
        recs(rec("10.0.0.1", 1, "10.0.0.9", 80, pid=1), rec("10.0.0.1", 2, "10.0.0.9", 80, pid=2)),
        now=0,
    )
    a = key("10.0.0.1", 1, "10.0.0.9", 80)
    b = key("10.0.0.1", 2, "10.0.0.9", 80)
    assert t.join(a, now=5).pid.tolist() == [1]  # a used at 5, b last at 0
    assert t.join(a, now=10.5).pid.tolist() == [1]  # b idle 10.5 s: dropped after this join
    assert t.counters()["entries"] == 1 and t.counters()["expired"] == 1
    assert t.join(b, now=11).pid.tolist() == [0]
    # a stays while flows keep matching it, then goes once they stop
    assert t.join(a, now=20).pid.tolist() == [1]
    assert t.expire(now=29) == 0
    assert t.expire(now=30.5) == 1
    assert t.join(a, now=31).pid.tolist() == [0] and len(t) == 0


def test_bound_drops_least_recently_used() -> None:
    t = OwnerTable(max_entries=3)
    for i in range(3):
        t.add(rec("10.0.0.1", 100 + i, "10.0.0.9", 80, pid=100 + i), now=i)
    t.join(key("10.0.0.1", 100, "10.0.0.9", 80), now=5)  # 100 used: 101 is now the oldest
    t.add(rec("10.0.0.1", 103, "10.0.0.9", 80, pid=103), now=6)
    assert t.counters()["dropped_full"] == 1 and t.counters()["entries"] == 3
    ks = keys(*(key("10.0.0.1", 100 + i, "10.0.0.9", 80) for i in range(4)))
    assert t.join(ks, now=7).pid.tolist() == [100, 0, 102, 103]
    # a batch larger than the table: its last max_entries records are kept
    t.add(recs(*(rec("10.0.0.2", 200 + i, "10.0.0.9", 80, pid=200 + i) for i in range(5))), now=8)
    assert t.counters()["dropped_full"] == 1 + 3 + 2  # 3 old entries, 2 of the batch
    ks = keys(*(key("10.0.0.2", 200 + i, "10.0.0.9", 80) for i in range(5)))
    assert t.join(ks, now=9).pid.tolist() == [0, 0, 202, 203, 204]


def test_many_entries_index_grows_and_stays_exact() -> None:
    n = 20000
    t = OwnerTable(max_entries=n)
    rng = np.random.default_rng(3)
    ports = rng.permutation(60000)[:n] + 1024
    r = np.zeros(n, OWNER_RECORD)
    r["tuple"]["family"], r["tuple"]["proto"] = 4, TCP
    r["tuple"]["local"] = _a("10.9.0.1")
    r["tuple"]["remote"] = _a("10.9.0.2")
    r["tuple"]["lport"], r["tuple"]["rport"] = ports, 443
    r["owner"]["tgid"] = np.arange(n) + 1
    # in batches, as drains would bring them
    for i in range(0, n, 3000):
        t.add(r[i : i + 3000], now=1)
    k = np.zeros(2 * n, layout.FLOW_KEY)
    k["ip_version"], k["proto"] = 4, TCP
    k["src"][:n], k["dst"][:n] = _a("10.9.0.2"), _a("10.9.0.1")
    k["sport"][:n], k["dport"][:n] = 443, ports
    k["src"][n:], k["dst"][n:] = _a("10.9.0.1"), _a("10.9.0.3")  # other remote
    k["sport"][n:], k["dport"][n:] = ports, 443
    c = t.join(k, now=2)
    assert np.array_equal(c.pid[:n], np.arange(n) + 1)
    assert (c.end[:n] == END_DST).all()
    assert (c.pid[n:] == 0).all() and (c.state[n:] == STATE_NONE).all()
    # delete half by expiry, the rest still exact (tombstones probed past)
    t.join(k[: n // 2], now=50)
    assert t.expire(now=50 + t.idle_timeout - 30) == n - n // 2
    c = t.join(k[:n], now=60)
    assert np.array_equal(c.pid[: n // 2], np.arange(n // 2) + 1)
    assert (c.pid[n // 2 :] == 0).all()


def _snapshot(*rs: np.ndarray, errors: int = 0) -> ProcSnapshot:
    r = recs(*rs)
    r["owner"]["flags"] |= OWNER_FROM_PROC
    return ProcSnapshot(r, processes=1, namespaces=1, sockets=len(r), errors=errors)


def test_unknown_owner_unattributed_then_filled_from_snapshot() -> None:
    t = OwnerTable()
    old = ("10.0.0.1", 22, "10.0.0.7", 50000)
    other = ("10.0.0.1", 23, "10.0.0.7", 50001)
    t.add(recs(rec(*old, flags=OWNER_UNKNOWN), rec(*other, flags=OWNER_UNKNOWN)), now=0)
    ks = keys(
        key("10.0.0.7", 50000, "10.0.0.1", 22, direction=layout.DIR_INGRESS),
        key("10.0.0.1", 23, "10.0.0.7", 50001),
        key("10.0.0.8", 1, "10.0.0.9", 2),  # forwarded: no owner, not unattributed
    )
    c = t.join(ks, now=1)
    assert c.state.tolist() == [STATE_UNATTRIBUTED, STATE_UNATTRIBUTED, STATE_NONE]
    assert c.pid.tolist() == [0, 0, 0] and c.uid.tolist() == [UID_NONE] * 3
    assert t.counters()["unattributed"] == 2 and t.counters()["unknown_entries"] == 2
    # the snapshot knows one of them
    t.add_snapshot(_snapshot(rec(*old, pid=600, uid=0, comm=b"sshd"), errors=3), now=2)
    c = t.join(ks, now=3)
    assert c.state.tolist() == [STATE_ATTRIBUTED, STATE_UNATTRIBUTED, STATE_NONE]
    assert c.pid.tolist() == [600, 0, 0] and c.texts("comm").tolist() == ["sshd", None, None]
    cnt = t.counters()
    assert cnt["unattributed"] == 1 and cnt["unknown_entries"] == 1
    assert cnt["snapshot_errors"] == 3


def test_snapshot_first_then_unknown_kernel_record() -> None:
    t = OwnerTable()
    t.add_snapshot(_snapshot(rec("10.0.0.1", 22, "10.0.0.7", 50000, pid=600)), now=0)
    t.add(rec("10.0.0.1", 22, "10.0.0.7", 50000, flags=OWNER_UNKNOWN), now=1)
    c = t.join(key("10.0.0.1", 22, "10.0.0.7", 50000), now=2)
    assert c.pid.tolist() == [600] and c.state.tolist() == [STATE_ATTRIBUTED]


def test_unknown_filled_from_listener_and_unconnected_udp() -> None:
    t = OwnerTable()
    t.add_snapshot(
        _snapshot(
            rec("0.0.0.0", 53, "0.0.0.0", 0, UDP, pid=53, comm=b"dnsd"),  # any address
            rec("10.0.0.1", 8080, "0.0.0.0", 0, TCP, pid=80, comm=b"web"),  # one address
            rec("::", 443, "::", 0, TCP, pid=443, comm=b"dual"),  # dual-stack [::]
        ),
        now=0,
    )
    assert t.counters()["wildcards"] == 3 and t.counters()["entries"] == 0
    # pre-existing sockets' tuples, reported by the kernel with no owner
    t.add(
        recs(
            rec("10.0.0.1", 53, "198.51.100.1", 3333, UDP, flags=OWNER_UNKNOWN),
            rec("10.0.0.1", 8080, "198.51.100.2", 4444, TCP, flags=OWNER_UNKNOWN),
            rec("10.0.0.2", 8080, "198.51.100.2", 4444, TCP, flags=OWNER_UNKNOWN),  # not bound
            rec("10.0.0.1", 443, "198.51.100.3", 5555, TCP, flags=OWNER_UNKNOWN),
            rec("fd00::1", 443, "2001:db8::3", 5555, TCP, flags=OWNER_UNKNOWN),
        ),
        now=1,
    )
    ks = keys(
        key("198.51.100.1", 3333, "10.0.0.1", 53, UDP, direction=layout.DIR_INGRESS),
        key("10.0.0.1", 8080, "198.51.100.2", 4444),
        key("10.0.0.2", 8080, "198.51.100.2", 4444),
        key("198.51.100.3", 5555, "10.0.0.1", 443, direction=layout.DIR_INGRESS),
        key("fd00::1", 443, "2001:db8::3", 5555),
        # forwarded DNS to another host: the wildcard never attributes it
        key("198.51.100.1", 3333, "203.0.113.5", 53, UDP),
    )
    c = t.join(ks, now=2)
    assert c.pid.tolist() == [53, 80, 0, 443, 443, 0]
    assert c.state.tolist() == [
        STATE_ATTRIBUTED,
        STATE_ATTRIBUTED,
        STATE_UNATTRIBUTED,
        STATE_ATTRIBUTED,
        STATE_ATTRIBUTED,
        STATE_NONE,
    ]
    assert t.counters()["filled"] == 4 and t.counters()["unattributed"] == 1


def test_names_services_containers_and_hostile_comm(tmp_path: Path) -> None:
    svc = tmp_path / "system.slice" / "nginx.service"
    ctr = tmp_path / "system.slice" / f"docker-{ID64}.scope"
    pod = (
        tmp_path
        / "kubepods.slice"
        / "kubepods-besteffort.slice"
        / "kubepods-besteffort-pod5759a1ae_36ca_48a8_b20a_b0b5c8a90fb8.slice"
        / f"cri-containerd-{ID64[::-1]}.scope"
    )
    for p in (svc, ctr, pod):
        p.mkdir(parents=True)
    t = OwnerTable(cgroups=CgroupPaths(str(tmp_path)))
    t.add(
        recs(
            rec("10.0.0.1", 80, "10.0.0.9", 1, pid=1, cgroup_id=svc.stat().st_ino, comm=b"nginx"),
            rec("10.0.0.1", 81, "10.0.0.9", 1, pid=2, cgroup_id=ctr.stat().st_ino, comm=b"app"),
            rec(
                "10.0.0.1",
                82,
                "10.0.0.9",
                1,
                pid=3,
                cgroup_id=pod.stat().st_ino,
                comm=b"\x1b]0;pwn\x07e\xe2\x80\xaevil\x1b[2J",
            ),
            rec("10.0.0.1", 83, "10.0.0.9", 1, pid=4, cgroup_id=987654321, comm=b"gone"),
        ),
        now=0,
    )
    ks = keys(*(key("10.0.0.1", 80 + i, "10.0.0.9", 1) for i in range(4)))
    c = t.join(ks, now=1)
    assert c.texts("comm").tolist() == ["nginx", "app", "evil", "gone"]
    assert c.texts("service").tolist() == ["nginx.service", None, None, None]
    assert c.texts("container").tolist() == [None, ID64, ID64[::-1], None]
    assert c.texts("pod").tolist() == [None, None, "5759a1ae-36ca-48a8-b20a-b0b5c8a90fb8", None]
    assert c.cgroup_id.tolist() == [
        svc.stat().st_ino,
        ctr.stat().st_ino,
        pod.stat().st_ino,
        987654321,
    ]
    # flows share name ids, so a flow table holds integers
    assert c.container.dtype == np.uint32 and c.comm[0] != c.comm[1]
    assert t.counters()["cgroup_misses"] >= 1  # the unknown cgroup id


def test_name_table_full_is_counted() -> None:
    t = OwnerTable(max_names=4)  # ids 0 and 1 are reserved: room for 2 names
    t.add(
        recs(
            *(rec("10.0.0.1", 100 + i, "10.0.0.9", 1, pid=i + 1, comm=b"c%d" % i) for i in range(4))
        ),
        now=0,
    )
    c = t.join(keys(*(key("10.0.0.1", 100 + i, "10.0.0.9", 1) for i in range(4))), now=1)
    # interned in sorted order: c0 and c1 get ids, c2 and c3 the overflow id
    assert c.texts("comm").tolist() == ["c0", "c1", "(too many names)", "(too many names)"]
    assert t.counters()["names_full"] == 2
    assert c.pid.tolist() == [1, 2, 3, 4]


def test_empty_inputs() -> None:
    t = OwnerTable()
    t.add(np.zeros(0, OWNER_RECORD))
    c = t.join(np.zeros(0, layout.FLOW_KEY), now=0)
    assert len(c.pid) == 0 and len(c.state) == 0
    c = t.join(key("10.0.0.1", 1, "10.0.0.2", 2), now=0)
    assert c.state.tolist() == [STATE_NONE] and c.uid.tolist() == [UID_NONE]


def test_hash_collisions_still_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    # every tuple hashes alike: one probe chain, told apart by whole-tuple compares
    monkeypatch.setattr(owners, "hash_columns", lambda cols: np.zeros(len(cols[0]), np.uint64))
    t = OwnerTable()
    t.add(recs(*(rec("10.0.0.1", 100 + i, "10.0.0.9", 1, pid=i + 1) for i in range(40))), now=0)
    ks = keys(*(key("10.0.0.1", 100 + i, "10.0.0.9", 1) for i in range(45)))
    assert t.join(ks, now=1).pid.tolist() == [*range(1, 41), 0, 0, 0, 0, 0]
    t.expire(now=t.idle_timeout + 0.5)  # nothing: all matched at 1
    t.join(ks[:20], now=t.idle_timeout + 0.6)
    assert t.expire(now=t.idle_timeout + 1.5) == 20  # the last 20 went, tombstones left
    assert t.join(ks, now=t.idle_timeout + 2).pid.tolist() == [*range(1, 21)] + [0] * 25


# /proc/net lines as the kernel prints them (tcp4_seq_show / tcp6_seq_show /
# udp4_format_sock: each 32-bit address word as %08X of its host-order load).
NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0
   1: 0100007F:1388 0200007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0
   2: 0100007F:1388 0200007F:C351 06 00000000:00000000 03:00000F9E 00000000     0        0 0 3 0
   3: garbage line
"""
NET_TCP6 = (
    "  sl  local_address                         remote_address                        st\n"
    "   0: 0000000000000000FFFF00000100000A:0050 0000000000000000FFFF00000200000A:D431 01 "
    "00000000:00000000 00:00000000 00000000    33        0 5151 1 0\n"
    "   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 "
    "00000000:00000000 00:00000000 00000000     0        0 5152 2 0\n"
)


def test_parse_proc_net_lines() -> None:
    got = procsockets.parse_net(NET_TCP, TCP, ipv6=False)
    assert [(s.local, s.lport, s.remote, s.rport, s.uid, s.inode) for s in got] == [
        (_a("127.0.0.1"), 5000, bytes(16), 0, 0, 4242),
        (_a("127.0.0.1"), 5000, _a("127.0.0.2"), 50000, 1000, 4243),
    ]  # TIME_WAIT (inode 0) and the unparsable line are left out
    v6 = procsockets.parse_net(NET_TCP6, TCP, ipv6=True)
    # an AF_INET6 socket speaking IPv4 (v4-mapped): an IPv4 tuple, as the kernel reports it
    assert (v6[0].family, v6[0].local, v6[0].lport, v6[0].remote, v6[0].rport) == (
        4,
        _a("10.0.0.1"),
        80,
        _a("10.0.0.2"),
        54321,
    )
    assert (v6[1].family, v6[1].local, v6[1].lport, v6[1].remote) == (6, _a("::1"), 53, bytes(16))


def test_cgroup_line_of_proc_pid_cgroup() -> None:
    hybrid = "12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/x.service\n0::/a/b\n"
    assert procsockets.cgroup_path(hybrid) == "/a/b"
    assert procsockets.cgroup_path("0::/\n") == "/"
    # a cgroup name with a newline: the 0:: line runs to the end
    assert procsockets.cgroup_path("0::/evil\nname.service\n") == "/evil\nname.service"
    assert procsockets.cgroup_path("1:cpu:/x\n") is None  # cgroup v1 only


def test_cmdline_joins_arguments_and_line_breaks_with_spaces(tmp_path: Path) -> None:
    from flowtop.core.procsockets import cmdline

    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "cmdline").write_bytes(b"python3\0-c\0import a\nimport b\0\x1b]2;x\x07\0")
    got = cmdline(123, proc=str(tmp_path))
    assert got is not None and got.startswith("python3 -c import a import b")
    assert "\x1b" not in got and "\x07" not in got
    assert cmdline(124, proc=str(tmp_path)) is None
