"""Zones and monitors, engine side: the engine step without them beside the
step with zones and two monitors configured, over the same drains.

Each interval drains n flow records (1k, 10k, 100k) of n/4 TCP connections
seen forwarded, as on a router: each connection's client -> server records on
ingress of one leg and egress of the other, and its reply the other way
round (so the counted-once rule has an ingress record to find for every
egress one). Clients are in 10.0.0.0/8 (labels: zone a), servers in
192.0.2.1-7 (zone b), half of them on port 443. Between two intervals 1% of
the connections end and as many new ones start (new rows: the monitors'
memo works those out, the others it knows).

Two engines, each with its own flow table and enricher: "off" has no zone
and no monitor (the tracker returns at once), "on" has the labels with
zones and two monitors:
  w: local "net 10.0.0.0/8", remote "host 192.0.2.1"
  z: local "zone a", remote "zone b and port 443"
Every round builds the next drain (not timed) and steps both engines with
it, in alternating order; medians over the rounds, and their ratio. The
intervals are 1 s apart on the flows' clock, so every fifth step also reads
the monitors' top conversations (monitors.TOP_EVERY): the medians leave it
out, the means (printed beside them) spread it over the steps.

Before the figures are printed, the last interval's results of the "on"
engine are checked against what was put in: per zone pair, the bytes of
every connection's direction once (not once per leg), the cross-zone bytes,
and each monitor's bytes both ways.

Target (issue 15, this bench): the step with zones and two monitors at 100k
flows per interval <= 1.3x the step without.
Run: .venv/bin/python bench/zones_monitors.py   (no root needed)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import v4_addresses  # noqa: E402

from flowtop.config import from_mapping  # noqa: E402
from flowtop.core.engine import Engine  # noqa: E402
from flowtop.core.flowtable import FlowTable  # noqa: E402
from flowtop.core.model import CollectorHealth, InterfaceCounters  # noqa: E402
from flowtop.enrich.enricher import Enricher, EnrichOptions, parse_networks  # noqa: E402
from flowtop.kernel import layout  # noqa: E402
from flowtop.kernel.collector import Drain  # noqa: E402
from flowtop.query import monitors  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
ROUNDS = {1_000: 41, 10_000: 21, 100_000: 11}
TARGET_RATIO = 1.3  # at 100k
CHURN = 0.01
UP, DOWN = 1500, 9000  # bytes per record each interval: client -> server, back
PACKETS = 3
NS = 1_000_000_000
T0 = 10**12
LABELS = "lan 10.0.0.0/8 zone=a\nsvc 192.0.2.0/24 zone=b\n"
MONITORS = {
    "monitor": [
        {"name": "w", "local": "net 10.0.0.0/8", "remote": "host 192.0.2.1"},
        {"name": "z", "local": "zone a", "remote": "zone b and port 443"},
    ]
}
# ifindex, direction (0 ingress, 1 egress), client -> server?
LEGS = ((2, 0, True), (3, 1, True), (3, 0, False), (2, 1, False))


def server_of(conn: np.ndarray) -> np.ndarray:
    return conn % 7 + 1  # 192.0.2.1 .. 7


def port_of(conn: np.ndarray) -> np.ndarray:
    return np.where(conn % 2 == 0, 443, 80).astype(np.uint16)


def drain(conns: np.ndarray, step: int) -> Drain:
    """One interval's records of the connections numbered conns, 4 legs each."""
    n = len(conns)
    client = v4_addresses(10, conns)
    srv = np.zeros((n, 16), dtype=np.uint8)
    srv[:, :3] = (192, 0, 2)
    srv[:, 3] = server_of(conns)
    server = srv.view("V16").ravel()
    cport = (1024 + conns % 60000).astype(np.uint16)
    sport = port_of(conns)
    now = T0 + step * NS
    ks, ss = [], []
    for ifindex, direction, fwd in LEGS:
        k = np.zeros(n, dtype=layout.FLOW_KEY)
        k["ifindex"], k["direction"], k["ip_version"], k["proto"] = ifindex, direction, 4, 6
        k["src"], k["dst"] = (client, server) if fwd else (server, client)
        k["sport"], k["dport"] = (cport, sport) if fwd else (sport, cport)
        s = np.zeros(n, dtype=layout.FLOW_STATS)
        s["packets"], s["bytes"] = PACKETS, UP if fwd else DOWN
        s["first_seen_ns"] = s["last_seen_ns"] = now
        ks.append(k)
        ss.append(s)
    return Drain([(np.concatenate(ks), np.concatenate(ss))], now, 1.0)


