"""Zones and monitors end to end, on a router that forwards between zones.

client (vc) 10.200.2.1 <-> (vr1) router (vr2) <-> (vs) server  10.200.3.2
                                 router (vr3) <-> (vs2) server2 10.200.4.2

Labels put the client and the first server in zone a and the second server
in zone b. flowtop runs in the router namespace twice at once, on all three
legs, from one config file: `--export-only` (Prometheus) and `dump --json`.

- Zones: UDP datagrams of known sizes within zone a (client <-> server) and
  across (client <-> server2), both ways. The router sees every packet on
  two legs; the zone pair figures count each once: the Prometheus series
  and the dump's ingress flow lines equal the IP bytes the senders sent
  (datagrams x (payload + 28)), checked against what the sinks received.
- Monitors: to-s1 (client -> server) and to-s2 (client -> zone b) over paced
  TCP to both servers, with nftables in server2 dropping 5% of the TCP
  packets it receives: to-s2 is degraded with a retransmit reason, to-s1
  healthy; udp-b (UDP only) has exactly the UDP bytes each way.
- promtool check metrics is clean.

And on an end host (a namespace pair): the host zone names the host's own
address, the dump's per-pair bytes are the senders'.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from . import impair
from .dump import Collector, DumpResult, export_only, run_dump
from .expect import drain, udp_client, udp_sink
from .netns import Netns, Pair, Router, entered
from .test_health import PacedSender, Sink

pytestmark = pytest.mark.kernel

CLIENT, S1, S2 = "10.200.2.1", "10.200.3.2", "10.200.4.2"
LABELS = """
clients   10.200.2.0/24  zone=a
servers1  10.200.3.0/24  zone=a
servers2  10.200.4.0/24  zone=b
"""
MONITORS = """
[[monitor]]
name = "to-s1"
local = "net 10.200.2.0/24"
remote = "net 10.200.3.0/24"

[[monitor]]
name = "to-s2"
local = "net 10.200.2.0/24"
remote = "zone b"

[[monitor]]
name = "udp-b"
local = "udp and label clients"
remote = "zone b"
"""
UDP_HDR = 28  # IPv4 + UDP headers: the IP bytes of a datagram are payload + 28
# (datagrams, payload bytes) of each zone flow
A_TO_A = (60, 1000)  # client -> server
A_FROM_A = (20, 500)  # server -> client
A_TO_B = (40, 800)  # client -> server2
B_TO_A = (30, 300)  # server2 -> client


def write_config(tmp_path: Path, prom_port: int | None) -> str:
    labels = tmp_path / "labels"
    labels.write_text(LABELS)
    text = f'[enrich]\nlabels = "{labels}"\nhost_zone = "core"\n'
    if prom_port is not None:
        text += f'\n[prometheus]\nlisten = "127.0.0.1:{prom_port}"\n'
    path = tmp_path / ("export.toml" if prom_port is not None else "dump.toml")
    path.write_text(text + MONITORS)
    path.chmod(0o600)
    return str(path)


def free_port(ns: Netns) -> int:
    with entered(ns.name):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def scrape(ns: Netns, port: int) -> str:
    with entered(ns.name):
        return str(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric: sorted label pairs -> value."""
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2))))
            out[labels] = float(m.group(3))
    return out


def zone_bytes(text: str, metric: str = "flowtop_zone_bytes_total") -> dict[tuple[str, str], float]:
    got = series(text, metric)
    return {(dict(k)["src_zone"], dict(k)["dst_zone"]): v for k, v in got.items()}


def monitor_values(text: str, metric: str) -> dict[tuple[str, ...], float]:
    return {tuple(v for _, v in k): val for k, val in series(text, metric).items()}


def udp_exchange(r: Router, s2: Netns) -> None:
    """The zone traffic: each flow's datagrams, all received (no loss on veth)."""
    c_sink = udp_sink(r.client, CLIENT, 7000)
    s1_sink = udp_sink(r.server, S1, 7001)
    s2_sink = udp_sink(s2, S2, 7002)
    c = udp_client(r.client, CLIENT, 7100)
    from1 = udp_client(r.server, S1, 7101)
    from2 = udp_client(s2, S2, 7102)
    try:
        for sock, dst, port, (n, size), sink in (
            (c, S1, 7001, A_TO_A, s1_sink),
            (from1, CLIENT, 7000, A_FROM_A, c_sink),
            (c, S2, 7002, A_TO_B, s2_sink),
            (from2, CLIENT, 7000, B_TO_A, c_sink),
        ):
            for _ in range(n):
                sock.sendto(b"z" * size, (dst, port))
                time.sleep(0.002)
            assert drain(sink, n) == n, f"{dst}:{port} lost datagrams"
    finally:
        for s in (c_sink, s1_sink, s2_sink, c, from1, from2):
            s.close()


def expected_zones() -> dict[tuple[str, str], int]:
    def ip(n_size: tuple[int, int]) -> int:
        return n_size[0] * (n_size[1] + UDP_HDR)

    return {("a", "a"): ip(A_TO_A) + ip(A_FROM_A), ("a", "b"): ip(A_TO_B), ("b", "a"): ip(B_TO_A)}


