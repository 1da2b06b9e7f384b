"""Deferred data segments (tcp_pkts rows) added to the passive tracker's
connections (tcpconn.add_deferred), on synthetic arrays: no kernel."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest

from flowtop.kernel import layout, tcpconn
from flowtop.kernel.tcpconn import TcpConnTable, add_deferred, conn_samples

CPUS = 4
SLOTS = 16


def _addr(a: str) -> bytes:
    return ipaddress.ip_address(a).packed.ljust(16, b"\0")


def conn_key(src: str, dst: str, sport: int, dport: int) -> tuple[bytes, int]:
    """ft_conn_key() of bpf/tcprtt.h in plain Python: (the 40 key bytes, the
    packet's direction in it)."""
    s, d = _addr(src), _addr(dst)
    s0, s1 = (int.from_bytes(s[i : i + 8], "little") for i in (0, 8))
    d0, d1 = (int.from_bytes(d[i : i + 8], "little") for i in (0, 8))
    if s0 != d0:
        direction = int(s0 > d0)
    elif s1 != d1:
        direction = int(s1 > d1)
    else:
        direction = int(sport > dport)
    a0, a1, p0, p1 = (s, d, sport, dport) if direction == 0 else (d, s, dport, sport)
    ver = ipaddress.ip_address(src).version
    raw = a0 + a1 + p0.to_bytes(2, "little") + p1.to_bytes(2, "little") + bytes([ver, 0, 0, 0])
    return raw, direction


def conns(spec: list[tuple[bytes, tuple[int, int], tuple[int, int]]]) -> tuple:
    """(keys, vals) of connections given as (key bytes, stamps, data_segs) per direction."""
    keys = np.frombuffer(b"".join(k for k, _, _ in spec), dtype=layout.TCP_CONN_KEY).copy()
    vals = np.zeros(len(spec), dtype=layout.TCP_CONN)
    half = vals["side"]["half"]
    for i, (_k, stamps, segs) in enumerate(spec):
        half["stamp"][i] = stamps
        half["data_segs"][i] = segs
        half["flags"][i] = layout.HALF_SEEN
    return keys, vals


def rows() -> np.ndarray:
    return np.zeros((CPUS, SLOTS), dtype=layout.TCP_PKT)


def put(
    r: np.ndarray, cpu: int, slot: int, src: str, dst: str, sp: int, dp: int,
    deferred: int, stamp: int,
) -> None:  # fmt: skip
    e = r[cpu, slot]
    k = e["key"]
    k["ifindex"] = 7
    k["direction"] = layout.DIR_EGRESS
    k["ip_version"] = ipaddress.ip_address(src).version
    k["proto"] = 6
    k["src"] = _addr(src)
    k["dst"] = _addr(dst)
    k["sport"] = sp
    k["dport"] = dp
    e["deferred"] = deferred
    e["stamp"] = stamp
    e["owner"] = 1
    e["seq_end"] = 12345
    e["now"] = 99


def segs(vals: np.ndarray) -> list[list[int]]:
    out: list[list[int]] = vals["side"]["half"]["data_segs"].tolist()
    return out


@pytest.mark.parametrize(
    ("a", "b"),
    [("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.1"), ("2001:db8:1::5", "2001:db8:2::1")],
    ids=["ipv4", "ipv4-reversed", "ipv6"],
)
def test_both_directions(a: str, b: str) -> None:
    k, d_ab = conn_key(a, b, 40000, 443)
    k2, d_ba = conn_key(b, a, 443, 40000)
    assert k == k2 and d_ab == 1 - d_ba
    keys, vals = conns([(k, (11, 22), (3, 4))])
    r = rows()
    put(r, 0, 5, a, b, 40000, 443, 10, (11, 22)[d_ab])
    put(r, 1, 2, b, a, 443, 40000, 100, (11, 22)[d_ba])
    add_deferred(keys, vals, r)
    want = [3, 4]
    want[d_ab] += 10
    want[d_ba] += 100
    assert segs(vals) == [want]


def test_words_compare_little_endian() -> None:
    """The first address word is compared as a little-endian u64, not byte
    by byte: 10.0.0.2 is 0x0200000a, above 11.0.0.1 (0x0100000b)."""
    k, d = conn_key("10.0.0.2", "11.0.0.1", 1000, 2000)
    assert d == 1 and k[:4] == bytes([11, 0, 0, 1])
    keys, vals = conns([(k, (5, 6), (0, 0))])
    r = rows()
    put(r, 2, 0, "10.0.0.2", "11.0.0.1", 1000, 2000, 8, 6)
    add_deferred(keys, vals, r)
    assert segs(vals) == [[0, 8]]


def test_second_word_decides() -> None:
    # Same first 8 bytes (2001:db8:0:0), the second word differs.
    a, b = "2001:db8::1:0:0:2", "2001:db8::2:0:0:1"
    k, d = conn_key(a, b, 80, 80)
    assert _addr(a)[:8] == _addr(b)[:8]
    s1 = int.from_bytes(_addr(a)[8:], "little")
    d1 = int.from_bytes(_addr(b)[8:], "little")
    assert d == int(s1 > d1)
    keys, vals = conns([(k, (1, 2), (0, 0))])
    r = rows()
    put(r, 0, 0, a, b, 80, 80, 3, (1, 2)[d])
    put(r, 0, 1, b, a, 80, 80, 4, (1, 2)[1 - d])
    add_deferred(keys, vals, r)
    want = [0, 0]
    want[d], want[1 - d] = 3, 4
    assert segs(vals) == [want]


def test_equal_addresses_ports_decide() -> None:
    k, d = conn_key("127.0.0.1", "127.0.0.1", 5000, 80)
    assert d == 1  # sport > dport: endpoint 0 is port 80
    assert k[32:36] == (80).to_bytes(2, "little") + (5000).to_bytes(2, "little")
    keys, vals = conns([(k, (7, 9), (1, 1))])
    r = rows()
    put(r, 3, 15, "127.0.0.1", "127.0.0.1", 5000, 80, 20, 9)
    put(r, 1, 4, "127.0.0.1", "127.0.0.1", 80, 5000, 30, 7)
    add_deferred(keys, vals, r)
    assert segs(vals) == [[31, 21]]


def test_cpus_add_up() -> None:
    k, d = conn_key("192.0.2.1", "198.51.100.7", 50000, 22)
    keys, vals = conns([(k, (3, 4), (2, 2))])
    r = rows()
    stamp = (3, 4)[d]
    put(r, 0, 3, "192.0.2.1", "198.51.100.7", 50000, 22, 5, stamp)
    put(r, 1, 9, "192.0.2.1", "198.51.100.7", 50000, 22, 6, stamp)
    put(r, 3, 3, "192.0.2.1", "198.51.100.7", 50000, 22, 7, stamp)
    add_deferred(keys, vals, r)
    want = [2, 2]
    want[d] += 18
    assert segs(vals) == [want]


def test_stale_and_foreign_entries_left_out() -> None:
    k, d = conn_key("10.1.0.1", "10.1.0.2", 1234, 80)
    keys, vals = conns([(k, (40, 0), (5, 0)) if d == 0 else (k, (0, 40), (0, 5))])
    r = rows()
    put(r, 0, 0, "10.1.0.1", "10.1.0.2", 1234, 80, 9, 41)  # an earlier connection's stamp
    put(r, 0, 1, "10.1.0.2", "10.1.0.1", 80, 1234, 9, 0)  # stamp 0, the half's stamp is 0 too
    put(r, 1, 0, "10.1.0.1", "10.1.0.2", 1234, 81, 9, 40)  # no such connection
    put(r, 1, 1, "10.1.0.1", "10.1.0.2", 1234, 80, 0, 40)  # nothing deferred
    before = segs(vals)
    add_deferred(keys, vals, r)
    assert segs(vals) == before
    add_deferred(keys[:0], vals[:0], r)  # no connections at all


def test_deferred_only_half_is_reported() -> None:
    k, d = conn_key("10.2.0.9", "10.2.0.1", 443, 51000)
    keys, vals = conns([(k, (100, 200), (0, 0))])
    assert len(conn_samples(keys, vals)) == 0
    r = rows()
    put(r, 2, 7, "10.2.0.9", "10.2.0.1", 443, 51000, 12, (100, 200)[d])
    add_deferred(keys, vals, r)
    out = conn_samples(keys, vals)
    assert len(out) == 1
    assert out["data_segs"].tolist() == [12]
    assert bytes(out["key"]["src"][0]) == _addr("10.2.0.9")
    assert bytes(out["key"]["dst"][0]) == _addr("10.2.0.1")
    assert out["key"]["sport"].tolist() == [443] and out["key"]["dport"].tolist() == [51000]


def test_many_against_python() -> None:
    """Random connections and entries, checked against a dict-based reckoning."""
    rnd = random.Random(5)
    hosts = [f"10.9.{rnd.randrange(4)}.{rnd.randrange(256)}" for _ in range(30)]
    hosts += [f"2001:db8::{rnd.randrange(1 << 16):x}:{rnd.randrange(4):x}" for _ in range(30)]
    flows = []
    for _ in range(300):
        a, b = rnd.sample(hosts[:30] if rnd.random() < 0.5 else hosts[30:], 2)
        flows.append((a, b, rnd.randrange(1, 65536), rnd.choice((80, 443, 53))))
    spec: dict[bytes, tuple[tuple[int, int], tuple[int, int]]] = {}
    for a, b, sp, dp in flows[:250]:  # the last 50: no connection
        k, _d = conn_key(a, b, sp, dp)
        spec[k] = ((rnd.randrange(1, 4), rnd.randrange(1, 4)), (rnd.randrange(9), 0))
    keys, vals = conns([(k, st, sg) for k, (st, sg) in spec.items()])
    order = list(spec)
    want = {k: list(sg) for k, (_st, sg) in spec.items()}
    big = np.zeros((8, 64), dtype=layout.TCP_PKT)
    for cpu in range(8):
        for slot in range(64):
            if rnd.random() < 0.3:
                continue
            a, b, sp, dp = rnd.choice(flows)
            if rnd.random() < 0.5:
                a, b, sp, dp = b, a, dp, sp
            n, stamp = rnd.randrange(0, 50), rnd.randrange(0, 4)
            put(big, cpu, slot, a, b, sp, dp, n, stamp)
            k, d = conn_key(a, b, sp, dp)
            if k in spec and n > 0 and stamp != 0 and spec[k][0][d] == stamp:
                want[k][d] += n
    add_deferred(keys, vals, big)
    assert segs(vals) == [want[k] for k in order]
    assert segs(vals) != [list(spec[k][1]) for k in order]  # something was added


def test_samples_reads_connections_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """TcpConnTable.samples(): the connection map, then tcp_pkts, then the sums."""
    k, _d = conn_key("10.3.0.1", "10.3.0.2", 2000, 25)
    keys, vals = conns([(k, (1, 1), (0, 0))])
    calls: list[str] = []

    def read_rows(fd: int, first: int, count: int, row: int, out: np.ndarray) -> None:
        calls.append("rows")
        assert (fd, first, count, row, out.shape) == (8, 0, SLOTS, SLOTS, (CPUS, SLOTS))
        put(out, 1, 1, "10.3.0.1", "10.3.0.2", 2000, 25, 4, 1)

    def read(self: TcpConnTable) -> tuple[np.ndarray, np.ndarray]:
        calls.append("conns")
        return keys, vals

    class Info:
        value_size = layout.TCP_PKT.itemsize
        max_entries = CPUS * SLOTS

    monkeypatch.setattr(tcpconn, "cpu_ids", lambda: CPUS)
    monkeypatch.setattr(tcpconn, "map_info", lambda fd: Info)
    monkeypatch.setattr(tcpconn, "read_rows", read_rows)
    monkeypatch.setattr(TcpConnTable, "read", read)
    t = TcpConnTable(7, 8, SLOTS)
    out = t.samples(now_ns=1, inserted=1)
    assert calls == ["conns", "rows"]
    assert out["data_segs"].tolist() == [4]
    assert bytes(out["key"]["src"][0]) == _addr("10.3.0.1")


def test_wrong_tcp_pkts_layout_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Info:
        value_size = layout.TCP_PKT.itemsize * 2
        max_entries = CPUS * SLOTS

    def read_rows(*args: object) -> None:
        raise AssertionError("a map of another layout must not be read")

    monkeypatch.setattr(tcpconn, "cpu_ids", lambda: CPUS)
    monkeypatch.setattr(tcpconn, "map_info", lambda fd: Info)
    monkeypatch.setattr(tcpconn, "read_rows", read_rows)
    monkeypatch.setattr(TcpConnTable, "read", lambda self: conns([]))
    t = TcpConnTable(7, 8, SLOTS)  # loads: a benchmark's other build can attach
    with pytest.raises(tcpconn.KernelFeatureError, match="tcp_pkts has"):
        t.samples(now_ns=1, inserted=0)
