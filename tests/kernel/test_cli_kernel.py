"""The command line does what it is told, on the real kernel path.

- `flowtop -i va dump` (the option before the subcommand) attaches to va
  alone in a namespace with two veths: it used to be dropped, and dump
  attached to every UP interface.
- `--ipfix nohost:4739` is one line and exit 2 at start (it was accepted
  and then sent nothing); at SIGHUP, a file naming such a collector is a
  logged error and the running exporter goes on sending.

Name lookups happen inside the test namespaces, which have no route to any
name server: they fail at once and nothing leaves the machine.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from .dump import READY_MARK, Collector, export_only, flowtop_cmd
from .expect import drain, udp_client, udp_sink
from .netns import Pair, entered, flowtop_filters, veth

pytestmark = pytest.mark.kernel

A4, B4 = "10.200.1.1", "10.200.1.2"
X4, Y4 = "10.200.9.1", "10.200.9.2"
IPFIX_PORT = 4739


def _two_links(p: Pair) -> None:
    """A second veth pair between the same namespaces: vx (a) <-> vy (b)."""
    veth(p.a, "vx", p.b, "vy", "02:00:c8:00:09:01", "02:00:c8:00:09:02", (X4, Y4), None, False)


def _send(p: Pair, dst: str, port: int, n: int) -> None:
    sink = udp_sink(p.b, dst, port)
    c = udp_client(p.a, dst, port + 1)
    try:
        for _ in range(n):
            c.sendto(b"q" * 50, (dst, port))
        assert drain(sink, n) == n
    finally:
        sink.close()
        c.close()


@pytest.mark.parametrize(
    "argv",
    [("-i", "va", "dump"), ("dump", "-i", "va"), ("--interface", "va", "dump", "--json")],
    ids=["before", "after", "long-before"],
)
def test_interface_option_on_either_side_attaches_to_that_one_only(
    quiet_pair: Pair, argv: tuple[str, ...]
) -> None:
    p = quiet_pair
    _two_links(p)
    col = Collector(p.a, [], subcommand=argv).start()
    try:
        col.wait_ready()
        assert "collecting on va for" in col.stderr, col.stderr
        for hook in ("ingress", "egress"):
            assert [f["name"] for f in flowtop_filters(p.a, "va", hook)] == [
                f"flowtop_{hook}_{col.pid}"
            ]
            assert flowtop_filters(p.a, "vx", hook) == [], p.a.tc("filter", "show", "dev", "vx")
        assert "clsact" not in p.a.tc("qdisc", "show", "dev", "vx").stdout
        _send(p, B4, 6700, 5)
        _send(p, Y4, 6710, 7)
        time.sleep(0.3)
        res = col.stop()
    finally:
        if col.proc is not None and col.proc.poll() is None:
            col.proc.kill()
            col.proc.wait(timeout=10)
    assert {r["iface"] for r in res.interfaces} == {"va"}
    assert {f["iface"] for f in res.flows} <= {"va"}
    f = res.flow(iface="va", direction="egress", proto=17, src=A4, dst=B4, sport=6701, dport=6700)
    assert f is not None and (f["packets"], f["bytes"]) == (5, 5 * 78), f
    assert res.find(dst=Y4) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("--export-only", "-i", "va", "--ipfix", "nohost:4739"),
        ("-i", "va", "--ipfix", "nohost.invalid:4739", "--export-only"),
        ("-i", "va", "--ipfix", f"{B4}:4739", "--ipfix", "nohost:4739"),  # the live view
    ],
    ids=["export-only", "export-only-after", "live-view"],
)
def test_unresolvable_ipfix_collector_is_one_line_at_start(
    quiet_pair: Pair, argv: tuple[str, ...]
) -> None:
    p = quiet_pair
    proc = flowtop_cmd(p.a, *argv, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("flowtop: error: --ipfix: cannot resolve 'nohost"), lines[0]
    assert proc.stdout == ""
    for hook in ("ingress", "egress"):
        assert flowtop_filters(p.a, "va", hook) == []


class IpfixSink:
    """A UDP socket in namespace b that notes every IPFIX message's header."""

    def __init__(self, p: Pair) -> None:
        with entered(p.b.name):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((B4, IPFIX_PORT))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, int, int]] = []  # (when, sequence, data records)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            version, _length, _t, seq, _domain = struct.unpack_from("!HHIII", data)
            assert version == 10
            self.messages.append((time.monotonic(), seq, _data_sets(data)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _data_sets(msg: bytes) -> int:
    """Sets with an id of 256 or more: data records (of a flow or options template)."""
    pos, n = 16, 0
    while pos + 4 <= len(msg):
        set_id, length = struct.unpack_from("!HH", msg, pos)
        n += set_id >= 256
        pos += max(length, 4)
    return n


def _write(path: Path, collector: str) -> None:
    path.write_text(
        f'[interfaces]\ninclude = ["va"]\n'
        f"[collector]\nidle_timeout = 1\nactive_timeout = 2\n"
        f'[ipfix]\ncollectors = ["{collector}"]\noptions_interval = 1\n'
    )
    path.chmod(0o600)


def test_sighup_with_an_unresolvable_collector_keeps_the_running_one(
    quiet_pair: Pair, tmp_path: Path
) -> None:
    p = quiet_pair
    cfg = tmp_path / "flowtop.toml"
    _write(cfg, f"{B4}:{IPFIX_PORT}")
    sink = IpfixSink(p)
    proc, err, ready = export_only(p.a, "--config", str(cfg))
    try:
        assert ready.wait(40), "".join(err.lines)
        deadline = time.monotonic() + 10
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.messages, "".join(err.lines)
        _write(cfg, "nohost:4739")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reload failed" not in "".join(err.lines):
            assert time.monotonic() < deadline, "".join(err.lines)
            time.sleep(0.05)
        hup = time.monotonic()
        _send(p, B4, 6720, 3)
        _send(p, B4, 6730, 2)
        # the flows end (idle 1 s) and reach the collector that was running
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = [m for m in sink.messages if m[0] > hup]
            if after and after[-1][1] - after[0][1] >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "".join(err.lines)
        for hook in ("ingress", "egress"):
            assert [f["name"] for f in flowtop_filters(p.a, "va", hook)] == [
                f"flowtop_{hook}_{proc.pid}"
            ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        err.join(5)
        sink.close()
    text = "".join(err.lines)
    assert READY_MARK in text
    line = next(ln for ln in text.splitlines() if "config reload failed" in ln)
    assert "keeping the running config" in line and "cannot resolve 'nohost'" in line, line
    assert "Traceback" not in text
    after = [m for m in sink.messages if m[0] > hup]
    # sequence numbers count data records: the two flows that ended after the HUP
    assert after and after[-1][1] - after[0][1] >= 2, after
    assert sum(m[2] for m in after) >= 2, after