def wait_scrape(ns: Netns, port: int, cond: object, limit: float) -> str:
    deadline = time.monotonic() + limit
    text = ""
    while time.monotonic() < deadline:
        text = scrape(ns, port)
        if cond(text):  # type: ignore[operator]
            return text
        time.sleep(0.5)
    shown = "\n".join(ln for ln in text.splitlines() if "_zone_" in ln or "monitor" in ln)
    pytest.fail(f"not within {limit:g} s; the last scrape's zone and monitor lines:\n{shown}")


def test_zone_pairs_and_monitors_on_a_router(router: Router, tmp_path: Path) -> None:
    r = router
    s2, _pr3, _ps2 = impair.add_server(r)
    legs = ("vr1", "vr2", "vr3")
    senders: list[PacedSender] = []
    exp = None
    dump = None
    try:
        prom = free_port(r.router)
        args = ["--config", write_config(tmp_path, prom)]
        for leg in legs:
            args += ["-i", leg]
        exp, exp_err, exp_ready = export_only(r.router, *args)
        dump = Collector(r.router, legs, ("--config", write_config(tmp_path, None))).start()
        dump.wait_ready()
        assert exp_ready.wait(40), "".join(exp_err.lines)

        # -- zones: exact bytes per pair, each forwarded packet once -----------------
        udp_exchange(r, s2)
        want = expected_zones()

        def zones_in(text: str) -> bool:
            got = zone_bytes(text)
            return all(got.get(p) == float(b) for p, b in want.items())

        text = wait_scrape(r.router, prom, zones_in, 10)
        got = zone_bytes(text)
        # nothing else between the labelled zones (no TCP yet): exactly these
        assert {p: v for p, v in got.items() if set(p) <= {"a", "b"}} == {
            p: float(b) for p, b in want.items()
        }, got
        pk = zone_bytes(text, "flowtop_zone_packets_total")
        assert pk[("a", "b")] == A_TO_B[0] and pk[("b", "a")] == B_TO_A[0], pk
        assert pk[("a", "a")] == A_TO_A[0] + A_FROM_A[0], pk
        udp_b = monitor_values(text, "flowtop_monitor_bytes_total")
        assert udp_b[("local_to_remote", "udp-b")] == A_TO_B[0] * (A_TO_B[1] + UDP_HDR), udp_b
        assert udp_b[("remote_to_local", "udp-b")] == B_TO_A[0] * (B_TO_A[1] + UDP_HDR), udp_b

        # -- monitors: loss towards server2 only ------------------------------------
        sinks = [Sink(r.server, S1, 5001), Sink(s2, S2, 5002)]
        senders = [PacedSender(r.client, S1, 5001), PacedSender(r.client, S2, 5002)]
        with impair.loss(s2, 5, hook="input"):

            def verdicts(text: str) -> bool:
                deg = monitor_values(text, "flowtop_monitor_degraded")
                rtt = monitor_values(text, "flowtop_monitor_rtt_seconds")
                return deg.get(("to-s2",)) == 1 and ("to-s1", "0.5") in rtt

            text = wait_scrape(r.router, prom, verdicts, 25)
            deg = monitor_values(text, "flowtop_monitor_degraded")
            assert deg == {("to-s1",): 0.0, ("to-s2",): 1.0, ("udp-b",): 0.0}, deg
            # to-s1 has no loss on its path: what its sender itself sent
            # again, at most (none, unless a starved scheduler made it probe
            # or time out: a real retransmission)
            sent_again = senders[0].total_retrans()
            ratio = monitor_values(text, "flowtop_monitor_retransmit_ratio")
            assert ratio[("to-s2",)] > 0.01, ratio
            assert ratio[("to-s1",)] == 0.0 or sent_again > 0, (ratio, sent_again)
            retr = monitor_values(text, "flowtop_monitor_retransmits_total")
            assert retr[("to-s2",)] > 0 and retr[("to-s1",)] <= sent_again, (retr, sent_again)
            assert impair.dropped(s2) > 0
            check = subprocess.run(
                ["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                timeout=30,
            )  # fmt: skip
            assert check.returncode == 0, check.stdout + check.stderr
            # The dump ends while the loss goes on: its verdicts are the same.
            result = dump.stop()
            s1_sent_again = senders[0].total_retrans()
        for s in senders:
            s.stop.set()
        for t in (*senders, *sinks):
            t.join(10)
        check_dump(result, s1_sent_again)
    finally:
        for s in senders:
            s.stop.set()
        if dump is not None and dump.proc is not None and dump.proc.poll() is None:
            dump.proc.kill()
            dump.proc.wait(timeout=10)
        if exp is not None and exp.poll() is None:
            exp.send_signal(signal.SIGTERM)
            try:
                exp.wait(timeout=15)
            except subprocess.TimeoutExpired:
                exp.kill()
                exp.wait(timeout=10)
        s2.delete()


def check_dump(result: DumpResult, s1_sent_again: int) -> None:
    """The dump's flow lines carry the zones; its UDP bytes per pair, on the
    ingress legs (each packet once), are the senders'; its monitor lines
    (s1_sent_again: what to-s1's sender sent again by the dump's end)."""
    udp = [f for f in result.flows if f["proto"] == 17 and f["src_zone"] in ("a", "b")]
    per: dict[str, dict[tuple[str, str], int]] = {"ingress": {}, "egress": {}}
    for f in udp:
        pair = (f["src_zone"], f["dst_zone"])
        per[f["direction"]][pair] = per[f["direction"]].get(pair, 0) + f["bytes"]
    assert per["ingress"] == expected_zones(), per
    assert per["egress"] == expected_zones(), per  # the other leg: the same packets
    for f in result.flows:
        if f["src"] == CLIENT:
            assert f["src_zone"] == "a"
        if f["dst"] == S2:
            assert f["dst_zone"] == "b"
    mons = {m["name"]: m for m in result.records if m.get("type") == "monitor"}
    assert list(mons) == ["to-s1", "to-s2", "udp-b"], json.dumps(mons)[:2000]
    bad, ok, udp_b = mons["to-s2"], mons["to-s1"], mons["udp-b"]
    assert bad["verdict"] == "degraded" and "retransmits" in bad["reason"], bad
    assert bad["retransmits_total"] > 0, bad
    assert ok["verdict"] == "healthy" and ok["reason"] == "", ok
    assert ok["retransmits_total"] <= s1_sent_again and ok["rtt_p50_us"] is not None, (
        ok,
        s1_sent_again,
    )

    # A monitor's bytes each way are its flows' on the leg they came in by
    # (each packet once), the same run's flow lines summed: exactly.
    def ingress(src: str, dst: str) -> tuple[int, int]:
        recs = [
            f for f in result.flows
            if f["direction"] == "ingress" and f["src"].startswith(src) and f["dst"].startswith(dst)
        ]  # fmt: skip
        return sum(f["bytes"] for f in recs), sum(f["packets"] for f in recs)

    for m, far in ((bad, "10.200.4."), (ok, "10.200.3.")):
        up, down = ingress("10.200.2.", far), ingress(far, "10.200.2.")
        assert up[0] > 100_000 and down[0] > 0, (up, down)  # the paced TCP went through
        assert (m["local_to_remote_bytes"], m["local_to_remote_packets"]) == up, m
        assert (m["remote_to_local_bytes"], m["remote_to_local_packets"]) == down, m
    assert udp_b["local_to_remote_bytes"] == A_TO_B[0] * (A_TO_B[1] + UDP_HDR), udp_b
    assert udp_b["remote_to_local_bytes"] == B_TO_A[0] * (B_TO_A[1] + UDP_HDR), udp_b
    assert udp_b["local_to_remote_packets"] == A_TO_B[0], udp_b
    # its busiest conversations: the TCP ones to server2 are not UDP; the UDP one is there
    assert bad["top"] and {t["dst"] for t in bad["top"]} | {t["src"] for t in bad["top"]} >= {S2}
    assert udp_b["top"] and all(t["proto"] == "udp" for t in udp_b["top"]), udp_b["top"]


def test_host_zone_on_an_end_host(pair: Pair, tmp_path: Path) -> None:
    """On an end host the host zone names this host's own addresses (found
    from its interfaces) when no label does: a.va 10.200.1.1 is zone "edge"
    by [enrich] host_zone, b 10.200.1.2 zone "dc" by its label. Each
    datagram is one flow record here (egress what a sends, ingress what it
    receives): the dump's bytes per zone pair are the senders'."""
    labels = tmp_path / "labels"
    labels.write_text("peer 10.200.1.2 zone=dc\n")
    cfg = tmp_path / "host.toml"
    cfg.write_text(f'[enrich]\nlabels = "{labels}"\nhost_zone = "edge"\n')
    cfg.chmod(0o600)
    a_addr, b_addr = "10.200.1.1", "10.200.1.2"
    sent = {("edge", "dc"): (25, 700), ("dc", "edge"): (15, 90)}

    def traffic() -> None:
        a_sink, b_sink = udp_sink(pair.a, a_addr, 7200), udp_sink(pair.b, b_addr, 7201)
        a, b = udp_client(pair.a, a_addr, 7300), udp_client(pair.b, b_addr, 7301)
        try:
            for sock, dst, port, (n, size), sink in (
                (a, b_addr, 7201, sent[("edge", "dc")], b_sink),
                (b, a_addr, 7200, sent[("dc", "edge")], a_sink),
            ):
                for _ in range(n):
                    sock.sendto(b"h" * size, (dst, port))
                assert drain(sink, n) == n
        finally:
            for s in (a_sink, b_sink, a, b):
                s.close()

    result = run_dump(pair.a, ["va"], traffic, extra_args=("--config", str(cfg)), settle=1.2)
    per: dict[tuple[str, str], int] = {}
    for f in result.flows:
        if f["proto"] == 17:
            pair_ = (f["src_zone"], f["dst_zone"])
            per[pair_] = per.get(pair_, 0) + f["bytes"]
    assert per == {p: n * (size + UDP_HDR) for p, (n, size) in sent.items()}, per
