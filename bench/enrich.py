"""Enriching new flows: both ends of 100k flows through the Enricher.

The Enricher gets MaxMind's ASN and City test databases (GeoLite2-ASN-Test,
GeoIP2-City-Test from tests/data/mmdb), a labels file of 200 prefixes
(IPv4 and IPv6, with zones) and two local networks.

Address mix ("realistic"): the local end of each flow is one of 2,000 local
hosts (1,500 IPv4 in 10.0.0.0/16, 500 IPv6 in fd00:1::/64); the remote end is
drawn with Zipf popularity (s = 1.1) from 30,000 remote addresses, 80% IPv4,
20% IPv6, each inside a network of the test databases (so lookups hit real
records). Also timed: every address distinct (200k, all inside database
networks), the worst case for the caches.

Each case runs in a fresh Enricher (cold: nothing cached) and then again
(warm: every address cached); `lookup()` is called once per end (src, dst)
as the engine does. Median of 5 runs. Side by side, the per-address way
(maxminddb `get()` of both databases for each distinct address, no labels),
median of 3.

Target (issue 6): 100k new flows (both ends) <= 500 ms cold.
Run: .venv/bin/python bench/enrich.py   (no root needed)
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import maxminddb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import table, verdict
from flowtop.enrich import Enricher, EnrichOptions

MMDB = Path(__file__).resolve().parents[1] / "tests" / "data" / "mmdb"
ASN_DB = MMDB / "GeoLite2-ASN-Test.mmdb"
CITY_DB = MMDB / "GeoIP2-City-Test.mmdb"
FLOWS = 100_000
RUNS = 5
TARGET_MS = 500.0
LOCAL = [ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("fd00:1::/64")]


def db_networks() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(first, last) address ranges of the test databases' networks: IPv4, IPv6."""
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    for name in ("GeoLite2-ASN-Test", "GeoIP2-City-Test"):
        for ent in json.loads((MMDB / "source-data" / f"{name}.json").read_text()):
            net = ipaddress.ip_network(next(iter(ent)))
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if net.version == 4 or (net.prefixlen >= 96 and lo >> 32 == 0):
                v4.append((lo, hi))  # (::a.b.c.d/96+n is IPv4 in the tree)
            elif net.prefixlen <= 64 and not (lo >> 112 == 0x2002 or lo >> 96 == 0x20010000):
                v6.append((lo, hi))  # (6to4 and Teredo are aliases of the IPv4 tree)
    return v4, v6


def in_networks(rng: np.random.Generator, nets: list[tuple[int, int]], n: int) -> list[int]:
    out = []
    for i in rng.integers(0, len(nets), n).tolist():
        lo, hi = nets[i]
        span = hi - lo
        out.append(lo + (int(rng.integers(0, min(span, 2**62) + 1)) if span else 0))
    return out


