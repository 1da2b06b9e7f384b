"""sFlow counter samples (generic interface counters) as the fleet's interface
rows: hand-built datagrams (sFlow v5's counters_sample / if_counters layout,
written out in tests/listen/build.py), decoded, then through a real socket,
Engine and TableSource, and `flowtop dump --json`."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from flowtop.core.engine import Engine
from flowtop.core.flowtable import FlowTable
from flowtop.listen import counters as lc
from flowtop.listen.collector import ListenCollector, ListenOptions
from flowtop.listen.urls import parse_url
from flowtop.query.source import TableSource
from flowtop.query.types import ViewQuery
from tests.listen import build as b
from tests.listen.decoding import decoder, feed, flows

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python")
ALL = 0xFFFF_FFFF


def _dg(samples: list[bytes], seq: int = 1, sub_agent: int = 2) -> bytes:
    return b.sflow_datagram(samples, seq=seq, sub_agent=sub_agent)


def _ifc(
    ifindex: int, rx: int, rxp: tuple[int, int, int], tx: int, txp: tuple[int, int, int]
) -> bytes:
    return b.sflow_if_counters(ifindex, rx, rxp, tx, txp)


def _rows(d: object) -> dict[str, tuple[int, int, int, int]]:
    return {
        c.name: (c.rx_bytes, c.rx_packets, c.tx_bytes, c.tx_packets)
        for c in d.ifcounters.interface_counters()  # type: ignore[attr-defined]
    }


def test_interface_rows_start_at_the_devices_counters_and_grow() -> None:
    d = decoder()
    udp = b.sflow_raw_record(b.eth_ipv4_udp("10.0.0.1", "10.0.0.2", 4000, 53, 100), 146)
    first = _dg(
        [
            b.sflow_counter_sample([_ifc(5, 10_000, (100, 2, 1), 20_000, (200, 3, 0))], seq=1),
            b.sflow_flow_sample([udp], rate=10, in_if=5),
            # expanded, with an ethernet counters record (format 2) before: skipped
            b.sflow_counter_sample(
                [struct_record(2, 52), _ifc(7, 1, (1, 0, 0), 2, (2, 0, 0))], seq=1, expanded=True
            ),
        ],
        seq=1,
    )
    second = _dg(
        [b.sflow_counter_sample([_ifc(5, 15_000, (150, 2, 1), 20_500, (205, 3, 0))], seq=2)],
        seq=2,
    )
    feed(d, [first], protocol="sflow")
    assert _rows(d) == {
        "192.0.2.1#2/if5": (10_000, 103, 20_000, 203),
        "192.0.2.1#2/if7": (1, 1, 2, 2),
    }
    (f,) = flows(d)
    assert f.iface == "192.0.2.1#2/if5"  # the flow's interface is the counters' one
    feed(d, [second], protocol="sflow")
    assert _rows(d)["192.0.2.1#2/if5"] == (15_000, 153, 20_500, 208)
    c = d.table.counters
    assert c[lc.IF_SAMPLES] == 3 and c[lc.DECODE_ERRORS] == 0 and c[lc.MESSAGES] == 2


def struct_record(tag: int, length: int) -> bytes:
    """A counter record of another format (skipped by its length)."""
    return struct.pack("!II", tag, length) + b"\x5a" * length


def test_wraps_resets_unsupported_stale_and_restarts() -> None:
    d = decoder()
    top = 0xFFFF_FFF0

    def send(seq: int, rx: int, ucast: int, tx: int, mcast: int = 0) -> None:
        rec = _ifc(1, rx, (ucast, mcast, ALL), tx, (0, 0, 0))
        feed(d, [_dg([b.sflow_counter_sample([rec], seq=seq)], seq=seq)], protocol="sflow")

    send(10, 1000, top, 5000)
    assert _rows(d) == {"192.0.2.1#2/if1": (1000, top, 5000, 0)}  # broadcast unsupported: 0
    send(11, 1500, 0x20, 6000)  # 32-bit unicast wrapped: +0x30
    assert _rows(d)["192.0.2.1#2/if1"] == (1500, top + 0x30, 6000, 0)
    send(12, 100, 0x30, 7000)  # 64-bit in-octets went back: reset, +100
    assert _rows(d)["192.0.2.1#2/if1"] == (1600, top + 0x40, 7000, 0)
    send(11, 9_999_999, 0x40, 9_999_999)  # an older sample (reordered): ignored
    send(12, 9_999_999, 0x40, 9_999_999)  # a repeated one: ignored
    assert _rows(d)["192.0.2.1#2/if1"] == (1600, top + 0x40, 7000, 0)
    send(13, 200, 0x40, 7100, mcast=ALL)  # multicast unsupported now: adds nothing
    assert _rows(d)["192.0.2.1#2/if1"] == (1700, top + 0x50, 7100, 0)
    send(1_000_000, 40, 3, 60)  # far ahead: newer (unicast 0x40 -> 3: wrapped)
    assert _rows(d)["192.0.2.1#2/if1"] == (1700 + 40, top + 0x50 + (3 - 0x40) % 2**32, 7160, 0)
    send(5, 7, 2, 9)  # far behind (more than the late window): a restart, from zero
    assert _rows(d)["192.0.2.1#2/if1"] == (
        1747,
        top + 0x50 + (3 - 0x40) % 2**32 + 2,
        7169,
        0,
    )
    assert d.table.counters[lc.DECODE_ERRORS] == 0


def test_malformed_counter_samples_are_counted_and_change_nothing() -> None:
    d = decoder()
    good = b.sflow_counter_sample([_ifc(5, 10, (1, 0, 0), 20, (2, 0, 0))], seq=1)
    feed(d, [_dg([good], seq=1)], protocol="sflow")
    before = _rows(d)
    rec = _ifc(5, 99_999, (9, 9, 9), 99_999, (9, 9, 9))
    short = struct.pack("!II", 1, 84) + rec[8:92]  # if_counters record of 84 bytes
    head = struct.pack("!III", 2, 5, 1)
    bad = [
        _dg([struct.pack("!II", 2, 8) + b"\0" * 8], seq=2),  # sample header cut short
        _dg([struct.pack("!II", 2, len(head) + len(short)) + head + short], seq=2),
        _dg([struct.pack("!II", 2, 12) + struct.pack("!III", 2, 5, 65)], seq=2),  # 65 records
        # 8 bytes after the sample's last record
        _dg([struct.pack("!II", 2, 12 + 104) + head + rec + b"\0" * 8], seq=2),
        _dg([b.sflow_counter_sample([rec], seq=2)], seq=2)[:-4],  # cut
        # the record runs past its sample
        _dg([struct.pack("!II", 2, 12 + 88) + head + rec[:88]], seq=2),
    ]
    feed(d, bad, protocol="sflow")
    assert d.table.counters[lc.DECODE_ERRORS] == len(bad)
    assert d.table.counters[lc.IF_SAMPLES] == 1
    assert _rows(d) == before
    (ex,) = d.exporters()
    assert ex["errors"] == len(bad)


def test_interfaces_past_the_cap_are_counted() -> None:
    d = decoder(max_interfaces=2)
    recs = [_ifc(i, 10, (1, 0, 0), 20, (2, 0, 0)) for i in (1, 2, 3)]
    feed(d, [_dg([b.sflow_counter_sample(recs, seq=1)])], protocol="sflow")
    assert set(_rows(d)) == {"192.0.2.1#2/if1", "192.0.2.1#2/if2"}
    assert d.table.counters[lc.IFINDEX_EXHAUSTED] == 1
    assert d.table.counters[lc.IF_SAMPLES] == 2


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(port: int, msgs: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for m in msgs:
            s.sendto(m, ("127.0.0.1", port))


def test_interface_rows_rates_and_totals_over_a_socket() -> None:
    port = _port()
    c = ListenCollector(ListenOptions((parse_url(f"sflow://127.0.0.1:{port}"),)))
    src = TableSource(Engine(c, FlowTable(), 1.0), "collector-1")  # type: ignore[arg-type]

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 10
        while c.counters()[lc.IF_SAMPLES] < n and time.monotonic() < deadline:
            c.decoder.decode(c.receiver.take())
            time.sleep(0.02)
        assert c.counters()[lc.IF_SAMPLES] == n

    try:
        c.start()
        _send(
            port,
            [_dg([b.sflow_counter_sample([_ifc(4, 1000, (10, 0, 0), 3000, (30, 0, 0))], 1)], 1)],
        )
        wait_for(1)
        src.engine.step()
        src._after_step()  # what LiveSource.step does after the engine's step
        t0 = time.time()
        (row,) = src.snapshot(ViewQuery()).interfaces
        assert (row.name, row.rx_bytes, row.rx_packets, row.tx_bytes, row.tx_packets) == (
            "127.0.0.1#2/if4",
            1000,
            10,
            3000,
            30,
        )
        _send(
            port,
            [_dg([b.sflow_counter_sample([_ifc(4, 9000, (90, 0, 0), 3400, (34, 0, 0))], 2)], 2)],
        )
        wait_for(2)
        time.sleep(0.3)
        src.engine.step()
        src._after_step()
        dt_max = time.time() - t0 + 0.05
        (row,) = src.snapshot(ViewQuery()).interfaces
        assert (row.rx_bytes, row.rx_packets, row.tx_bytes, row.tx_packets) == (9000, 90, 3400, 34)
        # rates over the step: 8000 bytes, 80 packets in, 400 / 4 out
        assert 8000 * 8 / dt_max < row.rx_bps and 80 / dt_max < row.rx_pps
        assert row.rx_bps / row.rx_pps == pytest.approx(8 * 100)
        assert row.tx_bps / row.tx_pps == pytest.approx(8 * 100)
        assert row.rx_bps / row.tx_bps == pytest.approx(20)
    finally:
        c.close()


def test_dump_json_has_the_interface_lines() -> None:
    port = _port()
    cmd = [PY, "-m", "flowtop", "dump", "--listen", f"sflow://127.0.0.1:{port}"]
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
        recs = [_ifc(4, 1000, (10, 1, 1), 3000, (30, 0, 0)), _ifc(9, 5, (1, 0, 0), 6, (1, 0, 0))]
        _send(port, [_dg([b.sflow_counter_sample(recs, 1)], 1, sub_agent=0)])
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    lines = [json.loads(ln) for ln in out.splitlines()]
    ifs = {i["iface"]: i for i in lines if i["type"] == "interface"}
    assert {
        k: (v["rx_bytes"], v["rx_packets"], v["tx_bytes"], v["tx_packets"]) for k, v in ifs.items()
    } == {
        "127.0.0.1/if4": (1000, 12, 3000, 30),
        "127.0.0.1/if9": (5, 1, 6, 1),
    }
    (stats,) = [ln for ln in lines if ln["type"] == "stats"]
    assert stats[lc.IF_SAMPLES] == 2 and stats[lc.DECODE_ERRORS] == 0
