"""The numpy decoder matches bpf/flowtop.h byte for byte (as bcc compiled it)."""

from __future__ import annotations

import ctypes as ct
import os
import socket

import numpy as np
import pytest
from scapy.all import ICMP, IP, ICMPv6EchoRequest, IPv6, Raw  # type: ignore[import-untyped]

from flowtop.kernel import layout
from flowtop.kernel.layout import KeyField

from . import frames as fr
from . import netns
from .netns import MAC_A, MAC_B, entered

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def program():  # type: ignore[no-untyped-def]
    """bpf/tc.c as TcProgram compiles it, as bcc's own object (for its ctypes types)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import bcc

    from flowtop.kernel.program import ProgramOptions

    src = layout_dir() / "tc.c"
    p = bcc.BPF(src_file=str(src).encode(), cflags=ProgramOptions(flow_map_size=64).cflags())
    yield p
    p.cleanup()


def _ctypes_layout(t: type) -> list[tuple[str, int, int]]:
    return [(name, getattr(t, name).offset, getattr(t, name).size) for name, *_ in t._fields_]


def _numpy_layout(d: np.dtype) -> list[tuple[str, int, int]]:
    assert d.fields is not None
    return sorted(
        ((name, off, sub.itemsize) for name, (sub, off, *_) in d.fields.items()),
        key=lambda x: x[1],
    )


@pytest.mark.parametrize(
    ("table", "key_dtype", "val_dtype"),
    [
        ("flows_a", layout.FLOW_KEY, layout.FLOW_STATS),
        ("flows_b", layout.FLOW_KEY, layout.FLOW_STATS),
        ("iface_counters", layout.IFACE_KEY, layout.IFACE_STATS),
        ("iface_slots", np.dtype([("slot", "<u4")]), layout.IFACE_STATS),
        ("cache_a", np.dtype([("slot", "<u4")]), layout.FLOW_CACHE_ENTRY),
        ("tcp_conns", layout.TCP_CONN_KEY, layout.TCP_CONN),
        ("tcp_conn_zero", np.dtype([("slot", "<u4")]), layout.TCP_CONN),
        ("tcp_pkts", np.dtype([("slot", "<u4")]), layout.TCP_PKT),
    ],
)
def test_struct_layouts_match(program, table, key_dtype, val_dtype) -> None:  # type: ignore[no-untyped-def]
    t = program[table.encode()]
    leaf = t.sLeaf if hasattr(t, "sLeaf") else t.Leaf  # per-CPU maps: one value per CPU
    assert ct.sizeof(t.Key) == key_dtype.itemsize
    assert ct.sizeof(leaf) == val_dtype.itemsize
    pairs = [(val_dtype, leaf)]
    if hasattr(t.Key, "_fields_"):  # array maps have a plain integer index
        pairs.append((key_dtype, t.Key))
    for dtype, ctype in pairs:
        ours, theirs = _numpy_layout(dtype), _ctypes_layout(ctype)
        assert [(o, s) for _, o, s in ours] == [(o, s) for _, o, s in theirs]
        assert [n for n, _, _ in ours] == [n for n, _, _ in theirs]


def test_tcp_conn_nested_layouts_match(program) -> None:  # type: ignore[no-untyped-def]
    """struct tcp_side (two in struct tcp_conn) and the tcp_rtt and tcp_half in it."""
    leaf = program[b"tcp_conns"].Leaf
    assert leaf.side.size == 2 * layout.TCP_SIDE.itemsize
    side = dict(leaf._fields_)["side"]._type_
    assert _numpy_layout(layout.TCP_SIDE) == _ctypes_layout(side)
    for name, dtype in (("rtt", layout.TCP_RTT), ("half", layout.TCP_HALF)):
        assert _numpy_layout(dtype) == _ctypes_layout(dict(side._fields_)[name])


def test_counter_names_match_enum() -> None:
    src = (layout_dir() / "flowtop.h").read_text()
    enum_body = src.split("enum ft_counter {", 1)[1].split("};", 1)[0]
    names = [
        line.split("=")[0].strip().removeprefix("FT_CTR_").lower()
        for line in enum_body.splitlines()
        if line.strip().startswith("FT_CTR_") and "FT_CTR_MAX" not in line
    ]
    assert tuple(names) == layout.COUNTERS


def layout_dir():  # type: ignore[no-untyped-def]
    from flowtop.kernel.build import BPF_DIR

    return BPF_DIR


def test_mpls_present_bit_matches_header() -> None:
    src = (layout_dir() / "flowtop.h").read_text()
    (line,) = [ln for ln in src.splitlines() if ln.startswith("#define FT_MPLS_PRESENT")]
    assert line.split(None, 2)[2] == "(1U << 24)"
    assert layout.MPLS_PRESENT == 1 << 24
    assert layout.mpls_label(layout.MPLS_PRESENT | 100 << 4 | 5 << 1 | 1) == 100
    assert layout.mpls_label(0) is None


def test_not_in_flow_counters() -> None:
    """The invariant's not-in-flow side: kernel counters, one packet each (or
    the segments of a failed insert), never no_ports (those are in a flow)."""
    assert set(layout.NOT_IN_FLOW) <= set(layout.COUNTERS)
    assert "no_ports" not in layout.NOT_IN_FLOW and "flow_map_full" not in layout.NOT_IN_FLOW


@pytest.mark.parametrize("passive_rtt", [True, False], ids=["passive_rtt", "no_passive_rtt"])
def test_all_four_programs_load(passive_rtt: bool) -> None:
    """Ethernet and L3, ingress and egress, pass the verifier with and without
    the passive RTT code (the largest build is the one near the limits)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from flowtop.kernel.program import ProgramOptions, TcProgram

    p = TcProgram(ProgramOptions(flow_map_size=64, passive_rtt=passive_rtt))
    try:
        fds = p.prog_fds()
        assert sorted(fds) == [
            ("egress", False),
            ("egress", True),
            ("ingress", False),
            ("ingress", True),
        ]
        assert len(set(fds.values())) == 4
        assert p.fd("ingress", True) == fds[("ingress", True)]
        assert p.fd("egress", False) == p.egress.fd
    finally:
        p.close()


