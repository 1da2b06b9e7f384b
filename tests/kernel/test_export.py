"""`flowtop --export-only` on a namespace pair, against nfcapd/nfdump and promtool.

Namespace a runs flowtop on va (10.200.1.1); namespace b (vb, 10.200.1.2)
runs nfcapd, so the export itself crosses the measured interface.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .dump import REPO, Collector, _Reader, python
from .netns import Netns, Pair, entered, flowtop_filters

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        shutil.which("nfcapd") is None or shutil.which("nfdump") is None,
        reason="nfcapd/nfdump not installed",
    ),
]
A, B = "10.200.1.1", "10.200.1.2"
SINK = 9999
IPFIX_PORT = 4739
PROM_PORT = 19477


def _wait_bound(ns: Netns, port: int, udp: bool = True) -> None:
    deadline = time.monotonic() + 10
    flag = "-uln" if udp else "-tln"
    while f":{port} " not in ns.exec("ss", flag, check=False).stdout:
        assert time.monotonic() < deadline, f"nothing listens on {port} in {ns.name}"
        time.sleep(0.05)


class _Exporter:
    """A running `flowtop --export-only` with its stderr read by a thread."""

    def __init__(self, ns: Netns, *args: str) -> None:
        self.proc = ns.popen(
            [python(), "-m", "flowtop", "--export-only", *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.reader = _Reader(self.proc.stderr, self.ready)
        self.reader.start()
        deadline = time.monotonic() + 40
        while not self.ready.wait(0.05):
            assert self.proc.poll() is None, self.stderr
            assert time.monotonic() < deadline, self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self.reader.lines)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def _send(p: Pair, flows: int, per_flow: int, payload: int) -> int:
    """UDP a -> b:SINK from `flows` source ports; returns IP bytes sent."""
    with entered(p.b.name):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind((B, SINK))
    socks = []
    with entered(p.a.name):
        for _ in range(flows):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((A, 0))
            socks.append(s)
    try:
        for _ in range(per_flow):
            for s in socks:
                s.sendto(b"x" * payload, (B, SINK))
            time.sleep(0.001)
    finally:
        for s in socks:
            s.close()
        sink.close()
    return flows * per_flow * (20 + 8 + payload)


def _stop(exp: _Exporter, sig: int = signal.SIGTERM) -> tuple[int, float, str]:
    t0 = time.monotonic()
    exp.proc.send_signal(sig)
    rc = exp.proc.wait(timeout=15)
    took = time.monotonic() - t0
    exp.reader.join(timeout=5)
    return rc, took, exp.stderr


def _nfdump(workdir: Path) -> list[dict[str, str]]:
    files = [p for p in workdir.iterdir() if p.name.startswith("nfcapd.2")]
    rows: list[dict[str, str]] = []
    for f in files:
        out = subprocess.run(
            ["nfdump", "-r", str(f), "-N", "-o", "csv"],
            capture_output=True, text=True, timeout=60, check=True,
            env={**os.environ, "TZ": "UTC"},
        ).stdout  # fmt: skip
        rows += list(csv.DictReader(io.StringIO(out.split("\nSummary\n")[0])))
    return rows


def test_live_export_matches_dump_and_loses_nothing_on_sigterm(
    quiet_pair: Pair, tmp_path: Path
) -> None:
    p = quiet_pair
    log = tmp_path / "nfcapd.log"
    with log.open("w") as out:
        nfcapd = p.b.popen(
            ["nfcapd", "-p", str(IPFIX_PORT), "-b", B, "-w", str(tmp_path), "-t", "3600"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_bound(p.b, IPFIX_PORT)
    dump = Collector(p.a, ["va"]).start()
    exporter = _Exporter(
        p.a, "-i", "va", "--ipfix", f"{B}:{IPFIX_PORT}", "--prometheus", str(PROM_PORT)
    )
    dump.wait_ready()
    flows, per_flow, payload = 40, 50, 200
    sent_bytes = _send(p, flows, per_flow, payload)

    # A scrape under traffic: promtool-clean, bounded series.
    time.sleep(1.2)
    with entered(p.a.name):
        body = urllib.request.urlopen(f"http://127.0.0.1:{PROM_PORT}/metrics", timeout=5).read()
    text = body.decode()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'flowtop_flow_packets_total{direction="egress",ifname="va",proto="udp"}' in text

    result = dump.stop()
    rc, took, err = _stop(exporter)  # flows still active: SIGTERM must flush them
    assert rc == 0, err
    assert took < 2.0, f"SIGTERM took {took:.2f}s:\n{err}"
    assert "Traceback" not in err
    time.sleep(0.5)
    nfcapd.send_signal(signal.SIGTERM)
    nfcapd.wait(10)
    nlog = log.read_text()
    assert "Sequence Errors: 0" in nlog, nlog

    rows = _nfdump(tmp_path)
    ours = [r for r in rows if r["sa"] == A and r["dp"] == str(SINK)]
    assert sum(int(r["ipkt"]) for r in ours) == flows * per_flow
    assert sum(int(r["ibyt"]) for r in ours) == sent_bytes
    # The same flows, with the same counts, as flowtop dump saw them.
    by_port = {}
    for r in ours:
        key = int(r["sp"])
        pk, by = by_port.get(key, (0, 0))
        by_port[key] = (pk + int(r["ipkt"]), by + int(r["ibyt"]))
    dumped = {
        f["sport"]: (f["packets"], f["bytes"])
        for f in result.find(iface="va", direction="egress", proto=17, src=A, dst=B)
        if f["dport"] == SINK
    }
    assert by_port == dumped
    # flowtop's own export socket is not measured.
    assert not [r for r in rows if r["dp"] == str(IPFIX_PORT) or r["sp"] == str(IPFIX_PORT)]
    for hook in ("ingress", "egress"):
        assert flowtop_filters(p.a, "va", hook) == []


def test_sighup_reload_switches_collector_and_keeps_flow_state(
    quiet_pair: Pair, tmp_path: Path
) -> None:
    p = quiet_pair
    port1, port2 = 14739, 24739
    conf = tmp_path / "flowtop.toml"

    def write_conf(port: int) -> None:
        conf.write_text(f'[interfaces]\ninclude = ["va"]\n[ipfix]\ncollectors = ["{B}:{port}"]\n')
        os.chmod(conf, 0o600)

    write_conf(port1)
    logs = []
    caps = []
    for port in (port1, port2):
        d = tmp_path / str(port)
        d.mkdir()
        lf = (tmp_path / f"{port}.log").open("w")
        logs.append(lf)
        caps.append(
            (
                d,
                p.b.popen(
                    ["nfcapd", "-p", str(port), "-b", B, "-w", str(d), "-t", "3600"],
                    stdout=lf,
                    stderr=subprocess.STDOUT,
                ),
            )
        )
        _wait_bound(p.b, port)
    exporter = _Exporter(p.a, "--config", str(conf))
    first = _send(p, 5, 20, 100)
    write_conf(port2)
    exporter.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    # A bad edit: logged, the running config kept.
    conf.write_text("[ipfix]\ncolectors = []\n")
    os.chmod(conf, 0o600)
    exporter.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    second = _send(p, 5, 20, 100)
    rc, _took, err = _stop(exporter)
    assert rc == 0, err
    assert "config reloaded" in err
    assert "config reload failed, keeping the running config: unknown config key" in err
    time.sleep(0.5)
    for _d, proc in caps:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    for lf in logs:
        lf.close()
    rows1 = [r for r in _nfdump(caps[0][0]) if r["dp"] == str(SINK)]
    rows2 = [r for r in _nfdump(caps[1][0]) if r["dp"] == str(SINK)]
    # Nothing ended before the reload (timeouts are long): every byte, from
    # before and after the reload, went to the new collector at shutdown.
    assert rows1 == []
    assert sum(int(r["ibyt"]) for r in rows2) == first + second


def test_bad_config_is_one_line_and_nonzero(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[prometheus]\nlisten = 'nope'\n")
    os.chmod(conf, 0o600)
    proc = subprocess.run(
        [python(), "-m", "flowtop", "--export-only", "--config", str(conf)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "flowtop: error: prometheus.listen: expected [ADDRESS:]PORT, not 'nope'"
    ]


def test_live_view_source_exports_in_the_background(quiet_pair: Pair) -> None:
    """What the TUI runs on (LiveSource) feeds IPFIX and Prometheus as well."""
    from export.collectors import UdpCollector, decode_all  # tests/ is on sys.path

    from flowtop.config import CollectorConfig, Config, IpfixConfig, PrometheusConfig
    from flowtop.query.types import ViewQuery
    from flowtop.run.lifecycle import Run
    from flowtop.run.sources import LiveSource

    p = quiet_pair
    with entered(p.a.name):
        col = UdpCollector()
        with col:
            cfg = Config(
                collector=CollectorConfig(interfaces=("va",), interval=0.2),
                ipfix=IpfixConfig(collectors=(("127.0.0.1", col.port),)),
                prometheus=PrometheusConfig(listen=("127.0.0.1", PROM_PORT + 1)),
            )
            run = Run(cfg, outputs=True).start()
            src = LiveSource(run)
            try:
                sent = _send(p, 3, 10, 100)
                for _ in range(3):
                    src.step()
                snap = src.snapshot(ViewQuery(filter=f"dst {B} and dport {SINK}"))
                assert sum(r.bytes for r in snap.rows) == sent
                body = urllib.request.urlopen(
                    f"http://127.0.0.1:{PROM_PORT + 1}/metrics", timeout=5
                ).read()
                assert (
                    b'flowtop_flow_bytes_total{direction="egress",ifname="va",proto="udp"}' in body
                )
            finally:
                src.close()
                run.close()
            col.wait_flows(3)
            _msgs, flows = decode_all(col.messages())
    ours = [f for f in flows if f.get(11) == SINK]
    assert sum(int(f[1]) for f in ours) == sent  # octetDeltaCount
    for hook in ("ingress", "egress"):
        assert flowtop_filters(p.a, "va", hook) == []
