"""End to end without a kernel: two exporters (127.0.0.1 and 127.0.0.2 as
source addresses on loopback) send IPFIX to a listening `flowtop dump
--json`; the flow and exporter lines count exactly what was sent. dump has
no filter option, so the fleet filter terms and group run over the same
stream through the query API (a real ListenCollector on a socket, Engine,
TableSource)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.listen import counters as lc
from flowtop.listen.collector import ListenCollector, ListenOptions
from flowtop.listen.urls import parse_url
from flowtop.query.source import TableSource
from flowtop.query.types import ViewQuery
from tests.listen.test_view_query import ipfix

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python")

# exporter -> [(src, ingress ifindex, packets)]: 127.0.0.1 sends 3 flows in
# two messages, 127.0.0.2 sends 2 flows, one of them on ifindex 4 like one
# of 127.0.0.1's.
SENT = {
    "127.0.0.1": [[("10.0.0.1", 4, 5), ("10.0.0.2", 6, 7)], [("10.0.0.3", 6, 11)]],
    "127.0.0.2": [[("10.0.1.1", 4, 13), ("10.0.1.2", 9, 17)]],
}


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GAP = 3  # sequence numbers 127.0.0.1 skips before its second message: lost


def _send(port: int) -> None:
    for exporter, messages in SENT.items():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((exporter, 0))
            seq = 0
            for k, flows in enumerate(messages):
                seq += GAP if k == 1 and exporter == "127.0.0.1" else 0
                _, _, msg = ipfix(exporter, flows, seq=seq)
                s.sendto(msg, ("127.0.0.1", port))
                seq += len(flows)


def test_dump_json_counts_two_exporters_exactly() -> None:
    port = _port()
    cmd = [PY, "-m", "flowtop", "dump", "--listen", f"ipfix://127.0.0.1:{port}"]
    cmd += ["--json", "--duration", "3"]
    p = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert p.stderr is not None
        assert "collecting on" in p.stderr.readline()
        _send(port)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    lines = [json.loads(ln) for ln in out.splitlines()]
    flows = [ln for ln in lines if ln["type"] == "flow"]
    got = sorted((f["iface"], f["src"], f["packets"], f["bytes"]) for f in flows)
    want = sorted(
        (f"{ex}#1/if{ifx}", src, p, 100 * p)
        for ex, messages in SENT.items()
        for m in messages
        for src, ifx, p in m
    )
    assert got == want
    exporters = {e["exporter"]: e for e in lines if e["type"] == "exporter"}
    assert set(exporters) == set(SENT)
    for ex, messages in SENT.items():
        e = exporters[ex]
        assert (e["messages"], e["records"], e["lost"], e["errors"]) == (
            len(messages),
            sum(len(m) for m in messages),
            GAP if ex == "127.0.0.1" else 0,
            0,
        ), e


def test_fleet_filters_over_a_socket() -> None:
    port = _port()
    c = ListenCollector(ListenOptions((parse_url(f"ipfix+udp://127.0.0.1:{port}"),)))
    src = TableSource(Engine(c, FlowTable(), 1.0), "collector-1")  # type: ignore[arg-type]
    try:
        c.start()
        _send(port)
        deadline = time.monotonic() + 10
        while c.counters()[lc.RECORDS] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        src.engine.step()

        def shown(expr: str, group: str = "flow") -> set[tuple[str | None, int]]:
            snap = src.snapshot(ViewQuery(filter=expr, group_by=group, sort="packets"))
            assert snap.filter_error is None
            return {(r.group if group != "flow" else r.src, r.packets) for r in snap.rows}

        assert shown("exporter 127.0.0.2") == {("10.0.1.1", 13), ("10.0.1.2", 17)}
        assert shown("exporter 127.0.0.1") == {("10.0.0.1", 5), ("10.0.0.2", 7), ("10.0.0.3", 11)}
        assert shown("exporter 127.0.0.0/8") == shown("")
        assert len(shown("")) == 5
        assert shown("ifindex 4") == {("10.0.0.1", 5), ("10.0.1.1", 13)}
        assert shown("ifindex 6 and not exporter 127.0.0.2") == {("10.0.0.2", 7), ("10.0.0.3", 11)}
        assert shown("", "exporter") == {("127.0.0.1", 23), ("127.0.0.2", 30)}
    finally:
        c.close()
