"""Drop reasons end to end: the real `flowtop dump --json` and `--export-only`
on a router namespace, against drops the tests cause.

Topology (netns.make_router, IPv4 only: no MLD or neighbour discovery
noise): client.vc 10.200.2.1 <-> router.vr1 | router.vr2 <-> server.vs
10.200.3.2; flowtop runs in the router on vr1 and vr2. What the test
causes, each on its own flow, and its ground truth:
- an nftables FORWARD rule dropping UDP to server:7100 (the rule's counter);
- UDP to a port nobody listens on on the router itself (the send count and
  the router's UdpNoPorts);
- strict rp_filter on the router and datagrams from a spoofed source it has
  no route back to (the send count and TcpExtIPReversePathFilter);
- a forwarded flow to a listening server that nothing drops (drops {}).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flowtop.config import CollectorConfig, Config
from flowtop.core.engine import Engine
from flowtop.run.lifecycle import Run

from . import netns
from .dump import Collector, DumpResult
from .exporting import ExportOnly
from .test_drops import _prog_exists, _raw_udp, nstat

pytestmark = pytest.mark.kernel

C4, R1, S4 = "10.200.2.1", "10.200.2.2", "10.200.3.2"
SPOOFED = "10.99.0.1"
N_NFT, N_CLOSED, N_RPF, N_OK = 12, 7, 9, 5
NFT_PORT, CLOSED_PORT, RPF_PORT, OK_PORT = 7100, 9999, 5555, 7300


@pytest.fixture
def router4() -> Iterator[netns.Router]:
    r = netns.make_router(ipv6=False)
    try:
        yield r
    finally:
        r.delete()


def _udp(ns: netns.Netns, bind: tuple[str, int] = ("0.0.0.0", 0)) -> socket.socket:
    with netns.entered(ns.name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(bind)
    return s


def _nft_counter(ns: netns.Netns) -> int:
    rules = json.loads(ns.exec("nft", "-j", "list", "table", "inet", "ftv").stdout)
    return int(
        next(
            e["counter"]["packets"]
            for item in rules["nftables"] if "rule" in item
            for e in item["rule"]["expr"] if "counter" in e
        )
    )  # fmt: skip


def _setup(r: netns.Router) -> None:
    r.router.exec("nft", "add", "table", "inet", "ftv")
    r.router.exec("nft", "add", "chain", "inet", "ftv", "fchain",
                  "{ type filter hook forward priority 0 ; }")  # fmt: skip
    r.router.exec("nft", "add", "rule", "inet", "ftv", "fchain", "udp", "dport", str(NFT_PORT),
                  "counter", "drop")  # fmt: skip
    r.router.sysctl("net.ipv4.conf.all.rp_filter", 1)
    r.router.sysctl("net.ipv4.conf.vr1.rp_filter", 1)


def _cause(r: netns.Router) -> dict[str, Any]:
    """Sends every kind of traffic once; returns the ports and kernel counters."""
    server = _udp(r.server, ("0.0.0.0", OK_PORT))
    server.settimeout(2)
    s = _udp(r.client)
    with netns.entered(r.client.name):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        before = nstat(r.router, "UdpNoPorts", "TcpExtIPReversePathFilter")
        for _ in range(N_NFT):
            s.sendto(b"F" * 40, (S4, NFT_PORT))
        for _ in range(N_CLOSED):
            s.sendto(b"C" * 30, (R1, CLOSED_PORT))
        for _ in range(N_RPF):
            raw.sendto(_raw_udp(SPOOFED, R1, 4444, RPF_PORT, b"s" * 30), (R1, 0))
        for _ in range(N_OK):
            s.sendto(b"K" * 20, (S4, OK_PORT))
        received = sum(1 for _ in range(N_OK) if server.recv(100))
        time.sleep(0.5)
        after = nstat(r.router, "UdpNoPorts", "TcpExtIPReversePathFilter")
        return {
            "sport": s.getsockname()[1],
            "received": received,
            "noports": after["UdpNoPorts"] - before["UdpNoPorts"],
            "rpf": after["TcpExtIPReversePathFilter"] - before["TcpExtIPReversePathFilter"],
        }
    finally:
        raw.close()
        s.close()
        server.close()


def test_dump_json_drops_per_flow(router4: netns.Router) -> None:
    r = router4
    _setup(r)
    col = Collector(r.router, ["vr1", "vr2"], extra_args=["--interval", "0.2"]).start()
    try:
        col.wait_ready()
        got = _cause(r)
        time.sleep(1.0)  # a few intervals: every drop drained and joined
    finally:
        res: DumpResult = col.stop()
    sport = got["sport"]
    assert got["received"] == N_OK
    assert _nft_counter(r.router) == N_NFT
    assert got["noports"] == N_CLOSED
    assert got["rpf"] == N_RPF

    def flow(**m: Any) -> dict[str, Any]:
        f = res.flow(iface="vr1", direction="ingress", proto=17, **m)
        assert f is not None, (m, res.stdout[-3000:])
        return f

    nft = flow(src=C4, dst=S4, sport=sport, dport=NFT_PORT)
    closed = flow(src=C4, dst=R1, sport=sport, dport=CLOSED_PORT)
    rpf = flow(src=SPOOFED, dst=R1, sport=4444, dport=RPF_PORT)
    ok_in = flow(src=C4, dst=S4, sport=sport, dport=OK_PORT)
    # TC ingress counted each packet before the kernel dropped it.
    assert (nft["packets"], closed["packets"], rpf["packets"]) == (N_NFT, N_CLOSED, N_RPF)
    assert nft["drops"] == {"NETFILTER_DROP": N_NFT}
    assert closed["drops"] == {"NO_SOCKET": N_CLOSED}
    assert rpf["drops"] == {"IP_RPFILTER": N_RPF}
    assert ok_in["packets"] == N_OK and ok_in["drops"] == {}
    # Every other flow (the OK flow out of vr2, the router's ICMP errors) has none.
    dropped = {(f["src"], f["dport"]) for f in res.flows if f["drops"]}
    assert dropped == {(C4, NFT_PORT), (C4, CLOSED_PORT), (SPOOFED, RPF_PORT)}
    summary = [x for x in res.records if x.get("type") == "drops"]
    assert summary == [
        {
            "type": "drops",
            "by_reason": {"NETFILTER_DROP": N_NFT, "IP_RPFILTER": N_RPF, "NO_SOCKET": N_CLOSED},
            "no_flow": 0,
            "evicted": 0,
        }
    ]
    assert res.stats.get("drops_map_full") == 0 and res.stats.get("drops_unreadable") == 0
    # The verdict blames this box, not the network, naming the reasons.
    health = {(h["scope"], h["group"]): h for h in res.records if h.get("type") == "health"}
    vr1 = health[("interface", "vr1")]
    assert vr1["verdict"] == "degraded"
    assert vr1["reason"] == (
        f"dropped on this box: NETFILTER_DROP, {N_NFT} packets (and IP_RPFILTER, {N_RPF}) "
        "and 1 more reasons"
    )
    assert ("interface", "vr2") not in health  # nothing dropped there, no TCP
    spoofed = [
        h for (scope, _g), h in health.items() if scope == "remote" and "RPFILTER" in h["reason"]
    ]
    assert [h["reason"] for h in spoofed] == [f"dropped on this box: IP_RPFILTER, {N_RPF} packets"]


def test_dump_text_has_a_drops_column(router4: netns.Router) -> None:
    r = router4
    _setup(r)
    # The text table: the same command without --json (Collector always adds it).
    proc = r.router.popen(
        [*_cmd(), "dump", "-i", "vr1", "-i", "vr2", "--duration", "60", "--interval", "0.2"],
        cwd=str(_run_dir()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_ready(proc)
        got = _cause(r)
        time.sleep(1.0)
    finally:
        proc.send_signal(2)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    lines = out.splitlines()
    header = lines[0]
    assert "DROPS" in header.split()
    # DROPS is right-aligned and ends where its header does.
    end = header.index("DROPS") + len("DROPS")
    flows = lines[1 : lines.index("")]
    cell = {}
    for ln in flows:
        cells = ln.split()
        if cells[:2] == ["vr1", "in"] and cells[3].endswith(f":{got['sport']}"):
            cell[cells[4]] = ln[:end].split()[-1] if len(ln) >= end and ln[end - 1] != " " else ""
    assert cell == {
        f"{S4}:{NFT_PORT}": str(N_NFT),
        f"{R1}:{CLOSED_PORT}": str(N_CLOSED),
        f"{S4}:{OK_PORT}": "",
    }


def _cmd() -> list[str]:
    from .dump import python

    return [python(), "-m", "flowtop"]


def _run_dir() -> Any:
    from .dump import RUN_DIR

    return RUN_DIR


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 40.0) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "collecting on" in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError("flowtop dump not ready")


def test_prometheus_drops_total(router4: netns.Router) -> None:
    r = router4
    _setup(r)
    with ExportOnly(r.router, ["vr1", "vr2"]) as exp:
        got = _cause(r)
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            text = exp.scrape()
            if f'flowtop_drops_total{{reason="NETFILTER_DROP"}} {N_NFT}.0' in text and (
                f'flowtop_drops_total{{reason="IP_RPFILTER"}} {N_RPF}.0' in text
            ):
                break
            time.sleep(0.3)
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    series = {
        ln.split(" ")[0]: float(ln.split(" ")[1])
        for ln in text.splitlines()
        if ln.startswith("flowtop_drops_total{")
    }
    assert series == {
        'flowtop_drops_total{reason="IP_RPFILTER"}': float(N_RPF),
        'flowtop_drops_total{reason="NETFILTER_DROP"}': float(N_NFT),
        'flowtop_drops_total{reason="NO_SOCKET"}': float(N_CLOSED),
    }
    assert 'flowtop_drops_uncounted_total{cause="map_full"} 0.0' in text
    assert got["rpf"] == N_RPF and _nft_counter(r.router) == N_NFT


# -- the engine in this process: the watch list follows the attached interfaces ----------


def _steps(engine: Engine, n: int = 3) -> None:
    for _ in range(n):
        time.sleep(0.15)
        engine.step()


def test_watch_follows_reselect_and_closing_detaches(router4: netns.Router) -> None:
    """Watching vr2 only, a FORWARD drop on vr1 is not counted; after a reselect
    that adds vr1 it is, on vr1's flow row; closing the run detaches the
    drop program. With `[collector] drops = false` there is no drop program."""
    r = router4
    _setup(r)
    c = CollectorConfig(interfaces=("vr2",), sockops=False, owners=False, interval=0.1)
    with netns.entered(r.router.name):
        run = Run(Config(collector=c)).start()
    prog_id = None
    s = _udp(r.client)
    try:
        with run:
            engine = run.engine
            kernel = run.collector
            assert kernel.drops is not None and engine.drops is not None
            prog_id = kernel.drops.prog_id
            for _ in range(4):
                s.sendto(b"F" * 40, (S4, NFT_PORT))
            _steps(engine)
            assert engine.drops.totals() == {}
            kernel.reselect(["vr1", "vr2"])
            for _ in range(N_NFT):
                s.sendto(b"F" * 40, (S4, NFT_PORT))
            _steps(engine)
            assert engine.drops.totals() == {"NETFILTER_DROP": N_NFT}
            t = engine.table
            rows = t.live_rows()
            keys = t.keys_at(rows)
            mine = rows[(keys["dport"] == NFT_PORT) & (keys["sport"] == s.getsockname()[1])]
            assert len(mine) == 1
            assert int(t.column("drop_packets", mine)[0]) == N_NFT
            assert int(t.column("packets", mine)[0]) == N_NFT  # TC on vr1 since the reselect
        assert _nft_counter(r.router) == 4 + N_NFT
        assert prog_id is not None and not _prog_exists(prog_id)
        off = CollectorConfig(interfaces=("vr1",), sockops=False, owners=False, drops=False)
        with netns.entered(r.router.name):
            run2 = Run(Config(collector=off)).start()
        with run2:
            assert run2.collector.drops is None and run2.engine.drops is None
    finally:
        s.close()


def test_egress_drop_before_tc_is_on_no_flow(router4: netns.Router) -> None:
    """A forwarded packet whose next hop never answers ARP is dropped
    (NEIGH_FAILED) on vr2 before TC egress there saw it: vr2 has no flow for
    it (no row is made), the drop counts as on no flow; its flow on vr1
    ingress, which TC counted, has no drop of its own."""
    r, n, ghost = router4, 4, "10.200.3.77"
    r.router.ip("link", "set", "dev", "vr2", "arp", "on")
    for key, value in (("mcast_solicit", 1), ("ucast_solicit", 0), ("app_solicit", 0),
                       ("retrans_time_ms", 100)):  # fmt: skip
        r.router.sysctl(f"net.ipv4.neigh.vr2.{key}", value)
    col = Collector(r.router, ["vr1", "vr2"], extra_args=["--interval", "0.2"]).start()
    s = _udp(r.client)
    try:
        col.wait_ready()
        for _ in range(n):
            s.sendto(b"N" * 40, (ghost, 7200))
        sport = s.getsockname()[1]
        time.sleep(2.5)  # ARP gives up after ~0.1 s; a few intervals after that
    finally:
        s.close()
        res = col.stop()
    inbound = res.flow(iface="vr1", direction="ingress", src=C4, dst=ghost, sport=sport, dport=7200)
    assert inbound is not None and inbound["packets"] == n and inbound["drops"] == {}
    assert res.find(iface="vr2", dst=ghost) == []
    (summary,) = [x for x in res.records if x.get("type") == "drops"]
    assert summary == {
        "type": "drops",
        "by_reason": {"NEIGH_FAILED": n},
        "no_flow": n,
        "evicted": 0,
    }
