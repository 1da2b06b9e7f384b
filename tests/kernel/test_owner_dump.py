"""Socket owners end to end: `flowtop dump --json` (the real CLI, in a test
namespace) and the engine in this process attribute flows to the processes,
services and containers that sent them.

Topologies: the `pair` fixture (a.va 10.200.1.1 <-> b.vb 10.200.1.2),
flowtop on va in namespace a; `router` (client.vc <-> router.vr1 |
router.vr2 <-> server.vs), flowtop on the router's two veths. Processes are
children in cgroups this file creates (tests/kernel/cgroups.py); the ground
truth for who they are is Popen's pid and `ss -tunap` taken while their
sockets are open, and for what they sent an AF_PACKET capture on va (the
IP bytes of every frame whose source is one of their sockets) and the
payloads they were told to send.

A flow is attributed to the socket at its source end when that is a local
socket (the sender), else at its destination: namespace b is on this host
too, so the server's replies on va carry the server's pid. Forwarded
traffic with no socket on this host (frames injected with AF_PACKET, to a
port nobody listens on) has no owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowtop.config import CollectorConfig, Config
from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowBatch
from flowtop.core.model import EndReason
from flowtop.core.owners import STATE_ATTRIBUTED, STATE_UNATTRIBUTED
from flowtop.run.lifecycle import Run

from . import netns
from .cgroups import (
    CHURN,
    SERVER,
    Child,
    cgroups,
    children,
    docker_name,
    service_name,
    spawn,
    ss_sockets,
)
from .dump import RUN_DIR, Collector, DumpResult, python

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
TCP, UDP = 6, 17
OWNER_KEYS = ("pid", "comm", "uid", "cgroup", "service", "container", "pod")


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


# Sends args["tcp"] payloads (bytes each) over one TCP connection apiece and
# args["udp"] datagrams of args["udp_size"] bytes from one UDP socket, then
# reports its local ports and waits (sockets open) until told to exit.
SENDER = textwrap.dedent(
    """
    conns = []
    for size in args["tcp"]:
        c = socket.create_connection((args["server"], args["tcp_port"]))
        c.sendall(b"t" * size)
        conns.append(c)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(args["udp"]):
        u.sendto(b"u" * args["udp_size"], (args["server"], args["udp_port"]))
    ready(tcp=[c.getsockname()[1] for c in conns], udp=u.getsockname()[1])
    """
)


def _src_bytes(frames: list[netns.Captured]) -> dict[tuple[int, str, int], int]:
    """IP bytes of the captured frames by (proto, source address, source port)."""
    out: dict[tuple[int, str, int], int] = {}
    for f in frames:
        p = f.ip()
        if p is None or p[0] != 4 or p[2] not in (TCP, UDP):
            continue
        _v, tot, proto, src, _dst, sport, _dport = p
        k = (proto, socket.inet_ntop(socket.AF_INET, src), sport)
        out[k] = out.get(k, 0) + tot
    return out


def _by(flows: list[dict[str, Any]], key: str) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for f in flows:
        out[f[key]] = out.get(f[key], 0) + f["bytes"]
    return out


@contextlib.contextmanager
def dumping(ns: netns.Netns, ifaces: list[str], *args: str) -> Iterator[Collector]:
    col = Collector(ns, ifaces, args).start()
    try:
        col.wait_ready()
        yield col
    finally:
        if col.proc is not None and col.proc.poll() is None:
            col.proc.kill()
            col.proc.wait(timeout=10)


def _ours(res: DumpResult, *ports: int) -> list[dict[str, Any]]:
    """The TCP/UDP flows on va with one of ports at either end."""
    want = set(ports)
    return [
        f for f in res.flows
        if f["iface"] == "va" and f["proto"] in (TCP, UDP)
        and (f["sport"] in want or f["dport"] in want)
    ]  # fmt: skip


def test_dump_bytes_per_process_service_and_container(pair: netns.Pair) -> None:
    # Frames as flowtop counts them: no GSO super-packets (flowtop counts a GSO
    # packet's segments, headers included; the tap would see one big frame).
    pair.a.ethtool("va", tso=False, gso=False, gro=False)
    pair.b.ethtool("vb", tso=False, gso=False, gro=False)
    svc, dock, srv = service_name(), docker_name(), f"ft-test-srv-{os.getpid()}"
    with (
        cgroups(svc, dock, srv) as (cg_svc, cg_dock, cg_srv),
        children() as kids,
        dumping(pair.a, ["va"]) as col,
    ):
        cap = netns.Capture(pair.a, "va")
        with cap:
            server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
            ports = dict(server=B4, tcp_port=server.info["tcp"], udp_port=server.info["udp"])
            one = spawn(kids, pair.a, cg_svc, SENDER, "ftone", tcp=[1000, 30000], udp=5,
                        udp_size=100, **ports)  # fmt: skip
            two = spawn(kids, pair.a, cg_dock, SENDER, "fttwo", uid=65534, tcp=[7000], udp=3,
                        udp_size=555, **ports)  # fmt: skip
            time.sleep(0.5)  # every segment ACKed: the connections are quiet now
            ss_a, ss_b = ss_sockets(pair.a), ss_sockets(pair.b)
            comm = {c.pid: c.comm() for c in (one, two, server)}
            frames = cap.stop()
        res = col.stop()
        for k in kids:
            k.finish()
    # ss agrees with Popen on who holds each socket
    socks: dict[tuple[int, str, int], Child] = {}
    for child in (one, two):
        for port in child.info["tcp"]:
            socks[(TCP, A4, port)] = child
        socks[(UDP, A4, child.info["udp"])] = child
    for (proto, addr, port), child in socks.items():
        # an unconnected UDP socket shows as bound to any address
        held = {
            v for ep, v in ss_a.items()
            if (ep.proto, ep.lport) == (proto, port) and ep.local in (addr, "0.0.0.0", "*")
        }  # fmt: skip
        assert held == {(comm[child.pid], child.pid)}, (proto, port, held)
    assert {v[1] for ep, v in ss_b.items() if ep.lport == server.info["tcp"]} == {server.pid}
    sent = _src_bytes(frames)
    truth = {one.pid: 0, two.pid: 0, server.pid: 0}
    for (proto, addr, port), n in sent.items():
        if (proto, addr, port) in socks:
            truth[socks[(proto, addr, port)].pid] += n
        elif addr == B4 and port == server.info["tcp"]:
            truth[server.pid] += n  # the accepted sockets' ACKs
        else:
            raise AssertionError(f"a frame from a socket nobody here made: {proto} {addr}:{port}")
    # the UDP part, independently: every datagram is its payload + 28 header bytes
    assert sent[(UDP, A4, one.info["udp"])] == 5 * (100 + 28)
    assert sent[(UDP, A4, two.info["udp"])] == 3 * (555 + 28)
    flows = _ours(res, server.info["tcp"], server.info["udp"])
    assert flows and all(f["pid"] is not None for f in flows), [
        f for f in flows if f["pid"] is None
    ]
    assert _by(flows, "pid") == truth
    for child, cg in ((one, cg_svc), (two, cg_dock), (server, cg_srv)):
        mine = [f for f in flows if f["pid"] == child.pid]
        assert {f["comm"] for f in mine} == {comm[child.pid]}
        assert {f["cgroup"] for f in mine} == {"/" + cg.name}
    assert {f["uid"] for f in flows if f["pid"] == two.pid} == {65534}
    assert {f["uid"] for f in flows if f["pid"] == one.pid} == {0}
    by_service = _by(flows, "service")
    assert by_service == {svc: truth[one.pid], None: truth[two.pid] + truth[server.pid]}
    by_container = _by(flows, "container")
    hex64 = dock.removeprefix("docker-").removesuffix(".scope")
    assert by_container == {hex64: truth[two.pid], None: truth[one.pid] + truth[server.pid]}
    assert {f["pod"] for f in flows} == {None}
    assert res.stats["owners_unattributed"] == 0
    assert all(res.stats[f"owner_{k}"] == 0 for k in ("endpoints_full", "update_failed",
                                                       "storage_failed"))  # fmt: skip


def test_dump_text_table_has_a_process_column(pair: netns.Pair) -> None:
    with cgroups(service_name()) as (cg,), children() as kids:
        server = spawn(kids, pair.b, cg, SERVER, "ftsrv", addr=B4)
        proc = pair.a.popen(
            [python(), "-m", "flowtop", "dump", "-i", "va", "--duration", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=RUN_DIR,
        )  # fmt: skip
        try:
            _wait_attached(proc)
            ports = dict(server=B4, tcp_port=server.info["tcp"], udp_port=server.info["udp"])
            one = spawn(kids, pair.a, cg, SENDER, "ftcell", tcp=[10], udp=1, udp_size=10,
                        **ports)  # fmt: skip
            assert proc.stderr is not None and proc.stdout is not None
            out = proc.stdout.read()
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for k in kids:
            k.finish()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    lines = out.splitlines()
    assert lines[0].split()[-1] == "PROCESS"
    mine = [ln for ln in lines if f"{A4}:{one.info['udp']}" in ln]
    assert mine and all(ln.rstrip().endswith(f"ftcell/{one.pid}") for ln in mine), lines


def _wait_attached(proc: Any, timeout: float = 40.0) -> None:
    """Reads stderr until `collecting on` (the programs are attached)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"flowtop exited before it was ready ({proc.wait()})")
        if "collecting on" in line:
            return
    raise AssertionError("flowtop not ready")


