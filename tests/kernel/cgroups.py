"""Cgroups and child processes for the socket owner tests (test_owners.py,
test_owner_dump.py).

cgroups() makes directories under the cgroup v2 root and removes them at the
end; spawn() starts a child that enters a namespace and a cgroup, names
itself (PR_SET_NAME), optionally drops to another uid, runs a role (SERVER,
CHURN, or the caller's code), prints one JSON line when its sockets are
ready and waits for a line on stdin before it exits. ss_sockets() is the
ground truth for who owns a socket (`ss -tunap` in a namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowtop.kernel.cgroup import find_cgroup2

from . import netns

TCP, UDP = 6, 17


# -- cgroups ------------------------------------------------------------------------


def cgroup_root() -> Path:
    root = find_cgroup2()
    if root is None:
        pytest.skip("no cgroup v2 mount")
    return Path(root)


@contextlib.contextmanager
def cgroups(*names: str) -> Iterator[list[Path]]:
    """Directories under the cgroup v2 root, removed at the end (their
    processes must be gone by then: the callers kill theirs first)."""
    root = cgroup_root()
    made: list[Path] = []
    try:
        for name in names:
            path = root / name
            path.mkdir()
            made.append(path)
        yield made
    finally:
        for path in reversed(made):
            _rmdir_cgroup(path)


def _rmdir_cgroup(path: Path) -> None:
    # A killed process leaves its cgroup a moment after it was reaped.
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.05)
    path.rmdir()


def service_name() -> str:
    return f"ft-test-{secrets.token_hex(4)}.service"


def docker_name() -> str:
    return f"docker-{secrets.token_hex(32)}.scope"


# -- child processes ----------------------------------------------------------------

# Enters the namespace and cgroup given in argv, names itself, drops to the
# uid given, then runs the role's code. Prints one JSON line when its sockets
# are ready and waits for a line on stdin before it exits (sockets open
# meanwhile, for `ss`).
PRELUDE = textwrap.dedent(
    """
    import ctypes, json, os, socket, sys, time
    ns, cg, uid, comm = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    args = json.loads(sys.argv[5])
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(ns, os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0, "setns"
    os.close(fd)
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    libc.prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME
    if uid:
        os.setgid(uid)
        os.setuid(uid)
    def ready(**kw):
        print(json.dumps(kw), flush=True)
        sys.stdin.readline()
    """
)

SERVER = textwrap.dedent(
    """
    import selectors, threading
    fam = socket.AF_INET6 if ":" in args["addr"] else socket.AF_INET
    lst = socket.socket(fam, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args["addr"], 0))
    lst.listen(512)
    udp = socket.socket(fam, socket.SOCK_DGRAM)
    udp.bind((args["addr"], 0))
    def serve():
        sel = selectors.DefaultSelector()
        sel.register(lst, selectors.EVENT_READ)
        sel.register(udp, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                s = key.fileobj
                if s is lst:
                    c, _ = lst.accept()
                    sel.register(c, selectors.EVENT_READ)
                elif s is udp:
                    udp.recvfrom(65536)
                elif not s.recv(65536):
                    sel.unregister(s)
                    s.close()
    threading.Thread(target=serve, daemon=True).start()
    ready(tcp=lst.getsockname()[1], udp=udp.getsockname()[1])
    """
)

# Connects, sends one byte, closes, args["n"] times; reports each
# connection's local port and duration.
CHURN = textwrap.dedent(
    """
    ports, took = [], []
    for _ in range(args["n"]):
        t0 = time.monotonic()
        c = socket.create_connection((args["server"], args["tcp_port"]))
        c.sendall(b"q")
        ports.append(c.getsockname()[1])
        c.close()
        took.append(time.monotonic() - t0)
    ready(ports=ports, longest=max(took))
    """
)


@dataclass
class Child:
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    cgroup: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def comm(self) -> str:
        return Path(f"/proc/{self.pid}/comm").read_text().strip()

    def finish(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Children started with spawn() into this list are killed at the end."""
    out: list[Child] = []
    try:
        yield out
    finally:
        for c in out:
            if c.proc.poll() is None:
                c.proc.kill()
            c.proc.wait(timeout=10)


def spawn(
    into: list[Child],
    ns: netns.Netns,
    cgroup: Path,
    code: str,
    comm: str,
    uid: int = 0,
    **args: Any,
) -> Child:
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + code, f"{netns.NETNS_DIR}/{ns.name}", str(cgroup),
         str(uid), comm, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    child = Child(proc, {}, cgroup)
    into.append(child)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise AssertionError(f"child {comm} exited with {proc.returncode} before it was ready")
    child.info = json.loads(line)
    return child


# -- ground truth and records -------------------------------------------------------

SS_LINE = re.compile(
    r"^(?P<proto>tcp|udp)\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+):(?P<lport>\d+|\*)\s+"
    r"(?P<remote>\S+):(?P<rport>\d+|\*)\s+users:\(\(\"(?P<comm>[^\"]*)\",pid=(?P<pid>\d+)"
)


@dataclass(frozen=True)
class Endpoint:
    proto: int
    local: str
    lport: int
    remote: str
    rport: int


def ss_sockets(ns: netns.Netns) -> dict[Endpoint, tuple[str, int]]:
    """`ss -tunap` in ns: endpoint -> (comm, pid); an unconnected socket's
    remote is "*" with port 0."""
    out: dict[Endpoint, tuple[str, int]] = {}
    for line in ns.exec("ss", "-tunapH").stdout.splitlines():
        m = SS_LINE.match(line)
        if not m or m["lport"] == "*":
            continue
        proto = TCP if m["proto"] == "tcp" else UDP
        remote = "*" if m["rport"] == "*" else m["remote"].strip("[]")
        rport = 0 if m["rport"] == "*" else int(m["rport"])
        ep = Endpoint(proto, m["local"].strip("[]"), int(m["lport"]), remote, rport)
        out[ep] = (m["comm"], int(m["pid"]))
    return out


def ss_owner(ss: dict[Endpoint, tuple[str, int]], ep: Endpoint) -> tuple[str, int]:
    """(comm, pid) ss shows for the socket of ep: connected, or bound to
    ep's local address or to any (an unconnected socket shows no peer)."""
    for local in (ep.local, "0.0.0.0", "*", "::"):
        for remote, rport in ((ep.remote, ep.rport), ("*", 0)):
            found = ss.get(Endpoint(ep.proto, local, ep.lport, remote, rport))
            if found:
                return found
    raise AssertionError(f"ss shows no socket for {ep}: {sorted(ss, key=str)}")
