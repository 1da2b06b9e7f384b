"""Userspace memory per tracked flow: RSS growth of FlowTable per distinct flow.

For each N (100k and 1M) three fresh subprocesses (median reported): each
imports flowtop, builds an empty FlowTable(max_flows=N), reads VmRSS, then
merges N distinct synthetic IPv4 UDP keys (numpy, layout.FLOW_KEY) in batches
of 65,536 via FlowTable.merge, collects garbage and reads VmRSS again. The
key/stat batches are generated one at a time and dropped, so the delta is what
the table keeps. Also printed: the peak (VmHWM) delta, which includes the
transient copies when the columns grow, and the theoretical size of the
table's parts.

The child sets glibc's mmap threshold as flowtop's process does
(flowtop/run/malloc.py); --glibc-default leaves glibc's own policy, which
keeps the high-water mark of transient arrays (about 110 bytes/flow at
100k): run both to see the difference.

The columns that TCP health, enrichment, owners, drops and names write are
allocated at their first write (core/flowtable.py, _Columns): these synthetic
UDP flows write none of them. --every-column writes each of them on every row
after the merges (TCP flows with owners, names, drops and an ASN database: the
worst case, every column held); run both.

Target: <= 300 bytes per flow (steady RSS delta / N).
Run: .venv/bin/python bench/memory.py   (root not needed)
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import _common as C

SIZES = (100_000, 1_000_000)
BATCH = 65536
TARGET = 300.0
REPS = 3


def status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, val, _unit = line.split()
                out[name.rstrip(":")] = int(val) * 1024
    return out


def batch(start: int, n: int):
    import numpy as np

    from flowtop.kernel import layout

    idx = np.arange(start, start + n, dtype=np.uint32)
    keys = np.zeros(n, dtype=layout.FLOW_KEY)
    keys["ifindex"] = 3
    keys["ip_version"] = 4
    keys["proto"] = 17
    src = np.zeros((n, 16), dtype=np.uint8)
    src[:, 0] = 10
    src[:, 1] = (idx >> 16) & 0xFF
    src[:, 2] = (idx >> 8) & 0xFF
    src[:, 3] = idx & 0xFF
    keys["src"] = src.view("V16").ravel()
    dst = np.zeros((n, 16), dtype=np.uint8)
    dst[:, :4] = (192, 0, 2, 1)
    keys["dst"] = dst.view("V16").ravel()
    keys["sport"] = 1024 + (idx % 60000)
    keys["dport"] = 443
    stats = np.zeros(n, dtype=layout.FLOW_STATS)
    stats["packets"] = 3
    stats["bytes"] = 300
    now = time.monotonic_ns()
    stats["first_seen_ns"] = now
    stats["last_seen_ns"] = now
    return keys, stats


# --glibc-default: children keep glibc's malloc policy (passed on in the environment).
GLIBC_DEFAULT_ENV = "FTB_GLIBC_DEFAULT"
KEEP_MALLOC = os.environ.get(GLIBC_DEFAULT_ENV) == "1"
# --every-column: children write every lazily allocated column (passed on likewise).
EVERY_COLUMN_ENV = "FTB_EVERY_COLUMN"
EVERY_COLUMN = os.environ.get(EVERY_COLUMN_ENV) == "1"


def child(n: int) -> None:
    import numpy as np  # noqa: F401  (imported before the baseline)

    from flowtop.core.flowtable import FlowTable
    from flowtop.run.malloc import return_large_frees

    if not KEEP_MALLOC:
        return_large_frees()  # as flowtop's own process does (cli.main)
    k, s = batch(0, 16)  # warm numpy/flowtop code paths before the baseline
    FlowTable(max_flows=16).merge(k, s, 1.0)
    del k, s
    table = FlowTable(max_flows=n, idle_timeout=3600, active_timeout=3600)
    gc.collect()
    base = status()
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        k, s = batch(start, min(BATCH, n - start))
        table.merge(k, s, 1.0)
        del k, s
    if EVERY_COLUMN:
        from flowtop.core import fields
        from flowtop.core.flowtable import _LAZY

        live = table.live_rows()
        for name in _LAZY:
            table.set_column(name, live, 2 if fields.FIELD[name].blank == 1 else 1)  # not blank
        del live
    secs = time.perf_counter() - t0
    gc.collect()
    after = status()
    assert len(table) == n, len(table)
    cols = sum(a.nbytes for a in table._c.values()) + table._keys.nbytes
    # Where it goes: numpy arrays owned by the table and its index.
    idx = table._index
    index_b = idx._slots.nbytes + idx._slot_of_row.nbytes
    free_b = table._free.nbytes
    print(
        json.dumps(
            {
                "n": n,
                "rss_delta": after["VmRSS"] - base["VmRSS"],
                "hwm_delta": after["VmHWM"] - base["VmRSS"],
                "capacity": table._cap,
                "columns_bytes": cols,
                "free_list": table._nfree,
                "index_entries": len(idx),
                "merge_s": secs,
                "index_b": index_b,
                "free_b": free_b,
            }
        )
    )


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return 0
    if "--glibc-default" in sys.argv[1:]:
        os.environ[GLIBC_DEFAULT_ENV] = "1"
        print("glibc's default malloc policy (--glibc-default)\n")
    if "--every-column" in sys.argv[1:]:
        os.environ[EVERY_COLUMN_ENV] = "1"
        print("every lazily allocated column written on every row (--every-column)\n")
    rows = []
    parts = []
    results = []
    for n in SIZES:
        reps = []
        for _ in range(REPS):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(n)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"child for N={n} failed")
            reps.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        reps.sort(key=lambda r: r["rss_delta"])
        r = reps[len(reps) // 2]  # the median run
        results.append(r)
        per = r["rss_delta"] / n
        spread = f"{reps[0]['rss_delta'] / n:.0f}..{reps[-1]['rss_delta'] / n:.0f}"
        rows.append(
            (
                f"{n:,}",
                f"{r['rss_delta'] / 2**20:.1f}",
                f"{per:.0f}",
                spread,
                f"{r['hwm_delta'] / n:.0f}",
                f"{r['capacity']:,}",
                f"{r['merge_s']:.2f}",
                C.verdict(per <= TARGET),
            )
        )
        known = sum(r[k] for k in ("columns_bytes", "index_b", "free_b"))
        parts.append(
            (
                f"{n:,}",
                f"{r['columns_bytes'] / n:.0f}",
                f"{r['index_b'] / n:.0f}",
                f"{r['free_b'] / n:.0f}",
                f"{(r['rss_delta'] - known) / n:.0f}",
            )
        )
    print(
        f"userspace memory per tracked flow (FlowTable; {REPS} fresh processes per N, "
        "median run shown)\n"
    )
    print(
        C.table(
            rows,
            (
                "flows",
                "RSS delta MiB",
                "bytes/flow",
                "min..max",
                "peak bytes/flow",
                "capacity",
                "merge s",
                f"<= {TARGET:g} B",
            ),
        )
    )
    print(
        "\nwhere it goes, bytes per flow (numpy nbytes; rest = allocator rounding,"
        " fragmentation, transient objects not returned to the OS):\n"
    )
    print(
        C.table(
            parts,
            (
                "flows",
                "numpy columns+keys",
                "hash index",
                "free stack",
                "rest",
            ),
        )
    )
    worst = max(r["rss_delta"] / r["n"] for r in results)
    print(
        f"\nRESULT memory: worst {worst:.0f} bytes/flow <= {TARGET:g}  {C.verdict(worst <= TARGET)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
