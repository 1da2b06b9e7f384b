"""The filter language over synthetic key columns."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from flowtop.kernel import layout
from flowtop.query.filterexpr import Columns, FilterError, parse

FLOWS = [
    # (ifindex, dir, ver, proto, src, dst, sport, dport, vlan)
    (2, 0, 4, 6, "10.0.0.1", "192.0.2.10", 40000, 443, 0),
    (2, 1, 4, 17, "10.0.0.2", "198.51.100.7", 5353, 53, 0),
    (3, 0, 6, 6, "2001:db8::1", "2001:db8:1::5", 22, 50000, 100),
    (3, 1, 4, 1, "10.0.1.9", "10.0.0.1", 0, 8 << 8, 0),
    (2, 0, 6, 58, "fe80::1", "ff02::1", 0, 128 << 8, 0),
]
NAMES = {2: "eth1", 3: "veth-x"}


def cols() -> Columns:
    k = np.zeros(len(FLOWS), dtype=layout.FLOW_KEY)
    for i, (ifx, d, v, p, s, t, sp, dp, vl) in enumerate(FLOWS):
        k[i]["ifindex"], k[i]["direction"], k[i]["ip_version"], k[i]["proto"] = ifx, d, v, p
        k[i]["src"] = ipaddress.ip_address(s).packed.ljust(16, b"\0")
        k[i]["dst"] = ipaddress.ip_address(t).packed.ljust(16, b"\0")
        k[i]["sport"], k[i]["dport"], k[i]["vlan"] = sp, dp, vl
    return Columns.from_keys(k, NAMES)


def hits(expr: str) -> list[int]:
    return list(np.flatnonzero(parse(expr)(cols())))


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        ("", [0, 1, 2, 3, 4]),
        ("host 10.0.0.1", [0, 3]),
        ("src 10.0.0.1", [0]),
        ("dst host 10.0.0.1", [3]),
        ("net 10.0.0.0/24", [0, 1, 3]),
        ("src net 10.0.0.0/16", [0, 1, 3]),
        ("dst net 2001:db8::/32", [2]),
        ("src net 10.0.0.0/8 and not src net 10.0.0.0/24", [3]),
        ("net 10.0.0.0/8 and not net 10.0.0.0/24", []),
        ("port 443", [0]),
        ("port https", [0]),
        ("sport 22 or dport 53", [1, 2]),
        ("src port 5353", [1]),
        ("port 2048", []),  # ICMP type/code is not a port
        ("proto tcp", [0, 2]),
        ("proto 17", [1]),
        ("icmp or icmpv6", [3, 4]),
        ("iface eth1", [0, 1, 4]),
        ("iface 'veth*'".replace("'", ""), [2, 3]),
        ("in", [0, 2, 4]),
        ("out and proto udp", [1]),
        ("vlan 100", [2]),
        ("not (tcp or udp)", [3, 4]),
        ("! tcp && ! udp", [3, 4]),
        ("tcp || udp", [0, 1, 2]),
        ("(host 10.0.0.1 or host 10.0.0.2) and in", [0]),
        ("HOST 10.0.0.1 AND TCP", [0]),
    ],
)
def test_good_expressions(expr: str, rows: list[int]) -> None:
    assert hits(expr) == rows


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("host", "expected an address (at the end)"),
        ("host 10.0.0.300", "not an IP address: '10.0.0.300' (at 6)"),
        ("net 10.0.0.0/33", "not a network"),
        ("port 70000", "port out of range"),
        ("port nosuchservice", "unknown service"),
        ("proto bogus", "unknown protocol"),
        ("tcp and", "expected a filter term"),
        ("(tcp or udp", "expected ')'"),
        ("tcp udp", "unexpected 'udp' (at 5)"),
        ("frobnicate 3", "unknown filter term 'frobnicate' (at 1)"),
        ("vlan 5000", "expected a VLAN ID (0-4095)"),
        ("tcp )", "unexpected ')'"),
    ],
)
def test_bad_expressions_say_what_and_where(expr: str, message: str) -> None:
    with pytest.raises(FilterError) as exc:
        parse(expr)
    assert message in str(exc.value)