class Feed:
    """The engines' collector: hands out the drain set before each step."""

    def __init__(self) -> None:
        self.next: Drain | None = None

    def start(self) -> list[str]:
        return ["eth1", "eth2"]

    def drain(self) -> Drain:
        assert self.next is not None
        return self.next

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        pass

    def names(self) -> dict[int, str]:
        return {2: "eth1", 3: "eth2"}

    def interfaces(self) -> list[str]:
        return ["eth1", "eth2"]

    def interface_counters(self) -> list[InterfaceCounters]:
        return []

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        return CollectorHealth(kernel={}, forced_evictions=forced_evictions)

    def stop_capture(self) -> None:
        pass

    def close(self) -> None:
        pass


def engine(n: int, on: bool, labels: Path) -> tuple[Engine, Feed]:
    feed = Feed()
    e = Engine(feed, FlowTable(max_flows=4 * n))
    opts = EnrichOptions(
        labels=str(labels) if on else None,
        search_default_paths=False,
        local_networks=parse_networks(["10.9.0.0/24"]),
    )
    e.set_enricher(Enricher(opts))
    monitors.configure(e, from_mapping(MONITORS if on else {}))
    return e, feed


def check(e: Engine, conns: np.ndarray) -> None:
    """The last interval's zone pairs and monitor rates against what went in."""
    tracker = monitors.tracker_of(e)
    assert tracker is not None
    n = len(conns)
    pairs = {p: (b, k) for p, b, k in tracker.zones.pairs}
    want = {("a", "b"): (n * UP, n * PACKETS), ("b", "a"): (n * DOWN, n * PACKETS)}
    assert pairs == want, (pairs, want)
    assert tracker.zones.cross_bytes == n * (UP + DOWN)
    st = {m.name: m for m in tracker.statuses()}
    to_1 = int((server_of(conns) == 1).sum())
    on_443 = int((port_of(conns) == 443).sum())
    for name, count in (("w", to_1), ("z", on_443)):
        got = (st[name].local_to_remote_bps / 8, st[name].remote_to_local_bps / 8)
        assert got == (count * UP, count * DOWN), (name, got, count)


def run(n: int, rounds: int, labels: Path) -> dict[str, float]:
    rng = np.random.default_rng(n)
    conns = np.arange(n // 4, dtype=np.int64)
    fresh = len(conns)
    engines = {"off": engine(n, False, labels), "on": engine(n, True, labels)}
    times: dict[str, list[float]] = {k: [] for k in engines}
    for step in range(rounds + 2):  # two untimed: the tables fill
        if step:
            gone = rng.choice(len(conns), max(1, int(len(conns) * CHURN)), replace=False)
            conns = conns.copy()
            conns[gone] = np.arange(fresh, fresh + len(gone))
            fresh += len(gone)
        d = drain(conns, step + 1)
        order = list(engines.items())
        if step % 2:
            order.reverse()
        for name, (e, feed) in order:
            feed.next = d
            t0 = time.perf_counter()
            e.step()
            if step >= 2:
                times[name].append(time.perf_counter() - t0)
    check(engines["on"][0], conns)
    out = {k: statistics.median(v) * 1000 for k, v in times.items()}
    out.update({f"{k} mean": statistics.fmean(v) * 1000 for k, v in times.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--rounds", type=int, default=0, help="rounds per size (0: by size)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp, "labels")
        labels.write_text(LABELS)
        results = {}
        for n in args.sizes:
            rounds = args.rounds or ROUNDS.get(n, 11)
            med = run(n, rounds, labels)
            results[n] = med
            print(
                f"{n:>7} flows/interval: step without {med['off']:8.2f} ms, with zones + 2 "
                f"monitors {med['on']:8.2f} ms, ratio {med['on'] / med['off']:.2f}x "
                f"(medians of {rounds}, interleaved; results checked); means "
                f"{med['off mean']:.2f} / {med['on mean']:.2f} ms, "
                f"{med['on mean'] / med['off mean']:.2f}x"
            )
    big = max(results)
    ratio = results[big]["on"] / results[big]["off"]
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    if big != 100_000:
        verdict = "MISS (no 100k row)"
    print(f"target: <= {TARGET_RATIO}x at 100k (medians): {ratio:.2f}x at {big}")
    print(f"RESULT zones_monitors: {verdict}")


if __name__ == "__main__":
    main()
