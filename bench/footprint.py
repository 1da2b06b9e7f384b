"""Footprint of the long-running process: RSS at 0/10k/100k flows, and start-up time.

flowtop runs as a service would, in namespace b of a bench pair:

    ip netns exec B python -m flowtop --export-only -i ftbvb --prometheus 127.0.0.1:PORT

(the Prometheus listener on b's own loopback). Flows come from a small C
sender (compiled here with gcc) on an AF_PACKET socket in namespace a that
writes Ethernet/IPv4/UDP frames out of va: flow i has its own source port
(and, past 60,000, destination port), and the sender goes round the N flows
at 25,000 frames/s, so every flow gets a packet every N/25,000 s (4 s at
100k, well inside the 15 s idle timeout). The frames are addressed to vb's
MAC and to 10.77.0.3, which b does not have and does not forward: they cross
TC ingress on vb (where flowtop counts them) and are dropped after, without
an ICMP reply.

Ground truth for "N active flows": flowtop's own flowtop_active_flows gauge,
scraped until it reaches N, cross-checked with the packets the sender says it
sent. Then VmRSS and RssAnon of the flowtop process (/proc/PID/status) are
sampled once a second for 5 s and the largest is kept; also whether libbcc,
LLVM or clang are mapped in it (/proc/PID/maps). Each N gets a fresh flowtop;
5 runs per N, median.

Start-up: the time from exec to the first TCX link (or clsact filter) on vb,
found by polling the hook every 2 ms, for `--export-only` and for `flowtop
dump`, two starts in a row per run (first and second), 5 runs, median.

Targets (issue 13): RSS <= 64 MB with 10k flows; no libbcc/LLVM/clang mapped.
Run: .venv/bin/python bench/footprint.py   (root; ~6 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import _common as C
from _common import Pair, entered

RUNS = 5
FLOW_COUNTS = (0, 10_000, 100_000)
PPS = 25_000
TARGET_RSS_MB = 64.0
PROM_PORT = 9469
NOWHERE4 = "10.77.0.3"  # in b's subnet, not b's: dropped after TC ingress
COMPILER_LIBS = ("libbcc", "libLLVM", "libclang")

SENDER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* sender IFNAME DSTMAC SRC DST NFLOWS PPS SECONDS: frames round the flows,
 * paced every 1 ms; prints how many went out. */
static unsigned short csum(const void *p, int n)
{
	const unsigned short *w = p;
	unsigned long s = 0;
	for (; n > 1; n -= 2) s += *w++;
	while (s >> 16) s = (s & 0xffff) + (s >> 16);
	return (unsigned short)~s;
}

int main(int argc, char **argv)
{
	if (argc != 8) { fprintf(stderr, "usage\n"); return 2; }
	int ifindex = if_nametoindex(argv[1]);
	unsigned char dmac[6];
	sscanf(argv[2], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx",
		&dmac[0], &dmac[1], &dmac[2], &dmac[3], &dmac[4], &dmac[5]);
	long nflows = atol(argv[5]), pps = atol(argv[6]), secs = atol(argv[7]);
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
	if (fd < 0 || !ifindex) { perror("socket"); return 1; }
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = ifindex,
		.sll_halen = 6, .sll_protocol = htons(ETH_P_IP) };
	memcpy(to.sll_addr, dmac, 6);
	unsigned char f[14 + 20 + 8 + 18];
	memset(f, 0, sizeof(f));
	memcpy(f, dmac, 6);
	f[6] = 0x02; f[11] = 0x01; /* a locally administered source MAC */
	f[12] = 0x08; f[13] = 0x00;
	struct iphdr *ip = (void *)(f + 14);
	struct udphdr *udp = (void *)(f + 34);
	ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = 17;
	ip->tot_len = htons(20 + 8 + 18);
	inet_pton(AF_INET, argv[3], &ip->saddr);
	inet_pton(AF_INET, argv[4], &ip->daddr);
	udp->len = htons(8 + 18);
	long total = secs > 0 ? pps * secs : -1, sent = 0, failed = 0, tick = 0, i = 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (total < 0 || sent + failed < total) {
		tick++;
		long due = pps * tick / 1000;
		while (sent + failed < due && (total < 0 || sent + failed < total)) {
			udp->source = htons(1024 + i % 60000);
			udp->dest = htons(9000 + i / 60000);
			ip->check = 0;
			ip->check = csum(ip, 20);
			if (sendto(fd, f, sizeof(f), 0, (void *)&to, sizeof(to)) == sizeof(f))
				sent++;
			else
				failed++;
			i = (i + 1) % nflows;
		}
		if (tick % 1000 == 0) { printf("%ld %ld\n", sent, failed); fflush(stdout); }
		next.tv_nsec += 1000000;
		if (next.tv_nsec >= 1000000000) { next.tv_sec++; next.tv_nsec -= 1000000000; }
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	printf("%ld %ld\n", sent, failed);
	return 0;
}
"""


def build_sender(tmp: Path) -> Path:
    src = tmp / "sender.c"
    src.write_text(SENDER_C)
    exe = tmp / "sender"
    C.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src)])
    return exe


def flowtop_cmd(p: Pair, mode: str) -> list[str]:
    if mode == "export-only":
        return [sys.executable, "-m", "flowtop", "--export-only", "-i", p.vb,
                "--prometheus", f"127.0.0.1:{PROM_PORT}"]  # fmt: skip
    return [sys.executable, "-m", "flowtop", "dump", "-i", p.vb, "--duration", "600", "--json"]


