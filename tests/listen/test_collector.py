"""ListenCollector over real loopback sockets (UDP and TCP), the CLI and
config around it; no root needed, no namespace: 127.0.0.1 only."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from flowtop.config import ConfigError, from_mapping
from flowtop.listen import counters as lc
from flowtop.listen.collector import ListenCollector, ListenOptions
from flowtop.listen.sockets import ListenError
from flowtop.listen.urls import parse_url
from tests.listen import build as b

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python")
T = 300


def _port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _msg(seq: int, n: int = 2, sport: int = 1) -> bytes:
    rec = b.v4_record("10.0.0.1", "10.0.0.2", sport, 2, 17, 100, 1)
    return b.ipfix_message([b.set_(2, b.template(T, b.V4_FIELDS)), b.set_(T, rec * n)], seq=seq)


def _drain_until(c: ListenCollector, records: int, timeout: float = 5.0) -> tuple[int, int]:
    """(packets, flows) drained until `records` records were decoded."""
    packets = flows = 0
    deadline = time.monotonic() + timeout
    while c.counters()[lc.RECORDS] < records and time.monotonic() < deadline:
        time.sleep(0.05)
        for _keys, stats in c.drain().batches:
            packets += int(stats["packets"].sum())
            flows += len(stats)
    return packets, flows


def test_udp_messages_become_flows() -> None:
    port = _port()
    c = ListenCollector(ListenOptions((parse_url(f"ipfix+udp://127.0.0.1:{port}"),)))
    try:
        assert c.start() == [f"ipfix://127.0.0.1:{port} (udp)"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for seq in range(0, 10, 2):
                s.sendto(_msg(seq), ("127.0.0.1", port))
        packets, _ = _drain_until(c, 10)
        assert packets == 10
        assert c.counters()[lc.RECORDS_LOST] == 0
        assert set(c.names().values()) == {"127.0.0.1#1/if1"}
        (ex,) = c.exporters()
        assert ex["messages"] == 5 and ex["records"] == 10
    finally:
        c.close()


def test_tcp_stream_framing_and_a_broken_stream() -> None:
    port = _port(socket.SOCK_STREAM)
    c = ListenCollector(ListenOptions((parse_url(f"ipfix+tcp://127.0.0.1:{port}"),)))
    try:
        c.start()
        stream = _msg(0) + _msg(2) + _msg(4)
        with socket.create_connection(("127.0.0.1", port)) as s:
            for i in range(0, len(stream), 37):  # messages cut across writes
                s.sendall(stream[i : i + 37])
                time.sleep(0.002)
            packets, _ = _drain_until(c, 6)
        assert packets == 6
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"\x00\x09\x00\x20" + b"\0" * 28)  # not IPFIX: the stream is closed
            s.settimeout(5)
            assert s.recv(10) == b""
        assert c.counters()[lc.DECODE_ERRORS] == 1
    finally:
        c.close()


def test_full_queue_is_counted() -> None:
    port = _port()
    one = len(_msg(0))
    c = ListenCollector(
        ListenOptions((parse_url(f"netflow://127.0.0.1:{port}"),), queue_bytes=5 * one)
    )
    try:
        c.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for seq in range(0, 20, 2):
                s.sendto(_msg(seq), ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while c.receiver.queue_full < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        packets, _ = _drain_until(c, 10, timeout=1.0)
        assert c.counters()[lc.QUEUE_FULL] == 5
        assert packets == 10  # the 5 that fit
        # the exporter's sequence numbers show the same 5 messages (10 records) missing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_msg(20), ("127.0.0.1", port))
        _drain_until(c, 12)
        assert c.counters()[lc.RECORDS_LOST] == 10
    finally:
        c.close()


def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ListenError, match=rf"cannot listen on netflow://127.0.0.1:{port}"):
            ListenCollector(ListenOptions((parse_url(f"netflow://127.0.0.1:{port}"),)))


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("ipfix://", ("ipfix", "127.0.0.1", 4739, True, True)),
        ("ipfix://:9000", ("ipfix", "127.0.0.1", 9000, True, True)),
        ("ipfix+tcp://0.0.0.0:9000", ("ipfix", "0.0.0.0", 9000, False, True)),
        ("netflow://[::1]", ("netflow", "::1", 2055, True, False)),
        ("netflow://10.1.2.3:2056/", ("netflow", "10.1.2.3", 2056, True, False)),
    ],
)
def test_urls(url: str, want: tuple[object, ...]) -> None:
    u = parse_url(url)
    assert (u.protocol, u.host, u.port, u.udp, u.tcp) == want


@pytest.mark.parametrize(
    "url",
    [
        "sflow+tcp://:6343",
        "ipfix:/x",
        "ipfix://router.example:4739",
        "ipfix://::1:4739",
        "ipfix://1.2.3.4:0",
        "ipfix://1.2.3.4:99999",
        "netflow://[::1]x",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)


def test_config_section() -> None:
    cfg = from_mapping(
        {
            "listen": {
                "urls": ["ipfix://0.0.0.0:4739", "netflow://"],
                "max_exporters": 10,
                "template_lifetime": 90,
            }
        }
    )
    assert [str(u) for u in cfg.listen.urls] == [
        "ipfix://0.0.0.0:4739 (udp+tcp)",
        "netflow://127.0.0.1:2055 (udp)",
    ]
    assert cfg.listen.max_exporters == 10 and cfg.listen.template_lifetime == 90
    for bad in (
        {"urls": "ipfix://"},
        {"urls": ["ipfix://", "ipfix+udp://"]},
        {"max_exporters": 0},
        {"nope": 1},
    ):
        with pytest.raises(ConfigError):
            from_mapping({"listen": bad})
    with pytest.raises(ConfigError, match="do not go together"):
        from_mapping({"listen": {"urls": ["ipfix://"]}, "interfaces": {"include": ["eth9"]}})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "flowtop", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("dump", "--listen", "bogus://"), "flowtop: error: --listen: expected ipfix://"),
        (("dump", "--listen", "ipfix://", "-i", "lo"), "flowtop: error: --listen and --interface"),
        (("--listen", "ipfix://", "--record", "/tmp/x"), "flowtop: error: --listen and --record"),
    ],
)
def test_cli_errors_are_one_line(args: tuple[str, ...], line: str) -> None:
    r = _cli(*args)
    assert r.returncode == 2, r
    assert r.stderr.startswith(line) and r.stderr.count("\n") == 1, r.stderr


def test_cli_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = _cli("dump", "--listen", f"netflow://127.0.0.1:{port}", "--duration", "1")
    assert r.returncode == 2
    assert r.stderr.startswith(f"flowtop: error: cannot listen on netflow://127.0.0.1:{port}")
    assert "Traceback" not in r.stderr


def test_dump_without_root() -> None:
    """A listening dump as `nobody`: no BPF, no root; its text table has the exporter."""
    port = _port()
    cmd = [
        "runuser",
        "-u",
        "nobody",
        "--",
        PY,
        "-m",
        "flowtop",
        "dump",
        "--listen",
        f"ipfix://127.0.0.1:{port}",
        "--duration",
        "3",
    ]
    if os.geteuid() != 0:
        cmd = cmd[4:]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        assert "collecting on" in p.stderr.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_msg(0, n=3), ("127.0.0.1", port))
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "127.0.0.1#1/if1" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("127.0.0.1 "))
    assert row.split()[:4] == ["127.0.0.1", "ipfix", "3", "0"], row


def test_export_only_relays_what_it_receives() -> None:
    """--export-only --listen: a relay; the re-exported IPFIX (read by the tests'
    own decoder, tests/export/decode.py) carries the received counters."""
    from tests.export.decode import Decoder, fields

    port = _port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as coll:
        coll.bind(("127.0.0.1", 0))
        coll.settimeout(0.5)
        cmd = [
            PY,
            "-m",
            "flowtop",
            "--export-only",
            "--listen",
            f"ipfix+udp://127.0.0.1:{port}",
            "--ipfix",
            f"127.0.0.1:{coll.getsockname()[1]}",
        ]
        p = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            assert p.stderr is not None
            deadline = time.monotonic() + 30
            while "collecting on" not in p.stderr.readline():
                assert p.poll() is None and time.monotonic() < deadline
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for seq, sport in ((0, 1), (2, 2), (4, 3)):
                    s.sendto(_msg(seq, n=2, sport=sport), ("127.0.0.1", port))
            time.sleep(2.5)
            p.send_signal(15)
            p.wait(20)
            dec, recs = Decoder(), []
            while True:
                try:
                    recs += dec.message(coll.recv(65535)).records
                except TimeoutError:
                    break
        finally:
            if p.poll() is None:
                p.kill()
    flows = [fields(v) for tid, v in recs if tid == 256]  # flowtop's IPv4 flow template
    assert sorted((f[7], f[2], f[1]) for f in flows) == [(1, 2, 200), (2, 2, 200), (3, 2, 200)]
    assert {f[10] for f in flows} == {1}  # the synthetic ifindex of 127.0.0.1#1/if1
