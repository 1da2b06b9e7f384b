"""The numpy decoder matches bpf/flowtop.h byte for byte (as bcc compiled it)."""

from __future__ import annotations

import ctypes as ct
import os

import numpy as np
import pytest

from flowtop.collector import layout

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def program():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from flowtop.collector.program import ProgramOptions, TcProgram

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
    ],
)
def test_struct_layouts_match(program, table, key_dtype, val_dtype) -> None:  # type: ignore[no-untyped-def]
    t = program.bpf[table.encode()]
    leaf = t.sLeaf if hasattr(t, "sLeaf") else t.Leaf  # per-CPU maps: one value per CPU
    assert ct.sizeof(t.Key) == key_dtype.itemsize
    assert ct.sizeof(leaf) == val_dtype.itemsize
    # bcc names anonymous padding differently; compare offsets and sizes in order,
    # and names where bcc kept them.
    for ours, theirs in (
        (_numpy_layout(key_dtype), _ctypes_layout(t.Key)),
        (_numpy_layout(val_dtype), _ctypes_layout(leaf)),
    ):
        assert [(o, s) for _, o, s in ours] == [(o, s) for _, o, s in theirs]
        assert [n for n, _, _ in ours] == [n for n, _, _ in theirs]


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
    from flowtop.collector.program import BPF_DIR

    return BPF_DIR