# --------------------------------------------------------------------------- #
# layout.FLOW_KEY_WORDS: the derived words, shifts and masks
# --------------------------------------------------------------------------- #


def test_key_words_match_the_compiled_key(program) -> None:  # type: ignore[no-untyped-def]
    """Every derived word/shift/mask and address span, from the member offsets
    and sizes of struct flow_key as bcc's ctypes type for the map key has them
    (not from the numpy dtype they were derived from)."""
    key = program[b"flows_a"].Key
    kw = layout.FLOW_KEY_WORDS
    assert kw.count * 8 == ct.sizeof(key)
    members = _ctypes_layout(key)
    assert {n for n, _, _ in members} == set(kw.fields) | set(kw.spans)
    for name, off, size in members:
        if name in kw.spans:
            assert kw.spans[name] == slice(off // 8, (off + size) // 8), name
        else:
            assert kw.fields[name] == KeyField(off // 8, off % 8 * 8, (1 << 8 * size) - 1), name


IFINDEX_A = 0x3C2B1A09  # every byte different: a wrong shift or width shows
SRC6 = "2001:db8:1122:3344:5566:7788:99aa:bbcc"


def _sent() -> list[tuple[fr.Frame, int]]:
    """(frame, times sent) leaving A through va: ports, VLAN ID and ICMP
    type/code with distinct high and low bytes."""
    a4 = "10.200.1.1"
    return [
        (fr.udp(MAC_A, MAC_B, a4, fr.SINK4, 0x1234, 0xABCD, 20, vlans=[(0x8100, 0xABC)]), 3),
        (fr.tcp(MAC_A, MAC_B, SRC6, fr.SINK6, 0xBEEF, 0x0102), 2),
        (
            fr.raw_ip(
                MAC_A,
                MAC_B,
                IP(src=a4, dst=fr.SINK4) / ICMP(type=8, code=0) / Raw(b"p" * 8),
                fr.Key(4, 1, a4, fr.SINK4, 0, 8 << 8),
            ),
            1,
        ),
        (
            fr.raw_ip(
                MAC_A,
                MAC_B,
                IPv6(src=SRC6, dst=fr.SINK6) / ICMPv6EchoRequest(),
                fr.Key(6, 58, SRC6, fr.SINK6, 0, 128 << 8),
            ),
            4,
        ),
    ]


def _members(k: fr.Key, ifindex: int) -> dict[str, object]:
    """Every FLOW_KEY member the program must write for a frame of key k sent
    out of ifindex (a new member fails here until its value is added)."""
    addr = [
        socket.inet_pton(socket.AF_INET6 if k.ip_version == 6 else socket.AF_INET, a)
        for a in (k.src, k.dst)
    ]
    return {
        "ifindex": ifindex,
        "direction": layout.DIR_EGRESS,
        "ip_version": k.ip_version,
        "proto": k.proto,
        "pad0": 0,
        "src": addr[0].ljust(16, b"\0"),
        "dst": addr[1].ljust(16, b"\0"),
        "sport": k.sport,
        "dport": k.dport,
        "vlan": k.vlan,
        "pad1": 0,
    }


def _read(words: np.ndarray, i: int) -> dict[str, object]:
    """Row i of raw key words through the derived extractors only."""
    kw = layout.FLOW_KEY_WORDS
    out: dict[str, object] = {n: int(kw.field(words, n)[i]) for n in kw.fields}
    out.update({n: kw.span(words, n)[i].tobytes() for n in kw.spans})
    return out


def test_key_words_read_what_the_kernel_wrote() -> None:
    """Crafted frames out of A's va, the flow map drained from the kernel: every
    derived extractor returns the value sent, for every flow and member; the
    reversed words and a group mask hold what they should."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from flowtop.kernel.attach import TcAttacher
    from flowtop.kernel.program import ProgramOptions, TcProgram

    sent = _sent()
    p = netns.make_pair(ipv6=False, ifindex=(IFINDEX_A, IFINDEX_A + 1))
    prog = TcProgram(ProgramOptions(flow_map_size=64, passive_rtt=False))
    try:
        with entered(p.a.name):
            att = TcAttacher(prog.fd)
        try:
            att.attach(IFINDEX_A, "va")
            prog.drain_flows()  # start from empty maps
            for frame, times in sent:
                assert fr.send_frames(p.a, "va", [frame], repeat=times) == times
            batches = prog.drain_flows()
        finally:
            att.detach_all()
            att.close()
    finally:
        prog.close()
        p.delete()
    keys = np.concatenate([k for k, _ in batches])
    packets = np.concatenate([s["packets"] for _, s in batches])
    words = layout.FLOW_KEY_WORDS.view(keys)
    got: dict[tuple[object, ...], int] = {}
    for i in range(len(words)):
        row = tuple(sorted(_read(words, i).items()))
        got[row] = got.get(row, 0) + int(packets[i])  # a flow can be in a cache and the map
    want = {tuple(sorted(_members(f.key, IFINDEX_A).items())): n for f, n in sent if f.key}
    assert got == want

    kw = layout.FLOW_KEY_WORDS
    rev = kw.reversed(words)
    masked = words & kw.mask(("ip_version", "src"))
    for i in range(len(words)):
        row, back, group = _read(words, i), _read(rev, i), _read(masked, i)
        swap = {"src": "dst", "dst": "src", "sport": "dport", "dport": "sport"}
        assert back == {n: row[swap.get(n, n)] for n in row}
        assert group == {
            n: (row[n] if n in ("ip_version", "src") else 0 if n in kw.fields else bytes(16))
            for n in row
        }
