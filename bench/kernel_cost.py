"""Kernel cost of flowtop's TC programs against an empty TC program, same run.

Two namespaces joined by a veth pair; on vb (namespace b) the ingress and
egress hooks each carry flowtop between two empty programs, attached in one
of two ways, alternating within the run (so both see the same load):

    clsact: cls_bpf direct-action filters
        prio 1  empty (before)     int empty(struct __sk_buff *skb) { return -1; }
        prio 2  flowtop_ingress / flowtop_egress  (TcProgram + TcAttacher)
        prio 3  empty (after)
    tcx: TCX links (Linux 6.6+)
        head    empty (before)     (BPF_F_BEFORE, attached after flowtop)
                flowtop_ingress / flowtop_egress  (TcProgram + TcxAttacher, at the head)
        tail    empty (after)

All return TC_ACT_UNSPEC (TCX_NEXT), so every packet runs all three, and an
empty program on either side of flowtop cancels any first/last position
effect. Each attachment is compared with the empty programs attached the
same way. With kernel.bpf_stats_enabled=1 the kernel accumulates run_time_ns
and run_cnt per program; we read them with `bpftool prog show --json` at the
start and end of each window and report ns per run (one run per skb).

Phase 1 (the target): established flows. iperf3 UDP, 2 streams each way
(--bidir), so vb ingress and egress both see steady traffic of few flows;
flowtop's maps are swapped and drained every second as the engine would.
Each round measures one window per attachment, the order alternating
between rounds.
Phase 2 (informational): every packet is a new flow (UDP to a new dport each
packet), map drained every 0.25 s so inserts succeed rather than hit "map full".

Target (issue 13): flowtop / empty <= 1.8x (established flows, median of 3
rounds), on both loads, for each attachment. Without TCX in the kernel only
clsact is measured.
Run: .venv/bin/python bench/kernel_cost.py   (root; --help: rounds, loads,
attachments and the new-flow phase, to measure one part at a time). The
BPF sources are the checkout's, or FLOWTOP_BPF_DIR's (another build to compare).

--compare DIR: a second build, of the BPF sources in DIR (a copy of bpf/
with one change: an experiment, an ablation; its maps must have this
checkout's layouts, since this checkout's userspace drains them), attached
beside flowtop between the same empty programs, the two in one order in odd
rounds and the other in even ones; both see the same packets in the same
windows, so their ratio is free of the drift between runs. Reported per
load and attachment: compare/flowtop, median of the rounds.
--compare-undrained: the compare build's maps are never drained nor its
generations flipped, for a build whose map layouts differ from this
checkout's (HEAD's bpf/, say). Established flows keep their cache slots
and every packet takes the same path as when drained; only the first
packet of a flow after each flip (one a second) differs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import _common as C
from _common import Pair, entered

TARGET = 1.8
# (label, iperf3 -b per stream): a lightly loaded link, where every packet
# finds cold caches, and a busy one (as fast as the namespaces go).
LOADS: tuple[tuple[str, str], ...] = (
    ("light: 2x2 streams at 60 Mbit/s", "60M"),
    ("busy: 2x2 streams unlimited", "0"),
)
ROUNDS = 3
WINDOW = 5.0
WARMUP = 3.0
SETTLE = 0.5  # after switching the attachment, before a window
NEW_WINDOW = 3.0

EMPTY_SRC = b"""
int empty_in_pre(struct __sk_buff *skb) { return -1; }
int empty_in_post(struct __sk_buff *skb) { return -1; }
int empty_eg_pre(struct __sk_buff *skb) { return -1; }
int empty_eg_post(struct __sk_buff *skb) { return -1; }
"""

NEWFLOW_SENDER = r"""
import socket, sys, time
dst = sys.argv[1]; secs = float(sys.argv[2])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
payload = b"x" * 64
end = time.monotonic() + secs
n = 0
port = 1
while True:
    for s in socks:
        for _ in range(256):
            s.sendto(payload, (dst, port))
            port = port + 1 if port < 65000 else 1
        n += 256
    if time.monotonic() > end:
        break
