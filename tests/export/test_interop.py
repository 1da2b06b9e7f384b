"""Third-party decoders as ground truth: tshark's IPFIX dissector and nfcapd/nfdump.

Everything stays on 127.0.0.1. tshark reads a pcap of the datagrams a real
exporter sent to a loopback socket; nfcapd listens on loopback itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flowtop.core.flowtable import FlowBatch
from flowtop.core.model import Direction, FlowRecord
from flowtop.export.ipfix import IpfixExporter

from . import pcap
from .collectors import UdpCollector, free_port
from .flows import batch, many
from .test_golden import FLOWS

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
needs_nfdump = pytest.mark.skipif(
    shutil.which("nfcapd") is None or shutil.which("nfdump") is None,
    reason="nfcapd/nfdump not installed",
)
COLLECTOR = ("127.0.0.1", 4739)


def mixed() -> FlowBatch:
    return FlowBatch.concat([batch(FLOWS), many(400, v6_every=3, seed=7)], FLOWS_OFFSET)


FLOWS_OFFSET = batch(FLOWS).clock_offset


def export_udp(b: FlowBatch, **kwargs: object) -> tuple[list[bytes], tuple[str, int]]:
    """Datagrams a real exporter sends for b (then closes: final options record)."""
    with UdpCollector() as col:
        exp = IpfixExporter([("127.0.0.1", col.port)], **kwargs)  # type: ignore[arg-type]
        (local,) = exp.local_addresses()
        exp.flows_ended(b)
        assert exp.flush(10)
        exp.close(5)
        raw = col.wait_options()
    return raw, local


def tshark(path: Path, *args: str) -> str:
    cmd = ["tshark", "-r", str(path), "-d", f"udp.port=={COLLECTOR[1]},cflow", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def _walk(node: object) -> Iterator[dict[str, object]]:
    """Every "Flow N" object in tshark's JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.startswith("Flow ") and isinstance(v, dict):
                yield v
            else:
                yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _ms(text: str) -> int:
    """tshark's "Jan  2, 2024 03:04:05.250000000 UTC" as unix ms."""
    date, frac = text.removesuffix(" UTC").rsplit(".", 1)
    t = dt.datetime.strptime(" ".join(date.split()), "%b %d, %Y %H:%M:%S")
    return int(t.replace(tzinfo=dt.UTC).timestamp()) * 1000 + int(frac[:3])


def _tshark_view(rec: FlowRecord) -> dict[str, str]:
    k = rec.key
    v6 = k.ip_version == 6
    icmp = k.is_icmp
    ingress = k.direction == Direction.INGRESS
    out = {
        "cflow.srcaddrv6" if v6 else "cflow.srcaddr": str(k.src),
        "cflow.dstaddrv6" if v6 else "cflow.dstaddr": str(k.dst),
        "cflow.srcport": str(0 if icmp else k.sport),
        "cflow.dstport": str(0 if icmp else k.dport),
        "cflow.protocol": str(k.proto),
        "cflow.ip_version": str(k.ip_version),
        "cflow.vlanid": str(k.vlan),
        "cflow.inputint": str(k.ifindex if ingress else 0),
        "cflow.outputint": str(0 if ingress else k.ifindex),
        "cflow.direction": str(int(k.direction)),
        "cflow.octets": str(rec.bytes),
        "cflow.packets": str(rec.packets),
        "cflow.tcpflags": f"0x{rec.tcp_flags:04x}",
        "cflow.tos": f"0x{rec.dscp << 2:02x}",
        "cflow.flow_end_reason": str(int(rec.end_reason or 0)),
    }
    code = k.dport if icmp else 0
    if v6:
        out["cflow.icmp_ipv6_type"] = str(code >> 8)
        out["cflow.icmp_ipv6_code"] = str(code & 0xFF)
    else:
        out["cflow.icmp_type_code_ipv4"] = f"0x{code:04x}"
    return out


@needs_tshark
def test_tshark_decodes_every_field(tmp_path: Path) -> None:
    b = mixed()
    raw, local = export_udp(b, domain_id=5, process_id=31337)
    path = tmp_path / "ipfix.pcap"
    pcap.write(path, local, COLLECTOR, raw)

    packets = json.loads(tshark(path, "-T", "json"))
    assert len(packets) == len(raw)
    headers = [p["_source"]["layers"]["cflow"] for p in packets]
    assert {h["cflow.version"] for h in headers} == {"10"}
    assert {h["cflow.od_id"] for h in headers} == {"5"}
    flows = [f for f in _walk(headers) if "cflow.octets" in f]
    assert len(flows) == len(b)
    views = [_tshark_view(r) for r in b.records()]
    names = {v["cflow.ip_version"]: sorted(v) for v in views}
    want = sorted(tuple(sorted(v.items())) for v in views)
    got = sorted(
        tuple((k, str(f.get(k))) for k in names[str(f["cflow.ip_version"])]) for f in flows
    )
    assert got == want
    # Times: match each decoded flow to its record by addresses and counters.
    by_key = {(str(r.key.src), str(r.key.dst), r.packets, r.bytes): r for r in b.records()}
    for f in flows:
        src = f.get("cflow.srcaddr", f.get("cflow.srcaddrv6"))
        dst = f.get("cflow.dstaddr", f.get("cflow.dstaddrv6"))
        r = by_key[(str(src), str(dst), int(str(f["cflow.packets"])), int(str(f["cflow.octets"])))]
        times = f["cflow.timedelta_tree"]
        assert isinstance(times, dict)
        assert abs(_ms(times["cflow.abstimestart"]) - round(r.unix(r.first_ns) * 1000)) <= 1
        assert abs(_ms(times["cflow.abstimeend"]) - round(r.unix(r.last_ns) * 1000)) <= 1
    opts = [f for f in _walk(headers) if "cflow.notsent_flows" in f]
    assert len(opts) == 1
    assert opts[0]["cflow.flow_exporter"] == "31337"
    assert opts[0]["cflow.notsent_flows"] == "0"


