"""Engine step with and without socket owners, at 10k and 100k flows.

Userspace only (no kernel, no root): a scripted collector hands the engine
drains of N distinct IPv4 UDP flows (10.x.y.z:port -> 192.0.2.k:53), every
interval the same N keys, and in the first one the socket reports
(OWNER_RECORDs) for half of them (the other half match no socket: forwarded
flows). Each interval is one Engine.step(): merge, the owner join (with
owners), timeouts, sinks.

  new      the first step: N new rows, N/2 reports added to the OwnerTable,
           N rows joined (the forwarded half stays pending)
  steady   later steps, the same N keys merged again: the pending half is
           joined again until it settles (OWNER_RETRY_INTERVALS), then only
           a 1/k slice of the attributed rows is joined (entries kept alive;
           k = 7 with the default 15 s idle timeout and 1 s interval)
           -- the cost every interval pays once flows are settled

Each is timed REPS times with owners off (engine.owners None) and on
(median, ms); the per-flow difference is what attribution adds to a step.
Checked before timing: with owners, the reported half carries its pid and
the other half settles as STATE_NONE.

Run: .venv/bin/python bench/owner_engine.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import v4_addresses  # noqa: E402

from flowtop.core.engine import OWNER_RETRY_INTERVALS, Engine  # noqa: E402
from flowtop.core.flowtable import NS, FlowTable  # noqa: E402
from flowtop.core.model import CollectorHealth, InterfaceCounters  # noqa: E402
from flowtop.core.owners import STATE_ATTRIBUTED, STATE_NONE, OwnerTable  # noqa: E402
from flowtop.kernel import layout  # noqa: E402
from flowtop.kernel.collector import Drain  # noqa: E402
from flowtop.kernel.owner_records import OWNER_RECORD  # noqa: E402

SIZES = (10_000, 100_000)
REPS = 7
STEADY = OWNER_RETRY_INTERVALS + 4  # steps after the first, the last ones timed
T0 = 1_000 * NS


def flows(n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n, dtype=np.int64)
    k = np.zeros(n, dtype=layout.FLOW_KEY)
    k["ifindex"], k["direction"], k["ip_version"], k["proto"] = 2, layout.DIR_EGRESS, 4, 17
    k["src"], k["dst"] = v4_addresses(10, idx), v4_addresses(192, idx % 251)
    k["sport"], k["dport"] = 1024 + idx % 60000, 53
    return k, idx


def stats(n: int, t: int) -> np.ndarray:
    s = np.zeros(n, dtype=layout.FLOW_STATS)
    s["packets"], s["bytes"] = 2, 200
    s["first_seen_ns"] = s["last_seen_ns"] = t
    return s


def reports(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The sockets of every other flow (local = the flow's source)."""
    sel = idx[::2]
    r = np.zeros(len(sel), dtype=OWNER_RECORD)
    t, o = r["tuple"], r["owner"]
    t["family"], t["proto"] = 4, 17
    t["local"], t["remote"] = keys["src"][sel], keys["dst"][sel]
    t["lport"], t["rport"] = keys["sport"][sel], keys["dport"][sel]
    o["tgid"] = 1000 + sel
    o["uid"] = 1000
    o["comm"] = [f"app{i % 50}".encode() for i in sel.tolist()]
    o["cgroup_id"] = 0
    return r


class Scripted:
    def __init__(self, drains: list[Drain]) -> None:
        self.drains = drains

    def start(self) -> list[str]:
        return ["eth1"]

    def drain(self) -> Drain:
        return self.drains.pop(0)

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        pass

    def names(self) -> dict[int, str]:
        return {2: "eth1"}

    def interfaces(self) -> list[str]:
        return ["eth1"]

    def interface_counters(self) -> list[InterfaceCounters]:
        return []

    def health(self, forced_evictions: int = 0) -> CollectorHealth:
        return CollectorHealth()

    def stop_capture(self) -> None:
        pass

    def close(self) -> None:
        pass


def run(n: int, owners: bool) -> tuple[float, float, Engine]:
    keys, idx = flows(n)
    recs = reports(keys, idx)
    empty = np.zeros(0, dtype=OWNER_RECORD)
    drains = [
        Drain([(keys, stats(n, T0 + i * NS))], T0 + i * NS, 1.0, owners=recs if i == 1 else empty)
        for i in range(1, STEADY + 2)
    ]
    table = FlowTable(max_flows=2 * n, idle_timeout=3600, active_timeout=3600, clock_offset=0.0)
    engine = Engine(Scripted(drains), table, interval=1.0)  # type: ignore[arg-type]
    if owners:
        # the default flow idle timeout (15 s at 1 s intervals): 1/7 of the
        # attributed rows are joined again per step to keep entries alive
        engine.use_owners(OwnerTable(idle_timeout=15.0))
    t0 = time.perf_counter()
    engine.step()
    new = time.perf_counter() - t0
    times = []
    for _ in range(STEADY):
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
    return new, statistics.median(times[OWNER_RETRY_INTERVALS + 1 :]), engine


def check(n: int) -> None:
    _new, _steady, engine = run(n, True)
    t = engine.table
    rows = t.live_rows()
    sport = t.keys_at(rows)["sport"].astype(np.int64)
    src = np.ascontiguousarray(t.keys_at(rows)["src"]).view(np.uint8).reshape(-1, 16)
    i = (src[:, 1].astype(np.int64) << 16) | (src[:, 2].astype(np.int64) << 8) | src[:, 3]
    assert (1024 + i % 60000 == sport).all()
    state, pid = t.column("owner_state", rows), t.column("pid", rows)
    even = i % 2 == 0
    assert (state[even] == STATE_ATTRIBUTED).all() and (pid[even] == 1000 + i[even]).all()
    assert (state[~even] == STATE_NONE).all() and (pid[~even] == 0).all()


def main() -> None:
    print(f"engine step, {REPS} runs each, median ms (steady: after the retry window)")
    print(f"{'flows':>8} {'':>7} {'new off':>9} {'new on':>9} {'steady off':>11} {'steady on':>10}")
    for n in SIZES:
        check(n)
        got: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(REPS):
            for owners in (False, True):
                new, steady, _e = run(n, owners)
                got[owners].append((new, steady))
        med = {
            o: (statistics.median(x[0] for x in v) * 1e3, statistics.median(x[1] for x in v) * 1e3)
            for o, v in got.items()
        }
        print(
            f"{n:>8} {'':>7} {med[False][0]:>9.1f} {med[True][0]:>9.1f} "
            f"{med[False][1]:>11.1f} {med[True][1]:>10.1f}"
        )
        print(
            f"{'':>8} {'+ns/flow':>7} {(med[True][0] - med[False][0]) * 1e6 / n:>9.0f} {'':>9} "
            f"{(med[True][1] - med[False][1]) * 1e6 / n:>11.0f}"
        )


if __name__ == "__main__":
    main()