print(n)
"""


def prog_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise RuntimeError(f"no prog_id for fd {fd}")


def snapshot(ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt), from bpftool."""
    out = json.loads(C.run(["bpftool", "prog", "show", "--json"]).stdout)
    by_id = {p["id"]: p for p in out}
    return {
        name: (int(by_id[i].get("run_time_ns", 0)), int(by_id[i].get("run_cnt", 0)))
        for name, i in ids.items()
    }


def per_run(
    a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]
) -> dict[str, tuple[float, int]]:
    """name -> (ns per run, runs) over the window between snapshots a and b."""
    res = {}
    for name in a:
        dt = b[name][0] - a[name][0]
        dn = b[name][1] - a[name][1]
        res[name] = (dt / dn if dn else float("nan"), dn)
    return res


def drain_for(prog: Any, secs: float, drain_every: float) -> None:
    """Sleep secs, swapping and draining flowtop's maps every drain_every (as the engine)."""
    end = time.monotonic() + secs
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(drain_every, left))
        prog.drain_flows()


class Progs:
    """flowtop's TcProgram and, with --compare, the second build's: drained
    together, as the engine drains one (the first only with
    --compare-undrained)."""

    def __init__(self, progs: list[Any]) -> None:
        self.progs = progs

    def drain_flows(self) -> None:
        for prog in self.progs:
            prog.drain_flows()

    def map_full(self) -> int:
        return sum(prog.counters()["flow_map_full"] for prog in self.progs)


def window(
    ids: dict[str, int], prog: Any, secs: float, drain_every: float
) -> dict[str, tuple[float, int]]:
    full0 = prog.map_full()
    s0 = snapshot(ids)
    drain_for(prog, secs, drain_every)
    s1 = snapshot(ids)
    prog.drain_flows()
    res = per_run(s0, s1)
    res["map_full"] = (0.0, prog.map_full() - full0)
    return res


def attach_empty(ipr: Any, ifindex: int, fd: int, parent: int, prio: int, name: str) -> None:
    ipr.tc(
        "add-filter",
        "bpf",
        ifindex,
        fd=fd,
        name=name,
        parent=parent,
        classid=1,
        direct_action=True,
        prio=prio,
    )


class Hooks:
    """vb's ingress and egress with flowtop (and the --compare build) between
    the empty programs, attached as clsact filters or as TCX links (see the
    module docstring); use(mode, swap) takes everything off and puts it back
    that way, the compare build first when swap."""

    def __init__(self, p: Pair, progs: list[Any], efd: dict[str, int]) -> None:
        from pyroute2 import IPRoute

        self.p, self.progs, self.efd = p, progs, efd
        self.ifindex = p.b.ifindex(p.vb)
        self.mode: tuple[str, bool] | None = None
        self.attacher: Any = None
        self.links: list[int] = []
        with entered(p.b):
            self.ipr = IPRoute()

    def use(self, mode: str, swap: bool = False) -> None:
        if (mode, swap) == self.mode:
            return
        self.off()
        order = self.progs[::-1] if swap else self.progs
        with entered(self.p.b):
            (self._clsact if mode == "clsact" else self._tcx)(order)
        self.mode = (mode, swap)

    def _clsact(self, order: list[Any]) -> None:
        from flowtop.kernel.attach import PARENT_EGRESS, PARENT_INGRESS, TcAttacher

        first, *second = order
        self.attacher = TcAttacher(first.ingress.fd, first.egress.fd, priority=2)
        self.attacher.attach(self.ifindex, self.p.vb)
        post = 3 + len(second)
        for hook, parent in (("in", PARENT_INGRESS), ("eg", PARENT_EGRESS)):
            for prio, pos in ((1, "pre"), (post, "post")):
                name = f"empty_{hook}_{pos}"
                attach_empty(self.ipr, self.ifindex, self.efd[name], parent, prio, f"ftb_{name}")
            for prog in second:
                fd = (prog.ingress if hook == "in" else prog.egress).fd
                attach_empty(self.ipr, self.ifindex, fd, parent, 3, f"ftb_second_{hook}")

    def _tcx(self, order: list[Any]) -> None:
        from flowtop.kernel import tcx

        first, *second = order
        self.attacher = tcx.TcxAttacher(
            {("ingress", False): first.ingress.fd, ("egress", False): first.egress.fd}
        )
        self.attacher.attach(self.ifindex, self.p.vb)  # at the head
        for prog in second:  # after the first
            for direction, hook in (("ingress", prog.ingress), ("egress", prog.egress)):
                self.links.append(
                    tcx.link_create(hook.fd, self.ifindex, tcx.ATTACH_TYPES[direction], 0)
                )
        for hook, direction in (("in", "ingress"), ("eg", "egress")):
            for pos, flags in (("pre", tcx.BPF_F_BEFORE), ("post", 0)):
                self.links.append(
                    tcx.link_create(
                        self.efd[f"empty_{hook}_{pos}"],
                        self.ifindex,
                        tcx.ATTACH_TYPES[direction],
                        flags,
                    )
                )

    def off(self) -> None:
        mode, self.mode = self.mode, None
        try:
            if mode == "clsact":
                for hook in ("ingress", "egress"):
                    for prio in ("1", "3", "4"):
                        cmd = ("tc", "filter", "del", "dev", self.p.vb, hook, "pref", prio)
                        self.p.b.exec(*cmd, check=False)  # the namespace may be gone
            for fd in self.links:
                os.close(fd)
            self.links.clear()
            if self.attacher is not None:
                self.attacher.detach_all()
        finally:
            if self.attacher is not None:
                self.attacher.close()
                self.attacher = None

    def close(self) -> None:
        try:
            self.off()
        finally:
            self.ipr.close()


