"""How many CPUs the kernel can have, read once: the number of values a
per-CPU map holds per key, and the rows of the TC program's per-CPU plain
arrays (bpf/tc.c, FT_NR_CPUS). No numpy here: the build request
(tcrequest.py) needs it before the run's heavy imports."""

from __future__ import annotations

from functools import cache

POSSIBLE = "/sys/devices/system/cpu/possible"


def _ranges() -> list[tuple[int, int]]:
    with open(POSSIBLE) as f:
        text = f.read().strip()
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


@cache
def possible_cpus() -> int:
    """How many CPUs the kernel can have (/sys/devices/system/cpu/possible):
    the number of values a per-CPU map holds per key (in this order)."""
    return sum(hi - lo + 1 for lo, hi in _ranges())


@cache
def cpu_ids() -> int:
    """The highest possible CPU id + 1 (the kernel's nr_cpu_ids): what
    bpf_get_smp_processor_id() stays below, so the rows a plain array
    indexed by CPU id needs (possible_cpus() when the ids have no gaps)."""
    return max(hi for _lo, hi in _ranges()) + 1
