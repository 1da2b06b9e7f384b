"""Numbers, ports, flags and times as short strings (no Textual, no markup)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from flowtop.enrich.services import service_name
from flowtop.sanitize import clean

_SI = ("", "k", "M", "G", "T", "P")
TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
_PORTLESS = {1, 58}  # ICMP and ICMPv6 keys carry type << 8 | code in dport


@dataclass(frozen=True, slots=True)
class Display:
    """How numbers and names are shown; toggled by keys, never changes the query."""

    cumulative: bool = False  # totals since first seen instead of rates
    bits: bool = True  # bits/s (b) or bytes/s (B)
    resolve: bool = True  # host and service names instead of numbers


def si(value: float, digits: int = 3) -> str:
    """1234567 -> '1.23M': at most `digits` significant digits and a 1000-based prefix."""
    v = float(value)
    i = 0
    while abs(v) >= 999.5 and i < len(_SI) - 1:
        v /= 1000.0
        i += 1
    if i == 0 and v == int(v):
        return f"{int(v)}"
    decimals = max(0, digits - len(str(int(abs(v)))))
    return f"{v:.{decimals}f}{_SI[i]}"


def rate(bps: float, bits: bool = True) -> str:
    """A bit rate as '12.3 Mb/s' (bits) or '1.54 MB/s' (bytes)."""
    if bits:
        return f"{si(bps)}b/s"
    return f"{si(bps / 8.0)}B/s"


def volume(nbytes: int | float, bits: bool = True) -> str:
    """A cumulative amount: bytes ('1.2MB') or bits ('9.6Mb')."""
    if bits:
        return f"{si(nbytes * 8)}b"
    return f"{si(nbytes)}B"


def count(n: int | float) -> str:
    return si(n)


def rtt(us: float | None) -> str:
    if us is None:
        return ""
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.2f}s"


def tcp_flags(flags: int) -> str:
    names = [n for i, n in enumerate(TCP_FLAGS) if flags & (1 << i)]
    return ",".join(names) if names else "-"


@lru_cache(maxsize=4096)
def service(port: int, proto: int) -> str | None:
    """Service name of a port for IP protocol proto (enrich.services: /etc/services,
    then its built-in table; read once, so this never blocks), cut to 16 cells."""
    name = service_name(port, proto)
    return clean(name, 16) if name else None


def port(number: int | None, proto: int | None, names: bool) -> str:
    """A port as a number or a service name; ICMP type/code as 'type/code'."""
    if number is None:
        return ""
    if proto in _PORTLESS:
        return f"{number >> 8}/{number & 0xFF}"
    if number == 0:
        return "0" if proto in (6, 17, 132) else ""
    if names and proto is not None:
        name = service(number, proto)
        if name:
            return name
    return str(number)


def source_port(number: int | None, proto: int | None, names: bool) -> str:
    """The source side: blank for ICMP, whose type/code shows as the destination port."""
    if proto in _PORTLESS:
        return ""
    return port(number, proto, names)


def timestamp(unix: float) -> str:
    """Local wall-clock time with milliseconds."""
    if unix <= 0:
        return "-"
    t = time.localtime(unix)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{int(unix * 1000) % 1000:03d}"


def age(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    return f"{s // 3600:.0f}h{(s % 3600) // 60:02.0f}m"


def interval(seconds: float) -> str:
    return f"{seconds:g}s"
