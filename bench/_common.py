"""Shared helpers for the benchmarks: namespaces, veth pairs, cleanup, tables,
the C traffic sender and throw-away git worktrees.

Everything lives in network namespaces named ``ftb-<pid>-<random>-<role>``
created here; nothing touches the root namespace's interfaces. Namespaces are
deleted (with every process inside them, all started by the bench) on exit,
on exceptions and on SIGTERM/SIGINT. Stale ``ftb-`` namespaces whose creator
pid is dead are removed at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.kernel import netns  # noqa: E402  (the namespace lifecycle the tests use)

PREFIX = "ftb-"
NETNS_DIR = "/run/netns"


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (BPF, network namespaces)")


run = netns.run  # one command runner for benches and tests


def delete_netns(name: str) -> None:
    netns.delete_netns(name, PREFIX)


def cleanup_stale() -> None:
    """Deletes ftb- namespaces left by bench runs whose process is gone."""
    netns.cleanup_stale(own_pid=None, prefix=PREFIX)


class Netns:
    def __init__(self, role: str, tag: str) -> None:
        self.name = f"{PREFIX}{os.getpid()}-{tag}-{role}"
        run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            self.sysctl(key, 1)  # no ND/MLD chatter in the counters

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def exec(
        self, *cmd: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, timeout=timeout)

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)

    def sysctl(self, key: str, value: int | str) -> None:
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def ifindex(self, ifname: str) -> int:
        return int(json.loads(self.ip("-j", "link", "show", "dev", ifname).stdout)[0]["ifindex"])

    def link_stats(self, ifname: str) -> dict[str, int]:
        out = json.loads(self.ip("-s", "-j", "link", "show", "dev", ifname).stdout)[0]["stats64"]
        return {
            "rx_packets": out["rx"]["packets"],
            "rx_dropped": out["rx"]["dropped"],
            "tx_packets": out["tx"]["packets"],
            "tx_dropped": out["tx"]["dropped"],
        }

    def delete(self) -> None:
        delete_netns(self.name)


class Pair:
    """Two namespaces a, b joined by veth va (in a, 10.77.0.1) <-> vb (in b, 10.77.0.2)."""

    A4 = "10.77.0.1"
    B4 = "10.77.0.2"

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.namespaces: list[Netns] = []
        self.a = self._ns("a", tag)
        self.b = self._ns("b", tag)
        self.va, self.vb = "ftbva", "ftbvb"
        self.a.ip(
            "link", "add", self.va, "type", "veth", "peer", "name", self.vb, "netns", self.b.name
        )
        for ns, dev, addr in ((self.a, self.va, self.A4), (self.b, self.vb, self.B4)):
            ns.ip("addr", "add", f"{addr}/24", "dev", dev)
            ns.ip("link", "set", "dev", dev, "up")
        # Static neighbours: no ARP in the counters.
        mac_a = json.loads(self.a.ip("-j", "link", "show", "dev", self.va).stdout)[0]["address"]
        mac_b = json.loads(self.b.ip("-j", "link", "show", "dev", self.vb).stdout)[0]["address"]
        self.a.ip("neigh", "replace", self.B4, "lladdr", mac_b, "dev", self.va, "nud", "permanent")
        self.b.ip("neigh", "replace", self.A4, "lladdr", mac_a, "dev", self.vb, "nud", "permanent")

    def _ns(self, role: str, tag: str) -> Netns:
        ns = Netns(role, tag)
        self.namespaces.append(ns)
        return ns

    def delete(self) -> None:
        for ns in self.namespaces:
            with contextlib.suppress(Exception):
                ns.delete()


@contextlib.contextmanager
def pair() -> Iterator[Pair]:
    """A namespace pair, deleted on exit, exceptions and SIGTERM/SIGINT."""
    cleanup_stale()

    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, _term) for s in (signal.SIGTERM, signal.SIGHUP)}
    p: Pair | None = None
    try:
        p = Pair.__new__(Pair)
        p.namespaces = []
        Pair.__init__(p)
        yield p
    finally:
        if p is not None:
            p.delete()
        for s, h in old.items():
            signal.signal(s, h)


def entered(ns: Netns) -> contextlib.AbstractContextManager[None]:
    """Moves the calling thread into ns for the block (netlink sockets made
    inside keep working in ns afterwards)."""
    return netns.entered(ns.name)


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5
) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- #
# output
# --------------------------------------------------------------------------- #


def add_load_args(ap: Any, rounds: int, rounds_help: str) -> None:
    """--rounds and --loads, as the kernel benches (kernel_cost, passive_rtt_cost) take them."""
    ap.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    ap.add_argument(
        "--loads",
        default="light,busy",
        help="comma-separated loads to run, of: light, busy (default both)",
    )


def pick_loads(
    bench: str, loads: tuple[tuple[str, str], ...], arg: str
) -> tuple[tuple[str, str], ...]:
    """The (label, rate) loads whose label starts with a name in --loads' value."""
    wanted = arg.split(",")
    picked = tuple(ld for ld in loads if ld[0].split(":")[0] in wanted)
    if not picked:
        raise SystemExit(f"{bench}: no such load in {arg!r} (light, busy)")
    return picked


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 (run_time_ns/run_cnt per program), restored after."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as f:
        old = f.read().strip()
    try:
        with open(path, "w") as f:
            f.write("1")
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


