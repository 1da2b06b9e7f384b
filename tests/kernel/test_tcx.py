"""TCX attachment (flowtop/kernel/tcx.py) on the real kernel: attach and
count, head position, coexistence with foreign TCX programs and clsact
filters on the same hooks, detach, kill -9 and restart, fds and children,
`detach --all` of a live holder, interface removal, namespaces.

Ground truth: datagrams sent and received, `ip -s link`, the foreign
programs' own counters, `bpftool link show` (global, by prog id) and the
kernel's per-hook query.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flowtop.errors import AttachError, ConfigError
from flowtop.kernel import layout, tcx
from flowtop.kernel.program import ProgramOptions, TcProgram

from . import netns
from .dump import RUN_DIR, Collector, python
from .expect import drain, udp_client, udp_sink
from .netns import Netns, Pair

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
PORT, DROP_PORT, BACK_PORT = 7400, 7401, 7402
HOLDER = [python(), str(RUN_DIR / "tests" / "kernel" / "tcx_holder.py")]
V4 = layout.FAMILIES.index("ipv4")

FOREIGN_C = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

/* Packets per slot: 0 TCX ingress, 1 TCX egress, 2 cls_bpf ingress,
 * 3 cls_bpf egress, 4 dropped by ftt_drop. Nobody deletes; the test unloads. */
BPF_PERCPU_ARRAY(hits, u64, 5);

static __always_inline void hit(int i)
{
	u64 *v = hits.lookup(&i);
	if (v)
		(*v)++;
}

/* UDP destination port of an untagged IPv4 frame, or -1. */
static __always_inline int udp_dport(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = data + sizeof(*eth) + sizeof(*ip);

	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return -1;
	return bpf_ntohs(udp->dest);
}

int ftt_tcx_in(struct __sk_buff *skb) { hit(0); return -1; }  /* TCX_NEXT */
int ftt_tcx_eg(struct __sk_buff *skb) { hit(1); return -1; }
int ftt_cls_in(struct __sk_buff *skb) { hit(2); return -1; }  /* TC_ACT_UNSPEC */
int ftt_cls_eg(struct __sk_buff *skb) { hit(3); return -1; }

int ftt_drop(struct __sk_buff *skb)
{
	if (udp_dport(skb) == DROP_PORT) {
		hit(4);
		return 2;  /* TCX_DROP (TC_ACT_SHOT) */
	}
	return -1;
}

int ftt_pass(struct __sk_buff *skb) { return 0; }  /* TCX_PASS: ends the chain */
"""

SLOTS = ("tcx_in", "tcx_eg", "cls_in", "cls_eg", "dropped")


class Foreign:
    """Someone else's programs on vb: TCX links held by the test process and a
    clsact with cls_bpf filters (prio 1) made with pyroute2, as other tools do."""

    def __init__(self, ns: Netns, ifname: str) -> None:
        import bcc

        self.ns, self.ifname = ns, ifname
        self.bpf = bcc.BPF(text=FOREIGN_C.encode(), cflags=[f"-DDROP_PORT={DROP_PORT}"])
        self.fds = {
            n: self.bpf.load_func(n.encode(), bcc.BPF.SCHED_CLS).fd
            for n in (
                "ftt_tcx_in",
                "ftt_tcx_eg",
                "ftt_cls_in",
                "ftt_cls_eg",
                "ftt_drop",
                "ftt_pass",
            )
        }
        self.links: dict[str, int] = {}
        self.ipr: Any = None
        self.ifindex = ns.ifindex(ifname)

    def prog_id(self, name: str) -> int:
        return _prog_id(self.fds[name])

    def tcx(self, name: str, direction: str, flags: int = 0) -> None:
        with netns.entered(self.ns.name):
            self.links[name] = tcx.link_create(
                self.fds[name], self.ifindex, tcx.ATTACH_TYPES[direction], flags
            )

    def untcx(self, name: str) -> None:
        os.close(self.links.pop(name))

    def cls(self) -> None:
        from pyroute2 import IPRoute

        with netns.entered(self.ns.name):
            self.ipr = IPRoute()
        self.ipr.tc("add", "clsact", self.ifindex)
        for name, parent in (("ftt_cls_in", 0xFFFFFFF2), ("ftt_cls_eg", 0xFFFFFFF3)):
            self.ipr.tc(
                "add-filter",
                "bpf",
                self.ifindex,
                fd=self.fds[name],
                name=name,
                parent=parent,
                classid=1,
                direct_action=True,
                prio=1,
            )

    def counts(self) -> dict[str, int]:
        hits = self.bpf[b"hits"]
        return {s: int(sum(hits[ct.c_int(i)])) for i, s in enumerate(SLOTS)}

    def close(self) -> None:
        for fd in self.links.values():
            os.close(fd)
        self.links.clear()
        if self.ipr is not None:
            self.ipr.close()
        self.bpf.cleanup()


