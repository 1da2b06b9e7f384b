"""flowtop.kernel.rtnl (links, addresses, ingress qdiscs and link events over
rtnetlink, no pyroute2) against what the kernel shows through sysfs, `ip`
and `tc`; and a TCX start that imports pyroute2 only for a device with a
clsact qdisc, where it still sweeps a dead flowtop's clsact filters."""

from __future__ import annotations

import ipaddress
import json
import os
import select
import subprocess
import time
from collections.abc import Iterator

import pytest

from flowtop.kernel import devices, rtnl, tcx

from .dump import RUN_DIR, python
from .netns import Netns, Pair, entered, foreign_filters, tc_filters

pytestmark = pytest.mark.kernel

IFF_UP = 0x1
# The flag bits sysfs shows as the link's (dev->flags); rtnetlink adds the
# operational ones (RUNNING, LOWER_UP, DORMANT) to those.
ADMIN_FLAGS = 0x1 | 0x2 | 0x8 | 0x10 | 0x80 | 0x1000  # UP BROADCAST LOOPBACK P2P NOARP MULTICAST


@pytest.fixture
def ns() -> Iterator[Netns]:
    n = Netns.create("rtnl")
    try:
        yield n
    finally:
        n.delete()


def _devices(ns: Netns) -> None:
    """A veth pair (one end up), a tun (IFF_TUN: no Ethernet header), a tap, a vxlan."""
    ns.ip("link", "add", "rv0", "type", "veth", "peer", "name", "rv1")
    ns.ip("link", "set", "rv0", "up")
    ns.ip("tuntap", "add", "mode", "tun", "name", "rtun0")
    ns.ip("tuntap", "add", "mode", "tap", "name", "rtap0")
    ns.ip("link", "set", "rtun0", "up")
    ns.ip("link", "add", "rvx0", "type", "vxlan", "id", "42", "dstport", "4789", "local",
          "10.9.0.1")  # fmt: skip


def _sysfs(ns: Netns) -> dict[str, tuple[int, int, int]]:
    """name -> (ifindex, flags, type) as /sys/class/net of the namespace shows them."""
    script = (
        'for d in /sys/class/net/*; do echo "${d##*/}" $(cat $d/ifindex $d/flags $d/type); done'
    )
    out: dict[str, tuple[int, int, int]] = {}
    for line in ns.exec("sh", "-c", script).stdout.splitlines():
        name, index, flags, kind = line.split()
        out[name] = (int(index), int(flags, 16), int(kind))
    return out


def test_links_are_the_ones_sysfs_shows(ns: Netns) -> None:
    _devices(ns)
    with entered(ns.name), rtnl.Rtnl() as r:
        links = r.links()
    got = {ln.name: (ln.index, ln.flags & ADMIN_FLAGS, ln.type) for ln in links}
    want = {name: (i, f & ADMIN_FLAGS, t) for name, (i, f, t) in _sysfs(ns).items()}
    assert got == want
    assert set(got) == {"lo", "rv0", "rv1", "rtun0", "rtap0", "rvx0"}
    assert got["rtun0"][2] == 0xFFFE and got["rtap0"][2] == 1 and got["lo"][2] == 772
    up = {ln.name for ln in links if ln.flags & IFF_UP}
    assert up == {"lo", "rv0", "rtun0"}


def test_one_link_by_index_and_a_missing_one(ns: Netns) -> None:
    _devices(ns)
    sysfs = _sysfs(ns)
    with entered(ns.name), rtnl.Rtnl() as r:
        for name, (index, _flags, kind) in sysfs.items():
            link = r.link(index)
            assert link is not None and (link.name, link.type) == (name, kind)
        assert r.link(2**31 - 1) is None
        assert devices.is_l3(sysfs["rtun0"][0], "rtun0", r) is True
        assert devices.is_l3(sysfs["rv0"][0], "rv0", r) is False
    with entered(ns.name):  # without a socket given: one of the calling thread's namespace
        assert devices.link_type(sysfs["rvx0"][0]) == 1


def test_ingress_qdisc_is_clsact_ingress_or_none(ns: Netns) -> None:
    _devices(ns)
    ns.tc("qdisc", "add", "dev", "rv0", "clsact")
    ns.tc("qdisc", "add", "dev", "rv1", "ingress")
    ns.tc("qdisc", "add", "dev", "rtap0", "root", "pfifo")  # a root qdisc is no ingress one
    sysfs = _sysfs(ns)
    with entered(ns.name), rtnl.Rtnl() as r:
        kinds = {name: r.ingress_qdisc(index) for name, (index, _f, _t) in sysfs.items()}
    assert kinds == {
        "lo": None, "rv0": "clsact", "rv1": "ingress", "rtun0": None, "rtap0": None, "rvx0": None
    }  # fmt: skip
    ns.tc("qdisc", "del", "dev", "rv0", "clsact")
    with entered(ns.name), rtnl.Rtnl() as r:
        assert r.ingress_qdisc(sysfs["rv0"][0]) is None


def test_addresses_are_the_ones_ip_shows(ns: Netns) -> None:
    _devices(ns)
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "rv0")
    ns.ip("addr", "add", "fd00:9::1/64", "dev", "rv0")
    ns.ip("addr", "add", "10.9.1.1", "peer", "10.9.1.2/32", "dev", "rv1")  # local, not the peer
    ns.ip("addr", "add", "192.0.2.7/28", "dev", "rtun0")
    want = set()
    for link in json.loads(ns.ip("-j", "addr", "show").stdout):
        for a in link.get("addr_info", []):
            want.add((ipaddress.ip_address(a["local"]), int(a["prefixlen"])))
    with entered(ns.name), rtnl.Rtnl() as r:
        got = {(ipaddress.ip_address(raw), plen) for _fam, raw, plen in r.addresses()}
    assert got == want
    assert (ipaddress.ip_address("10.9.1.1"), 32) in got
    assert (ipaddress.ip_address("fd00:9::1"), 64) in got


