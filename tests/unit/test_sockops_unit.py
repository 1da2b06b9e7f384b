"""Pure logic of the sock_ops tracker: mounts, BTF offsets, record merging."""

from __future__ import annotations

import struct

import numpy as np

from flowtop.kernel import layout
from flowtop.kernel.btf import btf_member_offset
from flowtop.kernel.cgroup import cgroup2_mounts, pick_cgroup2
from flowtop.kernel.sockops_attach import PROG_NAME_RE, sockops_prog_name
from flowtop.kernel.sockops_records import (
    CONN_RECORD,
    ORIGIN_SOCKOPS,
    ORIGIN_TRACEPOINT,
    merge_records,
    to_tcp_samples,
)

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:39 / /sys/fs/bpf rw,relatime - bpf bpf rw
"""
UNIFIED = """\
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
26 21 0:23 / /mnt/my\\040cg rw,relatime shared:9 - cgroup2 none rw
"""


def test_cgroup2_mount_found_and_preferred() -> None:
    assert cgroup2_mounts(HYBRID) == ["/sys/fs/cgroup/unified"]
    assert pick_cgroup2(cgroup2_mounts(HYBRID)) == "/sys/fs/cgroup/unified"
    # optional fields (shared:N) before the separator; \040 is a space
    assert cgroup2_mounts(UNIFIED) == ["/sys/fs/cgroup", "/mnt/my cg"]
    assert pick_cgroup2(cgroup2_mounts(UNIFIED)) == "/sys/fs/cgroup"
    assert pick_cgroup2(["/mnt/my cg"]) == "/mnt/my cg"
    assert pick_cgroup2(cgroup2_mounts(HYBRID.replace("cgroup2 cgroup2", "cgroup cgroup"))) is None


def test_prog_name_fits_the_kernel_limit() -> None:
    longest = sockops_prog_name(4194304)  # PID_MAX_LIMIT
    assert len(longest) <= 15
    m = PROG_NAME_RE.match(longest)
    assert m is not None and int(m.group(1)) == 4194304
    assert PROG_NAME_RE.match("ftsops_12x") is None
    assert PROG_NAME_RE.match("foreign_sockops") is None


# -- BTF --------------------------------------------------------------------------------


def _btf(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return hdr + body + strings


def _t(name_off: int, kind: int, vlen: int, size_or_type: int, kflag: int = 0) -> bytes:
    return struct.pack("<III", name_off, (kflag << 31) | (kind << 24) | vlen, size_or_type)


def _m(name_off: int, type_id: int, offset: int) -> bytes:
    return struct.pack("<III", name_off, type_id, offset)


def _sample_btf(struct_name: bytes = b"tcp_sock") -> bytes:
    strs = b"\0u32\0u16\0__u32\0pad\0mdev_us\0x\0a\0bf\0srtt_us\0"
    strs += struct_name + b"\0tcp_sock_x\0"
    off = {n: strs.index(b"\0" + n + b"\0") + 1 for n in strs.split(b"\0") if n}
    types = [
        _t(off[b"u32"], 1, 0, 4) + struct.pack("<I", 32),  # 1: int u32
        _t(off[b"u16"], 1, 0, 2) + struct.pack("<I", 16),  # 2: int u16
        _t(off[b"__u32"], 8, 0, 1),  # 3: typedef __u32 -> 1
        _t(0, 10, 0, 3),  # 4: const __u32
        # 5: anonymous struct { u32 pad; const __u32 mdev_us; }
        _t(0, 4, 2, 8) + _m(off[b"pad"], 1, 0) + _m(off[b"mdev_us"], 4, 32),
        # 6: anonymous union { u32 x; struct 5; }
        _t(0, 5, 2, 8) + _m(off[b"x"], 1, 0) + _m(0, 5, 0),
        # 7: a decoy with the member at another place
        _t(off[b"tcp_sock_x"], 4, 1, 4) + _m(off[b"mdev_us"], 1, 0),
        # 8: struct tcp_sock (kflag: member offsets carry bitfield sizes)
        _t(off[struct_name], 4, 4, 24, kflag=1)
        + _m(off[b"a"], 1, 0)
        + _m(off[b"bf"], 1, (3 << 24) | 32)
        + _m(off[b"srtt_us"], 2, 64)
        + _m(0, 6, 128),
    ]
    return _btf(types, strs)


def test_btf_member_offset_through_anonymous_members() -> None:
    blob = _sample_btf()
    assert btf_member_offset(blob, "tcp_sock", "mdev_us") == 16 + 4
    assert btf_member_offset(blob, "tcp_sock", "a") == 0
    assert btf_member_offset(blob, "tcp_sock_x", "mdev_us") == 0
    # not a plain 4-byte integer: refused rather than read wrongly
    assert btf_member_offset(blob, "tcp_sock", "bf") is None
    assert btf_member_offset(blob, "tcp_sock", "srtt_us") is None
    assert btf_member_offset(blob, "tcp_sock", "nope") is None
    assert btf_member_offset(_sample_btf(b"udp_sock"), "tcp_sock", "mdev_us") is None
    assert btf_member_offset(b"\0" * 64, "tcp_sock", "mdev_us") is None
    assert btf_member_offset(b"", "tcp_sock", "mdev_us") is None


# -- records ------------------------------------------------------------------------------


def _rec(cookie: int, sport: int, state: int = 1, srtt: int = 100, **conn: int) -> np.ndarray:
    r = np.zeros(1, dtype=CONN_RECORD)
    r["key"]["ip_version"] = 4
    r["key"]["proto"] = 6
    r["key"]["src"] = np.void(bytes([10, 0, 0, 1]) + b"\0" * 12)
    r["key"]["dst"] = np.void(bytes([10, 0, 0, 2]) + b"\0" * 12)
    r["key"]["sport"] = sport
    r["key"]["dport"] = 443
    r["conn"]["sock_cookie"] = cookie
    r["conn"]["state"] = state
    r["conn"]["srtt_us"] = srtt
    r["conn"]["origin"] = ORIGIN_SOCKOPS
    for k, v in conn.items():
        r["conn"][k] = v
    return r


def _cat(*rs: np.ndarray) -> np.ndarray:
    return np.concatenate(rs) if rs else np.zeros(0, dtype=CONN_RECORD)


def test_merge_keeps_one_record_per_connection() -> None:
    live = _cat(_rec(1, 1000), _rec(2, 1001, srtt=5), _rec(3, 1002), _rec(2, 1001, srtt=7))
    closed = _cat(_rec(3, 1002, state=7, srtt=9))
    out = merge_records(live, closed)
    by = {(int(r["conn"]["sock_cookie"]), int(r["key"]["sport"])): r for r in out}
    assert len(out) == 3 and set(by) == {(1, 1000), (2, 1001), (3, 1002)}
    assert by[(2, 1001)]["conn"]["srtt_us"] == 7  # the later copy of a duplicate
    assert by[(3, 1002)]["conn"]["state"] == 7  # the closed copy wins
    assert by[(3, 1002)]["conn"]["srtt_us"] == 9


def test_merge_keeps_a_reconnected_socket_apart() -> None:
    # one socket (cookie 5): its first connection closed, the next one live
    live = _cat(_rec(5, 2001))
    closed = _cat(_rec(5, 2000, state=7))
    out = merge_records(live, closed)
    assert sorted(int(p) for p in out["key"]["sport"]) == [2000, 2001]


def test_merge_without_anything() -> None:
    empty = np.zeros(0, dtype=CONN_RECORD)
    assert len(merge_records(empty, empty)) == 0
    assert len(merge_records(empty, _cat(_rec(1, 1, state=7)))) == 1
    assert len(merge_records(_cat(_rec(1, 1)), empty)) == 1


def test_tcp_samples_from_records() -> None:
    recs = _cat(
        _rec(1, 1000, srtt=1500, rttvar_us=200, min_rtt_us=900, rtt_samples=12, retrans=7,
             tp_retrans=3, data_segs=500, rto=1, server=1, last_ns=42),
        _rec(0, 1001, srtt=0, retrans=0, tp_retrans=4, origin=ORIGIN_TRACEPOINT, skaddr=99),
    )  # fmt: skip
    s = to_tcp_samples(recs)
    assert s.dtype == layout.TCP_SAMPLE
    assert s["key"].tobytes() == recs["key"].tobytes()
    a, b = s
    assert (a["srtt_us"], a["rttvar_us"], a["min_rtt_us"], a["rtt_samples"]) == (1500, 200, 900, 12)
    # sock_ops' total_retrans (segments) is the count; the tracepoint's only
    # when the tracepoint is all we have
    assert (a["retrans"], b["retrans"]) == (7, 4)
    assert (a["data_segs"], a["rto"], a["server"], a["state"], a["last_ns"]) == (500, 1, 1, 1, 42)
    assert set(s["source"].tolist()) == {layout.TCP_SOURCE_SOCKOPS}
