"""CIDR labels and this host's own networks: vectorised longest-prefix match.

Labels file format (`--labels FILE`, `labels = "FILE"` in the config file)::

    # name        prefixes...                     options
    payments-db   10.20.0.0/24                    zone=b
    office        192.168.10.0/24 2001:db8:10::/48
    gateway       192.168.10.1                    # a host (/32, /128)

- One entry per line: a NAME, then one or more IPv4 or IPv6 PREFIXes, then
  optional `zone=ZONE`. Blank lines and everything after `#` are ignored.
  Fields are separated by spaces or tabs; the file is UTF-8.
- A prefix without `/len` is a single host. Host bits must be zero
  (`10.20.0.1/24` is an error: did you mean `10.20.0.0/24`?).
- The longest matching prefix wins. The same prefix listed twice is an error.
- NAME and ZONE are untrusted text: escape sequences and control characters
  are removed (`safe_text`); a name or zone that is empty after that is an error.
- Any error (bad prefix, missing name, no prefix, unknown `key=`, bad UTF-8)
  is a `ConfigError` naming the file and line: `labels FILE:LINE: what`.

Local networks: the networks of this host's interface addresses (current
network namespace, via netlink), loopback and link-local included; an address
inside any of them is marked `local`.

Matching works on canonical 16-byte addresses (IPv4 as ::ffff:a.b.c.d, its
prefixes shifted by 96 bits): one masked `searchsorted` per distinct prefix
length in the table, longest first, for a whole batch of addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flowtop.enrich.files import read_regular
from flowtop.enrich.geo import FileSig, canonical_from_ips
from flowtop.enrich.text import safe_text
from flowtop.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NAME_MAX = 48
ZONE_MAX = 32
MAX_FILE = 64 << 20


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    zone: str | None


def canonical_prefix(net: Network) -> tuple[bytes, int]:
    """(16-byte canonical network address, prefix length in 128-bit space)."""
    if net.version == 4:
        addr = canonical_from_ips([net.network_address])[0].tobytes()
        return addr, net.prefixlen + 96
    return net.network_address.packed, net.prefixlen


def _mask(bits: int) -> np.ndarray:
    m = np.zeros(16, dtype=np.uint8)
    full, rest = divmod(bits, 8)
    m[:full] = 0xFF
    if rest:
        m[full] = (0xFF << (8 - rest)) & 0xFF
    return m


_V4_PREFIX = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


def _is_v4(canon: np.ndarray) -> np.ndarray:
    v4: np.ndarray = np.all(canon[:, :12] == _V4_PREFIX, axis=1)
    return v4


class PrefixTable:
    """Longest-prefix match of canonical addresses against a fixed set of prefixes.

    IPv4 addresses match IPv4 prefixes (and IPv6 prefixes within ::ffff:0:0/96),
    never an IPv6 prefix such as ::/0 that merely contains the mapped block."""

    def __init__(self, prefixes: Sequence[tuple[Network, int]]) -> None:
        """prefixes: (network, value >= 0); a prefix may appear once."""
        by_len: dict[int, dict[bytes, int]] = {}
        for net, value in prefixes:
            key, bits = canonical_prefix(net)
            by_len.setdefault(bits, {})[key] = value
        self._levels: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for bits in sorted(by_len, reverse=True):
            items = sorted(by_len[bits].items())
            keys = np.frombuffer(b"".join(k for k, _ in items), dtype="S16")
            values = np.array([v for _, v in items], dtype=np.int32)
            self._levels.append((bits, _mask(bits), keys, values))
        self.size = sum(len(v) for v in by_len.values())

    def match(self, canon: np.ndarray) -> np.ndarray:
        """Value of the longest prefix containing each address (n, 16) u1; -1: none."""
        n = len(canon)
        out = np.full(n, -1, dtype=np.int32)
        pending = np.arange(n)
        v4_left = True
        for bits, mask, keys, values in self._levels:
            if bits < 96 and v4_left:
                # an IPv6 prefix shorter than /96 (::/0 ...) is no IPv4 prefix
                pending = pending[~_is_v4(canon[pending])]
                v4_left = False
            if not pending.size:
                break
            masked = np.ascontiguousarray(canon[pending] & mask).view("S16").ravel()
            pos = np.searchsorted(keys, masked)
            pos[pos == len(keys)] = 0
            hit = keys[pos] == masked
            out[pending[hit]] = values[pos[hit]]
            pending = pending[~hit]
        return out


@dataclass
class LabelSet:
    """A parsed labels file: its labels and the table mapping prefixes to them."""

    path: str
    labels: list[Label]
    table: PrefixTable
    sig: FileSig | None

    @property
    def prefixes(self) -> int:
        return self.table.size


def _err(path: str, lineno: int, what: str) -> ConfigError:
    return ConfigError(f"labels {safe_text(path)}:{lineno}: {what}")


def _parse_prefix(tok: str, path: str, lineno: int) -> Network:
    shown = safe_text(tok, 64)
    try:
        return ipaddress.ip_network(tok, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(tok, strict=False)
        except ValueError:
            raise _err(path, lineno, f"bad prefix {shown!r}") from None
        raise _err(path, lineno, f"host bits set in {shown!r} (did you mean {loose}?)") from None


def _looks_like_prefix(tok: str) -> bool:
    try:
        ipaddress.ip_network(tok, strict=False)
    except ValueError:
        return False
    return True


def parse_labels(text: str, path: str) -> list[tuple[Network, Label, int]]:
    """(network, label, line number) for each prefix in a labels file's text."""
    out: list[tuple[Network, Label, int]] = []
    seen: dict[Network, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0]
        toks = line.split()
        if not toks:
            continue
        first, rest = toks[0], toks[1:]
        if _looks_like_prefix(first):
            raise _err(path, lineno, f"missing name before prefix {safe_text(first, 64)!r}")
        if "=" in first:
            raise _err(path, lineno, f"missing name before {safe_text(first, 64)!r}")
        name = safe_text(first, NAME_MAX)
        if not name:
            raise _err(path, lineno, "name is empty once control characters are removed")
        zone: str | None = None
        nets: list[Network] = []
        for tok in rest:
            if "=" in tok:
                key, _, value = tok.partition("=")
                if key != "zone":
                    raise _err(path, lineno, f"unknown key {safe_text(key, 32)!r} (known: zone)")
                if zone is not None:
                    raise _err(path, lineno, "zone given twice")
                zone = safe_text(value, ZONE_MAX)
                if not zone:
                    raise _err(path, lineno, "empty zone")
                continue
            nets.append(_parse_prefix(tok, path, lineno))
        if not nets:
            raise _err(path, lineno, f"no prefix for {name!r}")
        label = Label(name, zone)
        for net in nets:
            if net in seen:
                raise _err(path, lineno, f"prefix {net} already labelled at line {seen[net]}")
            seen[net] = lineno
            out.append((net, label, lineno))
    return out


