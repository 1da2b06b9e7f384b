"""Kernel cost of the socket owner programs (bpf/owner.c) against empty ones, same run.

A bench namespace pair (a 10.77.0.1 <-> b 10.77.0.2) and a cgroup of the
bench's own under the cgroup v2 root; every load process runs in that
cgroup, and every program is attached to it (not to the root, so nothing
else on the host runs them and their counts are the bench's alone), in this
order with BPF_F_ALLOW_MULTI:

    sock_create      empty (before)  ftownc_<pid>  empty (after)
    cgroup_skb egr   empty (before)  ftowne_<pid>  empty (after)
    cgroup_skb ingr  empty (before)  ftowni_<pid>  empty (after)

The empty programs return 1 (allow) like flowtop's, so every socket and
packet runs all three; an empty one on either side cancels any position
effect. With kernel.bpf_stats_enabled=1 (restored after) the kernel sums
run_time_ns and run_cnt per program, read with `bpftool prog show --json`
at the start and end of each window. The owner map is drained every second,
as the engine would.

Loads, ROUNDS windows of WINDOW s each:
  connect/accept: one client process connects, sends one byte and closes,
      in a loop (TIME_WAIT ports reused); the server accepts and reads. sock_create runs once per
      client socket; the skb programs see the handshakes (a new tuple per
      connection: the report path).
  iperf3 TCP: one stream a -> b, unlimited: the skb programs' common path
      (one storage lookup and a compare per packet).

Informational (no target): ns per run of each flowtop program, of the empty
ones, and the difference. Run: .venv/bin/python bench/owner_cost.py (root)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _common as C
from _common import Pair

from flowtop.kernel.bpfsys import prog_id_of
from flowtop.kernel.build import (
    CGROUP_SKB_EGRESS,
    CGROUP_SKB_INGRESS,
    CGROUP_SOCK_CREATE,
    Build,
    Request,
)
from flowtop.kernel.cgroup import find_cgroup2
from flowtop.kernel.owners import (
    BPF_CGROUP_INET_EGRESS,
    BPF_CGROUP_INET_INGRESS,
    BPF_CGROUP_INET_SOCK_CREATE,
    OwnerCollector,
)
from flowtop.kernel.sockops_attach import attach_prog, detach_prog

ROUNDS = 3
WINDOW = 5.0
WARMUP = 2.0

EMPTY_SRC = """
int ftbempty_c_pre(struct bpf_sock *sk) { return 1; }
int ftbempty_c_post(struct bpf_sock *sk) { return 1; }
int ftbempty_e_pre(struct __sk_buff *skb) { return 1; }
int ftbempty_e_post(struct __sk_buff *skb) { return 1; }
int ftbempty_i_pre(struct __sk_buff *skb) { return 1; }
int ftbempty_i_post(struct __sk_buff *skb) { return 1; }
"""
# hook -> (flowtop's letter, empty programs' kind, attach type)
HOOKS = {
    "sock_create": ("c", CGROUP_SOCK_CREATE, BPF_CGROUP_INET_SOCK_CREATE),
    "egress": ("e", CGROUP_SKB_EGRESS, BPF_CGROUP_INET_EGRESS),
    "ingress": ("i", CGROUP_SKB_INGRESS, BPF_CGROUP_INET_INGRESS),
}

SERVER = r"""
import socket, threading
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("10.77.0.2", 5301))
lst.listen(1024)
while True:
    c, _ = lst.accept()
    c.recv(16)
    c.close()
"""

CHURN = r"""
import socket, sys, time
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    c = socket.create_connection(("10.77.0.2", 5301))
    c.sendall(b"q")
    c.close()
    n += 1
print(n)
"""


def _into(cgroup: Path) -> Callable[[], None]:
    """A preexec_fn: the child joins cgroup before it execs (ip netns exec
    then execs the command in the same process)."""

    def enter() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return enter


def snapshot(ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt), from bpftool."""
    out = json.loads(C.run(["bpftool", "prog", "show", "--json"]).stdout)
    by_id = {p["id"]: p for p in out}
    return {
        name: (int(by_id[i].get("run_time_ns", 0)), int(by_id[i].get("run_cnt", 0)))
        for name, i in ids.items()
    }


def window(ids: dict[str, int], owners: OwnerCollector, secs: float) -> dict[str, tuple[int, int]]:
    """name -> (ns, runs) over secs, draining the owner map every second."""
    s0 = snapshot(ids)
    end = time.monotonic() + secs
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        owners.drain()
    s1 = snapshot(ids)
    owners.drain()
    return {n: (s1[n][0] - s0[n][0], s1[n][1] - s0[n][1]) for n in ids}


@contextlib.contextmanager
def bench_cgroup() -> Iterator[Path]:
    root = find_cgroup2()
    if root is None:
        sys.exit("no cgroup v2 mount")
    path = Path(root) / f"ftb-owners-{os.getpid()}-{secrets.token_hex(3)}"
    path.mkdir()
    try:
        yield path
    finally:
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)