def _events_until(
    ev: rtnl.LinkEvents, done: set[tuple[str, str]], timeout: float = 10
) -> list[rtnl.LinkEvent]:
    """Reads events until every (event, name) of done was seen; all of them."""
    seen: list[rtnl.LinkEvent] = []
    end = time.monotonic() + timeout
    while not done <= {(e.event, e.link.name) for e in seen}:
        left = end - time.monotonic()
        assert left > 0, f"missing {done - {(e.event, e.link.name) for e in seen}} in {seen}"
        if select.select([ev], [], [], left)[0]:
            seen += ev.read()
    return seen


def test_link_events_of_their_own_namespace(pair: Pair) -> None:
    """Opened in a, read from here: a's veth pair coming and going (indexes
    as sysfs says), and nothing of b's tun."""
    with entered(pair.a.name):
        ev = rtnl.LinkEvents()
    try:
        pair.b.ip("tuntap", "add", "mode", "tun", "name", "btun0")
        pair.a.ip("link", "add", "ev0", "type", "veth", "peer", "name", "ev1")
        sysfs = _sysfs(pair.a)
        came = _events_until(ev, {("RTM_NEWLINK", "ev0"), ("RTM_NEWLINK", "ev1")})
        assert {e.link.name: e.link.index for e in came if e.link.name.startswith("ev")} == {
            n: sysfs[n][0] for n in ("ev0", "ev1")
        }
        pair.a.ip("link", "set", "ev0", "up")
        up = _events_until(ev, {("RTM_NEWLINK", "ev0")})
        assert any(e.link.flags & IFF_UP for e in up if e.link.name == "ev0")
        pair.a.ip("link", "del", "ev0")  # its peer goes with it
        gone = _events_until(ev, {("RTM_DELLINK", "ev0"), ("RTM_DELLINK", "ev1")})
        assert {e.link.index for e in gone if e.event == "RTM_DELLINK"} == {
            sysfs["ev0"][0],
            sysfs["ev1"][0],
        }
        assert not any(e.link.name == "btun0" for e in came + up + gone)
    finally:
        ev.close()


# What the start imported, told by a wrapper around flowtop.cli.main.
WRAPPER = (
    "import sys; from flowtop.cli import main; rc = main(sys.argv[1:]); "
    "print('pyroute2 imported:', 'pyroute2' in sys.modules, file=sys.stderr); sys.exit(rc)"
)


def _dump(ns: Netns, ifname: str) -> tuple[list[str], bool]:
    """`flowtop dump -i IF --duration 1 --attach tcx` under WRAPPER: its
    stderr lines, and whether pyroute2 was imported."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, python(), "-c", WRAPPER, "dump", "-i", ifname,
         "--duration", "1", "--json", "--attach", "tcx"],
        cwd=RUN_DIR, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 0, lines
    flag = [ln for ln in lines if ln.startswith("pyroute2 imported:")]
    assert len(flag) == 1, lines
    return lines, flag[0].endswith("True")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_tcx_start_imports_pyroute2_only_to_sweep_a_clsact(quiet_pair: Pair) -> None:
    """Without a clsact qdisc on vb a TCX dump never imports pyroute2. With
    one holding a dead flowtop's filters (on both hooks) and a foreign one,
    the dump imports it, removes the dead flowtop's and keeps the foreign."""
    from pyroute2 import IPRoute

    p = quiet_pair
    lines, imported = _dump(p.b, "vb")
    assert not imported, lines
    dead = _dead_pid()
    ifindex = p.b.ifindex("vb")
    prog = tcx._probe_prog()
    with entered(p.b.name):
        ipr = IPRoute()
    try:
        ipr.tc("add", "clsact", ifindex)
        for name, parent in (
            (f"flowtop_ingress_{dead}", 0xFFFFFFF2),
            (f"flowtop_egress_{dead}", 0xFFFFFFF3),
            ("someone_ingress", 0xFFFFFFF2),
        ):
            ipr.tc("add-filter", "bpf", ifindex, fd=prog, name=name, parent=parent,
                   classid=1, direct_action=True, prio=3 if "someone" in name else 1)  # fmt: skip
        names = {f["name"] for h in ("ingress", "egress") for f in tc_filters(p.b, "vb", h)}
        assert names == {f"flowtop_ingress_{dead}", f"flowtop_egress_{dead}", "someone_ingress"}
        lines, imported = _dump(p.b, "vb")
        assert imported, lines
        left = {f["name"] for h in ("ingress", "egress") for f in tc_filters(p.b, "vb", h)}
        assert left == {"someone_ingress"}, lines
        assert [f["name"] for f in foreign_filters(p.b, "vb", "ingress")] == ["someone_ingress"]
    finally:
        ipr.close()
        os.close(prog)


def test_rtnl_socket_is_not_inheritable() -> None:
    """The compiler children must not get it (close-on-exec)."""
    with rtnl.Rtnl() as r:
        assert not os.get_inheritable(r._sock.fileno())
    ev = rtnl.LinkEvents()
    try:
        assert not os.get_inheritable(ev.fileno())
    finally:
        ev.close()