def to_v16(v4: list[int], v6: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Flow-key addresses (V16, IPv4 in the first 4 bytes) and versions."""
    raw = np.zeros((len(v4) + len(v6), 16), dtype=np.uint8)
    for i, a in enumerate(v4):
        raw[i, :4] = np.frombuffer(a.to_bytes(4, "big"), dtype=np.uint8)
    for j, a in enumerate(v6):
        raw[len(v4) + j] = np.frombuffer(a.to_bytes(16, "big"), dtype=np.uint8)
    ver = np.array([4] * len(v4) + [6] * len(v6), dtype=np.uint8)
    return raw.view("V16").ravel(), ver


def realistic(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    v4nets, v6nets = db_networks()
    local4 = [0x0A000000 + int(x) for x in rng.choice(1 << 16, 1500, replace=False)]
    local6 = [(0xFD000001 << 96) + int(x) for x in rng.integers(1, 1 << 62, 500)]
    lsrc, lver = to_v16(local4, local6)
    remote4 = [a & 0xFFFFFFFF for a in in_networks(rng, v4nets, 24_000)]
    rsrc, rver = to_v16(remote4, in_networks(rng, v6nets, 6_000))
    rsrc_order = rng.permutation(len(rsrc))
    rsrc, rver = rsrc[rsrc_order], rver[rsrc_order]
    li = rng.integers(0, len(lsrc), FLOWS)
    ri = rng.zipf(1.1, FLOWS * 2) - 1
    ri = ri[ri < len(rsrc)][:FLOWS]
    return (lsrc[li], lver[li]), (rsrc[ri], rver[ri])


def distinct(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    v4nets, v6nets = db_networks()
    n4, n6 = int(FLOWS * 2 * 0.8), int(FLOWS * 2 * 0.2)
    a4 = sorted({a & 0xFFFFFFFF for a in in_networks(rng, v4nets, n4 * 2)})
    a6 = sorted(set(in_networks(rng, v6nets, n6 * 2)))
    addrs, ver = to_v16(
        [a4[i] for i in rng.choice(len(a4), n4, replace=False)],
        [a6[i] for i in rng.choice(len(a6), n6, replace=False)],
    )
    order = rng.permutation(len(addrs))
    addrs, ver = addrs[order], ver[order]
    return (addrs[:FLOWS], ver[:FLOWS]), (addrs[FLOWS:], ver[FLOWS:])


def labels_file(path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = []
    for i in range(150):
        lines.append(f"svc-{i} 10.0.{int(rng.integers(0, 256))}.{int(rng.integers(0, 4)) * 64}/26")
    for i in range(40):
        lines.append(f"dc-{i} 10.{i + 1}.0.0/16 zone=z{i % 3}")
    for i in range(10):
        lines.append(f"v6-{i} fd00:1:0:0:{i:x}::/80 2001:db8:{i:x}::/48")
    # the same prefix twice would be an error: keep the first of each
    seen, out = set(), []
    for line in lines:
        pfx = line.split()[1]
        if pfx not in seen:
            seen.add(pfx)
            out.append(line)
    path.write_text("\n".join(out) + "\n")


def run_case(ends: tuple[tuple[np.ndarray, np.ndarray], ...], labels: Path) -> dict[str, float]:
    opts = EnrichOptions(
        geoip_asn=str(ASN_DB),
        geoip_city=str(CITY_DB),
        labels=str(labels),
        search_default_paths=False,
        local_networks=LOCAL,
    )
    t = time.perf_counter()
    e = Enricher(opts, warn=lambda m: sys.exit(f"unexpected warning: {m}"))
    start = time.perf_counter() - t
    t = time.perf_counter()
    for addrs, ver in ends:
        e.lookup(addrs, ver)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    for addrs, ver in ends:
        e.lookup(addrs, ver)
    warm = time.perf_counter() - t
    st = e.stats()
    e.close()
    return {
        "start": start * 1e3,
        "cold": cold * 1e3,
        "warm": warm * 1e3,
        "distinct": st["cache_misses"],
        "entities": st["entities"],
    }


def per_address(ends: tuple[tuple[np.ndarray, np.ndarray], ...]) -> float:
    """The straightforward way: maxminddb get() per distinct address, both DBs."""
    asn = maxminddb.open_database(str(ASN_DB), maxminddb.MODE_MMAP_EXT)
    city = maxminddb.open_database(str(CITY_DB), maxminddb.MODE_MMAP_EXT)
    t = time.perf_counter()
    seen: dict[tuple[bytes, int], tuple[object, object]] = {}
    for addrs, ver in ends:
        raw = addrs.view(np.uint8).reshape(-1, 16)
        for row, v in zip(raw, ver.tolist(), strict=True):
            key = (row.tobytes(), v)
            if key in seen:
                continue
            ip = str(ipaddress.IPv4Address(key[0][:4]) if v == 4 else ipaddress.IPv6Address(key[0]))
            seen[key] = (asn.get(ip), city.get(ip))
    dt = time.perf_counter() - t
    asn.close()
    city.close()
    return dt * 1e3


def main() -> None:
    if not ASN_DB.exists():
        sys.exit(f"MaxMind test databases not found in {MMDB}")
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.txt"
        labels_file(labels)
        rows = []
        results: dict[str, list[dict[str, float]]] = {}
        baseline: dict[str, float] = {}
        for case, build in (("realistic mix", realistic), ("all distinct", distinct)):
            src, dst = build(7)
            ends = (src, dst)
            results[case] = [run_case(ends, labels) for _ in range(RUNS)]
            baseline[case] = statistics.median(per_address(ends) for _ in range(3))
        for case, rs in results.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            rows.append(
                [
                    case,
                    f"{int(med['distinct']):,}",
                    f"{int(med['entities']):,}",
                    f"{med['start']:.1f}",
                    f"{med['cold']:.1f}",
                    f"{med['warm']:.1f}",
                    f"{baseline[case]:.0f}",
                    f"{baseline[case] / med['cold']:.1f}x",
                ]
            )
    print(f"{FLOWS:,} flows, both ends (2 lookup() calls), median of {RUNS}; ms")
    print(
        table(
            rows,
            [
                "addresses",
                "distinct",
                "entities",
                "open",
                "cold",
                "warm",
                "per-address get()",
                "speedup",
            ],
        )
    )
    cold = statistics.median(r["cold"] for r in results["realistic mix"])
    worst = statistics.median(r["cold"] for r in results["all distinct"])
    print(f"\ntarget: cold (realistic mix) <= {TARGET_MS:.0f} ms")
    ok = cold <= TARGET_MS
    print(
        f"RESULT enrich: realistic {cold:.0f} ms, all distinct {worst:.0f} ms "
        f"<= {TARGET_MS:.0f}  {verdict(ok)}"
    )


if __name__ == "__main__":
    main()
