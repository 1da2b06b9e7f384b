"""Socket owners (bpf/owner.c, kernel/owners.py) against what the processes really are.

Topology: the `pair` fixture (a.va 10.200.1.1 <-> b.vb 10.200.1.2). Each
process under test is a child that enters its namespace and a cgroup this
file creates under the cgroup v2 root, optionally drops to another uid, and
names itself (PR_SET_NAME) before it makes a socket. The ground truth for a
socket's owner is the child's pid (Popen), its /proc comm, the uid it runs
as, the inode of the cgroup directory (a cgroup v2 id is its kernfs inode)
and `ss -tunap` in the child's namespace taken while its sockets are open.
The collector sees every socket of the host (other tests' too): every
check looks at the tuples of the test's own addresses and ports.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowtop import resources
from flowtop.kernel import counters
from flowtop.kernel.bpfsys import prog_name_by_id
from flowtop.kernel.owner_records import (
    OWNER,
    OWNER_FROM_PACKET,
    OWNER_INGRESS,
    OWNER_RECORD,
    OWNER_TUPLE,
    OWNER_TUPLE_WORDS,
    OWNER_UNKNOWN,
    decode,
)
from flowtop.kernel.owners import ATTACH_TYPES, PROG_NAME_RE, OwnerCollector
from flowtop.kernel.sockops import netns_cookie
from flowtop.kernel.sockops_attach import query_progs

from . import netns
from .cgroups import (
    CHURN,
    SERVER,
    Child,
    Endpoint,
    cgroup_root,
    cgroups,
    children,
    docker_name,
    service_name,
    spawn,
    ss_owner,
    ss_sockets,
)

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
A6, B6 = "fd00:200:1::1", "fd00:200:1::2"
TCP, UDP = 6, 17
NOBODY = 65534


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


# -- child processes: roles of this file (the rest is in cgroups.py) ---------------

CLIENT = textwrap.dedent(
    """
    fam = socket.AF_INET6 if ":" in args["server"] else socket.AF_INET
    srv = args["server"]
    conns = []
    for _ in range(args["tcp"]):
        c = socket.create_connection((srv, args["tcp_port"]))
        c.sendall(b"x" * 100)
        conns.append(c)
    free = socket.socket(fam, socket.SOCK_DGRAM)  # unconnected: sendto
    for _ in range(3):
        free.sendto(b"y" * 50, (srv, args["udp_port"]))
    bound = socket.socket(fam, socket.SOCK_DGRAM)  # connected
    bound.connect((srv, args["udp_port"]))
    bound.send(b"z" * 20)
    ready(tcp=[c.getsockname()[1] for c in conns], udp_free=free.getsockname()[1],
          udp_connected=bound.getsockname()[1])
    """
)


def _addr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw[:16]))


def by_endpoint(records: np.ndarray) -> dict[Endpoint, list[np.void]]:
    out: dict[Endpoint, list[np.void]] = {}
    for r in records:
        t = r["tuple"]
        fam = int(t["family"])
        ep = Endpoint(
            int(t["proto"]), _addr(bytes(t["local"]), fam), int(t["lport"]),
            _addr(bytes(t["remote"]), fam), int(t["rport"]),
        )  # fmt: skip
        out.setdefault(ep, []).append(r)
    return out


def drain_until(
    c: OwnerCollector, want: set[Endpoint], cookies: set[int], timeout: float = 5.0
) -> dict[Endpoint, list[np.void]]:
    """Drains until every endpoint in want came up (or the time is out);
    what was drained meanwhile from the namespaces with these cookies (and
    of unknown owners, cookie 0), by endpoint. (Other tests' namespaces use
    the same addresses.)"""
    got: dict[Endpoint, list[np.void]] = {}
    keep = np.array(sorted(cookies | {0}), dtype=np.uint64)
    limit = time.monotonic() + timeout
    while True:
        recs = c.drain()
        recs = recs[np.isin(recs["owner"]["netns_cookie"], keep)]
        for ep, rs in by_endpoint(recs).items():
            got.setdefault(ep, []).extend(rs)
        if want <= set(got) or time.monotonic() > limit:
            return got
        time.sleep(0.05)


def owner_of(recs: list[np.void]) -> dict[str, Any]:
    """The one owner an endpoint has in every record drained for it."""
    owners = {
        (int(r["owner"]["tgid"]), int(r["owner"]["uid"]), int(r["owner"]["cgroup_id"]),
         bytes(r["owner"]["comm"]).decode(), int(r["owner"]["netns_cookie"]),
         int(r["owner"]["flags"]) & OWNER_UNKNOWN)
        for r in recs
    }  # fmt: skip
    assert len(owners) == 1, owners
    tgid, uid, cg, comm, cookie, unknown = owners.pop()
    flags = {int(r["owner"]["flags"]) for r in recs}
    return dict(tgid=tgid, uid=uid, cgroup_id=cg, comm=comm, netns_cookie=cookie,
                unknown=unknown, flags=flags)  # fmt: skip


def ns_cookie(ns: netns.Netns) -> int:
    with netns.entered(ns.name):
        return netns_cookie()


@pytest.fixture
def collector() -> Iterator[OwnerCollector]:
    c = OwnerCollector()
    c.start()
    try:
        yield c
    finally:
        c.close()


def assert_counters_clean(c: OwnerCollector) -> None:
    got = c.counters()
    assert {k: got[k] for k in counters.OWNER_LOSSES} == dict.fromkeys(counters.OWNER_LOSSES, 0)


# -- layout -------------------------------------------------------------------------


def _ctypes_layout(t: Any) -> list[tuple[str, int, int]]:
    return [(name, getattr(t, name).offset, getattr(t, name).size) for name, *_ in t._fields_]


def _numpy_layout(d: np.dtype) -> list[tuple[str, int, int]]:
    assert d.fields is not None
    return sorted(
        ((name, off, sub.itemsize) for name, (sub, off, *_) in d.fields.items()),
        key=lambda x: x[1],
    )


def test_layout_matches_what_bcc_compiled() -> None:
    import bcc

    bpf_dir = resources.bpf_dir()
    b = bcc.BPF(src_file=str(bpf_dir / "owner.c").encode(), cflags=[f"-I{bpf_dir}"])
    try:
        t = b[b"endpoints"]
        for dtype, ctype in ((OWNER_TUPLE, t.Key), (OWNER, t.Leaf)):
            assert ct.sizeof(ctype) == dtype.itemsize
            assert _numpy_layout(dtype) == _ctypes_layout(ctype)
    finally:
        b.cleanup()


def test_counter_records_match_the_c_enum() -> None:
    src = (resources.bpf_dir() / "owner.h").read_text()
    body = src.split("enum ft_own_counter {", 1)[1].split("};", 1)[0]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.DOTALL)
    values = {n: int(v) for n, v in re.findall(r"^\s*(FT_OWN_\w+)\s*=\s*(\d+)\s*,", body, re.M)}
    size = values.pop("FT_OWN_CTR_MAX")
    ours = {c.c_name: c.index for c in counters.COUNTERS if c.program == counters.OWNER}
    assert ours == values
    assert sorted(values.values()) == list(range(size)) == list(range(len(counters.OWNER_COUNTERS)))
    assert set(counters.OWNER_LOSSES) <= set(counters.OWNER_COUNTERS)


def test_decode_crafted_buffer() -> None:
    keys = np.zeros(2, dtype=OWNER_TUPLE)
    vals = np.zeros(2, dtype=OWNER)
    keys["family"] = [4, 6]
    keys["proto"] = [TCP, UDP]
    keys["lport"] = [40000, 53]
    keys["rport"] = [443, 5353]
    keys[0]["local"] = ipaddress.ip_address(A4).packed + bytes(12)
    keys[1]["remote"] = ipaddress.ip_address(B6).packed
    vals["tgid"] = [1234, 0]
    vals["comm"] = [b"curl", b""]
    vals["cgroup_id"] = [77, 0]
    vals["flags"] = [0, OWNER_UNKNOWN | OWNER_FROM_PACKET]
    # as the batch reader hands them over: raw bytes of the kernel's structs
    raw_k = np.frombuffer(keys.tobytes(), dtype=OWNER_TUPLE)
    raw_v = np.frombuffer(vals.tobytes(), dtype=OWNER)
    out = decode(raw_k, raw_v)
    assert out.dtype == OWNER_RECORD
    assert out["tuple"].tobytes() == keys.tobytes() and out["owner"].tobytes() == vals.tobytes()
    words = OWNER_TUPLE_WORDS.view(out["tuple"])
    assert OWNER_TUPLE_WORDS.field(words, "lport").tolist() == [40000, 53]
    assert OWNER_TUPLE_WORDS.span(words, "local")[0].tobytes()[:4] == bytes([10, 200, 1, 1])
    assert by_endpoint(out).keys() == {
        Endpoint(TCP, A4, 40000, "0.0.0.0", 443),
        Endpoint(UDP, "::", 53, B6, 5353),
    }
    with pytest.raises(ValueError):
        decode(raw_k, raw_v[:1])


# -- attribution --------------------------------------------------------------------


def test_two_processes_in_two_cgroups(pair: netns.Pair, collector: OwnerCollector) -> None:
    svc, dock, srv_cg = service_name(), docker_name(), service_name()
    with cgroups(svc, dock, srv_cg) as (cg_svc, cg_dock, cg_srv), children() as kids:
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
        srv_tcp, srv_udp = server.info["tcp"], server.info["udp"]
        clients = [
            spawn(kids, pair.a, cg_svc, CLIENT, "ftcli-svc", server=B4, tcp=3,
                  tcp_port=srv_tcp, udp_port=srv_udp),
            spawn(kids, pair.a, cg_dock, CLIENT, "ftcli-dock", uid=NOBODY, server=B4, tcp=3,
                  tcp_port=srv_tcp, udp_port=srv_udp),
        ]  # fmt: skip
        ss_a, ss_b = ss_sockets(pair.a), ss_sockets(pair.b)
        truth: dict[Endpoint, tuple[Child, int]] = {}  # endpoint -> (owner, uid)
        for cl, uid in zip(clients, (0, NOBODY), strict=True):
            ports = [(TCP, p, srv_tcp) for p in cl.info["tcp"]]
            ports += [(UDP, cl.info["udp_free"], srv_udp), (UDP, cl.info["udp_connected"], srv_udp)]
            for proto, lport, rport in ports:
                ep = Endpoint(proto, A4, lport, B4, rport)
                # ss agrees with Popen (an unconnected UDP socket has no peer there)
                assert ss_owner(ss_a, ep) == (cl.comm(), cl.pid), ep
                truth[ep] = (cl, uid)
                back = Endpoint(proto, B4, rport, A4, lport)  # the server's socket
                if proto == TCP:
                    assert ss_b[back] == (server.comm(), server.pid), back
                truth[back] = (server, 0)
        cookies = {pair.a.name: ns_cookie(pair.a), pair.b.name: ns_cookie(pair.b)}
        got = drain_until(collector, set(truth), set(cookies.values()))
        for ep, (owner, uid) in truth.items():
            assert ep in got, f"{ep} not reported"
            o = owner_of(got[ep])
            assert o["tgid"] == owner.pid, ep
            assert o["comm"] == owner.comm(), ep
            assert o["uid"] == uid, ep
            assert o["cgroup_id"] == os.stat(owner.cgroup).st_ino, ep
            ns = pair.a if owner is not server else pair.b
            assert o["netns_cookie"] == cookies[ns.name], ep
            assert o["unknown"] == 0
        # connected sockets' tuples come from the socket, unconnected ones'
        # from the packet (the server's UDP socket, on ingress)
        free = {Endpoint(UDP, A4, c.info["udp_free"], B4, srv_udp) for c in clients}
        for ep in free:
            assert all(int(r["owner"]["flags"]) & OWNER_FROM_PACKET for r in got[ep])
        for cl in clients:
            ep = Endpoint(UDP, A4, cl.info["udp_connected"], B4, srv_udp)
            assert not any(int(r["owner"]["flags"]) & OWNER_FROM_PACKET for r in got[ep])
        for ep, (owner, _uid) in truth.items():
            if owner is server and ep.proto == UDP:
                assert all(
                    int(r["owner"]["flags"]) & (OWNER_FROM_PACKET | OWNER_INGRESS)
                    == OWNER_FROM_PACKET | OWNER_INGRESS
                    for r in got[ep]
                )
        # two distinct cgroups, and neither is the test's own
        assert len({os.stat(c.cgroup).st_ino for c in clients}) == 2
        for c in kids:
            c.finish()
    assert_counters_clean(collector)


def test_200_short_connections(pair: netns.Pair, collector: OwnerCollector) -> None:
    with cgroups(service_name(), service_name()) as (cg, cg_srv), children() as kids:
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
        churn = spawn(kids, pair.a, cg, CHURN, "ftchurn", server=B4, n=200,
                      tcp_port=server.info["tcp"])  # fmt: skip
        ports = churn.info["ports"]
        assert churn.info["longest"] < 0.05
        assert len(set(ports)) == 200
        want = {Endpoint(TCP, A4, p, B4, server.info["tcp"]) for p in ports}
        got = drain_until(collector, want, {ns_cookie(pair.a)})
        client_side = {ep for ep in got if ep.local == A4 and ep.remote == B4 and ep.proto == TCP}
        assert client_side == want
        for ep in want:
            o = owner_of(got[ep])
            assert (o["tgid"], o["comm"], o["cgroup_id"]) == (
                churn.pid, "ftchurn", os.stat(cg).st_ino,
            )  # fmt: skip
            assert o["unknown"] == 0
        for c in kids:
            c.finish()
    assert_counters_clean(collector)


def test_other_namespace_ipv6(pair: netns.Pair, collector: OwnerCollector) -> None:
    """A container-like process: its own namespace (a, over the veth to b)
    and cgroup, IPv6: its tuples carry its cgroup, its namespace's cookie
    and addresses."""
    with cgroups(docker_name(), service_name()) as (cg, cg_srv), children() as kids:
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv6", addr=B6)
        cl = spawn(kids, pair.a, cg, CLIENT, "ftcontainer", server=B6, tcp=2,
                   tcp_port=server.info["tcp"], udp_port=server.info["udp"])  # fmt: skip
        ss_a = ss_sockets(pair.a)
        want = {Endpoint(TCP, A6, p, B6, server.info["tcp"]) for p in cl.info["tcp"]}
        want |= {Endpoint(UDP, A6, cl.info[k], B6, server.info["udp"])
                 for k in ("udp_free", "udp_connected")}  # fmt: skip
        for ep in want:
            assert ss_owner(ss_a, ep) == (cl.comm(), cl.pid), ep
        cookie = ns_cookie(pair.a)
        got = drain_until(collector, want, {cookie})
        assert cookie != netns_cookie()  # not the test's own namespace
        for ep in want:
            assert ep in got, f"{ep} not reported"
            o = owner_of(got[ep])
            assert (o["tgid"], o["comm"], o["cgroup_id"], o["netns_cookie"]) == (
                cl.pid, "ftcontainer", os.stat(cg).st_ino, cookie,
            )  # fmt: skip
            assert all(int(r["tuple"]["family"]) == 6 for r in got[ep])
        for c in kids:
            c.finish()
    assert_counters_clean(collector)


def test_socket_older_than_the_collector(pair: netns.Pair) -> None:
    """Sockets made before start(): their tuples come with the unknown flag."""
    with cgroups(service_name()) as (cg_srv,), children() as kids:
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
        with netns.entered(pair.a.name):
            udp = __import__("socket").socket(2, 2)  # AF_INET, SOCK_DGRAM
            tcp = __import__("socket").create_connection((B4, server.info["tcp"]))
        try:
            udp.bind((A4, 0))
            c = OwnerCollector()
            c.start()
            try:
                udp.sendto(b"late", (B4, server.info["udp"]))
                tcp.sendall(b"late")
                want = {
                    Endpoint(UDP, A4, udp.getsockname()[1], B4, server.info["udp"]),
                    Endpoint(TCP, A4, tcp.getsockname()[1], B4, server.info["tcp"]),
                }
                got = drain_until(c, want, {ns_cookie(pair.a)})
                for ep in want:
                    assert ep in got, f"{ep} not reported"
                    o = owner_of(got[ep])
                    assert o["unknown"] == OWNER_UNKNOWN
                    assert (o["tgid"], o["uid"], o["cgroup_id"], o["comm"]) == (0, 0, 0, "")
                    assert o["netns_cookie"] == (ns_cookie(pair.a) if c.skb_netns else 0)
                assert c.counters()["unknown_sockets"] >= 2
                assert_counters_clean(c)
            finally:
                c.close()
        finally:
            udp.close()
            tcp.close()
        for k in kids:
            k.finish()


# -- attachments --------------------------------------------------------------------


def owner_programs(pid: int, cgroup: Path) -> dict[int, list[str]]:
    """attach type -> names of pid's owner programs attached to cgroup itself."""
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out: dict[int, list[str]] = {}
        for at in ATTACH_TYPES:
            names = [prog_name_by_id(i) or "" for i in query_progs(fd, at)]
            out[at] = [n for n in names if (m := PROG_NAME_RE.match(n)) and int(m[1]) == pid]
        return out
    finally:
        os.close(fd)