def modes_available() -> tuple[tuple[str, ...], str]:
    """The attachments this kernel has, and a note when TCX is missing."""
    from flowtop.kernel.tcx import tcx_supported

    ok, why = tcx_supported()
    return (("clsact", "tcx"), "") if ok else (("clsact",), f"TCX not measured: {why}")


def established(
    p: Pair,
    prog: Any,
    hooks: Hooks,
    modes: tuple[str, ...],
    ids: dict[str, int],
    rate: str,
    procs: list[subprocess.Popen[Any]],
) -> dict[str, list[dict[str, tuple[float, int]]]]:
    """iperf3 UDP 2+2 streams at `rate` per stream; ROUNDS windows of per-run
    costs per attachment mode, the modes' order alternating between rounds."""
    srv = p.b.popen(
        ["iperf3", "-s", "-1", "-B", Pair.B4],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.append(srv)
    time.sleep(0.5)
    total = WARMUP + ROUNDS * len(modes) * (WINDOW + SETTLE + 0.5) + 3
    cli = p.a.popen(
        [
            "iperf3",
            "-c",
            Pair.B4,
            "-u",
            "-b",
            rate,
            "-l",
            "1000",
            "-P",
            "2",
            "--bidir",
            "-t",
            str(int(total)),
            "--connect-timeout",
            "3000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs.append(cli)
    hooks.use(modes[0])
    drain_for(prog, WARMUP, 1.0)
    rounds: dict[str, list[dict[str, tuple[float, int]]]] = {m: [] for m in modes}
    for i in range(ROUNDS):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            hooks.use(mode, swap=i % 2 == 1)
            drain_for(prog, SETTLE, 1.0)
            if cli.poll() is not None:
                raise RuntimeError(f"iperf3 client ended early: {cli.stderr.read().decode()}")
            rounds[mode].append(window(ids, prog, WINDOW, 1.0))
    for proc in (cli, srv):
        C.stop_process(proc)
    return rounds


def report_established(
    label: str, rounds: list[dict[str, tuple[float, int]]], efd: dict[str, int]
) -> float:
    print(
        f"\nestablished flows, {label}: iperf3 UDP, {ROUNDS} rounds x {WINDOW:g} s, "
        "maps drained every 1 s\n"
    )
    rows = []
    ratios = []
    for i, r in enumerate(rounds, 1):
        for hook, ft, pre, post in (
            ("ingress", "flowtop_ingress", "empty_in_pre", "empty_in_post"),
            ("egress", "flowtop_egress", "empty_eg_pre", "empty_eg_post"),
        ):
            e = (r[pre][0] + r[post][0]) / 2
            rows.append(
                (
                    i,
                    hook,
                    r[ft][1],
                    f"{r[ft][0]:.1f}",
                    f"{r[pre][0]:.1f}",
                    f"{r[post][0]:.1f}",
                    f"{r[ft][0] / e:.2f}x",
                )
            )
        # Both hooks together, weighted by runs.
        ft_ns = (
            r["flowtop_ingress"][0] * r["flowtop_ingress"][1]
            + r["flowtop_egress"][0] * r["flowtop_egress"][1]
        )
        ft_n = r["flowtop_ingress"][1] + r["flowtop_egress"][1]
        e_ns = sum(r[n][0] * r[n][1] for n in efd)
        assert r["map_full"][1] == 0, "flow map full during the established phase"
        e_n = sum(r[n][1] for n in efd)
        ratio = (ft_ns / ft_n) / (e_ns / e_n)
        ratios.append(ratio)
        rows.append(
            (
                i,
                "both",
                ft_n,
                f"{ft_ns / ft_n:.1f}",
                "",
                f"{e_ns / e_n:.1f} (all 4)",
                f"{ratio:.2f}x",
            )
        )
    print(
        C.table(
            rows,
            (
                "round",
                "hook",
                "runs",
                "flowtop ns",
                "empty-pre ns",
                "empty-post ns",
                "flowtop/empty",
            ),
        )
    )
    med = C.median(ratios)
    print(
        f"\nmedian flowtop/empty (both hooks): {med:.2f}x   target <= {TARGET}x   "
        f"{C.verdict(med <= TARGET)}"
    )
    med_ft = C.median(
        [
            (
                r["flowtop_ingress"][0] * r["flowtop_ingress"][1]
                + r["flowtop_egress"][0] * r["flowtop_egress"][1]
            )
            / (r["flowtop_ingress"][1] + r["flowtop_egress"][1])
            for r in rounds
        ]
    )
    med_e = C.median(
        [sum(r[n][0] * r[n][1] for n in efd) / sum(r[n][1] for n in efd) for r in rounds]
    )
    print(
        f"median absolute: flowtop {med_ft:.1f} ns/run, empty {med_e:.1f} ns/run, "
        f"difference {med_ft - med_e:.1f} ns/run"
    )

    return med


def report_new_flows(label: str, new_rounds: list[dict[str, tuple[float, int]]]) -> float:
    print(
        f"\ninformational: a new flow per packet (ingress, insert path), {label}, {ROUNDS} x "
        f"{NEW_WINDOW:g} s, maps drained every 0.25 s\n"
    )
    rows = []
    for i, r in enumerate(new_rounds, 1):
        e = (r["empty_in_pre"][0] + r["empty_in_post"][0]) / 2
        rows.append(
            (
                i,
                r["flowtop_ingress"][1],
                f"{r['flowtop_ingress'][1] / NEW_WINDOW:.0f}",
                r["map_full"][1],
                f"{r['flowtop_ingress'][0]:.1f}",
                f"{e:.1f}",
                f"{r['flowtop_ingress'][0] / e:.2f}x",
            )
        )
    print(
        C.table(
            rows,
            (
                "round",
                "runs",
                "pkt/s",
                "map_full",
                "flowtop_ingress ns",
                "empty ns",
                "flowtop/empty",
            ),
        )
    )
    med_new = C.median(
        [
            r["flowtop_ingress"][0] / ((r["empty_in_pre"][0] + r["empty_in_post"][0]) / 2)
            for r in new_rounds
        ]
    )
    print(f"median new-flow ratio: {med_new:.2f}x (informational, no target)")
    return med_new


def new_flows(
    p: Pair,
    prog: Any,
    hooks: Hooks,
    modes: tuple[str, ...],
    ids: dict[str, int],
    new_rounds: dict[str, list[dict[str, tuple[float, int]]]],
    procs: list[subprocess.Popen[Any]],
) -> None:
    """Phase 2: a new flow per packet, ROUNDS windows per attachment into new_rounds."""
    prog.drain_flows()
    secs = ROUNDS * len(modes) * (NEW_WINDOW + SETTLE + 0.5) + 2
    sender = p.a.popen(
        [sys.executable, "-c", NEWFLOW_SENDER, Pair.B4, str(secs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs.append(sender)
    drain_for(prog, 1.0, 0.25)
    for i in range(ROUNDS):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            hooks.use(mode, swap=i % 2 == 1)
            drain_for(prog, SETTLE, 0.25)
            new_rounds[mode].append(window(ids, prog, NEW_WINDOW, 0.25))
    C.stop_process(sender)


ATTACHED = {"clsact": "attached with clsact (cls_bpf)", "tcx": "attached with TCX links"}


def compare_build(src_dir: str) -> Any:
    """The build of the TC program from src_dir's tc.c (--compare), with
    this checkout's options; its #includes come from src_dir."""
    import dataclasses
    from pathlib import Path

    from flowtop.kernel.build import BPF_DIR, Build
    from flowtop.kernel.tcrequest import ProgramOptions, request

    d = Path(src_dir).resolve()
    req = request(ProgramOptions())

    def swap_dir(cflags: list[str]) -> list[str]:
        return [f"-I{d}" if c == f"-I{BPF_DIR}" else c for c in cflags]

    return Build(
        dataclasses.replace(
            req,
            src=str(d / "tc.c"),
            cflags=swap_dir(req.cflags),
            later_cflags=swap_dir(req.later_cflags),
        )
    )


def both_hooks(r: dict[str, tuple[float, int]], name: str) -> float:
    """ns per run of a build over both hooks, weighted by runs."""
    i, e = r[f"{name}_ingress"], r[f"{name}_egress"]
    return (i[0] * i[1] + e[0] * e[1]) / (i[1] + e[1])


def report_compare(
    src_dir: str,
    rounds_by_load: dict[str, dict[str, list[dict[str, tuple[float, int]]]]],
    modes: tuple[str, ...],
    efd: dict[str, int],
) -> None:
    """--compare: per load and attachment, each round's flowtop and compare
    ns per run (both hooks), their ratio, and each against the empty programs."""
    print(f"\ncompare: {src_dir} beside flowtop, same windows (order swapped in even rounds)\n")
    rows = []
    for label, by_mode in rounds_by_load.items():
        for mode in modes:
            ratios, ft_e, cmp_e = [], [], []
            for i, r in enumerate(by_mode[mode], 1):
                e = sum(r[n][0] * r[n][1] for n in efd) / sum(r[n][1] for n in efd)
                ft, cmp = both_hooks(r, "flowtop"), both_hooks(r, "compare")
                ratios.append(cmp / ft)
                ft_e.append(ft / e)
                cmp_e.append(cmp / e)
                first = "compare" if i % 2 == 0 else "flowtop"
                rows.append(
                    (label.split(":")[0], mode, i, first, f"{ft:.1f}", f"{cmp:.1f}", f"{e:.1f}",
                     f"{ft / e:.2f}x", f"{cmp / e:.2f}x", f"{cmp / ft:.3f}")
                )  # fmt: skip
            rows.append(
                (label.split(":")[0], mode, "median", "", "", "", "",
                 f"{C.median(ft_e):.2f}x", f"{C.median(cmp_e):.2f}x", f"{C.median(ratios):.3f}")
            )  # fmt: skip
    heads = ("load", "mode", "round", "first", "flowtop ns", "compare ns", "empty ns",
             "flowtop/empty", "compare/empty", "compare/flowtop")  # fmt: skip
    print(C.table(rows, heads))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_load_args(ap, ROUNDS, "rounds per load (default 3)")
    ap.add_argument(
        "--modes", default="clsact,tcx", help="attachments, of: clsact, tcx (default both)"
    )
    ap.add_argument(
        "--no-new-flows", action="store_true", help="skip the informational new-flow phase"
    )
    ap.add_argument(
        "--compare",
        metavar="DIR",
        help="a second build, of the BPF sources in DIR, measured beside flowtop in the "
        "same windows (see the module docstring)",
    )
    ap.add_argument(
        "--compare-undrained",
        action="store_true",
        help="never drain the --compare build's maps (its layouts may differ from this checkout's)",
    )
    return ap.parse_args(argv)


def main() -> int:
    global ROUNDS, LOADS
    args = parse_args()
    if args.rounds < 1:
        raise SystemExit("kernel_cost: --rounds must be >= 1")
    if args.compare_undrained and not args.compare:
        raise SystemExit("kernel_cost: --compare-undrained needs --compare DIR")
    if args.compare and not os.path.isfile(os.path.join(args.compare, "tc.c")):
        raise SystemExit(f"kernel_cost: no tc.c in {args.compare}")
    ROUNDS = args.rounds
    LOADS = C.pick_loads("kernel_cost", LOADS, args.loads)
    C.require_root()
    import bcc

    from flowtop.kernel.program import ProgramOptions, TcProgram

    modes, note = modes_available()
    modes = tuple(m for m in modes if m in args.modes.split(","))
    if not modes:
        raise SystemExit(f"kernel_cost: no attachment in {args.modes!r} available here")
    procs: list[subprocess.Popen[Any]] = []
    built: list[Any] = []
    hooks = empty = None
    try:
        with C.bpf_stats(), C.pair() as p:
            built.append(TcProgram(ProgramOptions()))
            if args.compare:
                built.append(TcProgram(ProgramOptions(), build=compare_build(args.compare)))
            prog = Progs(built[:1] if args.compare_undrained else built)
            empty = bcc.BPF(text=EMPTY_SRC)
            efd = {
                n: empty.load_func(n.encode(), bcc.BPF.SCHED_CLS).fd
                for n in ("empty_in_pre", "empty_in_post", "empty_eg_pre", "empty_eg_post")
            }
            hooks = Hooks(p, built, efd)
            ids = {}
            for name, tc in zip(("flowtop", "compare"), built, strict=False):
                ids[f"{name}_ingress"] = prog_id(tc.ingress.fd)
                ids[f"{name}_egress"] = prog_id(tc.egress.fd)
            ids.update({n: prog_id(fd) for n, fd in efd.items()})

            # ---- phase 1: established flows, light and busy link --------------
            rounds_by_load: dict[str, dict[str, list[dict[str, tuple[float, int]]]]] = {}
            for label, rate in LOADS:
                rounds_by_load[label] = established(p, prog, hooks, modes, ids, rate, procs)
            # ---- phase 2: a new flow per packet (informational) -------------
            new_rounds: dict[str, list[dict[str, tuple[float, int]]]] = {m: [] for m in modes}
            if not args.no_new_flows:
                new_flows(p, prog, hooks, modes, ids, new_rounds, procs)
            hooks.off()
    finally:
        for proc in procs:
            with contextlib.suppress(Exception):
                C.stop_process(proc)
        if hooks is not None:
            with contextlib.suppress(Exception):
                hooks.close()  # the namespace is gone already in the normal case
        for tc in built:
            tc.close()
        if empty is not None:
            empty.cleanup()

    # ---- report ---------------------------------------------------------------
    print("flowtop kernel cost vs empty TC program (ns per program run = per skb)")
    if note:
        print(note)
    meds = {
        (label, mode): report_established(
            f"{label}, {ATTACHED[mode]}", rounds_by_load[label][mode], efd
        )
        for label, _ in LOADS
        for mode in modes
    }
    new_meds = {
        mode: report_new_flows(ATTACHED[mode], new_rounds[mode])
        for mode in modes
        if new_rounds[mode]
    }
    print(
        "\nside by side: median flowtop/empty, each against the empty programs attached "
        "the same way\n"
    )
    print(
        C.table(
            [(label, *(f"{meds[(label, m)]:.2f}x" for m in modes)) for label, _ in LOADS]
            + (
                [("new flow per packet (informational)", *(f"{new_meds[m]:.2f}x" for m in modes))]
                if new_meds
                else []
            ),
            ("load", *modes),
        )
    )
    if args.compare:
        report_compare(args.compare, rounds_by_load, modes, efd)
    for (label, mode), med in meds.items():
        tag = label if mode == "clsact" else f"{label}, tcx"
        print(f"\nRESULT kernel_cost ({tag}): {med:.2f}x <= {TARGET}x  {C.verdict(med <= TARGET)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
