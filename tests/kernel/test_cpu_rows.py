"""The TC program's per-CPU plain arrays (bpf/tc.c: the flow caches and the
interface counter array, one row per CPU id): each CPU counts in its own
row, userspace reads and zeroes every row, and the sums are exact against
what was sent and `ip -s link`.

Frames go out of va through an AF_PACKET socket from processes pinned to
CPU 0 and CPU 1: the egress hook runs on the sending CPU (veth has no
queue), so the ground truth of each row is what its CPU sent.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from flowtop.kernel import attach, layout, maps
from flowtop.kernel.bpfsys import BPF_MAP_CREATE, bpf
from flowtop.kernel.program import ProgramOptions, TcProgram

from . import frames as fr
from . import netns
from .netns import MAC_A, MAC_B, Pair

pytestmark = pytest.mark.kernel

A4 = "10.200.1.1"
SENT = {0: 3000, 1: 1700}  # frames per CPU: different, so rows cannot be swapped
V4 = layout.FAMILIES.index("ipv4")


@pytest.fixture(scope="module")
def program() -> Iterator[TcProgram]:
    prog = TcProgram(ProgramOptions())
    try:
        yield prog
    finally:
        prog.close()


def _send_per_cpu(p: Pair, data: bytes) -> None:
    with fr.Sender(p.a, "va") as s:
        pids = [fr.send_pinned(s.sock.fileno(), data, n, cpu) for cpu, n in SENT.items()]
        codes = [os.waitpid(pid, 0)[1] for pid in pids]
    assert codes == [0] * len(pids), codes


def _rows(prog: TcProgram, ifindex: int) -> np.ndarray:
    """iface_slots read raw: (CPU id, slot of this ifindex) -> IFACE_STATS."""
    vals = np.zeros((maps.cpu_ids(), layout.IFACE_SLOTS_PER), dtype=layout.IFACE_STATS)
    first = layout.iface_slot(ifindex, layout.DIR_INGRESS, 0)
    row = prog.options.iface_slots * layout.IFACE_SLOTS_PER
    maps.read_rows(prog.map_fd("iface_slots"), first, layout.IFACE_SLOTS_PER, row, vals)
    return vals


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs CPUs 0 and 1")
def test_each_cpu_counts_in_its_row(quiet_pair: Pair, program: TcProgram) -> None:
    """One UDP flow sent from CPU 0 and CPU 1: iface_slots row 0 and row 1
    each hold exactly what their CPU sent; the interface counters (the rows
    summed) equal the sum and ip -s link's tx delta; the drain gives the
    flow once per CPU's cache row with that CPU's packets and bytes, no
    hash-map entry, and leaves every row zeroed."""
    p = quiet_pair
    frame = fr.udp(MAC_A, MAC_B, A4, fr.SINK4, 32000, 32001, payload=50)
    ip_bytes = len(frame.data) - 14
    idx = p.a.ifindex("va")
    with netns.entered(p.a.name):  # the attacher's netlink socket is in va's namespace
        att = attach.TcAttacher(program.ingress.fd, program.egress.fd)
        program.reset_iface(idx)
        att.attach(idx, "va")
    try:
        program.drain_flows()  # whatever came before
        before = p.a.link_stats("va")
        _send_per_cpu(p, frame.data)
        after = p.a.link_stats("va")
        batches = program.drain_flows()
        rows = _rows(program, idx)
        counted = program.iface_counters([idx])
    finally:
        with contextlib.suppress(Exception):
            att.detach_all()
        att.close()

    total = sum(SENT.values())
    assert after["tx_packets"] - before["tx_packets"] == total
    eg = layout.iface_slot(idx, layout.DIR_EGRESS, V4) - layout.iface_slot(
        idx, layout.DIR_INGRESS, 0
    )
    for cpu, n in SENT.items():
        assert (int(rows[cpu, eg]["packets"]), int(rows[cpu, eg]["bytes"])) == (
            n,
            n * len(frame.data),
        ), f"CPU {cpu}'s row"
    assert counted[(idx, layout.DIR_EGRESS, V4)] == (total, after["tx_bytes"] - before["tx_bytes"])
    assert counted[(idx, layout.DIR_EGRESS, V4)] == (total, total * len(frame.data))

    keys, stats = batches[0]
    mine = (keys["sport"] == 32000) & (keys["dport"] == 32001)
    assert not mine.any(), "the flow went to the hash map, not the caches"
    per_cpu = []
    for keys, stats in batches[1:]:
        sel = (keys["sport"] == 32000) & (keys["dport"] == 32001) & (keys["ifindex"] == idx)
        per_cpu.extend((int(s["packets"]), int(s["bytes"])) for s in stats[sel])
    assert sorted(per_cpu) == sorted((n, n * ip_bytes) for n in SENT.values())

    # The drain zeroed both caches' rows: nothing more of the flow.
    again = program.drain_flows()
    assert all(not ((k["sport"] == 32000) & (k["dport"] == 32001)).any() for k, _ in again), again

    # reset_iface zeroes every CPU's row.
    program.reset_iface(idx)
    assert not _rows(program, idx)["packets"].any()
    assert program.iface_counters([idx])[(idx, layout.DIR_EGRESS, V4)] == (0, 0)


def test_read_rows_reads_each_row() -> None:
    """maps.read_rows against a plain array written entry by entry: rows
    start at r * row + first, row 0's first entry included."""
    rows, row = 3, 10
    attr = ct.create_string_buffer(struct.pack("<IIII", 2, 4, 16, rows * row), 72)  # ARRAY
    fd = bpf(BPF_MAP_CREATE, attr)
    try:
        keys = np.arange(rows * row, dtype="<u4")
        vals = np.zeros(rows * row, dtype=layout.IFACE_STATS)
        vals["packets"] = keys * 7 + 1
        vals["bytes"] = keys * 1000
        maps.update_batch(fd, keys, vals)
        for first, count in ((0, 6), (4, 6), (0, 10), (9, 1)):
            out = np.zeros((rows, count), dtype=layout.IFACE_STATS)
            maps.read_rows(fd, first, count, row, out)
            for r in range(rows):
                want = vals[r * row + first : r * row + first + count]
                assert (out[r] == want).all(), (first, count, r)
    finally:
        os.close(fd)