def test_200_short_connections_all_attributed(pair: netns.Pair) -> None:
    with (
        cgroups(service_name(), service_name()) as (cg, cg_srv),
        children() as kids,
        dumping(pair.a, ["va"]) as col,
    ):
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
        churn = spawn(kids, pair.a, cg, CHURN, "ftchurn", server=B4, n=200,
                      tcp_port=server.info["tcp"])  # fmt: skip
        time.sleep(0.3)
        res = col.stop()
        for k in kids:
            k.finish()
    ports = set(churn.info["ports"])
    assert len(ports) == 200 and churn.info["longest"] < 0.05
    out = [f for f in res.flows if f["proto"] == TCP and f["sport"] in ports and f["src"] == A4]
    back = [f for f in res.flows if f["proto"] == TCP and f["dport"] in ports and f["dst"] == A4]
    assert {f["sport"] for f in out} == ports and {f["dport"] for f in back} == ports
    assert {(f["pid"], f["comm"]) for f in out} == {(churn.pid, "ftchurn")}
    # the accepted sockets carry the listener's creator
    assert {(f["pid"], f["comm"]) for f in back} == {(server.pid, "ftsrv")}
    assert res.stats["owners_unattributed"] == 0


def test_a_container_in_another_namespace_over_a_veth(pair: netns.Pair) -> None:
    """flowtop in a; the "container" is namespace b plus a docker cgroup; its
    flows on a's side of the veth carry its container id."""
    dock = docker_name()
    hex64 = dock.removeprefix("docker-").removesuffix(".scope")
    with (
        cgroups(dock, service_name()) as (cg_ctr, cg_host),
        children() as kids,
        dumping(pair.a, ["va"]) as col,
    ):
        host = spawn(kids, pair.a, cg_host, SERVER, "fthost", addr=A4)
        ctr = spawn(kids, pair.b, cg_ctr, SENDER, "ftctr", server=A4, tcp=[4000], udp=2,
                    udp_size=64, tcp_port=host.info["tcp"], udp_port=host.info["udp"])  # fmt: skip
        time.sleep(0.3)
        ss_b = ss_sockets(pair.b)
        res = col.stop()
        for k in kids:
            k.finish()
    assert {v[1] for ep, v in ss_b.items() if ep.lport in ctr.info["tcp"]} == {ctr.pid}
    from_ctr = [f for f in res.flows if f["src"] == B4 and f["proto"] in (TCP, UDP)]
    assert {f["sport"] for f in from_ctr} == {*ctr.info["tcp"], ctr.info["udp"]}
    assert {(f["direction"], f["container"], f["pid"]) for f in from_ctr} == {
        ("ingress", hex64, ctr.pid)
    }
    udp = [f for f in from_ctr if f["proto"] == UDP]
    assert sum(f["bytes"] for f in udp) == 2 * (64 + 28)
    # the host's replies: the local server, no container
    to_ctr = [f for f in res.flows if f["dst"] == B4 and f["proto"] == TCP]
    assert to_ctr and {(f["pid"], f["container"]) for f in to_ctr} == {(host.pid, None)}


