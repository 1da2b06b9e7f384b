"""Kernel cost of the drop reasons program (bpf/drops.c on skb:kfree_skb), informational.

Two namespaces joined by a veth pair; the paced C sender in a sends UDP to b.
With kernel.bpf_stats_enabled=1 the kernel adds up run_time_ns and run_cnt
per program (read with BPF_OBJ_GET_INFO_BY_FD at the start and end of each
window). Windows, each WINDOW seconds, ROUNDS rounds in turn:

    empty    drop flood (UDP to a closed port in b) with an empty program on
             skb:kfree_skb: the floor of a program on that tracepoint
    drops    the same flood with flowtop's program (DropCollector in b,
             drained every second as the engine would): ns per drop counted
    early    the same flood with flowtop's program built so that NO_SOCKET
             counts as a not-a-drop reason: every run takes the early return
             that SKB_NOT_DROPPED_YET / SKB_CONSUMED take (this kernel sends
             SKB_CONSUMED to consume_skb instead, so the flood is the only
             way to make that path run at a known rate)
    normal   UDP to an open port in b that a reader drains: the packets are
             consumed (consume_skb, which flowtop never attaches to), so the
             program should run for none of them: runs per packet sent

kfree_skb is one tracepoint for the whole host: drops elsewhere (other
namespaces, other tests) run the programs too, and show as runs beyond the
packets sent. Run: .venv/bin/python bench/drop_cost.py   (root)
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common as C
from _common import Pair, entered

from flowtop.kernel.btf import Btf
from flowtop.kernel.build import Request
from flowtop.kernel.dropreasons import ENUM
from flowtop.kernel.drops import DropCollector, prog_run_stats

ROUNDS = 3
WINDOW = 3.0
PPS = 50_000  # the flood, and the normal traffic
NORMAL_PPS = 20_000  # what a Python reader keeps up with
CLOSED_PORT = 9
FLOWS = 64

# The enum as bpf/drops.c declares it (bcc needs the field's type complete).
EMPTY_SRC = b"""
enum skb_drop_reason { FT_SKB_DROP_REASON_ANY_U32 = 0xffffffffU };
TRACEPOINT_PROBE(skb, kfree_skb) { return 0; }
"""


class EarlyReturn(DropCollector):
    """The drop program with NO_SOCKET in place of SKB_CONSUMED (see the doc)."""

    def __init__(self, no_socket: int) -> None:
        super().__init__()
        self.no_socket = no_socket

    def _request(self) -> Request:
        req = super()._request()
        consts = [c for c in req.btf_constants if c[0] != "FT_REASON_CONSUMED"]
        cflags = [*req.cflags, f"-DFT_REASON_CONSUMED={self.no_socket}"]
        return replace(req, cflags=cflags, btf_constants=consts)


def flood(p: Pair, exe: Path, dport: int, pps: int) -> Any:
    """The sender in a, for one window."""
    args = C.sender_args(exe, "udp", Pair.A4, Pair.B4, dport, 20000, FLOWS, pps, int(WINDOW))
    return p.a.popen(args, stdout=-1, text=True)


def measure(
    fd: int, p: Pair, exe: Path, dport: int, pps: int, drain: Any = None
) -> dict[str, float]:
    t0, n0, _ = prog_run_stats(fd)
    snd = flood(p, exe, dport, pps)
    end = time.monotonic() + WINDOW + 10
    while snd.poll() is None and time.monotonic() < end:
        time.sleep(1.0 if drain else 0.1)
        if drain:
            drain()
    out, _ = snd.communicate(timeout=30)
    sent, _failed, _elapsed = C.sender_result(out)
    t1, n1, _ = prog_run_stats(fd)
    runs = n1 - n0
    return {"ns": (t1 - t0) / runs if runs else float("nan"), "runs": runs, "sent": sent}


def main() -> int:
    C.require_root()
    btf = Btf.load()
    enum = btf.enum(ENUM) if btf else None
    if not enum:
        print("this kernel's BTF has no enum skb_drop_reason")
        return 1
    no_socket = enum["SKB_DROP_REASON_NO_SOCKET"]
    import bcc

    rows: dict[str, list[dict[str, float]]] = {k: [] for k in ("empty", "drops", "early", "normal")}
    counted = 0
    with tempfile.TemporaryDirectory(prefix="ftb-") as tmpd, C.pair() as p, C.bpf_stats():
        exe = C.build_sender(Path(tmpd))
        with entered(p.b):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sink.bind((Pair.B4, 0))
        open_port = sink.getsockname()[1]
        sink.settimeout(0.2)
        stop = threading.Event()
        received = [0]

        def reader() -> None:
            while not stop.is_set():
                try:
                    sink.recv(2048)
                    received[0] += 1
                except TimeoutError:
                    pass

        threading.Thread(target=reader, daemon=True).start()
        for rnd in range(ROUNDS):
            empty = bcc.BPF(text=EMPTY_SRC)
            try:
                fd = empty.funcs[b"tracepoint__skb__kfree_skb"].fd
                rows["empty"].append(measure(fd, p, exe, CLOSED_PORT, PPS))
            finally:
                empty.cleanup()
            dc = DropCollector()
            with entered(p.b):
                dc.begin()
            dc.finish()
            try:

                def drain(dc: DropCollector = dc) -> None:
                    nonlocal counted
                    counted += int(dc.drain()["packets"].sum())

                rows["drops"].append(measure(dc.prog_fd, p, exe, CLOSED_PORT, PPS, drain))
                drain()
                lost = dc.counters()
                received[0] = 0
                normal = measure(dc.prog_fd, p, exe, open_port, NORMAL_PPS, drain)
                time.sleep(0.3)
                normal["received"] = received[0]
                rows["normal"].append(normal)
            finally:
                dc.close()
            er = EarlyReturn(no_socket)
            with entered(p.b):
                er.begin()
            er.finish()
            try:
                rows["early"].append(measure(er.prog_fd, p, exe, CLOSED_PORT, PPS))
                early_counted = int(er.drain()["packets"].sum())
            finally:
                er.close()
            print(f"round {rnd + 1}: lost {lost}, early-return variant counted {early_counted}")
        stop.set()
        sink.close()

    def med(name: str, key: str) -> float:
        return C.median([r[key] for r in rows[name]])

    base = med("empty", "ns")
    table = []
    for name in ("empty", "drops", "early"):
        ns = med(name, "ns")
        table.append(
            [
                name,
                f"{ns:.0f}",
                f"{ns / base:.2f}x",
                f"{med(name, 'runs'):.0f}",
                f"{med(name, 'sent'):.0f}",
            ]
        )
    normal_runs, normal_sent = med("normal", "runs"), med("normal", "sent")
    table.append(
        ["normal", f"{med('normal', 'ns'):.0f}", "", f"{normal_runs:.0f}", f"{normal_sent:.0f}"]
    )
    print(C.table(table, ["window", "ns/run", "vs empty", "runs", "sent"]))
    print(
        f"normal traffic: {normal_runs / normal_sent:.4f} runs per packet sent "
        f"(received {C.median([r['received'] for r in rows['normal']]):.0f})"
    )
    print(f"drops counted by the program over the flood windows: {counted}")
    per_drop = med("drops", "ns")
    print(
        f"\nRESULT drop_cost: {per_drop:.0f} ns per drop ({per_drop / base:.2f}x "
        f"an empty program), early return {med('early', 'ns'):.0f} ns, "
        f"{normal_runs / normal_sent:.4f} runs per consumed packet"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
