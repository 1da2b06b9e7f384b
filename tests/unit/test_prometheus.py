"""Prometheus exposition: content, bounded series, promtool, the HTTP listener."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import numpy as np
import pytest
from prometheus_client import generate_latest

from flowtop.core.model import CollectorHealth, InterfaceCounters
from flowtop.errors import ConfigError
from flowtop.export.prometheus import FlowMetrics, MetricsServer
from flowtop.kernel import layout
from flowtop.kernel.collector import Drain


def drain(n: int, ifindex: int = 2, proto: int = 6) -> Drain:
    k = np.zeros(n, dtype=layout.FLOW_KEY)
    k["ifindex"] = ifindex
    k["direction"] = np.arange(n) % 2
    k["proto"] = proto
    k["sport"] = np.arange(n)
    s = np.zeros(n, dtype=layout.FLOW_STATS)
    s["packets"] = 2
    s["bytes"] = 100
    return Drain([(k, s)], 0, 1.0)


def exposition(m: FlowMetrics) -> str:
    from prometheus_client import CollectorRegistry

    from flowtop.export.prometheus import FlowtopCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(FlowtopCollector(m))
    return generate_latest(reg).decode()


def published(m: FlowMetrics) -> FlowMetrics:
    m.publish(
        {2: "eth1", 3: "eth2"},
        [InterfaceCounters(2, "eth1", "ipv4", 10, 1000, 20, 2000)],
        active_flows=7,
        health=CollectorHealth(kernel={"flow_map_full": 3, "lost_packets": 9}, forced_evictions=1),
        poll_seconds=0.012,
        polls=5,
        exporter={"records_sent": 40, "records_not_sent": 2, "errors": 1},
    )
    return m


def test_counters_accumulate_across_drains() -> None:
    m = FlowMetrics()
    m.add_drain(drain(10))
    m.add_drain(drain(4))
    text = exposition(published(m))
    assert 'flowtop_flow_bytes_total{direction="ingress",ifname="eth1",proto="tcp"} 700.0' in text
    assert 'flowtop_flow_packets_total{direction="egress",ifname="eth1",proto="tcp"} 14.0' in text
    assert 'flowtop_interface_rx_bytes_total{family="ipv4",ifname="eth1"} 1000.0' in text
    assert "flowtop_kernel_flow_map_full_total 3.0" in text
    assert "flowtop_kernel_lost_packets_total 9.0" in text
    assert "flowtop_forced_evictions_total 1.0" in text
    assert "flowtop_active_flows 7.0" in text
    assert 'flowtop_exporter_records_total{outcome="not_sent"} 2.0' in text
    assert 'flowtop_errors_total{subsystem="exporter"} 1.0' in text
    assert 'flowtop_build_info{version="' in text


def test_series_are_capped_with_an_other_bucket() -> None:
    m = FlowMetrics(max_series=10)
    for proto in range(1, 60):
        m.add_drain(drain(2, ifindex=2, proto=proto))
    text = exposition(published(m))
    series = [ln for ln in text.splitlines() if ln.startswith("flowtop_flow_bytes_total{")]
    assert len(series) == 10
    other = [ln for ln in series if 'proto="other"' in ln]
    assert len(other) == 1
    total = sum(float(ln.rsplit(" ", 1)[1]) for ln in series)
    assert total == 59 * 2 * 100  # nothing lost to the cap


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_exposition() -> None:
    m = FlowMetrics()
    m.add_drain(drain(50))
    text = exposition(published(m))
    p = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


def test_http_listener_serves_and_port_in_use_is_one_error() -> None:
    m = published(FlowMetrics())
    srv = MetricsServer(m, "127.0.0.1", 0)
    try:
        port = srv.address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"flowtop_active_flows 7.0" in body
        with pytest.raises(ConfigError, match=f"cannot listen for Prometheus on 127.0.0.1:{port}"):
            MetricsServer(m, "127.0.0.1", port)
    finally:
        srv.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_listener(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    srv = MetricsServer(published(FlowMetrics()), "127.0.0.1", 0, str(cert), str(key))
    try:
        port = srv.address[1]
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        body = urllib.request.urlopen(
            f"https://127.0.0.1:{port}/metrics", timeout=5, context=ctx
        ).read()
        assert b"flowtop_active_flows 7.0" in body
        with pytest.raises(OSError):  # plain HTTP to a TLS listener gets nothing
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        srv.close()


def test_bad_tls_files_are_one_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="Prometheus TLS"):
        MetricsServer(published(FlowMetrics()), "127.0.0.1", 0, str(junk), str(junk))


def test_tcp_health_metrics() -> None:
    from flowtop.core.tcphealth import HealthGroup, TcpUpdate

    m = FlowMetrics()
    upd = TcpUpdate(
        rows=np.arange(4),
        ifindex=np.array([2, 2, 2, 3], dtype=np.uint32),
        fresh_rtt=np.array([True, True, False, True]),
        rtt_us=np.array([800, 30_000, 5_000, 3_000_000], dtype=np.uint32),
        d_retrans=np.array([1, 0, 4, 2]),
        d_segs=np.array([10, 0, 40, 20]),
        d_rto=np.array([0, 0, 1, 0]),
        remote=np.zeros(4, "V16"),
        remote_ver=np.full(4, 4, np.uint8),
        conn=np.arange(4),
    )
    m.add_tcp(upd)
    m.add_tcp(upd)
    bad = HealthGroup(
        "remote", "AS64500", "degraded", "RTT 4.0x baseline", 4e4, 5e4, 1e4, 0.0, 0, 0, 0
    )
    ok = HealthGroup("interface", "eth1", "healthy", "", 1e3, 1e3, 1e3, 0.0, 0, 0, 0)
    m.publish({2: "eth1", 3: "eth2"}, [], 0, CollectorHealth(), 0.0, 1, None, [bad, ok])
    text = exposition(m)
    # eth1: 0.8 ms and 30 ms, twice; the non-fresh 5 ms sample is not observed again.
    assert 'flowtop_tcp_rtt_seconds_bucket{ifname="eth1",le="0.001"} 2.0' in text
    assert 'flowtop_tcp_rtt_seconds_bucket{ifname="eth1",le="0.02"} 2.0' in text
    assert 'flowtop_tcp_rtt_seconds_bucket{ifname="eth1",le="0.05"} 4.0' in text
    assert 'flowtop_tcp_rtt_seconds_count{ifname="eth1"} 4.0' in text
    assert 'flowtop_tcp_rtt_seconds_bucket{ifname="eth2",le="2"} 0.0' in text
    assert 'flowtop_tcp_rtt_seconds_bucket{ifname="eth2",le="+Inf"} 2.0' in text
    assert 'flowtop_tcp_retransmits_total{ifname="eth1"} 10.0' in text
    assert 'flowtop_tcp_rto_total{ifname="eth1"} 2.0' in text
    assert 'flowtop_health_degraded{group="AS64500",scope="remote"} 1.0' in text
    assert 'flowtop_health_degraded{group="eth1",scope="interface"} 0.0' in text
    assert 'flowtop_health_groups{verdict="degraded"} 1.0' in text
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_remote_bytes_are_bounded() -> None:
    m = FlowMetrics(max_series=10)
    n = 50
    m.add_remote(
        np.zeros(n, np.int64),
        np.arange(64500, 64500 + n),
        np.array(["US"] * n, dtype=object),
        np.full(n, 100),
    )
    m.publish({}, [], 0, CollectorHealth(), 0.0, 1)
    text = exposition(m)
    lines = [ln for ln in text.splitlines() if ln.startswith("flowtop_remote_bytes_total{")]
    assert len(lines) == 10
    assert (
        'flowtop_remote_bytes_total{asn="other",country="other",direction="ingress"} 4100.0' in text
    )
    assert sum(float(ln.split()[-1]) for ln in lines) == 5000