def test_forwarded_traffic_has_no_owner(router: netns.Router) -> None:
    """Frames from no socket of this host (injected on the client's veth),
    forwarded by the router to a server port nobody listens on."""
    from .frames import send_frames, tcp, udp

    mac_c, mac_r1 = router.client.mac("vc"), router.router.mac("vr1")
    frames = [udp(mac_c, mac_r1, "10.200.2.1", "10.200.3.2", 7000, 7001, payload=40)] * 5
    # SYNs to a closed port: the server's kernel answers RST from its TCP
    # control socket, which no process owns
    frames += [tcp(mac_c, mac_r1, "10.200.2.1", "10.200.3.2", 7100 + i, 7200) for i in range(3)]
    with dumping(router.router, ["vr1", "vr2"]) as col:
        assert send_frames(router.client, "vc", frames) == 8
        time.sleep(0.3)
        res = col.stop()
    rst = res.find(proto=TCP, src="10.200.3.2", sport=7200)
    assert {(f["iface"], f["dport"]) for f in rst} == {
        (i, 7100 + n) for i in ("vr1", "vr2") for n in range(3)
    }  # fmt: skip
    fwd = res.find(proto=UDP, src="10.200.2.1", dst="10.200.3.2", sport=7000, dport=7001)
    assert {(f["iface"], f["packets"], f["bytes"]) for f in fwd} == {
        ("vr1", 5, 5 * (40 + 28)), ("vr2", 5, 5 * (40 + 28))
    }  # fmt: skip
    for f in res.flows:  # UDP, SYNs, RSTs and the server's ICMP errors: nobody's
        assert [f[k] for k in OWNER_KEYS] == [None] * 7, f
    assert res.stats["owners_unattributed"] == 0


