"""The sfcapd second opinion: pmacct's sfprobe (a real sFlow v5 agent)
samples known traffic in a test namespace, and every datagram it sends goes
to flowtop and to sfcapd (nfdump's sFlow collector) at the same time (a tee
on the namespace's loopback). flowtop's scaled packets and bytes per flow
must be sfcapd's (nfdump -r on its file), flow by flow, sampled 1 in 4; and
the tee's datagram count is what flowtop counted as messages. sfcapd counts
frame bytes and flowtop IP bytes: the difference is read from the datagrams
(each sample's frame length minus its IP length) and must be exactly that."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from tests.kernel.netns import Pair
from tests.listen.realexp import Listener, Tee, free_port, send_udp

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(shutil.which("pmacctd") is None, reason="pmacct not installed"),
    pytest.mark.skipif(
        shutil.which("sfcapd") is None, reason="sfcapd not installed (nfdump-sflow)"
    ),
]

A4, B4 = "10.200.1.1", "10.200.1.2"
DPORT = 5010
# sport: (datagrams, payload): enough packets that 1-in-RATE sampling picks
# some of each flow
FLOWS = {40001: (600, 100), 40002: (300, 700), 40003: (120, 1200)}
RATE = 4


def _nfdump(path: str) -> dict[tuple[str, int, str, int], tuple[int, int]]:
    """nfdump's flows of an sfcapd file: (src, sport, dst, dport) -> (packets, bytes)."""
    fmt = "fmt:%sa %sp %da %dp %pkt %byt"
    out = subprocess.run(
        ["nfdump", "-r", path, "-q", "-N", "-o", fmt, "-A", "srcip,srcport,dstip,dstport"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got = {}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) != 6:
            continue
        sa, sp, da, dp, pk, by = parts
        got[(sa, int(sp), da, int(dp))] = (int(pk), int(by))
    return got


def test_flowtop_agrees_with_sfcapd_on_the_same_datagrams(pair: Pair) -> None:
    b = pair.b
    ft_port, sf_port = free_port(b), free_port(b)
    tmp = tempfile.mkdtemp(prefix="flowtop-sfcapd-")
    sfcapd = tee = agent = None
    try:
        sfcapd = b.popen(
            ["sfcapd", "-b", "127.0.0.1", "-p", str(sf_port), "-w", tmp, "-t", "3600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lis = Listener(b, f"sflow://127.0.0.1:{ft_port}")
        tee = Tee(b, [ft_port, sf_port])
        conf = os.path.join(tmp, "pmacctd.conf")
        with open(conf, "w") as f:
            f.write(
                f"daemonize: false\npcap_interface: vb\nplugins: sfprobe\n"
                f"sfprobe_receiver: 127.0.0.1:{tee.port}\nsfprobe_agentip: 127.0.0.1\n"
                f"sampling_rate: {RATE}\n"
            )
        agent = b.popen(
            ["pmacctd", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(2.0)
        send_udp(pair.a, b, B4, FLOWS, DPORT)
        time.sleep(3.0)
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)
        time.sleep(1.0)
        res, exporters = lis.result()
        sfcapd.send_signal(signal.SIGTERM)
        sfcapd.wait(15)
        files = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("nfcapd.2")]
        assert len(files) == 1, os.listdir(tmp)
        want = _nfdump(files[0])
        sent = tee.datagrams
        tee_kept = list(tee.kept)
    finally:
        for p in (agent, sfcapd):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
        if tee is not None:
            tee.close()
        shutil.rmtree(tmp, ignore_errors=True)
    got = {
        (f["src"], f["sport"], f["dst"], f["dport"]): (f["packets"], f["bytes"]) for f in res.flows
    }
    (ex,) = exporters
    assert ex["messages"] == sent and ex["errors"] == 0 and ex["lost"] == 0, (ex, sent)
    assert ex["estimated"] is True and ex["sampling"] == RATE
    # sfcapd counts each sample's frame length, flowtop its IP length (as it
    # counts every flow): the datagrams say by how much each sample's differ
    # (untagged Ethernet: 14 bytes of header and the 4-byte FCS sfprobe counts)
    overheads = _frame_minus_ip(tee_kept)
    assert overheads == {18}, overheads
    assert set(got) == set(want) and len(want) == len(FLOWS), (got, want)
    for key, (pkts, nbytes) in want.items():
        assert got[key] == (pkts, nbytes - 18 * pkts), (key, got[key], want[key])
    for sport in FLOWS:  # every flow was sampled (1 in RATE of hundreds)
        assert (A4, sport, B4, DPORT) in got


def _frame_minus_ip(datagrams: list[bytes]) -> set[int]:
    """Each sampled packet's frame length minus its IPv4 total length, read
    from the datagrams here (sFlow v5: IPv4 agent address, flow samples of
    raw header records over Ethernet; anything else is skipped by length)."""
    out = set()
    for dg in datagrams:
        (count,) = struct.unpack_from("!I", dg, 24)
        pos = 28
        for _ in range(count):
            tag, length = struct.unpack_from("!II", dg, pos)
            if tag == 1:
                (nrec,) = struct.unpack_from("!I", dg, pos + 8 + 28)
                rec = pos + 8 + 32
                for _ in range(nrec):
                    rtag, rlen = struct.unpack_from("!II", dg, rec)
                    if rtag == 1:
                        _proto, frame, _stripped, _hlen = struct.unpack_from("!IIII", dg, rec + 8)
                        (ip_len,) = struct.unpack_from("!H", dg, rec + 8 + 16 + 14 + 2)
                        out.add(frame - ip_len)
                    rec += 8 + rlen
            pos += 8 + length
    return out