def load_labels(path: str) -> LabelSet:
    """Reads and parses a labels file; any problem is a one-line ConfigError."""
    try:
        data, st = read_regular(path, MAX_FILE)
    except OSError as e:
        raise ConfigError(f"labels {safe_text(path)}: {e.strerror or e}") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"labels {safe_text(path)}: larger than {MAX_FILE >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise _err(path, lineno, "not UTF-8 text") from None
    entries = parse_labels(text, path)
    labels: list[Label] = []
    index: dict[Label, int] = {}
    prefixes: list[tuple[Network, int]] = []
    for net, label, _lineno in entries:
        i = index.get(label)
        if i is None:
            i = index[label] = len(labels)
            labels.append(label)
        prefixes.append((net, i))
    return LabelSet(path, labels, PrefixTable(prefixes), FileSig.of(st))


def host_networks() -> list[Network]:
    """Networks of this host's interface addresses (current network namespace)."""
    # rtnetlink read directly: pyroute2's import would delay the first attachment.
    from flowtop.kernel.rtnl import Rtnl

    nets: set[Network] = set()
    with Rtnl() as rtnl:
        for _family, raw, prefixlen in rtnl.addresses():
            try:
                iface = ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen))
            except ValueError:
                continue
            nets.add(iface.network)
    return sorted(nets, key=lambda n: (n.version, n.network_address.packed, n.prefixlen))
