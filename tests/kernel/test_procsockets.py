"""The start-up snapshot of socket owners from /proc, against `ss -tunaep`.

Two processes in a network namespace of their own, each in a cgroup made
for the test under the cgroup v2 mount (one named like a systemd service,
one like a docker container scope), each with a command name of its own:
the "web" one (root) holds a TCP listener, the connection it accepted, and
IPv6 and IPv4 UDP sockets bound without a peer; the "app" one (uid 65534)
holds the TCP client and a connected IPv6 UDP socket. The snapshot must find
exactly the sockets `ss` lists in that namespace with their pid, command
name and uid, and the cgroup ids of the directories made; the owner table
then joins flow keys of those tuples to the right process and workload.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flowtop.core.cgroups import CgroupPaths, Workload
from flowtop.core.owners import END_DST, END_SRC, STATE_ATTRIBUTED, OwnerTable
from flowtop.core.procsockets import cmdline, snapshot
from flowtop.kernel import layout
from flowtop.kernel.cgroup import find_cgroup2
from flowtop.kernel.owner_records import OWNER_FROM_PROC

from . import netns

pytestmark = pytest.mark.kernel

CONTAINER_ID = secrets.token_hex(32)

# Each child: set its command name, drop to `uid`, wait for "go" (the parent
# moves it into its cgroup first), make its sockets, print "ready", sleep.
CHILD = r"""
import ctypes, os, socket, sys, time
role, uid = sys.argv[1], int(sys.argv[2])
ctypes.CDLL(None).prctl(15, ("ftt-" + role).encode(), 0, 0, 0)  # PR_SET_NAME
if uid:
    os.setresuid(uid, uid, uid)
sys.stdin.readline()
keep = []
if role == "web":
    l = socket.socket(); l.bind(("127.0.0.1", 5000)); l.listen()
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.bind(("::1", 5353))
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.bind(("0.0.0.0", 6000))
    keep += [l, u6, u4]
    print("ready", flush=True)
    a, _ = l.accept(); keep.append(a)
    print("accepted", flush=True)
else:
    c = socket.socket(); c.connect(("127.0.0.1", 5000))
    v = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); v.connect(("::1", 5353))
    v.send(b"hello")
    keep += [c, v]
    print("ready", flush=True)
