"""Prometheus series of a listening run: per exporter (bounded) and the listener's counters."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from flowtop.core.model import CollectorHealth
from flowtop.export.prometheus import FlowMetrics
from flowtop.listen import counters as lc
from tests.unit.test_prometheus import exposition


def _metrics(n_exporters: int, max_series: int) -> FlowMetrics:
    m = FlowMetrics(max_series)
    m.set_listen(
        [{"exporter": f"10.0.0.{i}", "records": 100 + i, "lost": i % 3} for i in range(n_exporters)]
    )
    kernel = dict.fromkeys(lc.ALL, 0)
    kernel.update({lc.RECORDS: 123, lc.RECORDS_LOST: 4, lc.DECODE_ERRORS: 2})
    m.publish({}, [], 0, CollectorHealth(kernel=kernel), 0.0, 1)
    return m


def test_series_per_exporter() -> None:
    text = exposition(_metrics(3, 500))
    got = dict(
        re.findall(r'flowtop_listen_exporter_records_total\{exporter="([^"]+)"\} (\S+)', text)
    )
    assert got == {"10.0.0.0": "100.0", "10.0.0.1": "101.0", "10.0.0.2": "102.0"}
    assert 'flowtop_listen_exporter_lost_records{exporter="10.0.0.2"} 2.0' in text
    assert "flowtop_listen_records_total 123.0" in text
    assert "flowtop_listen_records_lost_total 4.0" in text
    assert "flowtop_listen_decode_errors_total 2.0" in text


def test_exporter_series_are_bounded_with_other() -> None:
    text = exposition(_metrics(40, 10))
    rows = re.findall(r'flowtop_listen_exporter_records_total\{exporter="([^"]+)"\} (\S+)', text)
    assert len(rows) == 10
    got = dict(rows)
    # the 9 with the most records, then the other 31 summed
    assert set(got) == {f"10.0.0.{i}" for i in range(31, 40)} | {"other"}
    assert float(got["other"]) == sum(100 + i for i in range(31))


def test_no_listen_series_without_listening() -> None:
    m = FlowMetrics()
    m.publish({}, [], 0, CollectorHealth(), 0.0, 1)
    assert "flowtop_listen" not in exposition(m)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_it() -> None:
    p = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition(_metrics(40, 10)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr
