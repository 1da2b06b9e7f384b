"""Cost of names from the wire in the TC program: FT_WIRE_NAMES=1 against 0.

Two namespaces joined by a veth pair; on vb (namespace b) the ingress and
egress hooks carry one of two builds of flowtop's TC program, compiled
side by side and attached in turn, alternating within each round so that
both see the same load:

    on   ProgramOptions(wire=WireOptions(...)): bpf/wirenames.h compiled in
    off  ProgramOptions(): FT_WIRE_NAMES=0, the code and its maps left out

With kernel.bpf_stats_enabled=1 the kernel accumulates run_time_ns and
run_cnt per program (read from /proc/self/fdinfo of the program fds, as
bpftool does); ns per run is one skb. The tail-called flowtop_wire runs
inside its caller's run and is counted in it.

Loads (iperf3, a -> b):
  udp       UDP to port 5201 from an ephemeral port, both ways (--bidir):
            nothing qualifies; the target load
  tcp       TCP bulk data of established connections, 2 streams both ways:
            nothing qualifies (the cheap test fails); the target load
  dns       UDP *from* port 53 (--cport 53), 200-byte datagrams: every
            packet on vb's ingress is a DNS response handed up (a reader
            drains the ring meanwhile); informational: the cost of the
            ones that qualify

Target (issue 16): on / off <= 1.1x for udp and tcp (median of ROUNDS,
both hooks weighted by runs). Prints a table and a RESULT line.
Run: .venv/bin/python bench/wirename_cost.py [--only udp|tcp|dns] [--rounds N]   (root)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from typing import Any

import _common as C
from _common import Pair, entered

TARGET = 1.1
ROUNDS = 5
WINDOW = 4.0
SETTLE = 0.5
WARMUP = 2.0
LOADS = (
    ("udp", ["-u", "-b", "200M", "-l", "1000", "-P", "2", "--bidir"], True),
    ("tcp", ["-P", "2", "--bidir"], True),
    ("dns", ["-u", "-b", "40M", "-l", "200", "--cport", "53"], False),
)


def prog_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program fd."""
    got: dict[str, int] = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("run_time_ns", "run_cnt"):
                got[key] = int(value)
    return got.get("run_time_ns", 0), got.get("run_cnt", 0)


class Drainer:
    """Reads the ring of the build with names on while it runs, as the names
    thread would (the ring would fill otherwise and every event after that
    would cost a failed output only)."""

    def __init__(self, wire: Any) -> None:
        self.wire, self.events = wire, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import select

        while not self._stop.is_set():
            select.select([self.wire.fileno()], [], [], 0.05)
            self.events += len(self.wire.read(4096))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def window(p: Pair, prog: Any) -> dict[str, tuple[int, int]]:
    """Attaches prog on vb, settles, measures WINDOW seconds (flows drained
    every second as the engine does), detaches; per hook (ns, runs) deltas
    and the program's counters' deltas."""
    from flowtop.kernel.attach import TcAttacher

    with entered(p.b):
        att = TcAttacher(prog.fd)
    try:
        att.attach(p.b.ifindex(p.vb), p.vb)
        time.sleep(SETTLE)
        prog.drain_flows()
        fds = {"ingress": prog.fd("ingress", False), "egress": prog.fd("egress", False)}
        s0 = {h: prog_stats(fd) for h, fd in fds.items()}
        c0 = prog.counters()
        end = time.monotonic() + WINDOW
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            prog.drain_flows()
        s1 = {h: prog_stats(fd) for h, fd in fds.items()}
        c1 = prog.counters()
    finally:
        att.detach_all()
        att.close()
    out = {h: (s1[h][0] - s0[h][0], s1[h][1] - s0[h][1]) for h in fds}
    for k in ("wire_events", "wire_ring_full", "wire_rate_limited"):
        out[k] = (c1[k] - c0[k], 0)
    return out


