"""Prometheus families by socket owner: bytes and packets by service and by
container (bounded by max_series with an "other" series), and the gauge of
unattributed flows; promtool accepts the exposition."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from flowtop.core.model import CollectorHealth
from flowtop.export.prometheus import FlowMetrics
from tests.unit.test_prometheus import exposition

CTR = "ab" * 32


def owners(m: FlowMetrics, spec: list[tuple[str | None, str | None, int, int]], un: int = 0):
    """spec: (service, container, bytes, packets) per flow."""
    m.add_owners(
        np.array([s for s, _, _, _ in spec], dtype=object),
        np.array([c for _, c, _, _ in spec], dtype=object),
        np.array([b for _, _, b, _ in spec], dtype=np.int64),
        np.array([p for _, _, _, p in spec], dtype=np.int64),
        un,
    )


def series(text: str, family: str) -> dict[str, float]:
    """label value -> sample value of a one-label family."""
    out = {}
    for ln in text.splitlines():
        if ln.startswith(family + "{"):
            labels, value = ln.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def published(m: FlowMetrics) -> str:
    m.publish({}, [], 0, CollectorHealth(), 0.0, 1)
    return exposition(m)


SPEC = [
    ("nginx.service", None, 9000, 9),
    ("nginx.service", None, 1000, 1),
    ("docker-x.scope", CTR, 3000, 3),
    (None, CTR, 500, 5),
    (None, None, 700, 7),  # no service, no container: in neither family
]


def test_bytes_and_packets_by_service_and_container_sum_over_intervals() -> None:
    m = FlowMetrics()
    owners(m, SPEC, un=4)
    owners(m, SPEC[:1], un=2)  # a second interval: counters add, the gauge is the latest
    text = published(m)
    assert series(text, "flowtop_service_bytes_total") == {
        "nginx.service": 9000 + 1000 + 9000,
        "docker-x.scope": 3000,
    }
    assert series(text, "flowtop_service_packets_total") == {
        "nginx.service": 19,
        "docker-x.scope": 3,
    }
    assert series(text, "flowtop_container_bytes_total") == {CTR: 3500}
    assert series(text, "flowtop_container_packets_total") == {CTR: 8}
    assert "flowtop_owner_unattributed_flows 2.0" in text


def test_owner_series_are_bounded_with_an_other_series() -> None:
    m = FlowMetrics(max_series=10)
    n = 50
    spec = [(f"unit-{i}.service", f"{i:064x}", 100 + i, 1) for i in range(n)]
    owners(m, spec[:30])
    owners(m, spec[30:])  # later names go to "other"; named series keep counting
    owners(m, spec[:3])
    text = published(m)
    for fam in ("flowtop_service_bytes_total", "flowtop_container_bytes_total"):
        got = series(text, fam)
        assert len(got) == 10
        assert "other" in got
        assert sum(got.values()) == sum(b for _, _, b, _ in spec) + sum(
            b for _, _, b, _ in spec[:3]
        )
    got = series(text, "flowtop_service_bytes_total")
    # np.unique orders the first batch's names: the 9 first in that order are named
    named = sorted(s for s, _, _, _ in spec[:30])[:9]
    assert sorted(k for k in got if k != "other") == sorted(named)
    assert got["unit-0.service"] == 2 * 100


def test_hostile_label_values_are_escaped() -> None:
    m = FlowMetrics()
    owners(m, [('a"b\\c\nd.service', None, 10, 1)])
    text = published(m)
    assert 'flowtop_service_bytes_total{service="a\\"b\\\\c\\nd.service"} 10.0' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_owner_families() -> None:
    m = FlowMetrics(max_series=3)
    owners(m, [*SPEC, ("other.service", "cd" * 32, 1, 1), ('x"y.scope', "ef" * 32, 2, 1)], un=1)
    text = published(m)
    assert "flowtop_container_bytes_total{" in text and "flowtop_owner_unattributed_flows" in text
    p = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


def test_drained_bytes_reach_the_families_through_the_owner_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """core/readings.owner_bytes: a drain's keys joined to a real OwnerTable
    (services and containers from a cgroup tree), into the exporter."""
    from flowtop.core.cgroups import CgroupPaths
    from flowtop.core.flowtable import FlowTable
    from flowtop.core.owners import STATE_UNATTRIBUTED, OwnerTable
    from flowtop.core.readings import owner_bytes
    from flowtop.kernel import layout
    from flowtop.kernel.collector import Drain
    from tests.unit.test_owners import key, keys, rec, recs

    svc = tmp_path / "system.slice" / "nginx.service"
    ctr = tmp_path / "system.slice" / f"docker-{CTR}.scope"
    for p in (svc, ctr):
        p.mkdir(parents=True)
    owners = OwnerTable(cgroups=CgroupPaths(str(tmp_path)))
    owners.add(
        recs(
            rec("10.0.0.1", 80, "10.0.0.9", 5000, pid=1, cgroup_id=svc.stat().st_ino, comm=b"ng"),
            rec("10.0.0.1", 81, "10.0.0.9", 5001, pid=2, cgroup_id=ctr.stat().st_ino, comm=b"app"),
        )
    )
    k = keys(
        key("10.0.0.1", 80, "10.0.0.9", 5000),  # egress of the nginx socket
        key("10.0.0.9", 5000, "10.0.0.1", 80, direction=layout.DIR_INGRESS),  # its ingress
        key("10.0.0.1", 81, "10.0.0.9", 5001),  # the container's
        key("10.0.0.7", 1, "10.0.0.8", 2),  # forwarded: no owner
    )
    s = np.zeros(len(k), dtype=layout.FLOW_STATS)
    s["bytes"] = [1000, 200, 3000, 77]
    s["packets"] = [10, 2, 3, 1]
    table = FlowTable(clock_offset=0.0)
    table.merge(k, s, 1.0)
    table.set_column("owner_state", table.live_rows()[:1], STATE_UNATTRIBUTED)
    got = owner_bytes(Drain([(k[:2], s[:2]), (k[2:], s[2:])], 0, 1.0), owners, table)
    assert got.unattributed == 1
    m = FlowMetrics()
    m.add_owners(got.service, got.container, got.nbytes, got.packets, got.unattributed)
    text = published(m)
    # a container's scope is not a service (core/cgroups.classify)
    assert series(text, "flowtop_service_bytes_total") == {"nginx.service": 1200}
    assert series(text, "flowtop_service_packets_total") == {"nginx.service": 12}
    assert series(text, "flowtop_container_bytes_total") == {CTR: 3000}
    assert series(text, "flowtop_container_packets_total") == {CTR: 3}
    assert "flowtop_owner_unattributed_flows 1.0" in text
