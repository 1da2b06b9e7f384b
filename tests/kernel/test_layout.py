"""The numpy decoder matches bpf/flowtop.h byte for byte (as bcc compiled it)."""

from __future__ import annotations

import ctypes as ct
import os

import numpy as np
import pytest

from flowtop.kernel import layout

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def program():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from flowtop.kernel.program import ProgramOptions, TcProgram

    p = TcProgram(ProgramOptions(flow_map_size=64))
    yield p
    p.close()


def _ctypes_layout(t: type) -> list[tuple[str, int, int]]:
    return [(name, getattr(t, name).offset, getattr(t, name).size) for name, *_ in t._fields_]


def _numpy_layout(d: np.dtype) -> list[tuple[str, int, int]]:
    assert d.fields is not None
    return sorted(
        ((name, off, sub.itemsize) for name, (sub, off, *_) in d.fields.items()),
        key=lambda x: x[1],
    )


@pytest.mark.parametrize(
    ("table", "key_dtype", "val_dtype"),
    [
        ("flows_a", layout.FLOW_KEY, layout.FLOW_STATS),
        ("flows_b", layout.FLOW_KEY, layout.FLOW_STATS),
        ("iface_counters", layout.IFACE_KEY, layout.IFACE_STATS),
        ("iface_slots", np.dtype([("slot", "<u4")]), layout.IFACE_STATS),
        ("cache_a", np.dtype([("slot", "<u4")]), layout.FLOW_CACHE_ENTRY),
        ("tcp_conns", layout.TCP_CONN_KEY, layout.TCP_CONN),
        ("tcp_conn_zero", np.dtype([("slot", "<u4")]), layout.TCP_CONN),
    ],
)
def test_struct_layouts_match(program, table, key_dtype, val_dtype) -> None:  # type: ignore[no-untyped-def]
    t = program.bpf[table.encode()]
    leaf = t.sLeaf if hasattr(t, "sLeaf") else t.Leaf  # per-CPU maps: one value per CPU
    assert ct.sizeof(t.Key) == key_dtype.itemsize
    assert ct.sizeof(leaf) == val_dtype.itemsize
    pairs = [(val_dtype, leaf)]
    if hasattr(t.Key, "_fields_"):  # array maps have a plain integer index
        pairs.append((key_dtype, t.Key))
    for dtype, ctype in pairs:
        ours, theirs = _numpy_layout(dtype), _ctypes_layout(ctype)
        assert [(o, s) for _, o, s in ours] == [(o, s) for _, o, s in theirs]
        assert [n for n, _, _ in ours] == [n for n, _, _ in theirs]


def test_tcp_conn_nested_layouts_match(program) -> None:  # type: ignore[no-untyped-def]
    """struct tcp_side (two in struct tcp_conn) and the tcp_rtt and tcp_half in it."""
    leaf = program.bpf[b"tcp_conns"].Leaf
    assert leaf.side.size == 2 * layout.TCP_SIDE.itemsize
    side = dict(leaf._fields_)["side"]._type_
    assert _numpy_layout(layout.TCP_SIDE) == _ctypes_layout(side)
    for name, dtype in (("rtt", layout.TCP_RTT), ("half", layout.TCP_HALF)):
        assert _numpy_layout(dtype) == _ctypes_layout(dict(side._fields_)[name])


def test_counter_names_match_enum() -> None:
    src = (layout_dir() / "flowtop.h").read_text()
    enum_body = src.split("enum ft_counter {", 1)[1].split("};", 1)[0]
    names = [
        line.split("=")[0].strip().removeprefix("FT_CTR_").lower()
        for line in enum_body.splitlines()
        if line.strip().startswith("FT_CTR_") and "FT_CTR_MAX" not in line
    ]
    assert tuple(names) == layout.COUNTERS


def layout_dir():  # type: ignore[no-untyped-def]
    from flowtop.kernel.program import BPF_DIR

    return BPF_DIR


def test_mpls_present_bit_matches_header() -> None:
    src = (layout_dir() / "flowtop.h").read_text()
    (line,) = [ln for ln in src.splitlines() if ln.startswith("#define FT_MPLS_PRESENT")]
    assert line.split(None, 2)[2] == "(1U << 24)"
    assert layout.MPLS_PRESENT == 1 << 24
    assert layout.mpls_label(layout.MPLS_PRESENT | 100 << 4 | 5 << 1 | 1) == 100
    assert layout.mpls_label(0) is None


def test_not_in_flow_counters() -> None:
    """The invariant's not-in-flow side: kernel counters, one packet each (or
    the segments of a failed insert), never no_ports (those are in a flow)."""
    assert set(layout.NOT_IN_FLOW) <= set(layout.COUNTERS)
    assert "no_ports" not in layout.NOT_IN_FLOW and "flow_map_full" not in layout.NOT_IN_FLOW


@pytest.mark.parametrize("passive_rtt", [True, False], ids=["passive_rtt", "no_passive_rtt"])
def test_all_four_programs_load(passive_rtt: bool) -> None:
    """Ethernet and L3, ingress and egress, pass the verifier with and without
    the passive RTT code (the largest build is the one near the limits)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from flowtop.kernel.program import ProgramOptions, TcProgram

    p = TcProgram(ProgramOptions(flow_map_size=64, passive_rtt=passive_rtt))
    try:
        fds = p.prog_fds()
        assert sorted(fds) == [
            ("egress", False),
            ("egress", True),
            ("ingress", False),
            ("ingress", True),
        ]
        assert len(set(fds.values())) == 4
        assert p.fd("ingress", True) == fds[("ingress", True)]
        assert p.fd("egress", False) == p.egress.fd
    finally:
        p.close()
