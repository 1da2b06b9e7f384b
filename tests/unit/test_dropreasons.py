"""flowtop.kernel.dropreasons and btf.Btf.enum on made-up tables (no kernel needed).

tests/kernel/test_drops.py compares the two sources on the running kernel;
here each parser meets the shapes it must handle: the prefix, the not-drop
constants, the end marker and mask, subsystem values, an older format
without a reason table, and a BTF blob with an ENUM and an ENUM64.
"""

from __future__ import annotations

import struct

from flowtop.kernel.btf import Btf
from flowtop.kernel.dropreasons import from_enum, from_format, load

FORMAT = """name: kfree_skb
ID: 1
format:
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, \
{ 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" }, { 129, "MAX" })
"""

OLD_FORMAT = """name: kfree_skb
print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location
"""


def test_enum_table() -> None:
    enum = {
        "SKB_NOT_DROPPED_YET": 0,
        "SKB_CONSUMED": 1,
        "SKB_DROP_REASON_NOT_SPECIFIED": 2,
        "SKB_DROP_REASON_NO_SOCKET": 3,
        "SKB_DROP_REASON_NETFILTER_DROP": 12,
        "SKB_DROP_REASON_MAX": 129,
        "SKB_DROP_REASON_SUBSYS_MASK": 0xFFFF0000,
    }
    r = from_enum(enum)
    assert dict(r.names) == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP"}
    assert r.not_drops == {0, 1}
    assert r.source == "btf"
    assert not r.is_drop(1) and r.is_drop(3)
    assert r.name(12) == "NETFILTER_DROP"
    assert r.name(77) == "UNKNOWN_77"
    assert r.name(3 << 16 | 5) == "SUBSYS_3_5"
    assert r.value("NO_SOCKET") == 3 and r.value("NOPE") is None


def test_format_table_agrees_with_enum() -> None:
    r = from_format(FORMAT)
    assert r is not None
    assert dict(r.names) == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP"}
    # the format leaves out the not-drops: the values below its first entry
    assert r.not_drops == {0, 1}
    assert r.source == "tracepoint format"
    assert from_format(OLD_FORMAT) is None
    assert load(None, OLD_FORMAT) is None
    loaded = load({}, FORMAT)
    assert loaded is not None and loaded.source == "tracepoint format"


def _btf(types: list[bytes], strs: bytes) -> bytes:
    body = b"".join(types)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strs))
    return hdr + body + strs


def test_btf_enum_and_enum64() -> None:
    strs = b"\0skb_drop_reason\0SKB_NOT_DROPPED_YET\0SKB_DROP_REASON_MASK\0big\0B\0"
    off = {n: strs.index(b"\0" + n + b"\0") + 1 for n in strs.split(b"\0") if n}
    enum = struct.pack("<III", off[b"skb_drop_reason"], (6 << 24) | 2, 4)
    enum += struct.pack("<II", off[b"SKB_NOT_DROPPED_YET"], 0)
    enum += struct.pack("<II", off[b"SKB_DROP_REASON_MASK"], 0xFFFF0000)
    enum64 = struct.pack("<III", off[b"big"], (19 << 24) | 1, 8)
    enum64 += struct.pack("<III", off[b"B"], 1, 2)
    btf = Btf(_btf([enum, enum64], strs))
    assert btf.enum("skb_drop_reason") == {
        "SKB_NOT_DROPPED_YET": 0,
        "SKB_DROP_REASON_MASK": 0xFFFF0000,
    }
    assert btf.enum("big") == {"B": 2 << 32 | 1}
    assert btf.enum("nope") is None
    assert Btf(b"").enum("skb_drop_reason") is None


def test_drop_counters_match_the_c_enum() -> None:
    """counters.py's drop records against enum ft_drop_counter in bpf/drops.h."""
    from flowtop.kernel import counters
    from tests.unit.test_counters import enum_values

    values = enum_values("drops.h", "ft_drop_counter")
    size = values.pop("FT_DROP_CTR_MAX")
    ours = {c.c_name: c.index for c in counters.COUNTERS if c.program == counters.DROPS}
    assert ours == values
    assert sorted(values.values()) == list(range(size))
    by_c = {c.c_name: c.name for c in counters.COUNTERS}
    assert tuple(by_c[n] for n in sorted(values, key=values.__getitem__)) == (
        counters.DROPS_COUNTERS
    )
    assert set(counters.DROPS_LOSSES) < set(counters.DROPS_COUNTERS)