# -- the engine in this process (its flow-end records) --------------------------------


@contextlib.contextmanager
def engine_in(ns: netns.Netns, **cfg: Any) -> Iterator[tuple[Engine, list[FlowBatch]]]:
    c = CollectorConfig(interfaces=("va",), sockops=False, **cfg)
    with netns.entered(ns.name):
        run = Run(Config(collector=c)).start()
    with run:
        ended: list[FlowBatch] = []

        class Sink:
            def flows_ended(self, batch: FlowBatch) -> None:
                ended.append(batch)

        run.engine.sinks.append(Sink())
        assert run.engine.owners is not None, "socket owners did not start"
        yield run.engine, ended


def _rows(engine: Engine, sport: int) -> dict[str, list[int]]:
    t = engine.table
    rows = t.live_rows()
    rows = rows[t.keys_at(rows)["sport"] == sport]
    return {c: t.column(c, rows).tolist() for c in ("pid", "owner_state", "bytes")}


# Sends one UDP datagram a step (on each line read) until told "exit".
PINGER = textwrap.dedent(
    """
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((args["server"], args["port"]))
    u.send(b"p" * 50)
    print(json.dumps({"port": u.getsockname()[1]}), flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        u.send(b"p" * 50)
        print("{}", flush=True)
    """
)


def test_owner_stays_after_the_process_exits_until_the_idle_timeout(pair: netns.Pair) -> None:
    with (
        cgroups(service_name(), service_name()) as (cg, cg_srv),
        children() as kids,
        engine_in(pair.a, idle_timeout=2.0, interval=0.2) as (engine, ended),
    ):
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
        p = spawn(kids, pair.a, cg, PINGER, "ftgone", server=B4, port=server.info["udp"])
        port, pid = p.info["port"], p.pid
        engine.step()
        for _ in range(3):
            assert p.proc.stdin is not None and p.proc.stdout is not None
            p.proc.stdin.write("\n")
            p.proc.stdin.flush()
            p.proc.stdout.readline()
        engine.step()
        assert _rows(engine, port) == {"pid": [pid], "owner_state": [STATE_ATTRIBUTED],
                                       "bytes": [4 * 78]}  # fmt: skip
        p.proc.kill()
        p.proc.wait(timeout=10)
        gone = time.monotonic()
        assert not os.path.exists(f"/proc/{pid}")
        # the process is gone; its flow keeps its owner while it is live
        while time.monotonic() - gone < 1.0:
            time.sleep(0.2)
            engine.step()
            assert _rows(engine, port)["pid"] == [pid]
        while _rows(engine, port)["pid"] and time.monotonic() - gone < 10:
            time.sleep(0.2)
            engine.step()
        assert _rows(engine, port)["pid"] == []  # idle timeout: the flow ended
        recs = [r for b in ended for r in b.records() if r.key.sport == port]
        assert len(recs) == 1
        (r,) = recs
        assert (r.end_reason, r.pid, r.bytes) == (EndReason.IDLE_TIMEOUT, pid, 4 * 78)
        assert engine.owners is not None
        assert engine.owners.names.comm.get(r.comm_id) == "ftgone"
        assert engine.owners.cgroup_path(r.cgroup_id or 0) == "/" + cg.name
        assert r.owner_state == STATE_ATTRIBUTED
        for k in kids:
            k.finish()