@contextlib.contextmanager
def empty_programs(cgroup: Path, before: bool) -> Iterator[dict[str, int]]:
    """The empty programs (before or after flowtop's), attached to cgroup;
    name -> prog id."""
    tag = "pre" if before else "post"
    with tempfile.NamedTemporaryFile("w", suffix=".c", prefix="ftb-empty-") as src:
        src.write(EMPTY_SRC)
        src.flush()
        names = {hook: f"ftbempty_{letter}_{tag}" for hook, (letter, _, _) in HOOKS.items()}
        build = Build(
            Request(
                src=src.name,
                cflags=[],
                first=[(names[h], kind) for h, (_, kind, _) in HOOKS.items()],
                maps=[],
                what="the empty programs",
            )
        )
        try:
            loaded = build.wait()
        finally:
            build.close()
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    done: list[tuple[int, int]] = []
    try:
        for hook, (_, _, at) in HOOKS.items():
            pfd = loaded.progs[names[hook]]
            attach_prog(fd, pfd, at)
            done.append((pfd, at))
        yield {names[h]: prog_id_of(loaded.progs[names[h]]) for h in HOOKS}
    finally:
        for pfd, at in done:
            with contextlib.suppress(OSError):
                detach_prog(fd, pfd, at)
        os.close(fd)
        loaded.close()


def measure(p: Pair, cg: Path, owners: OwnerCollector, ids: dict[str, int]) -> dict[str, Any]:
    procs: list[subprocess.Popen[Any]] = []
    out: dict[str, Any] = {}
    # A few thousand connections a second would run out of ephemeral ports
    # in TIME_WAIT within the run, and connect() would slow to a crawl.
    p.a.sysctl("net.ipv4.ip_local_port_range", "1024 65000")
    p.a.sysctl("net.ipv4.tcp_tw_reuse", 1)
    try:
        srv = p.b.popen([sys.executable, "-c", SERVER], preexec_fn=_into(cg))
        procs.append(srv)
        time.sleep(0.5)
        total = WARMUP + ROUNDS * (WINDOW + 0.5) + 1
        cli = p.a.popen(
            [sys.executable, "-c", CHURN, str(total)], preexec_fn=_into(cg), stdout=subprocess.PIPE
        )
        procs.append(cli)
        time.sleep(WARMUP)
        out["connect/accept"] = [window(ids, owners, WINDOW) for _ in range(ROUNDS)]
        stdout, _ = cli.communicate(timeout=60)
        out["connects"] = int(stdout.decode().strip() or 0)
        C.stop_process(srv)
        iperf_s = p.b.popen(
            ["iperf3", "-s", "-1", "-B", Pair.B4],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_into(cg),
        )
        procs.append(iperf_s)
        time.sleep(0.5)
        iperf_c = p.a.popen(
            ["iperf3", "-c", Pair.B4, "-t", str(int(total)), "--connect-timeout", "3000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_into(cg),
        )
        procs.append(iperf_c)
        time.sleep(WARMUP)
        rounds = []
        for _ in range(ROUNDS):
            if iperf_c.poll() is not None:
                assert iperf_c.stderr is not None
                raise RuntimeError(f"iperf3 ended early: {iperf_c.stderr.read().decode()}")
            rounds.append(window(ids, owners, WINDOW))
        out["iperf3 TCP"] = rounds
    finally:
        for proc in procs:
            C.stop_process(proc)
    return out


def report(results: dict[str, Any], letters: dict[str, str]) -> list[str]:
    rows = []
    summary = []
    for load in ("connect/accept", "iperf3 TCP"):
        for hook, (letter, _, _) in HOOKS.items():
            ft, pre, post = letters[letter], f"ftbempty_{letter}_pre", f"ftbempty_{letter}_post"
            per = []
            for r in results[load]:
                if r[ft][1] == 0:
                    continue
                e_ns = (r[pre][0] + r[post][0]) / max(1, r[pre][1] + r[post][1])
                per.append((r[ft][0] / r[ft][1], e_ns, r[ft][1]))
            if not per:
                rows.append((load, hook, 0, "-", "-", "-"))
                continue
            ft_ns = C.median([x[0] for x in per])
            e_ns = C.median([x[1] for x in per])
            runs = sum(x[2] for x in per)
            rows.append((load, hook, runs, f"{ft_ns:.1f}", f"{e_ns:.1f}", f"{ft_ns - e_ns:.1f}"))
            summary.append(f"{load} {hook} {ft_ns:.0f} ns (empty {e_ns:.0f})")
    print(
        f"\n{ROUNDS} rounds x {WINDOW:g} s per load; medians of the rounds; "
        f"{results['connects']} connections in the connect/accept load\n"
    )
    print(
        C.table(rows, ("load", "program", "runs", "flowtop ns/run", "empty ns/run", "difference"))
    )
    return summary


def main() -> int:
    C.require_root()
    # MULTI programs run in attach order: empty, flowtop's, empty
    with (
        C.pair() as p,
        bench_cgroup() as cg,
        C.bpf_stats(),
        empty_programs(cg, before=True) as pre,
        OwnerCollector(cgroup=str(cg)) as owners,
        empty_programs(cg, before=False) as post,
    ):
        ids = {**pre, **post, **{n: owners.prog_ids[n] for n in owners.names.values()}}
        results = measure(p, cg, owners, ids)
        counts = owners.counters()
    summary = report(results, owners.names)
    print(f"\nowner counters: {counts}")
    print("RESULT owner_cost (informational): " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
