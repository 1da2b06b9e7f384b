"""Drops as bpf/drops.c counts them: numpy mirrors of bpf/drops.h and the decode of a drain.

DROP_KEY and DROP_STATS mirror struct ft_drop_key and struct ft_drop_stats
(bpf/drops.h, the source of truth; tests/kernel/test_drops.py checks them
against what bcc compiled). The key's flow part is layout.FLOW_KEY itself,
so a drop joins the flow table by the same 48 bytes (drops.h says how the
device, the direction and the addresses are chosen). decode() turns one
drained batch of the per-CPU ``drops`` map into DROP_RECORDs, summed over
CPUs.
"""

from __future__ import annotations

import numpy as np

from flowtop.kernel import layout

DROP_KEY = np.dtype([("flow", layout.FLOW_KEY), ("reason", "<u4"), ("pad", "<u4")])
DROP_STATS = np.dtype([("packets", "<u8"), ("bytes", "<u8")])

# One (flow key, reason) of a drain: what the engine gets from DropCollector.drain().
DROP_RECORD = np.dtype(
    [
        ("key", layout.FLOW_KEY),
        ("reason", "<u4"),  # enum skb_drop_reason value: dropreasons.DropReasons names it
        ("pad", "<u4"),
        ("packets", "<u8"),  # skbs dropped since the last drain
        ("bytes", "<u8"),  # their IP bytes (drops.h: struct ft_drop_stats)
    ]
)

assert DROP_KEY.itemsize == layout.FLOW_KEY.itemsize + 8
assert DROP_STATS.itemsize == 16
assert DROP_RECORD.itemsize == DROP_KEY.itemsize + DROP_STATS.itemsize


def decode(keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """A drained batch (keys: DROP_KEY; vals: DROP_STATS per CPU, shape
    (n, cpus) or a (n,) array of the maps.percpu(DROP_STATS) subarray type)
    as DROP_RECORDs, a copy (the batch reader's buffers are reused). Every
    entry has at least one packet on some CPU: none is left out."""
    if len(keys) != len(vals):
        raise ValueError(f"{len(keys)} keys for {len(vals)} values")
    if keys.dtype.itemsize != DROP_KEY.itemsize:
        raise TypeError(f"{keys.dtype.itemsize}-byte keys, not {DROP_KEY.itemsize}")
    out = np.zeros(len(keys), dtype=DROP_RECORD)
    if len(keys) == 0:
        return out
    per_cpu = np.ascontiguousarray(vals).view(DROP_STATS).reshape(len(keys), -1)
    k = np.ascontiguousarray(keys).view(DROP_KEY).reshape(len(keys))
    out["key"] = k["flow"]
    out["reason"] = k["reason"]
    out["packets"] = per_cpu["packets"].sum(axis=1, dtype=np.uint64)
    out["bytes"] = per_cpu["bytes"].sum(axis=1, dtype=np.uint64)
    return out