def ns_per_run(w: dict[str, tuple[int, int]], hooks: tuple[str, ...]) -> float:
    ns = sum(w[h][0] for h in hooks)
    runs = sum(w[h][1] for h in hooks)
    return ns / runs if runs else float("nan")


def measure(p: Pair, progs: dict[str, Any], name: str, args: list[str]) -> list[dict[str, Any]]:
    srv = p.b.popen(
        ["iperf3", "-s", "-1", "-B", Pair.B4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    total = WARMUP + ROUNDS * 2 * (WINDOW + SETTLE + 1.0) + 5
    cli = p.a.popen(
        ["iperf3", "-c", Pair.B4, *args, "-t", str(int(total)), "--connect-timeout", "3000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(WARMUP)
        rounds = []
        for i in range(ROUNDS):
            r: dict[str, Any] = {}
            for variant in ("on", "off") if i % 2 == 0 else ("off", "on"):
                if cli.poll() is not None:
                    raise RuntimeError(f"iperf3 ended early: {cli.stderr.read().decode()}")
                r[variant] = window(p, progs[variant])
            rounds.append(r)
        return rounds
    finally:
        C.stop_process(cli)
        C.stop_process(srv)


def main() -> int:
    global ROUNDS
    C.require_root()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=[name for name, _a, _t in LOADS], action="append")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    opts = ap.parse_args()
    ROUNDS = opts.rounds
    loads = [load for load in LOADS if not opts.only or load[0] in opts.only]
    from flowtop.kernel.program import ProgramOptions, TcProgram, WireOptions
    from flowtop.kernel.wirecapture import WireCapture

    results: dict[str, list[dict[str, Any]]] = {}
    with C.bpf_stats(), C.pair() as p:
        # Passive RTT on in both, as a run has it.
        on = TcProgram(ProgramOptions(flow_map_size=65536, wire=WireOptions(rate=1_000_000)))
        off = TcProgram(ProgramOptions(flow_map_size=65536))
        ring = on.wire_ring_fd()
        assert ring is not None
        wire = WireCapture(ring)
        drainer = Drainer(wire)
        try:
            for name, args, _target in loads:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                results[name] = measure(p, {"on": on, "off": off}, name, args)
        finally:
            drainer.stop()
            wire.close()
            on.close()
            off.close()
    rows = []
    verdicts = []
    summary = []
    for name, _args, target in loads:
        for hooks in (("ingress",), ("egress",), ("ingress", "egress")):
            label = "+".join(hooks)
            ons = [ns_per_run(r["on"], hooks) for r in results[name]]
            offs = [ns_per_run(r["off"], hooks) for r in results[name]]
            ratios = [a / b for a, b in zip(ons, offs, strict=True)]
            runs = C.median([sum(r["on"][h][1] for h in hooks) for r in results[name]])
            ev = C.median([r["on"]["wire_events"][0] for r in results[name]])
            full = C.median([r["on"]["wire_ring_full"][0] for r in results[name]])
            rows.append(
                (
                    name, label, int(runs), f"{C.median(offs):.1f}", f"{C.median(ons):.1f}",
                    f"{C.median(ratios):.3f}x", int(ev), int(full),
                )
            )  # fmt: skip
            if len(hooks) == 2:
                ratio = C.median(ratios)
                if target:
                    verdicts.append(ratio <= TARGET)
                summary.append(f"{name} {ratio:.3f}x")
    print(
        f"\nTC program ns/run, names on vs off, median of {ROUNDS} rounds x {WINDOW:g} s "
        "(alternating)\n"
    )
    print(
        C.table(
            rows,
            ["load", "hooks", "runs/window", "off ns", "on ns", "on/off", "events", "ring full"],
        )
    )
    ok = all(verdicts)
    print(
        f"\nRESULT {C.verdict(ok)}: names on/off {', '.join(summary)} "
        f"(target <= {TARGET}x for udp and tcp; dns is informational)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
