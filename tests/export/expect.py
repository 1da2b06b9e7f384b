"""What each flow of a batch should look like on the wire, from FlowBatch.records()."""

from __future__ import annotations

from flowtop.core.flowtable import FlowBatch
from flowtop.core.model import Direction, FlowRecord

TIMES = (152, 153)  # compared to within 1 ms (float seconds in FlowRecord)


def expected(rec: FlowRecord) -> dict[int, int | bytes]:
    k = rec.key
    v6 = k.ip_version == 6
    icmp = k.is_icmp
    ingress = k.direction == Direction.INGRESS
    assert rec.end_reason is not None
    return {
        27 if v6 else 8: k.src.packed,
        28 if v6 else 12: k.dst.packed,
        7: 0 if icmp else k.sport,
        11: 0 if icmp else k.dport,
        4: k.proto,
        139 if v6 else 32: k.dport if icmp else 0,
        60: k.ip_version,
        58: k.vlan,
        10: k.ifindex if ingress else 0,
        14: 0 if ingress else k.ifindex,
        61: int(k.direction),
        152: round(rec.unix(rec.first_ns) * 1000),
        153: round(rec.unix(rec.last_ns) * 1000),
        1: rec.bytes,
        2: rec.packets,
        6: rec.tcp_flags,
        5: rec.dscp << 2,
        136: int(rec.end_reason),
    }


def key(d: dict[int, int | bytes]) -> tuple[object, ...]:
    """Identity of a decoded or expected record, leaving out the times."""
    return tuple(sorted((i, v) for i, v in d.items() if i not in TIMES))


def check(batch: FlowBatch, decoded: list[dict[int, int | bytes]]) -> None:
    want = {key(e): e for e in map(expected, batch.records())}
    got = {key(d): d for d in decoded}
    assert len(got) == len(decoded) == len(batch), "duplicate or missing records"
    assert got.keys() == want.keys()
    for k, d in got.items():
        for ie in TIMES:
            assert abs(int(d[ie]) - int(want[k][ie])) <= 1
