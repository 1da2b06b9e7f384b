"""Accuracy under load: 50k packets/s over 1,000 UDP flows for 10 s, every packet counted.

Namespace a sends through veth va -> vb (namespace b). A tiny C sender
(_common.SENDER_C in its udp mode, compiled here with gcc) binds 1,000 UDP
sockets to distinct source ports and sends 100-byte datagrams round robin,
paced in bursts every 1 ms to 50,000 packets/s, and prints how many sendto()
calls succeeded. In namespace b a UDP
socket is bound to the destination port and never read (no ICMP port
unreachable; the socket drops what overflows *after* TC ingress, where flowtop
counts). flowtop runs as the user would run it, in namespace b:

    ip netns exec B .venv/bin/python -m flowtop dump -i ftbvb --duration 60 --json

started before the sender (we wait for "collecting on" on its stderr) and
stopped with SIGINT after the sender is done.

Ground truth: the sender's own count, cross-checked with `ip -s -j link`
(va tx_packets and vb rx_packets deltas over the send). Target: the sum of
flowtop's packets over those 1,000 flows equals the packets sent (zero lost
increments); the stats line's loss counters are printed as well.
Run: .venv/bin/python bench/accuracy.py   (root)
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C
from _common import Pair, entered

FLOWS = 1000
PPS = 50_000
SECONDS = 10
BASE_SPORT = 20000
DPORT = 9999


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """Reads the collector's stderr until 'collecting on'."""
    assert proc.stderr is not None
    buf = b""
    end = time.monotonic() + timeout
    while b"collecting on" not in buf:
        if proc.poll() is not None:
            raise RuntimeError(
                f"flowtop dump exited early: {buf.decode(errors='replace')}"
                f"{proc.stderr.read().decode(errors='replace')}"
            )
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"flowtop dump not ready after {timeout} s: {buf.decode()}")
        r, _, _ = select.select([proc.stderr], [], [], left)
        if r:
            chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
            buf += chunk
    return buf.decode(errors="replace")


def main() -> int:
    C.require_root()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ftb-") as tmpd, C.pair() as p:
        try:
            exe = C.build_sender(Path(tmpd))
            with entered(p.b):
                sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sink.bind((Pair.B4, DPORT))  # never read: no ICMP unreachable
            dump = p.b.popen(
                [
                    sys.executable,
                    "-m",
                    "flowtop",
                    "dump",
                    "-i",
                    p.vb,
                    "--duration",
                    "120",
                    "--json",
                ],
                cwd=str(C.ROOT),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            procs.append(dump)
            t_start = time.monotonic()
            wait_ready(dump)
            ready_s = time.monotonic() - t_start
            time.sleep(0.5)
            a0, b0 = p.a.link_stats(p.va), p.b.link_stats(p.vb)
            snd = p.a.exec(
                *C.sender_args(
                    exe, "udp", Pair.A4, Pair.B4, DPORT, BASE_SPORT, FLOWS, PPS, SECONDS
                ),
                timeout=SECONDS + 30,
            )
            sent, failed, elapsed = C.sender_result(snd.stdout)
            time.sleep(1.0)
            a1, b1 = p.a.link_stats(p.va), p.b.link_stats(p.vb)
            dump.send_signal(signal.SIGINT)
            out, err = dump.communicate(timeout=60)
            if dump.returncode != 0:
                raise RuntimeError(f"flowtop dump failed ({dump.returncode}): {err.decode()}")
            sink.close()
        finally:
            for proc in procs:
                with contextlib.suppress(Exception):
                    C.stop_process(proc, signal.SIGINT)

    lines = [json.loads(ln) for ln in out.decode().splitlines() if ln.strip()]
    ours = [
        f
        for f in lines
        if f["type"] == "flow"
        and f["proto"] == 17
        and f["direction"] == "ingress"
        and f["src"] == Pair.A4
        and f["dst"] == Pair.B4
        and f["dport"] == DPORT
        and BASE_SPORT <= f["sport"] < BASE_SPORT + FLOWS
    ]
    others = [f for f in lines if f["type"] == "flow" and f not in ours]
    stats = next(f for f in lines if f["type"] == "stats")
    ifl = [f for f in lines if f["type"] == "interface" and f["iface"] == p.vb]
    counted = sum(f["packets"] for f in ours)
    nflows = len({f["sport"] for f in ours})
    per_flow_exact = sum(1 for f in ours if f["packets"] == sent // FLOWS)
    tx = a1["tx_packets"] - a0["tx_packets"]
    rx = b1["rx_packets"] - b0["rx_packets"]

    print(
        f"accuracy under load: {FLOWS} UDP flows, target {PPS:,} pkt/s for {SECONDS} s, "
        f"veth in namespaces, flowtop dump on {p.vb} ingress (ready after {ready_s:.1f} s)\n"
    )
    rows = [
        ("packets sent (sender's count)", f"{sent:,}"),
        ("sendto failures", f"{failed:,}"),
        ("achieved rate", f"{sent / elapsed:,.0f} pkt/s over {elapsed:.2f} s"),
        ("va tx_packets delta (ip -s link)", f"{tx:,}"),
        ("vb rx_packets delta (ip -s link)", f"{rx:,}"),
        ("vb rx_dropped delta", f"{b1['rx_dropped'] - b0['rx_dropped']:,}"),
        ("flowtop: distinct flows seen", f"{nflows:,} (of {FLOWS:,})"),
        ("flowtop: flows with exactly sent/1000 packets", f"{per_flow_exact:,}"),
        ("flowtop: sum of packets over those flows", f"{counted:,}"),
        ("flowtop: difference to sent", f"{counted - sent:+,}"),
        (
            "flowtop: other flows (not ours)",
            f"{len(others)} ({sum(f['packets'] for f in others)} pkts)",
        ),
    ]
    for f in ifl:
        rows.append((f"flowtop iface {f['family']} rx_packets", f"{f['rx_packets']:,}"))
    for k, v in stats.items():
        if k != "type":
            rows.append((f"stats: {k}", f"{v}"))
    print(C.table(rows, ("measure", "value")))
    ok = counted == sent and nflows == FLOWS
    print(
        f"\ntarget: flowtop's count == packets sent ({sent:,}), zero lost increments: "
        f"{C.verdict(ok)}"
    )
    rate_note = "" if sent / elapsed >= 0.98 * PPS else f" (rate below {PPS:,} pkt/s)"
    print(f"\nRESULT accuracy: {counted:,} / {sent:,}{rate_note}  {C.verdict(ok)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
