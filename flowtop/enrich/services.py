"""Service names of ports: /etc/services, with a built-in table for common ones.

`/etc/services` is parsed once, on first use (`name port/proto [aliases] [# comment]`,
protocols tcp, udp, sctp, dccp). A port it does not list (or a host without
the file, e.g. a minimal container) falls back to BUILTIN. Names are cleaned
like any text from a file (`safe_text`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from flowtop.enrich.files import read_regular
from flowtop.enrich.text import safe_text

SERVICES_PATH = "/etc/services"
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "dccp": 33, "sctp": 132}
TCP, UDP, SCTP = 6, 17, 132
NAME_MAX = 32

_COMMON_BOTH = {
    53: "domain",
    80: "http",
    88: "kerberos",
    123: "ntp",
    443: "https",
    500: "isakmp",
    1194: "openvpn",
    1812: "radius",
    1813: "radius-acct",
    3478: "stun",
    4500: "ipsec-nat-t",
    5060: "sip",
    5353: "mdns",
}
_COMMON_TCP = {
    20: "ftp-data",
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    110: "pop3",
    111: "sunrpc",
    119: "nntp",
    139: "netbios-ssn",
    143: "imap2",
    179: "bgp",
    389: "ldap",
    445: "microsoft-ds",
    465: "submissions",
    587: "submission",
    636: "ldaps",
    853: "domain-s",
    873: "rsync",
    993: "imaps",
    995: "pop3s",
    1433: "ms-sql-s",
    1883: "mqtt",
    2049: "nfs",
    2379: "etcd-client",
    3128: "squid",
    3306: "mysql",
    3389: "ms-wbt-server",
    5432: "postgresql",
    5671: "amqps",
    5672: "amqp",
    5900: "vnc",
    6379: "redis",
    6443: "kube-apiserver",
    8080: "http-alt",
    8443: "https-alt",
    9090: "prometheus",
    9092: "kafka",
    9100: "node-exporter",
    11211: "memcache",
    27017: "mongodb",
}
_COMMON_UDP = {
    67: "bootps",
    68: "bootpc",
    69: "tftp",
    137: "netbios-ns",
    138: "netbios-dgm",
    161: "snmp",
    162: "snmp-trap",
    514: "syslog",
    546: "dhcpv6-client",
    547: "dhcpv6-server",
    1900: "ssdp",
    4789: "vxlan",
    4739: "ipfix",
    6081: "geneve",
    51820: "wireguard",
}


def _builtin() -> dict[tuple[int, int], str]:
    out: dict[tuple[int, int], str] = {}
    for port, name in _COMMON_BOTH.items():
        out[(port, TCP)] = out[(port, UDP)] = name
    for port, name in _COMMON_TCP.items():
        out[(port, TCP)] = name
    for port, name in _COMMON_UDP.items():
        out[(port, UDP)] = name
    for (port, proto), name in list(out.items()):
        if proto == TCP:
            out.setdefault((port, SCTP), name)
    return out


BUILTIN: Mapping[tuple[int, int], str] = _builtin()


def parse_services(text: str) -> dict[tuple[int, int], str]:
    """(port, IP protocol number) -> name from the text of a services(5) file.
    Malformed lines are skipped (the file is the system's, not ours to reject);
    the first entry for a port/protocol wins, as getservbyport does."""
    out: dict[tuple[int, int], str] = {}
    for line in text.splitlines():
        toks = line.split("#", 1)[0].split()
        if len(toks) < 2:
            continue
        port_s, _, proto_s = toks[1].partition("/")
        proto = PROTO_NUMBERS.get(proto_s.lower())
        if proto is None or not port_s.isascii() or not port_s.isdigit():
            continue
        port = int(port_s)
        name = safe_text(toks[0], NAME_MAX)
        if 0 < port < 65536 and name:
            out.setdefault((port, proto), name)
    return out


def load_services(path: str = SERVICES_PATH) -> dict[tuple[int, int], str]:
    """parse_services of `path`; an unreadable or missing file gives {}."""
    try:
        data, _ = read_regular(path, 4 << 20)
    except OSError:
        return {}
    return parse_services(data.decode("utf-8", errors="replace"))


@functools.cache
def _system() -> dict[tuple[int, int], str]:
    return load_services(SERVICES_PATH)


def service_name(port: int, proto: int) -> str | None:
    """Name of `port` for IP protocol `proto` (6 tcp, 17 udp, 132 sctp, 33 dccp)."""
    key = (port, proto)
    return _system().get(key) or BUILTIN.get(key)