def test_a_socket_older_than_flowtop_is_attributed_from_the_snapshot(pair: netns.Pair) -> None:
    with cgroups(service_name(), service_name()) as (cg, cg_srv), children() as kids:
        server = spawn(kids, pair.b, cg_srv, SERVER, "ftsrv", addr=B4)
        # the socket exists (and has sent) before flowtop starts
        p = spawn(kids, pair.a, cg, PINGER, "ftold", server=B4, port=server.info["udp"])
        port = p.info["port"]
        with engine_in(pair.a, idle_timeout=60.0) as (engine, _ended):
            assert p.proc.stdin is not None and p.proc.stdout is not None
            for _ in range(2):
                p.proc.stdin.write("\n")
                p.proc.stdin.flush()
                p.proc.stdout.readline()
            time.sleep(0.1)
            engine.step()
            got = _rows(engine, port)
            assert got == {"pid": [p.pid], "owner_state": [STATE_ATTRIBUTED],
                           "bytes": [2 * 78]}  # fmt: skip
            assert engine.owners is not None
            assert engine.owners.counters()["unattributed"] == 0
            assert engine.health().owners_unattributed == 0
        for k in kids:
            k.finish()


# A UDP socket made before flowtop starts, then held by no process while the
# start-up snapshot runs: its only reference is in flight in an SCM_RIGHTS
# message. Taken back afterwards, it sends to a port nobody listens on (so
# the other end is no socket either).
HIDDEN = textwrap.dedent(
    """
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((args["local"], 0))
    port = u.getsockname()[1]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    socket.send_fds(a, [b"f"], [u.fileno()])
    u.close()
    ready(port=port)
    _msg, fds, _flags, _addr = socket.recv_fds(b, 16, 1)
    v = socket.socket(fileno=fds[0])
    for _ in range(3):
        v.sendto(b"h" * 50, (args["server"], args["dport"]))
    ready(sent=3)
    """
)


def test_a_socket_the_snapshot_cannot_see_is_counted_unattributed(pair: netns.Pair) -> None:
    with cgroups(service_name()) as (cg,), children() as kids:
        p = spawn(kids, pair.a, cg, HIDDEN, "fthidden", local=A4, server=B4, dport=9)
        port = p.info["port"]
        inodes = {os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")}
        udp4 = pair.a.exec("cat", f"/proc/{p.pid}/net/udp").stdout
        # ground truth: the socket exists, and no fd of its process holds it
        (line,) = [ln for ln in udp4.splitlines()[1:] if ln.split()[1].endswith(f":{port:04X}")]
        assert f"socket:[{line.split()[9]}]" not in inodes
        with engine_in(pair.a, idle_timeout=60.0) as (engine, _ended):
            assert p.proc.stdin is not None and p.proc.stdout is not None
            p.proc.stdin.write("\n")
            p.proc.stdin.flush()
            assert json.loads(p.proc.stdout.readline()) == {"sent": 3}
            time.sleep(0.1)
            engine.step()
            for _ in range(5):  # past the retry window (interval 1 s, 3 intervals)
                time.sleep(1.0)
                engine.step()
            got = _rows(engine, port)
            assert got == {"pid": [0], "owner_state": [STATE_UNATTRIBUTED], "bytes": [3 * 78]}
            assert engine.health().owners_unattributed == 1
            assert engine.health().as_dict()["owners_unattributed"] == 1
        for k in kids:
            k.finish()


def test_owners_off_in_the_config(pair: netns.Pair, tmp_path: Path) -> None:
    conf = tmp_path / "flowtop.toml"
    conf.write_text("[collector]\nowners = false\n")
    conf.chmod(0o600)
    with (
        cgroups(service_name()) as (cg,),
        children() as kids,
        dumping(pair.a, ["va"], "--config", str(conf)) as col,
    ):
        server = spawn(kids, pair.b, cg, SERVER, "ftsrv", addr=B4)
        one = spawn(kids, pair.a, cg, SENDER, "ftoff", server=B4, tcp=[100], udp=2, udp_size=10,
                    tcp_port=server.info["tcp"], udp_port=server.info["udp"])  # fmt: skip
        time.sleep(0.3)
        res = col.stop()
        for k in kids:
            k.finish()
    mine = res.find(proto=UDP, sport=one.info["udp"])
    assert sum(f["bytes"] for f in mine) == 2 * (10 + 28)
    flows = _ours(res, server.info["tcp"], server.info["udp"])
    assert flows and all([f[k] for k in OWNER_KEYS] == [None] * 7 for f in flows)
    assert "owner_endpoints_full" not in res.stats and res.stats["owners_unattributed"] == 0
