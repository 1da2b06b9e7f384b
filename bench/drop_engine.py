"""Engine step with and without the drop join (core/drops.py), at 10k and 100k flows.

Userspace only (no kernel, no root): a scripted collector (owner_engine.py's)
hands the engine drains of N distinct IPv4 UDP flows, every interval the
same N keys, and with them drop records as DropCollector.drain() gives them:

  off        Drain.drops None: drops not collected (the engine as before)
  on, none   drops collected, no drop this interval (an empty array)
  on, 1%     N/100 flows with drops, two reasons each, every interval
  on, 10%    N/10 flows likewise (a box dropping a lot)

The steady figure is the median of the later steps (the DropTable holds the
cumulative (key, reason) entries by then: 2% / 20% of N). Checked before
timing: each dropped flow's drop_packets equal what the drains carried.

Run: .venv/bin/python bench/drop_engine.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from owner_engine import Scripted, flows, stats  # noqa: E402

from flowtop.core.engine import Engine  # noqa: E402
from flowtop.core.flowtable import NS, FlowTable  # noqa: E402
from flowtop.kernel.collector import Drain  # noqa: E402
from flowtop.kernel.drop_records import DROP_RECORD  # noqa: E402
from flowtop.kernel.dropreasons import from_enum  # noqa: E402

SIZES = (10_000, 100_000)
REPS = 5
STEPS = 8
T0 = 1_000 * NS
REASONS = from_enum(
    {"SKB_NOT_DROPPED_YET": 0, "SKB_CONSUMED": 1, "SKB_DROP_REASON_NO_SOCKET": 3,
     "SKB_DROP_REASON_NETFILTER_DROP": 9}
)  # fmt: skip
CASES = (("off", None), ("on, none", 0.0), ("on, 1%", 0.01), ("on, 10%", 0.1))


def drop_records(keys: np.ndarray, share: float) -> np.ndarray:
    sel = np.arange(0, len(keys), round(1 / share)) if share else np.zeros(0, np.int64)
    out = np.zeros(2 * len(sel), dtype=DROP_RECORD)
    for j, (reason, n) in enumerate(((9, 3), (3, 1))):
        part = out[j::2]
        part["key"] = keys[sel]
        part["reason"] = reason
        part["packets"] = n
        part["bytes"] = 100 * n
    return out


def run(n: int, share: float | None) -> tuple[float, Engine]:
    keys, _idx = flows(n)
    recs = drop_records(keys, share) if share is not None else None
    drains = [
        Drain([(keys, stats(n, T0 + i * NS))], T0 + i * NS, 1.0, drops=recs,
              drop_reasons=REASONS if recs is not None else None)
        for i in range(1, STEPS + 2)
    ]  # fmt: skip
    table = FlowTable(max_flows=2 * n, idle_timeout=3600, active_timeout=3600, clock_offset=0.0)
    engine = Engine(Scripted(drains), table, interval=1.0)  # type: ignore[arg-type]
    engine.step()
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:]), engine


def check(n: int) -> None:
    _t, engine = run(n, 0.01)
    t = engine.table
    rows = t.live_rows()
    sport = t.keys_at(rows)["sport"].astype(np.int64)
    i = sport - 1024  # flows(): sport 1024 + i % 60000
    dropped = t.column("drop_packets", rows)
    want = np.where(i % 100 == 0, 4 * (STEPS + 1), 0)
    if n <= 60000:  # ports are unique only below 60000 flows
        assert (dropped == want).all()
    assert int(dropped.sum()) == 4 * (STEPS + 1) * len(range(0, n, 100))


def main() -> None:
    print(f"engine step, {REPS} runs each, median ms (steady state)")
    print(f"{'flows':>8} " + " ".join(f"{name:>10}" for name, _ in CASES))
    for n in SIZES:
        check(n)
        got: dict[str, list[float]] = {name: [] for name, _ in CASES}
        for _ in range(REPS):
            for name, share in CASES:
                got[name].append(run(n, share)[0])
        med = {k: statistics.median(v) * 1e3 for k, v in got.items()}
        print(f"{n:>8} " + " ".join(f"{med[name]:>10.1f}" for name, _ in CASES))


if __name__ == "__main__":
    main()
