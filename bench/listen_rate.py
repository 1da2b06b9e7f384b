"""Receiving IPFIX: flowtop's listener against nfcapd on the same stream.

decode    in-process: ListenCollector's Decoder over a prepared stream of
          IPFIX messages (flowtop's own IPv4 flow template, 18 elements, 22
          records per 1400-byte message, 50 exporters, 100k distinct flows),
          one drain per 20k messages, the records merged into a FlowTable:
          records per CPU second of decode + merge (median of 5).
side      440k records over 2000 flows (16 observation domains of one sender)
          sent over loopback UDP to `flowtop dump --listen` and to `nfcapd` at
          the same time (paced, 20k datagrams/s): records each received and
          wrote (flowtop: its exporter lines; nfcapd: `nfdump -R`), and each
          one's CPU seconds while the stream ran (/proc/PID/stat, from just
          before the first datagram to 2.5 s after the last): records per CPU s.
memory    per exporter: tracemalloc over 2000 exporters with 1 domain and 2
          templates each.

sflow     in-process: sFlow v5 flow samples (8 raw packet header samples per
          datagram, 50 agents; the datagrams walked per sample, their headers
          read all at once with numpy: flowtop/listen/headers.py) decoded and
          merged into a FlowTable: samples per CPU second (median of 5).

Targets: decode >= 200,000 IPFIX records/s, >= 100,000 sFlow samples/s.
RESULT line at the end.
Run: .venv/bin/python bench/listen_rate.py [--records N]   (no root needed)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flowtop.core.flowtable import FlowTable  # noqa: E402
from flowtop.export.ipfix.message import encode_message, encode_set  # noqa: E402
from flowtop.export.ipfix.template import IPV4_FLOW  # noqa: E402
from flowtop.listen.collector import Decoder, ListenOptions  # noqa: E402
from flowtop.listen.sockets import Message  # noqa: E402

PER_MESSAGE = 22
EXPORTERS = 50
TARGET = 200_000
SFLOW_TARGET = 100_000
PY = str(ROOT / ".venv" / "bin" / "python")


def stream(
    records: int, flows: int = 100_000, seed: int = 1, exporters: int = EXPORTERS
) -> list[tuple[int, bytes]]:
    """(exporter number, IPFIX message): each exporter's template first."""
    rng = np.random.default_rng(seed)
    t = IPV4_FLOW
    n_msgs = records // PER_MESSAGE
    recs = t.empty(n_msgs * PER_MESSAGE)
    flow = rng.integers(0, flows, len(recs))
    recs["sourceIPv4Address"] = np.stack(
        [(10 + 0 * flow), flow >> 16 & 255, flow >> 8 & 255, flow & 255], axis=1
    )
    recs["destinationIPv4Address"] = [192, 0, 2, 1]
    recs["sourceTransportPort"] = 1024 + flow % 50000
    recs["destinationTransportPort"] = 443
    recs["protocolIdentifier"] = 6
    recs["ipVersion"] = 4
    recs["ingressInterface"] = 1 + flow % 8
    recs["flowStartMilliseconds"] = 1_700_000_000_000
    recs["flowEndMilliseconds"] = 1_700_000_001_000
    recs["octetDeltaCount"] = rng.integers(40, 1_000_000, len(recs))
    recs["packetDeltaCount"] = rng.integers(1, 1000, len(recs))
    raw = recs.tobytes()
    size = t.record_size * PER_MESSAGE
    out: list[tuple[int, bytes]] = []
    seq = [0] * exporters
    for e in range(exporters):
        out.append((e, encode_message([encode_set(2, t.wire)], 1_700_000_001, 0, e + 1)))
    for i in range(n_msgs):
        e = i % exporters
        body = encode_set(t.template_id, raw[i * size : (i + 1) * size])
        out.append((e, encode_message([body], 1_700_000_001, seq[e], e + 1)))
        seq[e] += PER_MESSAGE
    return out


