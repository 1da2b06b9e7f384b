"""maps.BatchReader over a real per-CPU hash map, more entries than its first
buffer holds: every entry read exactly once, each CPU's value in place,
across several batch calls and a grown buffer (a flood of distinct drop keys
does this to the drops map; the reader used to mis-stride and then fail to
grow with per-CPU values)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from flowtop.kernel.maps import BatchReader, percpu, possible_cpus, update
from flowtop.kernel.progcache import MapSpec, _create_map

pytestmark = pytest.mark.kernel

BPF_MAP_TYPE_PERCPU_HASH = 5
VAL = np.dtype([("packets", "<u8"), ("bytes", "<u8")])


@pytest.mark.parametrize("delete", [False, True])
def test_per_cpu_values_across_batches_and_a_grown_buffer(delete: bool) -> None:
    n, first = 300, 16  # the reader starts with room for 16: it must grow
    spec = MapSpec("ftt_pcpu", "ftt_pcpu", BPF_MAP_TYPE_PERCPU_HASH, 8, VAL.itemsize, n, 0)
    fd = _create_map(spec, 0, 0)
    try:
        cpus = possible_cpus()
        for k in range(n):
            v = np.zeros(1, dtype=percpu(VAL))
            vv = v.view(VAL).reshape(cpus)
            vv["packets"] = [k * 10 + c for c in range(cpus)]
            vv["bytes"] = [k * 1000 + c for c in range(cpus)]
            update(fd, np.array([k], dtype="<u8"), v)
        reader = BatchReader(first, np.dtype("<u8"), percpu(VAL), delete, "a test map")
        keys, vals = reader.read(fd)
        assert len(keys) == n and sorted(keys.tolist()) == list(range(n))
        per = np.ascontiguousarray(vals).view(VAL).reshape(n, cpus)
        for i, k in enumerate(keys.tolist()):
            assert per["packets"][i].tolist() == [k * 10 + c for c in range(cpus)], k
            assert per["bytes"][i].tolist() == [k * 1000 + c for c in range(cpus)], k
        again, _ = reader.read(fd)
        assert len(again) == (0 if delete else n)
    finally:
        os.close(fd)
