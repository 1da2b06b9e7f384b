"""Network namespaces, veth pairs and AF_PACKET captures for the kernel tests.

Everything here lives in namespaces this module creates, named
``ftt-<creator pid>-<random>-<role>``; nothing touches the root namespace's
interfaces. The creator pid in the name lets a later session delete what a
crashed run left behind without touching the namespaces of a run that is still
going (see ``cleanup_stale``).

The test process itself stays in the root namespace. ``entered(ns)`` switches
the *calling thread* into a namespace for a moment (setns); sockets created
inside keep belonging to that namespace after the thread switches back, so a
test can build its sockets in A and B and then drive them from ordinary Python
code, threads included.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowtop.kernel.attach import pid_alive

PREFIX = "ftt-"
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- #
# processes and namespaces
# --------------------------------------------------------------------------- #


def run(
    cmd: Sequence[str], check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Runs a command in the root namespace (only ever `ip`/`tc` on our own netns)."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Moves the calling thread into network namespace `ns` for the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _kill_ns_pids(name: str) -> None:
    proc = run(["ip", "netns", "pids", name], check=False)
    for tok in proc.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(tok), signal.SIGKILL)


def delete_netns(name: str, prefix: str = PREFIX) -> None:
    """Kills every process inside `name` (all ours) and deletes the namespace."""
    if not name.startswith(prefix):
        raise ValueError(f"refusing to delete a namespace we did not create: {name}")
    if not os.path.exists(os.path.join(NETNS_DIR, name)):
        return
    _kill_ns_pids(name)
    for _ in range(50):
        proc = run(["ip", "netns", "del", name], check=False)
        if proc.returncode == 0 or not os.path.exists(os.path.join(NETNS_DIR, name)):
            return
        time.sleep(0.05)


def list_test_netns(prefix: str = PREFIX) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def cleanup_stale(own_pid: int | None = None, prefix: str = PREFIX) -> list[str]:
    """Deletes `prefix` namespaces of this process (own_pid) or of dead creators."""
    removed = []
    for name in list_test_netns(prefix):
        parts = name.split("-")
        try:
            creator = int(parts[1])
        except (IndexError, ValueError):
            creator = -1
        if creator == own_pid or creator < 0 or not pid_alive(creator):
            delete_netns(name, prefix)
            removed.append(name)
    return removed


@dataclass
class Netns:
    """One test namespace. `ip`, `tc`, sysctls and processes run inside it."""

    name: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @classmethod
    def create(cls, role: str, ipv6: bool = True) -> Netns:
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-{role}"
        run(["ip", "netns", "add", name])
        ns = cls(name)
        try:
            ns.ip("link", "set", "lo", "up")
            # Quiet defaults for every interface created from now on: no DAD,
            # no link-local address, no router solicitations, no RA handling.
            ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
            ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
            ns.sysctl("net.ipv6.conf.default.addr_gen_mode", 1)
            ns.sysctl("net.ipv6.conf.all.accept_ra", 0)
            ns.sysctl("net.ipv6.conf.default.accept_ra", 0)
            ns.sysctl("net.ipv6.conf.all.router_solicitations", 0)
            ns.sysctl("net.ipv6.conf.default.router_solicitations", 0)
            ns.sysctl("net.ipv6.conf.default.dad_transmits", 0)
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1)
            if not ipv6:
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        except BaseException:
            ns.delete()
            raise
        return ns

    # -- commands ---------------------------------------------------------
    def exec(
        self, *cmd: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def tc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.exec("tc", *args, check=check)

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Starts a process in the namespace; it is SIGKILLed on teardown."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)
        self.procs.append(proc)
        return proc

    def sysctl(self, key: str, value: int | str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        with entered(self.name), open(path, "w") as f:
            f.write(str(value))

    def read_sysctl(self, key: str) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        with entered(self.name), open(path) as f:
            return f.read().strip()

    # -- links ------------------------------------------------------------
    def link_stats(self, ifname: str) -> dict[str, int]:
        """Counters of `ip -s -j link show dev IF`: rx/tx packets and bytes."""
        out = self.ip("-s", "-j", "link", "show", "dev", ifname).stdout
        st = json.loads(out)[0]["stats64"]
        return {
            "rx_packets": st["rx"]["packets"],
            "rx_bytes": st["rx"]["bytes"],
            "tx_packets": st["tx"]["packets"],
            "tx_bytes": st["tx"]["bytes"],
        }

    def ifindex(self, ifname: str) -> int:
        return int(json.loads(self.ip("-j", "link", "show", "dev", ifname).stdout)[0]["ifindex"])

    def mac(self, ifname: str) -> str:
        return str(json.loads(self.ip("-j", "link", "show", "dev", ifname).stdout)[0]["address"])

    def ethtool(self, ifname: str, **features: bool) -> None:
        args = []
        for k, v in features.items():
            args += [k, "on" if v else "off"]
        self.exec("ethtool", "-K", ifname, *args)

    def set_link_u32(self, ifname: str, attr: int, value: int) -> None:
        """Sets one u32 IFLA_* attribute with a raw RTM_NEWLINK (for attributes
        this iproute2 does not know, e.g. IFLA_GSO_IPV4_MAX_SIZE = 63)."""
        idx = self.ifindex(ifname)
        with entered(self.name):
            sk = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        try:
            nla = struct.pack("HHI", 8, attr, value)
            body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, idx, 0, 0) + nla
            hdr = struct.pack("IHHII", 16 + len(body), 16, 0x1 | 0x4, 1, 0)  # NEWLINK, REQ|ACK
            sk.send(hdr + body)
            resp = sk.recv(4096)
            _ln, typ, _fl, _seq, _pid = struct.unpack("IHHII", resp[:16])
            if typ == 2:  # NLMSG_ERROR: 0 is the ACK
                err = struct.unpack("i", resp[16:20])[0]
                if err:
                    raise OSError(-err, f"RTM_NEWLINK {ifname} attr {attr}: {os.strerror(-err)}")
        finally:
            sk.close()

    def kill_procs(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(Exception):
                    p.wait(timeout=10)
        self.procs.clear()

    def delete(self) -> None:
        self.kill_procs()
        delete_netns(self.name)


@dataclass
class Port:
    """One end of a veth pair: its namespace, name, MAC and addresses."""

    ns: Netns
    name: str
    mac: str
    ip4: str | None
    ip6: str | None

    @property
    def ifindex(self) -> int:
        return self.ns.ifindex(self.name)


def veth(
    ns_a: Netns,
    name_a: str,
    ns_b: Netns,
    name_b: str,
    mac_a: str,
    mac_b: str,
    ip4: tuple[str, str] | None,
    ip6: tuple[str, str] | None,
    ipv6: bool = True,
    ifindex: tuple[int, int] | None = None,
) -> tuple[Port, Port]:
    """Creates a veth pair between two namespaces, addresses it and brings it up.

    ip4/ip6 are (address of a, address of b) without prefix length (/24, /64).
    Neighbours are static and ARP is off, so nothing but test traffic crosses.
    """
    idx_a = ["index", str(ifindex[0])] if ifindex else []
    idx_b = ["index", str(ifindex[1])] if ifindex else []
    ns_a.ip(
        "link",
        "add",
        name_a,
        *idx_a,
        "address",
        mac_a,
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        *idx_b,
        "address",
        mac_b,
        "netns",
        ns_b.name,
    )
    ports = []
    for ns, name, mac, other_mac, idx in (
        (ns_a, name_a, mac_a, mac_b, 0),
        (ns_b, name_b, mac_b, mac_a, 1),
    ):
        a4 = ip4[idx] if ip4 else None
        a6 = ip6[idx] if (ip6 and ipv6) else None
        if ipv6:
            ns.sysctl(f"net.ipv6.conf.{name}.accept_dad", 0)
            ns.sysctl(f"net.ipv6.conf.{name}.addr_gen_mode", 1)
            ns.sysctl(f"net.ipv6.conf.{name}.router_solicitations", 0)
        else:
            ns.sysctl(f"net.ipv6.conf.{name}.disable_ipv6", 1)
        ns.ip("link", "set", "dev", name, "arp", "off")
        if a4:
            ns.ip("addr", "add", f"{a4}/24", "dev", name)
        if a6:
            ns.ip("-6", "addr", "add", f"{a6}/64", "dev", name, "nodad")
        ns.ip("link", "set", "dev", name, "up")
        peer4 = ip4[1 - idx] if ip4 else None
        peer6 = ip6[1 - idx] if (ip6 and ipv6) else None
        if peer4:
            ns.ip("neigh", "replace", peer4, "lladdr", other_mac, "dev", name, "nud", "permanent")
        if peer6:
            ns.ip(
                "-6",
                "neigh",
                "replace",
                peer6,
                "lladdr",
                other_mac,
                "dev",
                name,
                "nud",
                "permanent",
            )
        ports.append(Port(ns, name, mac, a4, a6))
    return ports[0], ports[1]


def static_neigh(port: Port, addr: str, mac: str) -> None:
    fam = "-6" if ":" in addr else "-4"
    port.ns.ip(fam, "neigh", "replace", addr, "lladdr", mac, "dev", port.name, "nud", "permanent")


# --------------------------------------------------------------------------- #
# topologies
# --------------------------------------------------------------------------- #


@dataclass
class Pair:
    """Two namespaces joined by one veth pair: a.va <-> b.vb."""

    a: Netns
    b: Netns
    pa: Port
    pb: Port

    def delete(self) -> None:
        for ns in (self.a, self.b):
            ns.delete()


MAC_A = "02:00:c8:00:01:01"
MAC_B = "02:00:c8:00:01:02"


def make_pair(ipv6: bool = True, ifindex: tuple[int, int] | None = None) -> Pair:
    a = Netns.create("a", ipv6=ipv6)
    try:
        b = Netns.create("b", ipv6=ipv6)
    except BaseException:
        a.delete()
        raise
    try:
        pa, pb = veth(
            a,
            "va",
            b,
            "vb",
            MAC_A,
            MAC_B,
            ip4=("10.200.1.1", "10.200.1.2"),
            ip6=("fd00:200:1::1", "fd00:200:1::2"),
            ipv6=ipv6,
            ifindex=ifindex,
        )
    except BaseException:
        a.delete()
        b.delete()
        raise
    return Pair(a, b, pa, pb)


@dataclass
class Router:
    """client.vc <-> router.vr1 | router.vr2 <-> server.vs, router forwards."""

    client: Netns
    router: Netns
    server: Netns
    pc: Port
    pr1: Port
    pr2: Port
    ps: Port

    def delete(self) -> None:
        for ns in (self.client, self.router, self.server):
            ns.delete()


def make_router(ipv6: bool = True) -> Router:
    made: list[Netns] = []
    try:
        for role in ("c", "r", "s"):
            made.append(Netns.create(role, ipv6=ipv6))
        c, r, s = made
        pc, pr1 = veth(
            c,
            "vc",
            r,
            "vr1",
            "02:00:c8:00:02:01",
            "02:00:c8:00:02:02",
            ip4=("10.200.2.1", "10.200.2.2"),
            ip6=("fd00:200:2::1", "fd00:200:2::2"),
            ipv6=ipv6,
        )
        pr2, ps = veth(
            r,
            "vr2",
            s,
            "vs",
            "02:00:c8:00:03:01",
            "02:00:c8:00:03:02",
            ip4=("10.200.3.1", "10.200.3.2"),
            ip6=("fd00:200:3::1", "fd00:200:3::2"),
            ipv6=ipv6,
        )
        r.sysctl("net.ipv4.ip_forward", 1)
        r.sysctl("net.ipv4.conf.all.send_redirects", 0)
        r.sysctl("net.ipv4.conf.default.send_redirects", 0)
        c.ip("route", "add", "default", "via", "10.200.2.2")
        s.ip("route", "add", "default", "via", "10.200.3.1")
        if ipv6:
            r.sysctl("net.ipv6.conf.all.forwarding", 1)
            c.ip("-6", "route", "add", "default", "via", "fd00:200:2::2")
            s.ip("-6", "route", "add", "default", "via", "fd00:200:3::1")
        return Router(c, r, s, pc, pr1, pr2, ps)
    except BaseException:
        for ns in made:
            ns.delete()
        raise


# --------------------------------------------------------------------------- #
# AF_PACKET capture (ground truth for what crossed an interface)
# --------------------------------------------------------------------------- #

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6


@dataclass
class Captured:
    outgoing: bool
    length: int  # full frame length as the tap saw it
    data: bytes  # first bytes of the frame

    def ip(self) -> tuple[int, int, int, bytes, bytes, int, int] | None:
        """(version, total IP length, L4 proto, src, dst, sport, dport) of an untagged frame."""
        d = self.data
        if len(d) < 14:
            return None
        et = struct.unpack("!H", d[12:14])[0]
        off = 14
        if et == 0x0800 and len(d) >= off + 20:
            ihl = (d[off] & 0x0F) * 4
            tot = struct.unpack("!H", d[off + 2 : off + 4])[0]
            proto = d[off + 9]
            src, dst = d[off + 12 : off + 16], d[off + 16 : off + 20]
            l4 = off + ihl
            frag = struct.unpack("!H", d[off + 6 : off + 8])[0] & 0x1FFF
            sp = dp = 0
            if proto in (6, 17) and not frag and len(d) >= l4 + 4:
                sp, dp = struct.unpack("!HH", d[l4 : l4 + 4])
            return 4, tot, proto, src, dst, sp, dp
        if et == 0x86DD and len(d) >= off + 40:
            plen = struct.unpack("!H", d[off + 4 : off + 6])[0]
            proto = d[off + 6]
            src, dst = d[off + 8 : off + 24], d[off + 24 : off + 40]
            l4 = off + 40
            sp = dp = 0
            if proto in (6, 17) and len(d) >= l4 + 4:
                sp, dp = struct.unpack("!HH", d[l4 : l4 + 4])
            return 6, 40 + plen, proto, src, dst, sp, dp
        return None


class Capture:
    """Records every frame crossing `ifname` in namespace `ns` (both directions).

    The tap sees what flowtop's TC hooks see: on ingress before TC, on egress
    at transmit after segmentation of GSO packets the device cannot offload.
    """

    def __init__(self, ns: Netns, ifname: str, snap: int = 128) -> None:
        self.snap = snap
        with entered(ns.name):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.settimeout(0.05)
        self.frames: list[Captured] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        buf = bytearray(self.snap)
        while True:
            try:
                n, _anc, _flags, addr = self.sock.recvmsg_into([buf], 0, socket.MSG_TRUNC)
            except TimeoutError:
                if self._stop.is_set():
                    return
                continue
            except OSError:
                return
            data = bytes(buf[: min(n, self.snap)])
            self.frames.append(Captured(addr[2] == PACKET_OUTGOING, n, data))

    def stop(self) -> list[Captured]:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(timeout=5)
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _packets, drops = struct.unpack("II", raw)
        self.sock.close()
        if drops:
            raise AssertionError(f"capture dropped {drops} frames")
        return self.frames

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5)
            with contextlib.suppress(OSError):
                self.sock.close()


def select(
    frames: list[Captured],
    outgoing: bool,
    src: str,
    dst: str,
    proto: int,
    sport: int | None = None,
    dport: int | None = None,
) -> list[tuple[Captured, int]]:
    """(frame, IP total length) of the captured frames of one flow in one direction."""
    want_src = socket.inet_pton(socket.AF_INET6 if ":" in src else socket.AF_INET, src)
    want_dst = socket.inet_pton(socket.AF_INET6 if ":" in dst else socket.AF_INET, dst)
    out = []
    for f in frames:
        if f.outgoing != outgoing:
            continue
        p = f.ip()
        if p is None:
            continue
        _v, tot, pr, s, d, sp, dp = p
        if pr != proto or s != want_src or d != want_dst:
            continue
        if sport is not None and sp != sport:
            continue
        if dport is not None and dp != dport:
            continue
        out.append((f, tot))
    return out


def ip_lengths(
    frames: list[Captured],
    outgoing: bool,
    src: str,
    dst: str,
    proto: int,
    sport: int | None = None,
    dport: int | None = None,
) -> list[int]:
    """IP total lengths of the captured frames of one flow in one direction."""
    return [tot for _f, tot in select(frames, outgoing, src, dst, proto, sport, dport)]


# --------------------------------------------------------------------------- #
# tc filters
# --------------------------------------------------------------------------- #


def tc_filters(ns: Netns, ifname: str, hook: str) -> list[dict[str, Any]]:
    """Filters on clsact `hook` (ingress/egress): [{'pref', 'kind', 'name'}]."""
    proc = ns.tc("-j", "filter", "show", "dev", ifname, hook, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    seen: dict[tuple[int, str, str], dict[str, Any]] = {}
    for ent in json.loads(proc.stdout):
        opts = ent.get("options") or {}
        name = str(opts.get("bpf_name", ""))
        key = (int(ent.get("pref", 0)), str(ent.get("kind", "")), name)
        if key[1] == "bpf" and not name:
            continue  # the per-priority header line of a bpf filter
        seen[key] = {"pref": key[0], "kind": key[1], "name": name}
    return list(seen.values())


def tcx_programs(ns: Netns, ifname: str, hook: str) -> list[dict[str, Any]]:
    """flowtop's TCX links on `hook`, in run order: [{'prog', 'holders'}]
    (prog: the program's name as the kernel keeps it, 15 characters)."""
    from flowtop.kernel import tcx

    with entered(ns.name):
        found = tcx.tcx_links()
    return [
        {"prog": f.prog_name, "holders": f.holders}
        for f in found
        if f.ifname == ifname and f.direction == hook
    ]


def flowtop_filters(ns: Netns, ifname: str, hook: str) -> list[dict[str, Any]]:
    """flowtop's attachments on `hook`, whichever the mode: its clsact filters
    ({'pref', 'kind': 'bpf', 'name': flowtop_<hook>_<pid>}) and, for each
    process holding one of its TCX links, {'pref': 0, 'kind': 'tcx', 'name':
    flowtop_<hook>_<holder pid>}, so that "attached by this run" and "nothing
    left" read the same in both modes."""
    out = [f for f in tc_filters(ns, ifname, hook) if f["name"].startswith("flowtop_")]
    for link in tcx_programs(ns, ifname, hook):
        holders = link["holders"] or (0,)  # 0: held by nobody visible (pinned)
        out += [{"pref": 0, "kind": "tcx", "name": f"flowtop_{hook}_{pid}"} for pid in holders]
    return out


def foreign_filters(ns: Netns, ifname: str, hook: str) -> list[dict[str, Any]]:
    return [f for f in tc_filters(ns, ifname, hook) if not f["name"].startswith("flowtop_")]