# --------------------------------------------------------------------------- #
# the paced C sender (accuracy.py, footprint.py)
# --------------------------------------------------------------------------- #

SENDER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* sender -m udp|packet -s SRC -d DST -p DPORT -b BASE_SPORT -n NFLOWS -r PPS -t SECONDS
 *        [-i IFNAME -M DSTMAC]  (packet mode)
 *
 * Goes round NFLOWS UDP flows at PPS packets/s, paced in bursts every 1 ms:
 * flow i has source port BASE_SPORT + i % SPAN and destination port
 * DPORT + i / SPAN (SPAN = 65536 - BASE_SPORT).
 *   udp:    one UDP socket bound to SRC:sport per flow (NFLOWS <= SPAN), 100-byte datagrams;
 *   packet: Ethernet/IPv4/UDP frames written with an AF_PACKET socket out of IFNAME
 *           to DSTMAC (bypassing routing, neighbours and the UDP stack), 18-byte payload.
 * SECONDS 0 sends until SIGTERM/SIGINT. Prints "sent failed elapsed_s" once, at the end. */

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

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
	const char *mode = NULL, *src = NULL, *dst = NULL, *ifname = NULL, *dmacs = NULL;
	long dport = -1, base = -1, nflows = 0, pps = 0, secs = -1;
	int opt;
	while ((opt = getopt(argc, argv, "m:s:d:p:b:n:r:t:i:M:")) != -1) {
		switch (opt) {
		case 'm': mode = optarg; break;
		case 's': src = optarg; break;
		case 'd': dst = optarg; break;
		case 'p': dport = atol(optarg); break;
		case 'b': base = atol(optarg); break;
		case 'n': nflows = atol(optarg); break;
		case 'r': pps = atol(optarg); break;
		case 't': secs = atol(optarg); break;
		case 'i': ifname = optarg; break;
		case 'M': dmacs = optarg; break;
		default: return 2;
		}
	}
	int packet = mode && !strcmp(mode, "packet");
	if (!mode || (!packet && strcmp(mode, "udp")) || !src || !dst || dport < 0 || base < 1
		|| base > 65535 || nflows < 1 || pps < 1 || secs < 0 || (packet && (!ifname || !dmacs))) {
		fprintf(stderr, "sender: bad arguments\n");
		return 2;
	}
	long span = 65536 - base;
	if (dport + (nflows - 1) / span > 65535 || (!packet && nflows > span)) {
		fprintf(stderr, "sender: too many flows for the port range\n");
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int *fds = NULL, pfd = -1;
	struct sockaddr_in to4 = { .sin_family = AF_INET, .sin_port = htons(dport) };
	struct sockaddr_ll toll = { .sll_family = AF_PACKET, .sll_halen = 6,
		.sll_protocol = htons(ETH_P_IP) };
	unsigned char f[14 + 20 + 8 + 18];
	struct iphdr *ip = (void *)(f + 14);
	struct udphdr *udp = (void *)(f + 34);
	char payload[100];
	memset(payload, 'x', sizeof(payload));
	if (packet) {
		unsigned char dmac[6];
		if (sscanf(dmacs, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dmac[0], &dmac[1], &dmac[2],
			&dmac[3], &dmac[4], &dmac[5]) != 6) {
			fprintf(stderr, "sender: bad MAC\n");
			return 2;
		}
		toll.sll_ifindex = if_nametoindex(ifname);
		memcpy(toll.sll_addr, dmac, 6);
		pfd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
		if (pfd < 0 || !toll.sll_ifindex) { perror("socket"); return 1; }
		memset(f, 0, sizeof(f));
		memcpy(f, dmac, 6);
		f[6] = 0x02; f[11] = 0x01; /* a locally administered source MAC */
		f[12] = 0x08; f[13] = 0x00;
		ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = 17;
		ip->tot_len = htons(20 + 8 + 18);
		inet_pton(AF_INET, src, &ip->saddr);
		inet_pton(AF_INET, dst, &ip->daddr);
		udp->len = htons(8 + 18);
	} else {
		inet_pton(AF_INET, dst, &to4.sin_addr);
		fds = calloc(nflows, sizeof(int));
		for (long i = 0; i < nflows; i++) {
			struct sockaddr_in me = { .sin_family = AF_INET,
				.sin_port = htons(base + i) };
			inet_pton(AF_INET, src, &me.sin_addr);
			fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
			if (fds[i] < 0 || bind(fds[i], (void *)&me, sizeof(me)) < 0) {
				perror("socket/bind");
				return 1;
			}
		}
	}

	long total = secs > 0 ? pps * secs : -1, sent = 0, failed = 0, tick = 0, i = 0;
	struct timespec t0, next, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	next = t0;
	while (!stop && (total < 0 || sent + failed < total)) {
		/* packets due by the end of this 1 ms tick */
		tick++;
		long due = pps * tick / 1000;
		if (total >= 0 && due > total) due = total;
		while (sent + failed < due) {
			int ok;
			if (packet) {
				udp->source = htons(base + i % span);
				udp->dest = htons(dport + i / span);
				ip->check = 0;
				ip->check = csum(ip, 20);
				ok = sendto(pfd, f, sizeof(f), 0, (void *)&toll, sizeof(toll))
					== sizeof(f);
			} else {
				ok = sendto(fds[i], payload, sizeof(payload), 0, (void *)&to4,
					sizeof(to4)) == sizeof(payload);
			}
			if (ok)
				sent++;
			else
				failed++;
			i = (i + 1) % nflows;
		}
		next.tv_nsec += 1000000;
		if (next.tv_nsec >= 1000000000) { next.tv_sec++; next.tv_nsec -= 1000000000; }
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%ld %ld %.6f\n", sent, failed, el);
	return 0;
}
"""


def build_sender(tmp: Path) -> Path:
    """Compiles SENDER_C with gcc into tmp; returns the executable."""
    src = tmp / "sender.c"
    src.write_text(SENDER_C)
    exe = tmp / "sender"
    run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(src)])
    return exe


def sender_args(
    exe: Path,
    mode: str,
    src: str,
    dst: str,
    dport: int,
    base_sport: int,
    flows: int,
    pps: int,
    seconds: int,
    ifname: str | None = None,
    dst_mac: str | None = None,
) -> list[str]:
    """The sender's command line (seconds=0: until SIGTERM). Its one output line
    is parsed by sender_result."""
    cmd = [str(exe), "-m", mode, "-s", src, "-d", dst, "-p", str(dport), "-b", str(base_sport)]
    cmd += ["-n", str(flows), "-r", str(pps), "-t", str(seconds)]
    if ifname is not None:
        cmd += ["-i", ifname]
    if dst_mac is not None:
        cmd += ["-M", dst_mac]
    return cmd


def sender_result(stdout: str) -> tuple[int, int, float]:
    """(sent, failed, elapsed seconds) from the sender's output line."""
    sent, failed, elapsed = stdout.split()
    return int(sent), int(failed), float(elapsed)


# --------------------------------------------------------------------------- #
# another revision of the code, side by side
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def worktree(rev: str, prefix: str = "flowtop-before-") -> Iterator[Path]:
    """`rev` checked out in a temporary git worktree (no branch), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), rev],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
        )
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)


def v4_addresses(first: int, idx: Any) -> Any:
    """16-byte flow-key addresses (V16, IPv4 in the first 4 bytes) `first`.x.y.z
    with x.y.z the low 24 bits of each idx (a numpy integer array)."""
    import numpy as np

    a = np.zeros((len(idx), 16), dtype=np.uint8)
    a[:, 0] = first
    a[:, 1] = (idx >> 16) & 0xFF
    a[:, 2] = (idx >> 8) & 0xFF
    a[:, 3] = idx & 0xFF
    return a.view("V16").ravel()
