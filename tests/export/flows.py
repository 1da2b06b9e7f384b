"""Known flows as FlowBatches, for the export tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from flowtop.core.flowtable import NS, FlowBatch
from flowtop.core.model import EndReason
from flowtop.kernel import layout

# CLOCK_MONOTONIC 1000 s + offset = 2024-01-02 03:04:05 UTC
OFFSET = 1_704_164_645.0 - 1000.0
T0 = 1000 * NS


@dataclass(frozen=True)
class Flow:
    src: str
    dst: str
    proto: int = 6
    sport: int = 0
    dport: int = 0
    packets: int = 1
    bytes: int = 60
    start_ms: int = 0  # after T0
    end_ms: int = 0
    flags: int = 0
    dscp: int = 0
    ifindex: int = 2
    direction: int = layout.DIR_INGRESS
    vlan: int = 0
    reason: int = EndReason.IDLE_TIMEOUT


def batch(flows: list[Flow], offset: float = OFFSET) -> FlowBatch:
    n = len(flows)
    keys = np.zeros(n, dtype=layout.FLOW_KEY)
    for i, f in enumerate(flows):
        src = ipaddress.ip_address(f.src)
        dst = ipaddress.ip_address(f.dst)
        keys[i]["ifindex"] = f.ifindex
        keys[i]["direction"] = f.direction
        keys[i]["ip_version"] = src.version
        keys[i]["proto"] = f.proto
        keys[i]["src"] = src.packed.ljust(16, b"\0")
        keys[i]["dst"] = dst.packed.ljust(16, b"\0")
        keys[i]["sport"] = f.sport
        keys[i]["dport"] = f.dport
        keys[i]["vlan"] = f.vlan

    def col(name: str, dtype: str) -> np.ndarray:
        return np.array([getattr(f, name) for f in flows], dtype=dtype)

    return FlowBatch.of(
        keys,
        offset,
        packets=col("packets", "<u8"),
        bytes=col("bytes", "<u8"),
        first_ns=np.array([T0 + f.start_ms * 1_000_000 for f in flows], dtype="<u8"),
        last_ns=np.array([T0 + f.end_ms * 1_000_000 for f in flows], dtype="<u8"),
        tcp_flags=col("flags", "u1"),
        dscp=col("dscp", "u1"),
        end_reason=col("reason", "u1"),
    )


def many(n: int, v6_every: int = 0, seed: int = 1) -> FlowBatch:
    """n varied flows built column-wise (fast), every v6_every-th one IPv6."""
    rng = np.random.default_rng(seed)
    keys = np.zeros(n, dtype=layout.FLOW_KEY)
    keys["ifindex"] = rng.integers(1, 64, n)
    keys["direction"] = rng.integers(0, 2, n)
    v6 = np.zeros(n, dtype=bool)
    if v6_every:
        v6[::v6_every] = True
    keys["ip_version"] = np.where(v6, 6, 4)
    keys["proto"] = rng.choice([6, 17, 1], n)
    raw = keys.view(np.uint8).reshape(n, layout.FLOW_KEY.itemsize)
    raw[:, 8:24] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 24:40] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[~v6, 12:24] = 0
    raw[~v6, 28:40] = 0
    keys["sport"] = rng.integers(1024, 65535, n)
    keys["dport"] = rng.integers(1, 1024, n)
    keys["vlan"] = rng.integers(0, 4095, n)
    start = T0 + rng.integers(0, 10**10, n).astype(np.uint64)
    return FlowBatch.of(
        keys,
        OFFSET,
        packets=rng.integers(1, 10**6, n).astype("<u8"),
        bytes=rng.integers(40, 10**9, n).astype("<u8"),
        first_ns=start,
        last_ns=start + rng.integers(0, 10**10, n).astype(np.uint64),
        tcp_flags=rng.integers(0, 256, n).astype("u1"),
        dscp=rng.integers(0, 64, n).astype("u1"),
        end_reason=rng.integers(1, 6, n).astype("u1"),
    )