NONE_ATTACHED: dict[int, list[str]] = {at: [] for at in ATTACH_TYPES}

HOLDER = textwrap.dedent(
    """
    import sys, time
    from flowtop.kernel.owners import OwnerCollector
    c = OwnerCollector(cgroup=sys.argv[1])
    c.start()
    print("started", flush=True)
    time.sleep(600)
    """
)


def bpftool_cgroup(cg: Path) -> str:
    """`bpftool cgroup show CG`: a second opinion on what is attached."""
    shown = subprocess.run(["bpftool", "cgroup", "show", str(cg)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_close_leaves_nothing_attached(collector: OwnerCollector) -> None:
    root = cgroup_root()
    mine = owner_programs(os.getpid(), root)
    assert sorted(n for v in mine.values() for n in v) == sorted(collector.names.values())
    assert set(collector.prog_ids) == set(collector.names.values())
    collector.close()
    assert owner_programs(os.getpid(), root) == NONE_ATTACHED
    collector.close()  # twice is fine


def test_kill9_leaves_attachments_the_next_start_removes() -> None:
    """In a cgroup of its own, so that no other run's start removes the
    dead holder's programs before this one does."""
    with cgroups(f"ftt-owners-{os.getpid()}-{secrets.token_hex(3)}") as (cg,):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cg)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "started"
            assert owner_programs(proc.pid, cg) == {
                0: [f"ftowni_{proc.pid}"], 1: [f"ftowne_{proc.pid}"], 2: [f"ftownc_{proc.pid}"],
            }  # fmt: skip
        finally:
            proc.kill()
            proc.wait(timeout=10)
        # cgroup attachments outlive the process
        assert sum(len(v) for v in owner_programs(proc.pid, cg).values()) == 3
        c = OwnerCollector(cgroup=str(cg))
        c.start()
        try:
            removed = sorted(r.split(" ")[0] for r in c.removed_stale)
            assert removed == sorted(f"ftown{x}_{proc.pid}" for x in "cei")
            assert owner_programs(proc.pid, cg) == NONE_ATTACHED
            assert sum(len(v) for v in owner_programs(os.getpid(), cg).values()) == 3
            shown = bpftool_cgroup(cg)
            assert all(name in shown for name in c.names.values()), shown
            assert f"_{proc.pid}" not in shown
            # a live owner's programs are left alone
            again = OwnerCollector(cgroup=str(cg))
            again.start()
            try:
                assert again.removed_stale == []
                assert sum(len(v) for v in owner_programs(os.getpid(), cg).values()) == 6
            finally:
                again.close()
            assert sum(len(v) for v in owner_programs(os.getpid(), cg).values()) == 3
        finally:
            c.close()
        assert owner_programs(os.getpid(), cg) == NONE_ATTACHED
        assert "ftown" not in bpftool_cgroup(cg)


def test_dual_stack_sockets_are_keyed_as_ipv4(pair: netns.Pair, collector: OwnerCollector) -> None:
    """AF_INET6 sockets speaking IPv4 (a listener on ::, a client connecting
    to ::ffff:a.b.c.d) send IPv4 packets: their tuples are IPv4, as the
    flow keys of those packets."""
    with cgroups(service_name(), service_name()) as (cg, cg_srv), children() as kids:
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv46", addr="::")
        cl = spawn(kids, pair.a, cg, CLIENT, "ftcli46", server=f"::ffff:{B4}", tcp=2,
                   tcp_port=server.info["tcp"], udp_port=server.info["udp"])  # fmt: skip
        srv_tcp, srv_udp = server.info["tcp"], server.info["udp"]
        want: dict[Endpoint, Child] = {}
        for lport in cl.info["tcp"]:
            want[Endpoint(TCP, A4, lport, B4, srv_tcp)] = cl
            want[Endpoint(TCP, B4, srv_tcp, A4, lport)] = server
        for lport in (cl.info["udp_free"], cl.info["udp_connected"]):
            want[Endpoint(UDP, A4, lport, B4, srv_udp)] = cl
            want[Endpoint(UDP, B4, srv_udp, A4, lport)] = server
        got = drain_until(collector, set(want), {ns_cookie(pair.a), ns_cookie(pair.b)})
        for ep, owner in want.items():
            assert ep in got, f"{ep} not reported"
            assert owner_of(got[ep])["tgid"] == owner.pid
            assert all(int(r["tuple"]["family"]) == 4 for r in got[ep])
        for c in kids:
            c.finish()
    assert_counters_clean(collector)


def test_full_endpoints_map_is_counted(pair: netns.Pair) -> None:
    """A map of 16 tuples and 50 connections between drains: 16 reported,
    every other report counted as endpoints_full (once per packet that
    tried: a socket retries until its tuple is in, so the closing ones get
    theirs in after the drain). The programs sit on a
    cgroup of the test's own, so only its processes' sockets count: each
    connection reports twice (the client's socket, the listener's)."""
    n, size = 50, 16
    parent = f"ftt-owners-{os.getpid()}-{secrets.token_hex(3)}"
    with cgroups(parent, f"{parent}/{service_name()}", f"{parent}/{service_name()}") as (
        top, cg, cg_srv,
    ), children() as kids:  # fmt: skip
        c = OwnerCollector(cgroup=str(top), endpoints_size=size)
        c.start()
        try:
            server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
            churn = spawn(kids, pair.a, cg, CHURN, "ftchurn", server=B4, n=n,
                          tcp_port=server.info["tcp"])  # fmt: skip
            got = c.counters()
            assert got["reported"] == size
            assert got["endpoints_full"] >= 2 * n - size
            assert got["update_failed"] == got["storage_failed"] == 0
            first = by_endpoint(c.drain())
            # The 16 in the map, and any retry that got in behind the drain's
            # deletes (a closing handshake's packet): each one reported.
            assert len(first) >= size
            ours = set(churn.info["ports"]) | {server.info["tcp"]}
            assert all(ep.lport in ours for ep in first)
            # The sockets that found the map full retry on their next packets
            # (their closing handshakes): let them finish, draining.
            late = 0
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 0.5:
                got_late = by_endpoint(c.drain())
                assert all(ep.lport in ours or ep.rport in ours for ep in got_late)
                if got_late:
                    late += len(got_late)
                    quiet_since = time.monotonic()
                time.sleep(0.05)
            # room again after the drains
            again = spawn(kids, pair.a, cg, CHURN, "ftchurn2", server=B4, n=5,
                          tcp_port=server.info["tcp"])  # fmt: skip
            second = by_endpoint(c.drain())
            new_ports = set(again.info["ports"])
            assert {ep for ep in second if ep.local == A4} == {
                Endpoint(TCP, A4, p, B4, server.info["tcp"]) for p in new_ports
            }
            assert {ep.rport for ep in second if ep.local == B4} == new_ports
            assert len(second) == 10
            assert c.counters()["reported"] == len(first) + late + 10
        finally:
            c.close()
        for k in kids:
            k.finish()


# A connected UDP socket: one datagram, then (after a line on stdin) another.
RESUME = textwrap.dedent(
    """
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((args["server"], args["udp_port"]))
    u.send(b"first")
    ready(port=u.getsockname()[1])
    u.send(b"again")
    ready()
    """
)


def test_a_socket_reports_its_tuple_again_after_rereport(pair: netns.Pair) -> None:
    """The kernel reports a tuple when it changes, and again when the socket
    still sends it after `rereport` seconds: userspace forgets tuples no flow
    used for an idle timeout, and a socket that idled longer and resumes must
    be attributed again. Drained once, then 1.5 s of silence (rereport 0.5 s),
    then one datagram: the tuple comes back with the same owner."""
    c = OwnerCollector(rereport=0.5)
    c.start()
    try:
        with cgroups(service_name(), service_name()) as (cg, cg_srv), children() as kids:
            server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
            child = spawn(kids, pair.a, cg, RESUME, "ftresume", server=B4,
                          udp_port=server.info["udp"])  # fmt: skip
            ep = Endpoint(UDP, A4, child.info["port"], B4, server.info["udp"])
            cookies = {ns_cookie(pair.a)}
            first = drain_until(c, {ep}, cookies)
            assert ep in first
            time.sleep(1.5)
            assert ep not in drain_until(c, set(), cookies, timeout=0)  # nothing sent since
            assert child.proc.stdin is not None and child.proc.stdout is not None
            child.proc.stdin.write("\n")
            child.proc.stdin.flush()
            assert child.proc.stdout.readline()  # the second datagram is out
            again = drain_until(c, {ep}, cookies)
            assert ep in again, sorted(again)
            o = owner_of(again[ep])
            assert (o["tgid"], o["comm"], o["cgroup_id"]) == (
                child.pid, "ftresume", os.stat(cg).st_ino,
            )  # fmt: skip
            for k in kids:
                k.finish()
    finally:
        c.close()
