"""flowtop.kernel.counters against the C enums it describes, value by value.

Each program adds to its counter array at the index of an enum constant; the
reader names slot i after the record whose index is i. A counter added,
removed or renumbered in bpf/flowtop.h or bpf/sockops.h without the same
change in counters.py would put every later figure under the wrong name:
this parses the enums from the headers and compares constant, value and
count (the _MAX entry).
"""

from __future__ import annotations

import re

import pytest

from flowtop import resources
from flowtop.kernel import counters, layout

ENUM_ENTRY = re.compile(r"^\s*(FT_\w+)\s*=\s*(\d+)\s*,", re.MULTILINE)


def enum_values(header: str, enum: str) -> dict[str, int]:
    """{constant: value} of `enum <name> { ... };` in a bpf/ header."""
    src = (resources.bpf_dir() / header).read_text()
    body = src.split(f"enum {enum} {{", 1)[1].split("};", 1)[0]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.DOTALL)
    return {name: int(value) for name, value in ENUM_ENTRY.findall(body)}


@pytest.mark.parametrize(
    ("header", "enum", "program", "max_name"),
    [
        ("flowtop.h", "ft_counter", counters.TC, "FT_CTR_MAX"),
        ("sockops.h", "ft_so_counter", counters.SOCKOPS, "FT_SO_CTR_MAX"),
    ],
)
def test_records_match_the_c_enum(header: str, enum: str, program: str, max_name: str) -> None:
    values = enum_values(header, enum)
    size = values.pop(max_name)
    ours = {c.c_name: c.index for c in counters.COUNTERS if c.program == program}
    assert ours == values
    assert sorted(values.values()) == list(range(size))


def test_slot_order_is_the_enum_order() -> None:
    tc = enum_values("flowtop.h", "ft_counter")
    so = enum_values("sockops.h", "ft_so_counter")
    by_c = {c.c_name: c.name for c in counters.COUNTERS}
    tc_order = tuple(by_c[n] for n in sorted(tc, key=tc.get) if "MAX" not in n)
    so_order = tuple(by_c[n] for n in sorted(so, key=so.get) if "MAX" not in n)
    assert tc_order == counters.TC_COUNTERS
    assert so_order == counters.SOCKOPS_COUNTERS
    assert layout.COUNTERS == counters.TC_COUNTERS


def test_derived_lists() -> None:
    names = [c.key for c in counters.COUNTERS]
    assert len(names) == len(set(names))
    # userspace-derived counters have no slot, kernel ones always do
    for c in counters.COUNTERS:
        assert (c.index is None) == (c.program == counters.USERSPACE) == (c.c_name is None)
    assert set(counters.NOT_IN_FLOW) <= set(counters.TC_COUNTERS)
    # flow_map_full counts inserts, lost_packets their packets: only the latter
    # is outside every flow; no_ports packets are in a flow
    assert "lost_packets" in counters.NOT_IN_FLOW
    assert "flow_map_full" not in counters.NOT_IN_FLOW
    assert "no_ports" not in counters.NOT_IN_FLOW
    assert set(counters.SOCKOPS_REPORTED) < set(counters.SOCKOPS_COUNTERS)
    # every exported counter is one the collector reports
    assert set(counters.PROMETHEUS_HELP) == set(counters.TC_COUNTERS) | set(counters.TC_DERIVED)
    reported = {
        *counters.TC_COUNTERS,
        *counters.TC_DERIVED,
        *(f"sockops_{n}" for n in counters.SOCKOPS_REPORTED),
    }
    assert set(counters.PROBLEMS) <= reported
    assert set(counters.SHOWN) <= reported