@needs_tshark
def test_tshark_reports_nothing_malformed(tmp_path: Path) -> None:
    """A 10k-flow burst: no malformed packet, no expert info of any severity."""
    b = FlowBatch.concat([mixed(), many(10_000, v6_every=4, seed=8)], FLOWS_OFFSET)
    raw, local = export_udp(b, template_refresh_messages=50)
    path = tmp_path / "burst.pcap"
    pcap.write(path, local, COLLECTOR, raw)
    assert all(len(m) <= 1400 for m in raw)
    flagged = tshark(
        path, "-Y", "_ws.malformed || _ws.expert || !cflow", "-T", "fields", "-e", "frame.number"
    )
    assert flagged.split() == []
    expert = tshark(path, "-q", "-z", "expert")
    assert not any(w in expert for w in ("Error", "Warn", "Malformed", "Note", "Chat")), expert
    counted = tshark(path, "-T", "fields", "-e", "cflow.octets", "-E", "occurrence=a")
    assert sum(len(line.split(",")) for line in counted.split()) == len(b)
    # The check has teeth: tshark follows sequence numbers and flags a wrong one.
    bad = bytearray(raw[5])
    bad[8:12] = (12345).to_bytes(4, "big")
    pcap.write(path, local, COLLECTOR, [*raw[:5], bytes(bad), *raw[6:]])
    assert "Unexpected flow sequence" in tshark(path, "-q", "-z", "expert")


def _port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _nfdump_view(rec: FlowRecord) -> tuple[str, ...]:
    k = rec.key
    ingress = k.direction == Direction.INGRESS
    start = dt.datetime.fromtimestamp(int(rec.unix(rec.first_ns)), dt.UTC).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    return (
        start,
        str(k.src),
        str(k.dst),
        str(0 if k.is_icmp else k.sport),
        str(k.dport),  # nfdump shows ICMP type << 8 | code as the destination port
        str(k.proto),
        str(rec.packets),
        str(rec.bytes),
        str(rec.dscp << 2),
        str(k.ifindex if ingress else 0),
        str(0 if ingress else k.ifindex),
        str(int(k.direction)),
        str(k.vlan),
    )


@needs_nfdump
def test_nfcapd_nfdump_read_what_we_send(tmp_path: Path) -> None:
    b = mixed()
    port = free_port()
    log = tmp_path / "nfcapd.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["nfcapd", "-p", str(port), "-b", "127.0.0.1", "-w", str(tmp_path), "-t", "3600"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while not _port_bound(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "nfcapd did not bind"
            time.sleep(0.05)
        exp = IpfixExporter([("127.0.0.1", port)], domain_id=9)
        exp.flows_ended(b)
        assert exp.flush(10)
        exp.close(5)
        assert exp.stats().records_sent == len(b)
        time.sleep(0.5)  # let nfcapd read the last datagrams before it flushes
    finally:
        proc.send_signal(signal.SIGTERM)  # writes and closes the current file
        proc.wait(10)
    text = log.read_text()
    assert f"Flows: {len(b)}," in text and "Sequence Errors: 0, Bad Packets: 0" in text, text
    (data,) = [p for p in tmp_path.iterdir() if p.name.startswith("nfcapd.2")]
    res = subprocess.run(
        ["nfdump", "-r", str(data), "-N", "-o", "csv"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    table = res.stdout.split("\nSummary\n")[0]  # rows, then the summary block
    rows = list(csv.DictReader(io.StringIO(table)))
    assert len(rows) == len(b)
    protos = {"TCP": "6", "UDP": "17", "ICMP": "1", "ICMP6": "58"}
    got = sorted(
        (
            r["ts"], r["sa"], r["da"], r["sp"], r["dp"], protos.get(r["pr"], r["pr"]),
            r["ipkt"], r["ibyt"], r["stos"], r["in"], r["out"], r["dir"], r["svln"],
        )
        for r in rows
    )  # fmt: skip
    assert got == sorted(_nfdump_view(r) for r in b.records())


@needs_tshark
def test_tshark_decodes_bgp_as_numbers_from_enrichment(tmp_path: Path) -> None:
    """With an ASN database the templates carry bgpSource/DestinationAsNumber,
    filled from the records' enrichment columns (0 where unknown)."""
    b = many(50, v6_every=5, seed=11)
    ext = dict(b.columns)
    ext["src_asn"] = (np.arange(len(b)) * 7 + 64500).astype("<u4")
    ext["dst_asn"] = ext["dst_asn"].copy()
    ext["dst_asn"][::2] = 4_200_000_000  # 32-bit AS numbers
    b = FlowBatch(b.keys, ext, b.clock_offset)
    raw, local = export_udp(b, bgp=True)
    path = tmp_path / "bgp.pcap"
    pcap.write(path, local, COLLECTOR, raw)
    headers = [p["_source"]["layers"]["cflow"] for p in json.loads(tshark(path, "-T", "json"))]
    flows = [f for f in _walk(headers) if "cflow.octets" in f]
    assert len(flows) == len(b)
    got = sorted((int(str(f["cflow.srcas"])), int(str(f["cflow.dstas"]))) for f in flows)
    want = sorted(zip(ext["src_asn"].tolist(), ext["dst_asn"].tolist(), strict=True))
    assert got == want
