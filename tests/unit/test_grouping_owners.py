"""Group-by process (command name), service and container: totals per owner
equal the flows' own; flows of local sockets whose owner is unknown are one
"(unattributed)" row, and the other flows without that owner name one "-"
row (forwarded, not joined yet)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from flowtop.core.owners import STATE_UNATTRIBUTED
from flowtop.query.filterexpr import parse
from flowtop.query.owners import NO_OWNER, UNATTRIBUTED, OwnerArrays
from flowtop.query.tablequery import query_table
from flowtop.query.types import ViewQuery, ViewRow
from tests.unit.test_filter_owners import FLOWS, owned_table


def grouped(group: str, sort: str = "bytes", expr: str = "", attribution: bool = True):
    t, owners = owned_table()
    oa = OwnerArrays(owners) if attribution else None
    q = ViewQuery(filter=expr, group_by=group, sort=sort, limit=100)
    rows, matched = query_table(t, q, parse(expr), {2: "eth1"}, None, oa)
    return rows, matched


def expected(attr: str) -> dict[str, tuple[int, int]]:
    """(bytes, flows) per owner name, "-" for flows without one: from FLOWS."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for nbytes, o in FLOWS:
        name = UNATTRIBUTED if o.state == STATE_UNATTRIBUTED else getattr(o, attr) or NO_OWNER
        out[name][0] += nbytes
        out[name][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def totals(rows: list[ViewRow]) -> dict[str, tuple[int, int]]:
    assert len({r.group for r in rows}) == len(rows), "one row per group"
    return {str(r.group): (r.bytes, r.flows) for r in rows}


@pytest.mark.parametrize(
    ("group", "attr"), [("process", "comm"), ("service", "service"), ("container", "container")]
)
def test_totals_per_owner_are_the_flows_totals(group: str, attr: str) -> None:
    rows, matched = grouped(group)
    want = expected(attr)
    assert totals(rows) == want
    assert matched == len(want)
    # sorted by bytes, largest first, as other groupings
    assert [r.bytes for r in rows] == sorted((b for b, _ in want.values()), reverse=True)
    assert sum(r.bytes for r in rows) == sum(b for b, _ in FLOWS)
    # group rows carry no single flow's owner
    assert all(r.pid is None and r.comm is None for r in rows)


def test_process_is_the_command_name_across_pids() -> None:
    rows, _ = grouped("process")
    nginx = next(r for r in rows if r.group == "nginx")
    assert (nginx.flows, nginx.bytes) == (2, 9000 + 5000)  # pids 100 and 101


def test_no_owner_group_never_merges_with_a_name() -> None:
    rows, _ = grouped("container")
    dash = next(r for r in rows if r.group == NO_OWNER)
    # forwarded, pending and the two nginx flows have no container
    assert dash.flows == 4
    unknown = next(r for r in rows if r.group == UNATTRIBUTED)
    assert (unknown.flows, unknown.bytes) == (1, 700)  # its own row, not in "-"
    assert {r.group for r in rows} == {
        NO_OWNER, UNATTRIBUTED, FLOWS[2][1].container, FLOWS[3][1].container,
    }  # fmt: skip


def test_grouping_with_a_filter_and_sorted_by_flows() -> None:
    rows, _ = grouped("service", sort="flows", expr="not unattributed")
    want = expected("service")
    del want[UNATTRIBUTED]
    assert totals(rows) == want
    assert [r.flows for r in rows] == sorted((f for _, f in want.values()), reverse=True)


def test_without_attribution_every_flow_is_in_the_dash_group() -> None:
    rows, matched = grouped("process", attribution=False)
    assert matched == 1
    assert (rows[0].group, rows[0].flows, rows[0].bytes) == (
        NO_OWNER,
        len(FLOWS),
        sum(b for b, _ in FLOWS),
    )
