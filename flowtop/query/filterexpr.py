"""The view's filter language: tcpdump-like terms, compiled to numpy masks.

    expr  := or
    or    := and (("or" | "||") and)*
    and   := unary (("and" | "&&") unary)*
    unary := ("not" | "!") unary | "(" expr ")" | term
    term  := host A | src [host] A | dst [host] A
           | net CIDR | src net CIDR | dst net CIDR
           | port P | sport P | dport P | src port P | dst port P
           | proto NAME|N | tcp | udp | icmp | icmpv6 | sctp
           | iface NAME (glob) | in | out | vlan N
           | [src|dst] asn N | [src|dst] country CC | [src|dst] label NAME (glob)
           | [src|dst] zone ZONE (glob) | cross-zone
           | monitor NAME
           | proc GLOB | pid N | user NAME|UID | service GLOB
           | container ID-PREFIX | unattributed
           | dropped | drop REASON
           | name GLOB
           | exporter A|CIDR | ifindex N

A is an IPv4 or IPv6 address, P a port number or a service name from
/etc/services. A parsed filter evaluates over a whole table at once: it
gets the key columns and returns a boolean mask, no Python per flow.

The owner terms (proc, pid, user, service, container, unattributed) test the
socket owner the engine joined to each flow (query/owners.py): proc is the
command name (comm), user a login name resolved once here or a numeric uid,
container a case-insensitive prefix of the container id (hex).

The drop terms test the kernel drops the engine joined to each flow
(core/drops.py): `dropped` is a flow with packets dropped on this box,
`drop REASON` one with drops of that reason (enum skb_drop_reason's name
without SKB_DROP_REASON_, case-insensitive, a glob: `drop netfilter*`); a
name the running kernel does not have is an error when the filter runs.

`name GLOB` tests the names from the wire (DNS answers, TLS SNI, HTTP Host)
the engine joined to either end of each flow (query/names.py),
case-insensitive: `name *.example.com`.

Zones: `zone Z` tests the zone of either end (the zone of its label, or for
this host's own addresses the configured host zone when no label gives one;
query/entities.py), `src zone`/`dst zone` one end; `cross-zone` is a flow
whose two ends both have a zone and the zones differ. `monitor NAME` is a
flow in a configured monitor, either way (see monitor_ways and
query/monitors.py); an unknown name is an error.

The fleet terms test received flows (--listen) through the exporter table
(query/exporters.py): `exporter A|CIDR` the exporter's address (any of its
observation domains), `ifindex N` the interface index on the exporter (its
ingress or egress interface as the record's direction says), not the
synthetic index the key carries.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import pwd
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from flowtop.core.drops import DropRows
from flowtop.core.owners import STATE_UNATTRIBUTED
from flowtop.errors import FlowtopError
from flowtop.kernel import layout
from flowtop.query import names as wirenames
from flowtop.query import owners as own
from flowtop.query.exporters import ExporterArrays

PROTOCOLS = {
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,
    "icmp6": 58,
    "sctp": 132,
}

_TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|[^\s()!&|]+)")


class FilterError(FlowtopError):
    """A filter expression that does not parse; says what and where."""

    exit_code = 2


_KEY = layout.FLOW_KEY_WORDS
# Bytes of the src/dst members (an IPv4 address fills the first 4).
_ADDR_BYTES = layout.FLOW_KEY["src"].itemsize


class EntityAttrs(Protocol):
    """Per-entity attribute arrays (index: entity id), from the enricher."""

    def attr(self, name: str) -> np.ndarray: ...  # "asn", "country", "label"


@dataclass(frozen=True, slots=True)
class Columns:
    """What a filter can look at, one entry per flow (row)."""

    words: np.ndarray  # layout.FLOW_KEY records as words (layout.FLOW_KEY_WORDS.view)
    ifnames: Mapping[int, str]  # ifindex -> name
    # Entity ids of both ends and what they mean; None without enrichment.
    ents: tuple[np.ndarray, np.ndarray] | None = None
    entities: EntityAttrs | None = None
    # The rows' socket owners; None when attribution is off.
    owners: own.OwnerRows | None = None
    # The rows' kernel drops; None when drops are not collected.
    drops: DropRows | None = None
    # The rows' names from the wire; None when they are off.
    names: wirenames.NameRows | None = None
    # The exporters of received flows; None when not listening.
    fleet: ExporterArrays | None = None

    @classmethod
    def from_keys(cls, keys: np.ndarray, ifnames: Mapping[int, str]) -> Columns:
        return cls(_KEY.view(keys), ifnames)

    def entity_attr(self, which: str, name: str) -> np.ndarray:
        """An entity attribute of the src or dst end of every row."""
        if self.ents is None or self.entities is None:
            raise FilterError(f"{name}: no enrichment (give --geoip-asn/--geoip-city/--labels)")
        eids = self.ents[0 if which == "src" else 1]
        values = self.entities.attr(name)
        # Id 0 is "nothing known"; -1 (not looked up yet) means the same here.
        out: np.ndarray = values[np.maximum(eids, 0)]
        return out

    def entity_mask(
        self, which: str, name: str, test: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """test over an entity attribute, per entity (a few hundred at most),
        then per row of the src or dst end: what entity_attr then test gives,
        without a value per row."""
        if self.ents is None or self.entities is None:
            raise FilterError(f"{name}: no enrichment (give --geoip-asn/--geoip-city/--labels)")
        hit: np.ndarray = np.asarray(test(self.entities.attr(name)), dtype=bool)
        eids = self.ents[0 if which == "src" else 1]
        if not len(hit):
            return np.zeros(len(eids), dtype=bool)
        out: np.ndarray = hit[np.maximum(eids, 0)]
        return out

    def owner(self, term: str) -> own.OwnerRows:
        """The rows' owners, for a filter term."""
        if self.owners is None:
            raise FilterError(f"{term}: no socket owners (process attribution is off)")
        return self.owners

    def name_rows(self, term: str) -> wirenames.NameRows:
        """The rows' wire names, for a filter term."""
        if self.names is None:
            raise FilterError(f"{term}: no names from the wire (they are off)")
        return self.names

    def exporters(self, term: str) -> ExporterArrays:
        """The exporter table, for a filter term."""
        if self.fleet is None:
            raise FilterError(f"{term}: not a received flow (only with --listen)")
        return self.fleet

    def drop_rows(self, term: str) -> DropRows:
        """The rows' drops, for a filter term."""
        if self.drops is None:
            raise FilterError(f"{term}: no drop reasons (drops are off or could not start)")
        return self.drops

    def __len__(self) -> int:
        return len(self.words)

    def rows(self, at: np.ndarray) -> Columns:
        """These columns at some rows only: keys and entities (what a
        monitor's terms read; the joined tables stay off)."""
        ents = (self.ents[0][at], self.ents[1][at]) if self.ents is not None else None
        return Columns(self.words[at], self.ifnames, ents, self.entities)

    def field(self, name: str) -> np.ndarray:
        """A scalar key member of every row (layout.FLOW_KEY_WORDS.fields)."""
        return _KEY.field(self.words, name)

    def addr(self, which: str) -> np.ndarray:
        """The uint64 words of the src or dst address, memory order."""
        return _KEY.span(self.words, which)