def _prog_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise AssertionError(f"fd {fd} is no bpf program")


def bpftool_links() -> dict[int, int]:
    """link id -> prog id of every bpf link on the machine (`bpftool link show`)."""
    out = netns.run(["bpftool", "link", "show", "--json"]).stdout
    return {int(x["id"]): int(x["prog_id"]) for x in json.loads(out or "[]")}


def chain(ns: Netns, ifindex: int, direction: str) -> list[int]:
    """Prog ids on one TCX hook of a device of ns, in run order."""
    with netns.entered(ns.name):
        return [p for p, _l in tcx.query_hook(ifindex, tcx.ATTACH_TYPES[direction])]


def ours(ns: Netns) -> list[tcx.FoundLink]:
    with netns.entered(ns.name):
        return tcx.tcx_links()


def link_exists(link_id: int) -> bool:
    try:
        fd = tcx.link_fd_by_id(link_id)
    except OSError as exc:
        assert exc.errno == errno.ENOENT, exc
        return False
    os.close(fd)
    return True


def wait_gone(link_ids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(link_exists(i) for i in link_ids):
            return True
        time.sleep(0.02)
    return False


class Traffic:
    """UDP a -> b to PORT (passes) and DROP_PORT (a foreign program may drop
    it), and b -> a to BACK_PORT: vb's ingress and egress."""

    def __init__(self, p: Pair) -> None:
        self.p = p
        self.sink = udp_sink(p.b, B4, PORT)
        self.dsink = udp_sink(p.b, B4, DROP_PORT)
        self.back = udp_sink(p.a, A4, BACK_PORT)
        self.ca = udp_client(p.a, B4, 47400)
        self.cb = udp_client(p.b, A4, 47401)

    def run(self, n: int, k: int, m: int) -> dict[str, int]:
        """n to PORT, k to DROP_PORT, m back; what arrived and `ip -s link` deltas."""
        before = self.p.b.link_stats("vb")
        for _ in range(n):
            self.ca.sendto(b"t" * 64, (B4, PORT))
        for _ in range(k):
            self.ca.sendto(b"d" * 64, (B4, DROP_PORT))
        for _ in range(m):
            self.cb.sendto(b"b" * 64, (A4, BACK_PORT))
        got = {"port": drain(self.sink, n), "back": drain(self.back, m)}
        got["drop_port"] = drain(self.dsink, k, timeout=0.5) if k else 0
        after = self.p.b.link_stats("vb")
        got["rx"] = after["rx_packets"] - before["rx_packets"]
        got["tx"] = after["tx_packets"] - before["tx_packets"]
        return got

    def close(self) -> None:
        for s in (self.sink, self.dsink, self.back, self.ca, self.cb):
            s.close()


@pytest.fixture(scope="module")
def program() -> Iterator[TcProgram]:
    """flowtop's own TC programs, compiled once for the module."""
    prog = TcProgram(ProgramOptions())
    try:
        yield prog
    finally:
        prog.close()


def attacher_for(prog: TcProgram) -> tcx.TcxAttacher:
    return tcx.TcxAttacher({("ingress", False): prog.ingress.fd, ("egress", False): prog.egress.fd})


def flowtop_counts(prog: TcProgram, ifindex: int) -> tuple[int, int]:
    c = prog.iface_counters([ifindex])
    return (
        c.get((ifindex, layout.DIR_INGRESS, V4), (0, 0))[0],
        c.get((ifindex, layout.DIR_EGRESS, V4), (0, 0))[0],
    )


# --------------------------------------------------------------------------- #


@pytest.mark.exclusive  # no new bpf link anywhere: every link on the machine
def test_probe_and_mode() -> None:
    """This kernel (6.6+) has TCX; the probe attaches nothing (no new link
    anywhere); auto picks TCX, tc stays tc, a bad mode is a ConfigError."""
    links = bpftool_links()
    ok, why = tcx.tcx_supported()
    assert ok, why
    assert bpftool_links() == links
    assert tcx.resolve_attach_mode("auto")[0] == "tcx"
    assert tcx.resolve_attach_mode("tcx")[0] == "tcx"
    assert tcx.resolve_attach_mode("tc")[0] == "tc"
    with pytest.raises(ConfigError, match="--attach must be one of"):
        tcx.resolve_attach_mode("xdp")


def test_attach_counts_and_detach(quiet_pair: Pair, program: TcProgram) -> None:
    """TcxAttacher on vb: a link per hook at the head, O_CLOEXEC fds, listed
    as ours with this process as holder; flowtop counts every packet both
    ways (== sent == ip -s link); after detach nothing of ours is left
    (bpftool, the hooks, the listing) and the program stops counting."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    with netns.entered(p.b.name):
        att = attacher_for(program)
        program.reset_iface(idx)
        a = att.attach(idx, "vb")
    traffic = Traffic(p)
    try:
        assert [link.direction for link in a.links] == ["ingress", "egress"]
        for link in a.links:
            assert fcntl.fcntl(link.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert chain(p.b, idx, link.direction) == [link.prog_id]
        bt = bpftool_links()
        assert {bt.get(link.link_id) for link in a.links} == {
            _prog_id(program.ingress.fd),
            _prog_id(program.egress.fd),
        }
        found = ours(p.b)
        assert [(f.ifname, f.direction, f.link_id, f.holders) for f in found] == [
            ("vb", link.direction, link.link_id, (os.getpid(),)) for link in a.links
        ]
        assert [f.prog_name for f in found] == ["flowtop_ingress", "flowtop_egress"]

        got = traffic.run(200, 0, 150)
        assert (got["port"], got["back"], got["rx"], got["tx"]) == (200, 150, 200, 150), got
        assert flowtop_counts(program, idx) == (200, 150)

        ids = [link.link_id for link in a.links]
        att.detach(idx)
        assert att.attached == {}
        assert not any(i in bpftool_links() for i in ids)
        assert chain(p.b, idx, "ingress") == chain(p.b, idx, "egress") == []
        assert ours(p.b) == []
        got = traffic.run(50, 0, 50)
        assert (got["port"], got["back"]) == (50, 50)
        assert flowtop_counts(program, idx) == (200, 150), "detached program still runs"
    finally:
        traffic.close()
        att.close()


def test_coexistence_with_foreign_tcx_and_clsact(quiet_pair: Pair, program: TcProgram) -> None:
    """A foreign counting TCX program, a foreign TCX program that drops UDP to
    DROP_PORT, and foreign cls_bpf counting filters on both vb hooks. Before,
    during and after flowtop: the foreign ones count every packet they are
    given (TCX: all; clsact: all but the dropped), the drop still happens,
    flowtop (first in the chain) counts everything including the dropped,
    and flowtop's detach leaves every foreign program and filter in place."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    foreign = Foreign(p.b, "vb")
    traffic = Traffic(p)
    att = None
    try:
        foreign.tcx("ftt_tcx_in", "ingress")
        foreign.tcx("ftt_drop", "ingress")
        foreign.tcx("ftt_tcx_eg", "egress")
        foreign.cls()
        n, k, m = 120, 30, 90

        def phase(want_flowtop: tuple[int, int]) -> None:
            before, ft0 = foreign.counts(), flowtop_counts(program, idx)
            got = traffic.run(n, k, m)
            after, ft1 = foreign.counts(), flowtop_counts(program, idx)
            delta = {s: after[s] - before[s] for s in SLOTS}
            assert got == {"port": n, "back": m, "drop_port": 0, "rx": n + k, "tx": m}, got
            assert delta == {
                "tcx_in": n + k,
                "tcx_eg": m,
                "cls_in": n,  # the dropped ones end at ftt_drop, before clsact
                "cls_eg": m,
                "dropped": k,
            }, delta
            assert (ft1[0] - ft0[0], ft1[1] - ft0[1]) == want_flowtop

        foreign_in = [foreign.prog_id("ftt_tcx_in"), foreign.prog_id("ftt_drop")]
        foreign_eg = [foreign.prog_id("ftt_tcx_eg")]
        phase((0, 0))
        with netns.entered(p.b.name):
            att = attacher_for(program)
            a = att.attach(idx, "vb")
        ft_in, ft_eg = (link.prog_id for link in a.links)
        assert chain(p.b, idx, "ingress") == [ft_in, *foreign_in]
        assert chain(p.b, idx, "egress") == [ft_eg, *foreign_eg]
        phase((n + k, m))
        att.detach(idx)
        assert chain(p.b, idx, "ingress") == foreign_in
        assert chain(p.b, idx, "egress") == foreign_eg
        names = {
            (f["kind"], f["name"])
            for h in ("ingress", "egress")
            for f in netns.tc_filters(p.b, "vb", h)
        }
        assert {("bpf", "ftt_cls_in"), ("bpf", "ftt_cls_eg")} <= names, names
        phase((0, 0))
    finally:
        traffic.close()
        if att is not None:
            att.close()
        foreign.close()


def test_foreign_counts_exact_across_attach_detach_cycles(
    quiet_pair: Pair, program: TcProgram
) -> None:
    """While a sender streams datagrams into vb, flowtop is attached and
    detached 10 times: the foreign TCX program and the foreign cls_bpf filter
    each count exactly what crossed vb (== sent == ip -s link rx), i.e. the
    chain swaps lose and duplicate nothing for them; flowtop counted a part."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    foreign = Foreign(p.b, "vb")
    client = udp_client(p.a, B4, 47403)
    sink = udp_sink(p.b, B4, 7403)  # never read: once full it drops, without ICMP
    att = None
    try:
        foreign.tcx("ftt_tcx_in", "ingress")
        foreign.cls()
        with netns.entered(p.b.name):
            att = attacher_for(program)
        program.reset_iface(idx)
        n = 6000
        done = threading.Event()

        def send() -> None:
            try:
                for i in range(n):
                    client.sendto(b"c" * 32, (B4, 7403))
                    if i % 20 == 0:
                        time.sleep(0.001)  # >= 0.3 s in all: several cycles
            finally:
                done.set()

        c0, rx0 = foreign.counts(), p.b.link_stats("vb")["rx_packets"]
        sender = threading.Thread(target=send)
        sender.start()
        cycles = 0
        while not done.is_set() and cycles < 10:
            with netns.entered(p.b.name):
                att.attach(idx, "vb")
            time.sleep(0.02)
            att.detach(idx)
            cycles += 1
            time.sleep(0.02)
        sender.join(timeout=60)
        time.sleep(0.2)
        c1, rx1 = foreign.counts(), p.b.link_stats("vb")["rx_packets"]
        assert cycles >= 3, f"the sender finished after {cycles} cycles"
        assert rx1 - rx0 == n
        assert (c1["tcx_in"] - c0["tcx_in"], c1["cls_in"] - c0["cls_in"]) == (n, n)
        seen = flowtop_counts(program, idx)[0]
        assert 0 < seen < n, seen
    finally:
        client.close()
        sink.close()
        if att is not None:
            att.close()
        foreign.close()


def test_head_position_beats_a_terminal_program(quiet_pair: Pair, program: TcProgram) -> None:
    """A foreign TCX program at the head that returns TCX_PASS ends the chain
    (the clsact filter behind it sees nothing). flowtop attached afterwards
    goes in front of it and sees every packet; the PASS verdict still holds
    (clsact still sees nothing, every datagram is delivered)."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    foreign = Foreign(p.b, "vb")
    traffic = Traffic(p)
    att = None
    try:
        foreign.tcx("ftt_pass", "ingress", tcx.BPF_F_BEFORE)
        foreign.cls()
        c0 = foreign.counts()
        got = traffic.run(40, 0, 0)
        assert (got["port"], foreign.counts()["cls_in"] - c0["cls_in"]) == (40, 0)
        with netns.entered(p.b.name):
            att = attacher_for(program)
            program.reset_iface(idx)
            a = att.attach(idx, "vb")
        assert chain(p.b, idx, "ingress") == [a.links[0].prog_id, foreign.prog_id("ftt_pass")]
        c1 = foreign.counts()
        got = traffic.run(60, 0, 0)
        assert got["port"] == 60 and got["rx"] == 60, got
        assert foreign.counts()["cls_in"] - c1["cls_in"] == 0
        assert flowtop_counts(program, idx)[0] == 60
    finally:
        traffic.close()
        if att is not None:
            att.close()
        foreign.close()


class Holder:
    """tests/kernel/tcx_holder.py in a namespace."""

    def __init__(self, ns: Netns, ifname: str, *flags: str) -> None:
        self.proc = ns.popen(
            [*HOLDER, ifname, *flags],
            cwd=RUN_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"holder did not attach:\n{self.proc.stderr.read()}")
        self.ready: dict[str, Any] = json.loads(line)
        assert self.ready["pid"] == self.proc.pid  # `ip netns exec` execs, same pid

    @property
    def links(self) -> list[int]:
        return list(self.ready["links"])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> dict[str, int]:
        """SIGTERM: its counters, then it detaches and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_kill9_leaves_no_link_and_restart_attaches(quiet_pair: Pair) -> None:
    """A holder process (flowtop's programs, TcxAttacher) is killed with
    SIGKILL: its links are gone at once (no id resolves, nothing on the
    hooks, nothing listed), the foreign TCX program and clsact filter count on
    undisturbed; a new holder attaches at the head and counts exactly."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    foreign = Foreign(p.b, "vb")
    traffic = Traffic(p)
    try:
        foreign.tcx("ftt_tcx_in", "ingress")
        foreign.cls()
        h1 = Holder(p.b, "vb")
        assert h1.ready["cloexec"] == [True, True]
        assert [f.holders for f in ours(p.b)] == [(h1.proc.pid,), (h1.proc.pid,)]
        assert chain(p.b, idx, "ingress")[0] == h1.ready["progs"][0]
        h1.kill9()
        assert wait_gone(h1.links), "links outlived their process"
        assert ours(p.b) == []
        assert chain(p.b, idx, "ingress") == [foreign.prog_id("ftt_tcx_in")]
        assert chain(p.b, idx, "egress") == []
        c0 = foreign.counts()
        got = traffic.run(30, 0, 0)
        c1 = foreign.counts()
        assert got["port"] == 30
        assert (c1["tcx_in"] - c0["tcx_in"], c1["cls_in"] - c0["cls_in"]) == (30, 30)

        h2 = Holder(p.b, "vb")
        assert chain(p.b, idx, "ingress") == [h2.ready["progs"][0], foreign.prog_id("ftt_tcx_in")]
        got = traffic.run(70, 0, 40)
        assert (got["port"], got["back"]) == (70, 40)
        assert h2.stop() == {"ingress": 70, "egress": 40}
        assert wait_gone(h2.links)
        assert ours(p.b) == []
        assert chain(p.b, idx, "ingress") == [foreign.prog_id("ftt_tcx_in")]
    finally:
        traffic.close()
        foreign.close()


def test_children_and_fds(quiet_pair: Pair) -> None:
    """O_CLOEXEC: a child started with subprocess (even close_fds=False) holds
    no link. A child forked without exec inherits the link fds: after kill -9
    of the parent it keeps the links attached (holder = child) until it
    exits, then they go."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    h = Holder(p.b, "vb", "--fork-child", "--spawn")
    child, spawned = int(h.ready["child"]), int(h.ready["spawned"])
    try:
        kinds = set()
        for fd in os.listdir(f"/proc/{spawned}/fd"):
            with contextlib.suppress(OSError):
                kinds.add(os.readlink(f"/proc/{spawned}/fd/{fd}"))
        assert "anon_inode:bpf_link" not in kinds, kinds
        assert [f.holders for f in ours(p.b)] == [tuple(sorted((h.proc.pid, child)))] * 2
        h.kill9()
        time.sleep(0.2)
        assert all(link_exists(i) for i in h.links)
        assert [f.holders for f in ours(p.b)] == [(child,), (child,)]
        assert chain(p.b, idx, "ingress") == [h.ready["progs"][0]]
        _kill(child)
        assert wait_gone(h.links)
        assert ours(p.b) == []
    finally:
        for pid in (child, spawned):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_detach_all_of_a_live_holder(quiet_pair: Pair) -> None:
    """remove_links() leaves a live holder's links alone; everyone=True
    detaches them (BPF_LINK_DETACH through an fd by id) while the holder
    still holds its defunct fds, never a foreign link; the holder then
    detaches and exits cleanly."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    foreign = Foreign(p.b, "vb")
    try:
        foreign.tcx("ftt_tcx_in", "ingress")
        h = Holder(p.b, "vb")
        with netns.entered(p.b.name):
            assert tcx.remove_links() == []
            removed = tcx.remove_links(everyone=True)
        assert sorted(f.link_id for f in removed) == sorted(h.links)
        assert chain(p.b, idx, "ingress") == [foreign.prog_id("ftt_tcx_in")]
        assert chain(p.b, idx, "egress") == []
        assert all(link_exists(i) for i in h.links)  # defunct, still held
        assert ours(p.b) == []
        h.stop()
        assert wait_gone(h.links)
        assert chain(p.b, idx, "ingress") == [foreign.prog_id("ftt_tcx_in")]
    finally:
        foreign.close()


def test_interface_removed_then_forget(quiet_pair: Pair, program: TcProgram) -> None:
    """Deleting the device detaches the links (info shows ifindex 0); forget()
    closes our fds and the links are freed."""
    p = quiet_pair
    idx = p.b.ifindex("vb")
    with netns.entered(p.b.name):
        att = attacher_for(program)
        a = att.attach(idx, "vb")
    try:
        ids = [link.link_id for link in a.links]
        p.b.ip("link", "del", "vb")
        assert [tcx.link_info(link.fd).ifindex for link in a.links] == [0, 0]
        att.forget(idx)
        assert att.attached == {}
        assert wait_gone(ids)
    finally:
        att.close()


def test_program_per_device_kind(quiet_pair: Pair, program: TcProgram) -> None:
    """The program fd comes from (direction, l3), l3 from the is_l3 callable,
    asked inside the attacher's namespace: a device said to be L3 gets the l3
    pair (here foreign programs stand in for them). Without an l3 program
    for it, attaching fails with one line and leaves nothing behind."""
    p = quiet_pair
    foreign = Foreign(p.b, "vb")
    asked: list[tuple[int, str, tuple[int, int]]] = []
    ns_b = os.stat(f"/run/netns/{p.b.name}")

    def is_l3(ifindex: int, ifname: str) -> bool:
        st = os.stat("/proc/thread-self/ns/net")
        asked.append((ifindex, ifname, (st.st_dev, st.st_ino)))
        return True

    fds = {
        ("ingress", False): program.ingress.fd,
        ("egress", False): program.egress.fd,
        ("ingress", True): foreign.fds["ftt_tcx_in"],
        ("egress", True): foreign.fds["ftt_tcx_eg"],
    }
    idx = p.b.ifindex("vb")
    with netns.entered(p.b.name):
        att = tcx.TcxAttacher(fds, is_l3=is_l3)
        partial = tcx.TcxAttacher(
            {k: v for k, v in fds.items() if k != ("egress", True)}, is_l3=is_l3
        )
    try:
        a = att.attach(idx, "vb")
        assert a.l3 and asked == [(idx, "vb", (ns_b.st_dev, ns_b.st_ino))]
        assert chain(p.b, idx, "ingress") == [foreign.prog_id("ftt_tcx_in")]
        assert chain(p.b, idx, "egress") == [foreign.prog_id("ftt_tcx_eg")]
        att.detach(idx)
        with pytest.raises(AttachError, match="no egress program for L3 devices"):
            partial.attach(idx, "vb")
        assert partial.attached == {}
        assert chain(p.b, idx, "ingress") == chain(p.b, idx, "egress") == []
    finally:
        att.close()
        partial.close()
        foreign.close()


def test_attacher_keeps_its_namespace(program: TcProgram) -> None:
    """An attacher made in namespace b attaches to b's device even when called
    from a thread in the root namespace (the ifindex is unused there, so a
    wrong namespace would fail rather than attach elsewhere)."""
    p = netns.make_pair(ipv6=False, ifindex=(47101, 47102))
    try:
        with pytest.raises(OSError):
            socket.if_indextoname(47102)  # not a device of the root namespace
        with netns.entered(p.b.name):
            att = attacher_for(program)
        try:
            a = att.attach(47102, "vb")
            assert chain(p.b, 47102, "ingress") == [a.links[0].prog_id]
            assert [f.link_id for f in ours(p.b)] == [link.link_id for link in a.links]
        finally:
            att.close()
        assert chain(p.b, 47102, "ingress") == []
    finally:
        p.delete()


def _has_attach_option() -> bool:
    proc = subprocess.run(
        [python(), "-m", "flowtop", "dump", "--help"],
        cwd=RUN_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--attach" in proc.stdout


def test_cli_dump_tcx_kill9_and_restart(quiet_pair: Pair) -> None:
    """`flowtop dump --attach tcx`: its links are at the head with the
    collector as holder; kill -9 leaves none; a restart counts exactly.
    Runs once the CLI has --attach (the lead wires it)."""
    if not _has_attach_option():
        pytest.skip("flowtop dump has no --attach option yet")
    p = quiet_pair
    idx = p.b.ifindex("vb")
    c1 = Collector(p.b, ["vb"], extra_args=["--attach", "tcx"]).start()
    c1.wait_ready()
    found = ours(p.b)
    assert [f.holders for f in found] == [(c1.pid,), (c1.pid,)], found
    assert chain(p.b, idx, "ingress")[0] == found[0].prog_id
    c1.kill9()
    assert wait_gone([f.link_id for f in found])
    assert ours(p.b) == []
    c2 = Collector(p.b, ["vb"], extra_args=["--attach", "tcx"]).start()
    c2.wait_ready()
    traffic = Traffic(p)
    try:
        got = traffic.run(25, 0, 0)
        assert got["port"] == 25
        time.sleep(0.3)
    finally:
        traffic.close()
        res = c2.stop()
    f = res.flow(iface="vb", direction="ingress", proto=17, src=A4, dst=B4, sport=47400, dport=PORT)
    assert f is not None and f["packets"] == 25, f
    assert ours(p.b) == []