time.sleep(600)
"""


@dataclass(frozen=True)
class SsSocket:
    version: int
    proto: int
    local: bytes
    lport: int
    remote: bytes
    rport: int
    pid: int
    comm: str
    uid: int
    inode: int


def _addr(text: str) -> tuple[int, bytes]:
    text = text.strip("[]")
    if text == "*":
        text = "0.0.0.0"
    ip = ipaddress.ip_address(text.split("%")[0])
    return ip.version, ip.packed.ljust(16, b"\0")


def ss_sockets(ns: netns.Netns) -> list[SsSocket]:
    """`ss -tunaepH` in the namespace: one entry per socket and process."""
    out = []
    for line in ns.exec("ss", "-tunaepH").stdout.splitlines():
        f = line.split()
        proto = {"tcp": 6, "udp": 17}[f[0]]
        lhost, lport = f[4].rsplit(":", 1)
        rhost, rport = f[5].rsplit(":", 1)
        version, local = _addr(lhost)
        _v, remote = _addr(rhost)
        uid = re.search(r"\buid:(\d+)", line)
        ino = re.search(r"\bino:(\d+)", line)
        assert ino is not None, line
        for comm, pid in re.findall(r'\("([^"]*)",pid=(\d+),fd=\d+\)', line):
            out.append(
                SsSocket(
                    version,
                    proto,
                    local,
                    int(lport),
                    remote,
                    0 if rport == "*" else int(rport),
                    int(pid),
                    comm,
                    int(uid.group(1)) if uid else 0,
                    int(ino.group(1)),
                )
            )
    return out


@contextlib.contextmanager
def cgroup_dirs(root: str) -> Iterator[tuple[Path, Path]]:
    """A slice with a "service" and a "docker container" cgroup under the
    cgroup v2 root, removed after (their processes are gone by then)."""
    top = Path(root) / f"ftt-{os.getpid()}-{secrets.token_hex(3)}.slice"
    svc = top / "ftt-web.service"
    ctr = top / f"docker-{CONTAINER_ID}.scope"
    made: list[Path] = []
    try:
        for d in (top, svc, ctr):
            d.mkdir()
            made.append(d)
        yield svc, ctr
    finally:
        for d in reversed(made):
            for _ in range(100):  # a killed process leaves its cgroup a moment later
                with contextlib.suppress(OSError):
                    d.rmdir()
                if not d.exists():
                    break
                time.sleep(0.05)
            else:
                d.rmdir()  # still busy after 5 s: say so


def _start(ns: netns.Netns, role: str, uid: int, cg: Path) -> subprocess.Popen[str]:
    # `ip netns exec` execs the command: the Popen pid is the child's.
    p = ns.popen(
        [sys.executable, "-c", CHILD, role, str(uid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(100):
        try:
            if Path(f"/proc/{p.pid}/comm").read_text().strip() == f"ftt-{role}":
                break
        except OSError:
            pass
        time.sleep(0.02)
    (cg / "cgroup.procs").write_text(str(p.pid))
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    return p


def _line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    return p.stdout.readline().strip()


def test_snapshot_matches_ss_in_a_namespace_and_cgroups() -> None:
    root = find_cgroup2()
    assert root is not None, "no cgroup v2 mount"
    ns = netns.Netns.create("owners")
    try:
        with cgroup_dirs(root) as (svc, ctr):
            try:
                web = _start(ns, "web", 0, svc)
                assert _line(web) == "ready"
                app = _start(ns, "app", 65534, ctr)
                assert _line(app) == "ready"
                assert _line(web) == "accepted"
                truth = ss_sockets(ns)
                snap = snapshot(root)
                cmd = cmdline(app.pid)
                _check(root, snap.records, truth, web.pid, app.pid, svc, ctr)
                assert snap.namespaces >= 1 and snap.sockets >= len(truth)
                assert cmd is not None and "import ctypes" in cmd and "\n" not in cmd
                assert len(cmd) <= 1024
                _check_join(root, snap.records, truth, web.pid, app.pid)
                ns.kill_procs()
                assert cmdline(app.pid) is None  # gone
            finally:
                ns.kill_procs()  # before the cgroups go: they must be empty
    finally:
        ns.delete()


def _check(
    root: str,
    records: np.ndarray,
    truth: list[SsSocket],
    web: int,
    app: int,
    svc: Path,
    ctr: Path,
) -> None:
    ours = records[np.isin(records["owner"]["tgid"], [web, app])]
    t, o = ours["tuple"], ours["owner"]
    got = {
        (
            int(t["proto"][i]),
            bytes(t["local"][i]),
            int(t["lport"][i]),
            bytes(t["remote"][i]),
            int(t["rport"][i]),
            int(o["tgid"][i]),
            o["comm"][i].decode(),
            int(o["uid"][i]),
        )
        for i in range(len(ours))
    }
    want = {(s.proto, s.local, s.lport, s.remote, s.rport, s.pid, s.comm, s.uid) for s in truth}
    assert got == want
    # web: listener, accepted end, 2 bound UDP; app: TCP client, connected UDP
    assert len(ours) == len(truth) == 6
    assert {s.comm for s in truth} == {"ftt-web", "ftt-app"}
    assert {s.uid for s in truth if s.pid == app} == {65534}
    assert (o["flags"] == OWNER_FROM_PROC).all()
    # cgroup ids: the inodes of the directories made, read from /proc/PID/cgroup
    cg = {int(o["tgid"][i]): int(o["cgroup_id"][i]) for i in range(len(ours))}
    assert cg == {web: svc.stat().st_ino, app: ctr.stat().st_ino}
    paths = CgroupPaths(root)
    assert paths.workload(cg[web]) == Workload(service="ftt-web.service")
    assert paths.workload(cg[app]) == Workload(container=CONTAINER_ID)
    info = paths.get(cg[app])
    assert info is not None and info.path == "/" + str(ctr.relative_to(root))


def _key(s: SsSocket, src_is_local: bool) -> np.ndarray:
    k = np.zeros(1, layout.FLOW_KEY)
    k["ip_version"] = s.version
    k["proto"], k["ifindex"] = s.proto, 1
    ends = [(s.local, s.lport), (s.remote, s.rport)]
    if not src_is_local:
        ends.reverse()
    (k["src"], k["sport"]), (k["dst"], k["dport"]) = ends
    return k


def _check_join(root: str, records: np.ndarray, truth: list[SsSocket], web: int, app: int) -> None:
    table = OwnerTable(cgroups=CgroupPaths(root))
    table.add(records, now=0)
    connected = [s for s in truth if s.rport != 0]  # flows run between connected ends
    assert len(connected) == 3  # the two TCP ends and app's UDP socket
    ks = np.concatenate([_key(s, True) for s in connected] + [_key(s, False) for s in connected])
    c = table.join(ks, now=1)
    # Expected from ss: the socket whose local end is the key's src (the
    # sender), else the one whose local end is its dst. Both TCP ends are
    # local here, so each direction of the connection is its sender's.
    by_tuple = {(s.proto, s.local, s.lport, s.remote, s.rport): s for s in connected}
    want, ends = [], []
    for i, fwd in enumerate([True] * 3 + [False] * 3):
        s = connected[i % 3]
        near = (s.local, s.lport) if fwd else (s.remote, s.rport)
        far = (s.remote, s.rport) if fwd else (s.local, s.lport)
        src_sock = by_tuple.get((s.proto, *near, *far))
        dst_sock = by_tuple.get((s.proto, *far, *near))
        owner = src_sock or dst_sock
        assert owner is not None
        want.append(owner)
        ends.append(END_SRC if src_sock else END_DST)
    assert c.pid.tolist() == [w.pid for w in want]
    assert c.end.tolist() == ends
    assert END_DST in ends  # the UDP client's reply direction: dst is its socket
    assert (c.state == STATE_ATTRIBUTED).all()
    assert c.texts("comm").tolist() == [w.comm for w in want]
    assert c.uid.tolist() == [w.uid for w in want]
    want_ctr = [CONTAINER_ID if w.pid == app else None for w in want]
    assert c.texts("container").tolist() == want_ctr
    want_svc = ["ftt-web.service" if w.pid == web else None for w in want]
    assert c.texts("service").tolist() == want_svc


def test_snapshot_counts_vanished_processes() -> None:
    """A process gone between listing and reading is counted, not raised,
    and the others are still read (this one's TCP listener on loopback)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lst = socket.socket()
    try:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        port = lst.getsockname()[1]
        s = snapshot(find_cgroup2(), pids=[gone.pid, os.getpid()])
    finally:
        lst.close()
    assert s.errors == 1 and s.processes == 1
    mine = s.records[s.records["owner"]["tgid"] == os.getpid()]
    assert port in mine["tuple"]["lport"].tolist()