def start(p: Pair, mode: str) -> subprocess.Popen[bytes]:
    return p.b.popen(
        flowtop_cmd(p, mode),
        cwd=str(C.ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Reads the collector's stderr until 'collecting on'."""
    assert proc.stderr is not None
    buf = b""
    end = time.monotonic() + timeout
    while b"collecting on" not in buf:
        if proc.poll() is not None:
            raise RuntimeError(f"flowtop exited early ({proc.returncode}): {buf.decode()}")
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"flowtop not ready after {timeout} s: {buf.decode()}")
        r, _, _ = select.select([proc.stderr], [], [], left)
        if r:
            buf += proc.stderr.read1(4096)  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def attached(p: Pair) -> bool:
    """Whether anything is on vb's ingress hook (a TCX link or a clsact filter)."""
    from flowtop.kernel import tcx

    with entered(p.b):
        try:
            if tcx.query_hook(socket.if_nametoindex(p.vb), tcx.BPF_TCX_INGRESS):
                return True
        except OSError:
            pass
    out = p.b.exec("tc", "filter", "show", "dev", p.vb, "ingress", check=False).stdout
    return "flowtop_" in out


def time_to_attach(p: Pair, mode: str) -> float:
    """Seconds from exec to the first attachment on vb (flowtop stopped after)."""
    t0 = time.monotonic()
    proc = start(p, mode)
    try:
        while not attached(p):
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise RuntimeError(f"flowtop exited ({proc.returncode}): {proc.stderr.read()!r}")
            if time.monotonic() - t0 > 90:
                raise RuntimeError("no attachment after 90 s")
            time.sleep(0.002)
        took = time.monotonic() - t0
        wait_ready(proc)
        return took
    finally:
        stop(proc)


def status(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of pid, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    return out


def compiler_mapped(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        text = f.read()
    return [lib for lib in COMPILER_LIBS if lib in text]


def active_flows() -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{PROM_PORT}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("flowtop_active_flows "):
                return int(float(line.split()[1]))
    raise RuntimeError("no flowtop_active_flows in the scrape")


@dataclass(frozen=True)
class Sample:
    flows: int  # flowtop_active_flows when measured
    rss_kb: int
    anon_kb: int
    file_kb: int
    mapped: tuple[str, ...]  # compiler libraries mapped in the process


def footprint(p: Pair, sender: Path, n: int) -> Sample:
    """RSS of a fresh --export-only flowtop with n active flows."""
    proc = start(p, "export-only")
    snd: subprocess.Popen[str] | None = None
    try:
        wait_ready(proc)
        mac = json.loads(p.b.ip("-j", "link", "show", "dev", p.vb).stdout)[0]["address"]
        if n:
            snd = subprocess.Popen(
                ["ip", "netns", "exec", p.a.name, str(sender), p.va, mac, Pair.A4, NOWHERE4,
                 str(n), str(PPS), "0"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30 + n / PPS * 3
        seen = 0
        with entered(p.b):
            while True:
                seen = active_flows()
                if seen >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if seen < n:
                raise RuntimeError(f"only {seen} of {n} flows active")
            best: dict[str, int] = {}
            for _ in range(5):
                st = status(proc.pid)
                if st["VmRSS"] > best.get("VmRSS", 0):
                    best = st
                time.sleep(1)
            seen = active_flows()
        mapped = tuple(compiler_mapped(proc.pid))
        return Sample(seen, best["VmRSS"], best["RssAnon"], best["RssFile"], mapped)
    finally:
        if snd is not None:
            snd.kill()
            snd.wait(timeout=10)
        stop(proc)


def main() -> int:
    C.require_root()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=RUNS)
    args = ap.parse_args()
    rows: dict[int, list[Sample]] = {n: [] for n in FLOW_COUNTS}
    starts: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ftb-") as tmpd, C.pair() as p:
        sender = build_sender(Path(tmpd))
        for _run in range(args.runs):
            for mode in ("export-only", "dump"):
                for which in ("first", "second"):
                    starts.setdefault((mode, which), []).append(time_to_attach(p, mode))
            for n in FLOW_COUNTS:
                rows[n].append(footprint(p, sender, n))
    print(f"flowtop --export-only on one veth, {args.runs} fresh runs per row, median\n")

    def mb(samples: list[Sample], field: str) -> float:
        return C.median([float(getattr(x, field)) for x in samples]) / 1024

    out = []
    for n in FLOW_COUNTS:
        r = rows[n]
        mapped = sorted({lib for x in r for lib in x.mapped})
        out.append(
            [f"{n:,}", f"{min(x.flows for x in r):,}", f"{mb(r, 'rss_kb'):.1f}",
             f"{mb(r, 'anon_kb'):.1f}", f"{mb(r, 'file_kb'):.1f}", ",".join(mapped) or "-"]
        )  # fmt: skip
    print(C.table(out, ("flows sent", "active (min)", "RSS MB", "anon MB", "file MB", "compiler")))
    print()
    srows = [
        [mode, which, f"{C.median(v):.2f}", f"{min(v):.2f}", f"{max(v):.2f}"]
        for (mode, which), v in starts.items()
    ]
    print(C.table(srows, ("command", "start", "to attach s (median)", "min", "max")))
    rss10k = mb(rows[10_000], "rss_kb")
    clean = not any(x.mapped for r in rows.values() for x in r)
    ok = rss10k <= TARGET_RSS_MB and clean
    print(
        f"\ntarget: RSS <= {TARGET_RSS_MB:g} MB with 10k flows: {rss10k:.1f} MB; "
        f"no compiler mapped: {'yes' if clean else 'no'}  {C.verdict(ok)}"
    )
    print(f"\nRESULT footprint: {C.verdict(ok)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
