"""Names from QUIC Initials, the userspace side: client Initials per second
decrypted and named (wirenames/quic.py through Feeder.feed, as the names
thread runs it).

Synthetic, userspace only (no kernel, no root). Real payloads: ClientHellos
written by Python's ssl with a server_hostname (200 names), each in a
1200-byte client Initial sealed by aioquic (an implementation of its own)
under a connection id of its own (so every Initial derives its keys: the
cost of a new connection), from distinct clients. Rows:

  one        a hello in one Initial (the usual client)
  two        a hello over two Initials (cut before its server_name
             extension: the name only in the second), per Initial
  copies     each one-Initial datagram fed twice (a router's two hooks):
             the second read is skipped, per Initial fed
  garbage    1200 random bytes behind a long-header Initial's first byte,
             version 1 and a DCID length (stray UDP to 443): counted
             malformed (or unparsed: a Length past the datagram)

Every timed pass checks its counts (names learnt, malformed) and, after
timing, the names against ground truth. Medians of REPS runs in this
process's CPU time (time.process_time); a table, then a RESULT line.
Run: .venv/bin/python bench/quic_initials.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from aioquic.quic.crypto import CryptoPair

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import table  # noqa: E402

from flowtop.kernel import layout  # noqa: E402
from flowtop.kernel.wire_records import KIND_QUIC, WirePacket  # noqa: E402
from flowtop.wirenames.feed import Feeder  # noqa: E402
from flowtop.wirenames.names import SOURCE_SNI, WireNames  # noqa: E402
from tests.unit.wirenames_bytes import client_hello, flow_key  # noqa: E402

REPS = 5
N = 5_000  # connections per pass
BATCH = 4096  # as wirenames/reader.BATCH


def _v2(n: int) -> bytes:
    return (0x4000 | n).to_bytes(2, "big")


def seal(dcid: bytes, frames: bytes, pn: int) -> bytes:
    """A 1200-byte v1 client Initial carrying frames, sealed by aioquic."""
    pair = CryptoPair()
    pair.setup_initial(dcid, is_client=True, version=1)
    head = bytes([len(dcid)]) + dcid + b"\x04\x01\x02\x03\x04" + b"\x00"
    fixed = 5 + len(head) + 4
    frames = frames.ljust(1200 - fixed - 16, b"\x00")
    header = bytes([0xC1]) + b"\x00\x00\x00\x01" + head + _v2(2 + len(frames) + 16)
    return pair.encrypt_packet(header + pn.to_bytes(2, "big"), frames, pn)


def crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + _v2(offset) + _v2(len(data)) + data


def batches(split: bool) -> tuple[list[WirePacket], list[tuple[bytes, str]]]:
    names = [f"h3-{i}.example.org" for i in range(200)]
    hellos = [client_hello(n)[5:] for n in names]
    rng = np.random.default_rng(9369)
    pkts, truth = [], []
    for i in range(N):
        hs, name = hellos[i % 200], names[i % 200]
        key = flow_key(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", "192.0.2.3",
                       1024 + i % 60000, 443, proto=17)  # fmt: skip
        dcid = rng.bytes(8)
        if split:
            cut = hs.index(name.encode()) - 9
            for pn, frame in enumerate((crypto(0, hs[:cut]), crypto(cut, hs[cut:]))):
                d = seal(dcid, frame, pn)
                pkts.append(WirePacket(key, KIND_QUIC, 0, d, len(d)))
        else:
            d = seal(dcid, crypto(0, hs), 0)
            pkts.append(WirePacket(key, KIND_QUIC, 0, d, len(d)))
        truth.append((key, name))
    return pkts, truth


def garbage() -> list[WirePacket]:
    rng = np.random.default_rng(443)
    out = []
    for i in range(N):
        d = b"\xc3\x00\x00\x00\x01\x08" + rng.bytes(1194)
        key = flow_key(f"10.8.{(i >> 8) & 255}.{i & 255}", "192.0.2.4", 1024 + i, 443, proto=17)
        out.append(WirePacket(key, KIND_QUIC, 0, d, len(d)))
    return out


def timed(pkts: list[WirePacket], names: int, malformed: int) -> tuple[float, WireNames]:
    """CPU seconds of one pass through a fresh Feeder; checks its counts."""
    w = WireNames()
    f = Feeder(w)
    t0 = time.process_time()
    for at in range(0, len(pkts), BATCH):
        f.feed(pkts[at : at + BATCH])
    t = time.process_time() - t0
    c = w.counters()
    # garbage: malformed, or cut where its random Length field points past the datagram
    assert c["quic_names"] == names and c["quic_malformed"] + c["quic_unparsed"] == malformed, c
    assert c["quic_initials"] == len(pkts), c
    return t, w


def check_names(w: WireNames, truth: list[tuple[bytes, str]]) -> None:
    keys = np.frombuffer(b"".join(k for k, _ in truth), dtype=layout.FLOW_KEY)
    got = w.join(keys)
    for (_k, name), nid, src in zip(truth, got.dst_name, got.source, strict=True):
        assert w.names.get(int(nid)) == name and int(src) == SOURCE_SNI, (name, nid)


def main() -> int:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    one, truth = batches(split=False)
    two, truth2 = batches(split=True)
    copies = [p for p in one for _ in range(2)]
    junk = garbage()
    rows = []
    rates = {}
    for label, pkts, names, bad, tr in (
        ("one", one, N, 0, truth),
        ("two", two, N, 0, truth2),
        ("copies", copies, N, 0, truth),
        ("garbage", junk, 0, N, None),
    ):
        runs = []
        w = None
        for _ in range(REPS):
            t, w = timed(pkts, names, bad)
            runs.append(t)
        assert w is not None
        if tr is not None:
            check_names(w, tr)
        med = statistics.median(runs)
        rates[label] = len(pkts) / med
        rows.append((label, len(pkts), f"{med * 1e3:.1f}", f"{len(pkts) / med:,.0f}",
                     f"{N / med:,.0f}" if names else "-",
                     f"{min(runs) * 1e3:.1f}-{max(runs) * 1e3:.1f}"))  # fmt: skip
    print(table(rows, ("pass", "Initials", "CPU ms (median)", "Initials/s", "names/s",
                       "min-max ms")))  # fmt: skip
    one_s, two_s, junk_s = (f"{rates[k]:,.0f}" for k in ("one", "two", "garbage"))
    print(f"RESULT quic initials: {one_s} one-Initial hellos/s, {two_s} Initials/s over two, "
          f"{junk_s} garbage/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
