"""What `--listen URL` and `[listen] urls` take.

  ipfix://[ADDR]:PORT        IPFIX over UDP and TCP on the same port (default 4739)
  ipfix+udp://... ipfix+tcp://...   only one of them
  netflow://[ADDR]:PORT      NetFlow v9 and v5 over UDP, told apart by version (default 2055)
  sflow://[ADDR]:PORT        sFlow v5 over UDP (default 6343)

ADDR omitted (`ipfix://`, `ipfix://:4739`) is loopback, 127.0.0.1: listening
anywhere else must be asked for by address (`ipfix://0.0.0.0:4739`,
`ipfix://[::]:4739`). Host names are refused: a listening address is numeric.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flowtop.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
# scheme -> (protocol, udp, tcp, default port)
SCHEMES = {
    "ipfix": ("ipfix", True, True, 4739),
    "ipfix+udp": ("ipfix", True, False, 4739),
    "ipfix+tcp": ("ipfix", False, True, 4739),
    "netflow": ("netflow", True, False, 2055),
    "sflow": ("sflow", True, False, 6343),
}


@dataclass(frozen=True, slots=True)
class ListenUrl:
    """One listening endpoint: the protocol its messages are decoded as."""

    protocol: str  # "ipfix", "netflow" or "sflow"
    host: str
    port: int
    udp: bool
    tcp: bool

    @property
    def family_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.family_v6 else self.host
        transport = "udp+tcp" if self.udp and self.tcp else "udp" if self.udp else "tcp"
        return f"{self.protocol}://{host}:{self.port} ({transport})"


def parse_url(text: str, what: str = "--listen") -> ListenUrl:
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"{what}: expected ipfix://, netflow:// or sflow://[ADDR]:PORT, not {text!r}"
        )
    protocol, udp, tcp, port = SCHEMES[scheme]
    host = DEFAULT_HOST
    rest = rest.rstrip("/")
    if rest.startswith("["):
        inner, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ConfigError(f"{what}: expected [ADDRESS]:PORT in {text!r}")
        host, port_s = inner, tail[1:]
    elif rest.count(":") > 1:
        raise ConfigError(f"{what}: an IPv6 address goes in brackets: {text!r}")
    else:
        h, _, port_s = rest.partition(":")
        host = h or DEFAULT_HOST
    if port_s:
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise ConfigError(f"{what}: bad port in {text!r}")
        port = int(port_s)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{what}: not a numeric address: {host!r}") from None
    return ListenUrl(protocol, host, port, udp, tcp)