def decode_rate(msgs: list[tuple[int, bytes]], records: int) -> float:
    rates = []
    for _ in range(5):
        dec = Decoder(ListenOptions(urls=()))
        table = FlowTable(max_flows=262144, idle_timeout=15, active_timeout=60)
        batch = [Message(m, f"10.255.0.{e}", "ipfix", False) for e, m in msgs]
        t0 = time.process_time()
        for i in range(0, len(batch), 20_000):
            dec.decode(batch[i : i + 20_000])
            table.merge_many(dec.flows(time.monotonic_ns()), 1.0)
        cpu = time.process_time() - t0
        assert dec.table.counters["listen_records"] == records, dec.table.counters
        rates.append(records / cpu)
    return statistics.median(rates)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def side_by_side(msgs: list[tuple[int, bytes]], records: int) -> dict[str, tuple[int, float]]:
    tmp = tempfile.mkdtemp(prefix="flowtop-bench-")
    p_ft, p_nf = _free_port(), _free_port()
    send_s = max(3.0, len(msgs) / 20_000)  # pace: 20k datagrams/s
    duration = send_s + 6
    ft = subprocess.Popen(
        [
            PY,
            "-m",
            "flowtop",
            "dump",
            "--listen",
            f"ipfix+udp://127.0.0.1:{p_ft}",
            "--json",
            "--duration",
            f"{duration:.0f}",
            "--no-resolve",
            "--max-flows",
            "262144",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    nf = subprocess.Popen(
        ["nfcapd", "-b", "127.0.0.1", "-p", str(p_nf), "-w", tmp, "-B", "8388608", "-t", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert ft.stderr is not None
        line = ft.stderr.readline()  # "collecting on ...": started
        assert "collecting on" in line, line
        time.sleep(1.0)
        c_ft, c_nf = _cpu(ft.pid), _cpu(nf.pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.monotonic()
        for i, (_e, m) in enumerate(msgs):
            s.sendto(m, ("127.0.0.1", p_ft))
            s.sendto(m, ("127.0.0.1", p_nf))
            ahead = i / 20_000 - (time.monotonic() - t0)
            if ahead > 0.01:
                time.sleep(ahead)
        time.sleep(2.5)  # two drains
        cpu_ft, cpu_nf = _cpu(ft.pid) - c_ft, _cpu(nf.pid) - c_nf
        out, _err = ft.communicate(timeout=duration + 30)
        nf.send_signal(signal.SIGTERM)
        nf.wait(timeout=20)
        got_ft = sum(
            json.loads(x)["records"] for x in out.splitlines() if '"type": "exporter"' in x
        )
        dumped = subprocess.run(
            ["nfdump", "-q", "-o", "csv", "-R", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        got_nf = sum(1 for ln in dumped.stdout.splitlines() if ln and ln[0].isdigit())
        return {"flowtop": (got_ft, cpu_ft), "nfcapd": (got_nf, cpu_nf)}
    finally:
        for p in (ft, nf):
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", tmp], check=False)


def sflow_datagrams(datagrams: int = 20_000) -> list[Message]:
    """The sFlow stream: 8 raw-header flow samples per datagram, from 50 agents."""
    from tests.listen import build as b

    raws = [
        b.sflow_raw_record(b.eth_ipv4_udp(f"10.0.0.{i}", "10.1.0.1", 1000 + i, 53, 100), 146)
        for i in range(8)
    ]
    dg = b.sflow_datagram([b.sflow_flow_sample([r], rate=64) for r in raws])
    return [Message(dg, f"10.9.0.{i % 50}", "sflow", False) for i in range(datagrams)]


def sflow_rate(datagrams: int = 20_000, runs: int = 5) -> float:
    """sFlow v5 flow samples decoded and merged per CPU second (median of runs)."""
    msgs = sflow_datagrams(datagrams)
    rates = []
    for _ in range(runs):
        dec = Decoder(ListenOptions(urls=()))
        t0 = time.process_time()
        dec.decode(msgs)
        table = FlowTable(max_flows=262144, idle_timeout=15, active_timeout=60)
        table.merge_many(dec.flows(time.monotonic_ns()), 1.0)
        cpu = time.process_time() - t0
        assert dec.table.counters["listen_records"] == 8 * datagrams
        rates.append(8 * datagrams / cpu)
    return statistics.median(rates)


def memory_per_exporter(n: int = 2000) -> float:
    from flowtop.export.ipfix.template import IPV6_FLOW

    dec = Decoder(ListenOptions(urls=(), max_exporters=n))
    tmsg = encode_message([encode_set(2, IPV4_FLOW.wire + IPV6_FLOW.wire)], 1, 0, 1)
    dec.decode([Message(tmsg, "10.0.0.0", "ipfix", False)])  # warm the template cache
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    dec.decode(
        [
            Message(tmsg, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "ipfix", False)
            for i in range(1, n + 1)
        ]
    )
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_100_000)
    ap.add_argument("--no-side", action="store_true", help="skip the nfcapd comparison")
    a = ap.parse_args()
    msgs = stream(a.records)
    records = (a.records // PER_MESSAGE) * PER_MESSAGE
    rate = decode_rate(msgs, records)
    print(f"{'what':<34}{'records':>12}{'CPU s':>9}{'records/CPU s':>16}")
    print(
        f"{'flowtop decode + merge (in-proc)':<34}{records:>12}{records / rate:>9.2f}{rate:>16,.0f}"
    )
    if not a.no_side:
        # fewer distinct flows: dump prints every one at the end
        n_side = min(records, 440_000)
        # one sending socket: its 16 observation domains (an exporter has at most 16)
        side = side_by_side(stream(n_side, flows=2000, seed=2, exporters=16), n_side)
        for name, (got, cpu) in side.items():
            per = got / cpu if cpu > 0 else float("inf")
            print(f"{name + ' over UDP':<34}{got:>12}{cpu:>9.2f}{per:>16,.0f}")
    srate = sflow_rate()
    print(
        f"{'sflow samples decode + merge':<34}{160_000:>12}{160_000 / srate:>9.2f}{srate:>16,.0f}"
    )
    mem = memory_per_exporter()
    print(f"memory per exporter (1 domain, 2 templates): {mem / 1024:.1f} KiB")
    ok = rate >= TARGET and srate >= SFLOW_TARGET
    print(
        f"RESULT: {'PASS' if ok else 'MISS'} decode+merge {rate:,.0f} IPFIX records/s "
        f"(target >= {TARGET:,}), {srate:,.0f} sFlow samples/s (target >= "
        f"{SFLOW_TARGET:,}); {mem / 1024:.1f} KiB per exporter"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