Mask = Callable[[Columns], np.ndarray]


def _all(c: Columns) -> np.ndarray:
    return np.ones(len(c), dtype=bool)


@dataclass(frozen=True, slots=True)
class Filter:
    text: str
    mask: Mask

    def __call__(self, cols: Columns) -> np.ndarray:
        return self.mask(cols)


def _net_words(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[np.ndarray, np.ndarray]:
    """(value, mask) as little-endian uint64 words over the address member's bytes."""
    size = 4 if net.version == 4 else 16
    value = bytearray(_ADDR_BYTES)
    mask = bytearray(_ADDR_BYTES)
    value[:size] = net.network_address.packed
    mask[:size] = net.netmask.packed
    return (
        np.frombuffer(bytes(value), dtype="<u8").copy(),
        np.frombuffer(bytes(mask), dtype="<u8").copy(),
    )


def _in_net(which: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Mask:
    value, mask = _net_words(net)

    def f(c: Columns) -> np.ndarray:
        a = c.addr(which)
        same: np.ndarray = ((a & mask) == value).all(axis=1)
        version: np.ndarray = c.field("ip_version") == net.version
        out: np.ndarray = same & version
        return out

    return f


def _either(a: Mask, b: Mask) -> Mask:
    return lambda c: a(c) | b(c)


def _both(a: Mask, b: Mask) -> Mask:
    return lambda c: a(c) & b(c)


def _negate(a: Mask) -> Mask:
    return lambda c: ~a(c)


def _field_eq(field: str, value: int) -> Mask:
    return lambda c: c.field(field) == value


def _port(field: str | None, port: int) -> Mask:
    def f(c: Columns) -> np.ndarray:
        # ICMP keys carry type/code in dport: ports only mean ports for L4 with them.
        has_ports = ~np.isin(c.field("proto"), (1, 58))
        hit: np.ndarray
        if field is None:
            hit = (c.field("sport") == port) | (c.field("dport") == port)
        else:
            hit = c.field(field) == port
        return hit & has_ports

    return f


def _entity(which: str | None, name: str, test: Callable[[np.ndarray], np.ndarray]) -> Mask:
    def f(c: Columns) -> np.ndarray:
        if which is not None:
            return c.entity_mask(which, name, test)
        out: np.ndarray = c.entity_mask("src", name, test) | c.entity_mask("dst", name, test)
        return out

    return f


def _glob(pattern: str) -> Callable[[np.ndarray], np.ndarray]:
    def test(values: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(values.astype(str), return_inverse=True)
        hit = np.array([bool(u) and fnmatch.fnmatchcase(u, pattern) for u in uniq], dtype=bool)
        out: np.ndarray = hit[inv.ravel()] if len(uniq) else np.zeros(len(values), dtype=bool)
        return out

    return test


def _drop_reason(pattern: str) -> Mask:
    """Flows with drops of a reason whose name matches pattern (the running
    kernel's names: checked when the filter runs, since only the collector
    knows them)."""
    if not re.fullmatch(r"[A-Za-z0-9_*?\[\]!-]+", pattern):
        raise FilterError(f"not a drop reason name: {pattern!r}")

    def mask(c: Columns) -> np.ndarray:
        rows = c.drop_rows("drop")
        values = rows.table.values_matching(pattern)
        if not values:
            raise FilterError(
                f"drop {pattern}: this kernel has no such drop reason "
                "(names as the drops panel shows them, e.g. NETFILTER_DROP, NO_SOCKET)"
            )
        return rows.of_reasons(values, c.words)

    return mask


def _cross_zone(c: Columns) -> np.ndarray:
    src, dst = c.entity_attr("src", "zone_id"), c.entity_attr("dst", "zone_id")
    out: np.ndarray = (src > 0) & (dst > 0) & (src != dst)
    return out


def end_view(c: Columns, which: str) -> Columns:
    """The rows as if both their ends were the src (or dst) end: an
    expression evaluated on it says whether that one end matches (host, net,
    port, label, zone... of either end then test that end; the protocol,
    interface, direction and VLAN are the row's own)."""
    words = np.array(c.words, copy=True)
    other = "dst" if which == "src" else "src"
    words[:, _KEY.spans[other]] = c.words[:, _KEY.spans[which]]
    port = _KEY.field(c.words, "sport" if which == "src" else "dport")
    _KEY.set_field(words, "dport" if which == "src" else "sport", port)
    ents = c.ents
    if ents is not None:
        end = ents[0] if which == "src" else ents[1]
        ents = (end, end)
    return replace(c, words=words, ents=ents)


def monitor_ways(
    c: Columns, local: Mask, remote: Mask, src: Columns | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(local->remote, remote->local) masks of a monitor over the rows: a row
    goes local->remote when its source end matches `local` and its
    destination end `remote` (each end tested alone: end_view), and
    remote->local the other way round; a row that is both is local->remote.
    src: end_view(c, "src") when the caller has it (several monitors)."""
    src = src if src is not None else end_view(c, "src")
    # The destination end is tested only where the source end matched (a
    # monitor's ends are usually narrow: most rows are out after one test).
    up = _where(local(src), remote, c)
    down = _where(remote(src) & ~up, local, c)
    return up, down


def _where(sel: np.ndarray, dst_test: Mask, c: Columns) -> np.ndarray:
    """sel, narrowed to the rows whose destination end passes dst_test."""
    at = np.flatnonzero(sel)
    out = np.zeros(len(c), dtype=bool)
    if len(at):
        out[at] = dst_test(end_view(c.rows(at), "dst"))
    return out


# The configured monitors by name (set_monitors: the run, from the config;
# the `monitor NAME` term looks a name up when it is parsed).
_MONITORS: dict[str, tuple[Mask, Mask]] = {}


def set_monitors(monitors: Sequence[tuple[str, str, str]]) -> None:
    """The monitors `monitor NAME` knows: (name, local, remote expression)."""
    compiled = {name: (parse(lo).mask, parse(re_).mask) for name, lo, re_ in monitors}
    _MONITORS.clear()
    _MONITORS.update(compiled)


def _monitor(name: str, where: str) -> Mask:
    ends = _MONITORS.get(name)
    if ends is None:
        known = ", ".join(sorted(_MONITORS)) or "none configured"
        raise FilterError(f"unknown monitor {name!r} ({where}; known: {known})")
    local, remote = ends

    def f(c: Columns) -> np.ndarray:
        up, down = monitor_ways(c, local, remote)
        out: np.ndarray = up | down
        return out

    return f


class _NoEntities:
    """Entity attributes of no entity at all (check_static)."""

    def attr(self, name: str) -> np.ndarray:
        return np.zeros(0, dtype=object if name in ("country", "label", "zone") else np.int64)


def check_static(text: str) -> Filter:
    """Parses an expression that must be answerable from flow keys and
    enrichment alone (a monitor's ends): owner, drop, wire name and exporter
    terms are refused, as is `monitor`."""
    flt = parse(text)
    empty = np.zeros((0, _KEY.count), dtype=np.uint64)
    none = np.zeros(0, dtype=np.int32)
    cols = Columns(empty, {}, (none, none), _NoEntities())
    try:
        flt(cols)
    except FilterError as exc:
        term = str(exc).split(":", 1)[0]
        raise FilterError(
            f"{term}: a monitor takes terms of flow keys and enrichment only "
            "(not socket owners, drops, wire names or exporters)"
        ) from None
    return flt


def _owner_eq(term: str, column: str, value: int) -> Mask:
    return lambda c: c.owner(term).column(column) == value


def _owner_name(term: str, column: str, key: str, test: Callable[[str], bool]) -> Mask:
    """Flows whose owner name (an id column) passes test: each name of the
    table tested once (cached until it grows), then indexed by the ids."""

    def f(c: Columns) -> np.ndarray:
        rows = c.owner(term)
        ids = rows.column(column)  # before the names: the table only grows
        hit = rows.arrays.matches(column, key, test)
        out = np.zeros(len(ids), dtype=bool)
        ok = ids < len(hit)
        out[ok] = hit[ids[ok]]
        return out

    return f


_HEX = re.compile(r"[0-9a-fA-F]+")


def _iface(pattern: str) -> Mask:
    def f(c: Columns) -> np.ndarray:
        idx = [i for i, n in c.ifnames.items() if fnmatch.fnmatchcase(n, pattern)]
        return np.isin(c.field("ifindex"), idx)

    return f


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[tuple[str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or not m.group(1):
                if text[pos:].strip():
                    raise FilterError(f"unexpected character {text[pos]!r} (at {pos + 1})")
                break
            self.toks.append((m.group(1), m.start(1)))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i][0].lower() if self.i < len(self.toks) else None

    def where(self) -> str:
        if self.i < len(self.toks):
            return f"at {self.toks[self.i][1] + 1}"
        return "at the end"

    def take(self) -> str:
        tok = self.toks[self.i][0]
        self.i += 1
        return tok

    def need(self, what: str) -> str:
        if self.i >= len(self.toks):
            raise FilterError(f"expected {what} ({self.where()})")
        return self.take()

    def parse(self) -> Mask:
        if not self.toks:
            return _all
        m = self.parse_or()
        if self.i < len(self.toks):
            raise FilterError(f"unexpected {self.toks[self.i][0]!r} ({self.where()})")
        return m

    def parse_or(self) -> Mask:
        m = self.parse_and()
        while self.peek() in ("or", "||"):
            self.take()
            m = _either(m, self.parse_and())
        return m

    def parse_and(self) -> Mask:
        m = self.parse_unary()
        while self.peek() in ("and", "&&"):
            self.take()
            m = _both(m, self.parse_unary())
        return m

    def parse_unary(self) -> Mask:
        tok = self.peek()
        if tok in ("not", "!"):
            self.take()
            return _negate(self.parse_unary())
        if tok == "(":
            self.take()
            m = self.parse_or()
            if self.peek() != ")":
                raise FilterError(f"expected ')' ({self.where()})")
            self.take()
            return m
        return self.parse_term()

    def parse_term(self) -> Mask:
        where = self.where()
        tok = self.need("a filter term")
        word = tok.lower()
        if word in ("src", "dst"):
            nxt = self.peek()
            if nxt in ("asn", "as", "country", "label", "zone"):
                return self.entity_term(word, self.take().lower())
            if nxt == "net":
                self.take()
                return _in_net(word, self.network())
            if nxt == "port":
                self.take()
                return _port("sport" if word == "src" else "dport", self.port())
            if nxt == "host":
                self.take()
            return _in_net(word, self.host())
        if word == "host":
            net = self.host()
            return _either(_in_net("src", net), _in_net("dst", net))
        if word == "net":
            net = self.network()
            return _either(_in_net("src", net), _in_net("dst", net))
        if word == "port":
            return _port(None, self.port())
        if word in ("sport", "dport"):
            return _port(word, self.port())
        if word == "proto":
            return _field_eq("proto", self.protocol(self.need("a protocol name or number")))
        if word in PROTOCOLS:
            return _field_eq("proto", PROTOCOLS[word])
        if word == "iface":
            return _iface(self.need("an interface name"))
        if word == "in":
            return _field_eq("direction", layout.DIR_INGRESS)
        if word == "out":
            return _field_eq("direction", layout.DIR_EGRESS)
        if word == "vlan":
            return _field_eq("vlan", self.number("a VLAN ID", 0, 4095))
        if word in ("asn", "as", "country", "label", "zone"):
            return self.entity_term(None, word)
        if word == "cross-zone":
            return _cross_zone
        if word == "monitor":
            return _monitor(self.need("a monitor name"), where)
        if word in ("proc", "pid", "user", "service", "container", "unattributed"):
            return self.owner_term(word)
        if word == "dropped":
            return lambda c: c.drop_rows(word).packets() > 0
        if word == "drop":
            return _drop_reason(self.need("a drop reason (NETFILTER_DROP, NO_SOCKET, ...)"))
        if word == "name":
            pattern = self.need("a host name (glob)")
            test = wirenames.glob_test(pattern)
            key = f"glob:{pattern.lower()}"
            return lambda c: wirenames.name_mask(c.name_rows(word), key, test)
        if word == "exporter":
            net = self.network()
            return lambda c: c.exporters(word).in_network(net, c.field("ifindex"))
        if word == "ifindex":
            n = self.number("an interface index", 0, 0xFFFF_FFFF)
            return lambda c: c.exporters(word).exporter_ifindex(c.field("ifindex")) == n
        raise FilterError(f"unknown filter term {tok!r} ({where})")

    def entity_term(self, which: str | None, word: str) -> Mask:
        if word in ("asn", "as"):
            where = self.where()
            tok = self.need("an AS number")
            num = tok[2:] if tok.lower().startswith("as") else tok
            if not num.isdigit() or int(num) > 0xFFFFFFFF:
                raise FilterError(f"not an AS number: {tok!r} ({where})")
            asn = int(num)
            return _entity(which, "asn", lambda v: v == asn)
        if word == "country":
            where = self.where()
            tok = self.need("a country code")
            if len(tok) != 2 or not tok.isalpha():
                raise FilterError(f"not a two-letter country code: {tok!r} ({where})")
            cc = tok.upper()
            return _entity(which, "country", lambda v: v == cc)
        if word == "zone":
            return _entity(which, "zone", _glob(self.need("a zone name")))
        return _entity(which, "label", _glob(self.need("a label name")))

    def owner_term(self, word: str) -> Mask:
        if word == "unattributed":
            return _owner_eq(word, "owner_state", STATE_UNATTRIBUTED)
        if word == "pid":
            return _owner_eq(word, "pid", self.number("a process id", 1, 0xFFFF_FFFF))
        if word == "user":
            return _owner_eq(word, "uid", self.user())
        where = self.where()
        if word == "container":
            tok = self.need("a container id prefix")
            if not _HEX.fullmatch(tok):
                raise FilterError(f"not a container id prefix (hex): {tok!r} ({where})")
            return _owner_name(word, "container_id", f"prefix:{tok.lower()}", own.prefix_test(tok))
        column = "comm_id" if word == "proc" else "service_id"
        pattern = self.need("a process name" if word == "proc" else "a service name")
        return _owner_name(word, column, f"glob:{pattern}", own.glob_test(pattern))

    def user(self) -> int:
        """A uid, or a login name looked up once, now (an unknown name is an error)."""
        where = self.where()
        tok = self.need("a user name or uid")
        if tok.isdigit():
            if int(tok) >= 0xFFFF_FFFF:  # (uid_t)-1 is no uid
                raise FilterError(f"uid out of range: {tok} ({where})")
            return int(tok)
        try:
            return pwd.getpwnam(tok).pw_uid
        except KeyError:
            raise FilterError(f"unknown user: {tok!r} ({where})") from None

    def host(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        where = self.where()
        tok = self.need("an address")
        try:
            addr = ipaddress.ip_address(tok)
        except ValueError:
            raise FilterError(f"not an IP address: {tok!r} ({where})") from None
        return ipaddress.ip_network(addr)

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        where = self.where()
        tok = self.need("a network (CIDR)")
        try:
            return ipaddress.ip_network(tok, strict=False)
        except ValueError:
            raise FilterError(f"not a network: {tok!r} ({where})") from None

    def number(self, what: str, lo: int, hi: int) -> int:
        where = self.where()
        tok = self.need(what)
        if not tok.isdigit() or not lo <= int(tok) <= hi:
            raise FilterError(f"expected {what} ({lo}-{hi}), not {tok!r} ({where})")
        return int(tok)

    def port(self) -> int:
        where = self.where()
        tok = self.need("a port number or service name")
        if tok.isdigit():
            if int(tok) > 65535:
                raise FilterError(f"port out of range: {tok} ({where})")
            return int(tok)
        try:
            return socket.getservbyname(tok.lower())
        except OSError:
            raise FilterError(f"unknown service: {tok!r} ({where})") from None

    def protocol(self, tok: str) -> int:
        word = tok.lower()
        if word in PROTOCOLS:
            return PROTOCOLS[word]
        if word.isdigit() and int(word) <= 255:
            return int(word)
        raise FilterError(f"unknown protocol: {tok!r}")


def parse(text: str) -> Filter:
    """Compile a filter expression; raises FilterError with what and where."""
    return Filter(text, _Parser(text).parse())
