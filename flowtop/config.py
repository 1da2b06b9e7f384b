"""Configuration: TOML file + command line -> frozen dataclasses.

All validation lives here. Unknown sections and keys are rejected with their
name; values are checked for type and range; the command line overrides the
file. A file that group or others can write is refused: a service reads it
as root.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flowtop.core.thresholds import DEFAULT_THRESHOLDS, Thresholds
from flowtop.errors import ConfigError
from flowtop.listen.urls import ListenUrl, parse_url

DEFAULT_PATH = "/etc/flowtop/flowtop.toml"
# The kernel keeps flows of one interval only; a map this size holds 65536
# distinct flows per second at the default interval.
DEFAULT_MAP_SIZE = 65536
ATTACH_MODES = ("auto", "tcx", "tc")


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    interfaces: tuple[str, ...] = ()
    interval: float = 1.0
    attach: str = "auto"  # "auto", "tcx" or "tc" (kernel/tcx.py resolves auto)
    tc_priority: int = 1
    max_flows: int = 262144
    map_size: int = DEFAULT_MAP_SIZE
    idle_timeout: float = 15.0
    active_timeout: float = 60.0
    sockops: bool = True  # local TCP health from sock_ops + tracepoint
    passive_rtt: bool = True  # passive RTT/retransmits in the TC program
    owners: bool = True  # socket owners (process/service/container) from cgroup programs
    drops: bool = True  # kernel drop reasons per flow (skb:kfree_skb)
    program_cache: bool = True  # load unchanged builds from kernel/progcache's directory

    def __post_init__(self) -> None:
        if not 0.05 <= self.interval <= 3600:
            raise ConfigError(f"interval must be between 0.05 and 3600 s, not {self.interval}")
        if self.attach not in ATTACH_MODES:
            raise ConfigError(
                f"attach must be one of {', '.join(ATTACH_MODES)}, not {self.attach!r}"
            )
        if not 1 <= self.tc_priority <= 0xFFFF:
            raise ConfigError(f"tc priority must be 1..65535, not {self.tc_priority}")
        if not 1 <= self.max_flows <= 50_000_000:
            raise ConfigError(f"max flows must be 1..50000000, not {self.max_flows}")
        if not 1 <= self.map_size <= 16_777_216:
            raise ConfigError(f"map size must be 1..16777216, not {self.map_size}")
        if self.idle_timeout <= 0:
            raise ConfigError(f"idle timeout must be positive, not {self.idle_timeout}")
        if self.active_timeout <= 0:
            raise ConfigError(f"active timeout must be positive, not {self.active_timeout}")
        for name in self.interfaces:
            if not name or len(name) > 64 or "/" in name or any(c.isspace() for c in name):
                raise ConfigError(f"not an interface name or glob: {name!r}")

    @classmethod
    def from_options(
        cls,
        interfaces: Sequence[str] | None = None,
        interval: float | None = None,
        tc_priority: int | None = None,
        max_flows: int | None = None,
        attach: str | None = None,
        idle_timeout: float | None = None,
        active_timeout: float | None = None,
        base: CollectorConfig | None = None,
    ) -> CollectorConfig:
        """base (defaults, or the config file's values) with what was given on top."""
        base = base or cls()
        mf = base.max_flows if max_flows is None else max_flows
        return cls(
            interfaces=tuple(interfaces) if interfaces else base.interfaces,
            interval=base.interval if interval is None else interval,
            attach=base.attach if attach is None else attach,
            tc_priority=base.tc_priority if tc_priority is None else tc_priority,
            max_flows=mf,
            map_size=max(1, min(mf, base.map_size)),
            idle_timeout=base.idle_timeout if idle_timeout is None else idle_timeout,
            active_timeout=base.active_timeout if active_timeout is None else active_timeout,
            sockops=base.sockops,
            passive_rtt=base.passive_rtt,
            owners=base.owners,
            drops=base.drops,
            program_cache=base.program_cache,
        )


Endpoint = tuple[str, int]


def parse_endpoint(text: str, what: str, default_host: str | None = None) -> Endpoint:
    """HOST:PORT, [V6]:PORT, or PORT alone when default_host is given."""
    host: str | None
    port_s: str
    if text.startswith("["):
        host, sep, port_s = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{what}: expected [ADDRESS]:PORT, not {text!r}")
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    elif text.isdigit() and default_host is not None:
        host, port_s = default_host, text
    else:
        form = "[ADDRESS:]PORT" if default_host is not None else "HOST:PORT"
        raise ConfigError(f"{what}: expected {form}, not {text!r}")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ConfigError(f"{what}: bad port in {text!r}")
    if not host:
        raise ConfigError(f"{what}: no host in {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part.isalnum() or "-" in part for part in host.split(".")):
            raise ConfigError(f"{what}: not a host name or address: {host!r}") from None
    return host, int(port_s)


def check_resolvable(endpoints: Sequence[Endpoint], what: str) -> None:
    """Every host name among endpoints resolves now; numeric addresses are
    taken as they are (no DNS). For the endpoints a run is about to use: the
    file's own syntax check (from_mapping) never asks DNS."""
    for host, port in endpoints:
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"{what}: cannot resolve {host!r}: {why}") from None


@dataclass(frozen=True, slots=True)
class IpfixConfig:
    collectors: tuple[Endpoint, ...] = ()
    transport: str = "udp"
    domain_id: int = 1
    max_message_size: int = 1400
    template_refresh: float = 60.0  # seconds (UDP)
    template_refresh_messages: int = 100  # messages (UDP); 0 = off
    options_interval: float = 60.0  # reliability statistics, seconds

    def __post_init__(self) -> None:
        if self.transport not in ("udp", "tcp"):
            raise ConfigError(f"ipfix.transport must be udp or tcp, not {self.transport!r}")
        if not 0 <= self.domain_id <= 0xFFFFFFFF:
            raise ConfigError(f"ipfix.domain_id must be 0..4294967295, not {self.domain_id}")
        if not 256 <= self.max_message_size <= 65535:
            raise ConfigError(
                f"ipfix.max_message_size must be 256..65535, not {self.max_message_size}"
            )
        if not 1 <= self.template_refresh <= 86400:
            raise ConfigError(
                f"ipfix.template_refresh must be 1..86400 s, not {self.template_refresh}"
            )
        if self.template_refresh_messages < 0:
            raise ConfigError("ipfix.template_refresh_messages must not be negative")
        if not 1 <= self.options_interval <= 86400:
            raise ConfigError(
                f"ipfix.options_interval must be 1..86400 s, not {self.options_interval}"
            )


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    listen: Endpoint | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_series: int = 500

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("prometheus.tls_cert and prometheus.tls_key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(f"prometheus: cannot read {path}")
        if not 10 <= self.max_series <= 100_000:
            raise ConfigError(f"prometheus.max_series must be 10..100000, not {self.max_series}")


@dataclass(frozen=True, slots=True)
class EnrichConfig:
    geoip_asn: str | None = None  # None: look in /usr/share/GeoIP, /var/lib/GeoIP
    geoip_city: str | None = None
    labels: str | None = None
    resolve: bool | None = None  # reverse DNS; None: on in the live view, off elsewhere
    # The zone of this host's own addresses when no label gives them one.
    host_zone: str | None = None

    def __post_init__(self) -> None:
        if self.host_zone is not None and not ZONE_NAME.fullmatch(self.host_zone):
            raise ConfigError(
                f"enrich.host_zone must be 1-32 letters, digits, '.', '_' or '-', "
                f"not {self.host_zone!r}"
            )

    def resolve_for(self, interactive: bool) -> bool:
        return interactive if self.resolve is None else self.resolve


ZONE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MONITOR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
MAX_MONITORS = 64  # [[monitor]] tables at most: the Prometheus series they make are bounded


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """One [[monitor]]: a name, the local and remote ends as filter
    expressions of the live view's language (checked at load), and the
    verdict's thresholds ([health]'s, with the monitor's own keys on top).
    query/monitors.py says which flows are in it."""

    name: str
    local: str
    remote: str
    thresholds: Thresholds = DEFAULT_THRESHOLDS


NAMES_MAX_PORTS = 4  # extra DNS ports the TC program compares (bpf/wirenames.h)


@dataclass(frozen=True, slots=True)
class NamesConfig:
    """[names]: names from the wire (DNS responses, TLS SNI, HTTP Host).
    dns_ports: ports besides 53 whose responses are read; rate: events the
    kernel hands up per second per CPU (a burst of one second's worth)."""

    enabled: bool = True
    dns_ports: tuple[int, ...] = ()
    rate: int = 2000
    # A DNS answer names flows for max(its TTL, min_ttl) seconds (at most an
    # hour): clients reuse answers past short CDN TTLs.
    min_ttl: int = 30

    def __post_init__(self) -> None:
        if len(self.dns_ports) > NAMES_MAX_PORTS:
            raise ConfigError(
                f"names.dns_ports takes at most {NAMES_MAX_PORTS} ports, not {len(self.dns_ports)}"
            )
        for port in self.dns_ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"names.dns_ports: not a port (1..65535): {port!r}")
        if not 1 <= self.rate <= 1_000_000:
            raise ConfigError(f"names.rate must be 1..1000000 events/s, not {self.rate}")
        if not 0 <= self.min_ttl <= 3600:
            raise ConfigError(f"names.min_ttl must be 0..3600 s, not {self.min_ttl}")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """[listen] / --listen: flowtop as an IPFIX / NetFlow collector
    (flowtop/listen/); urls empty: the kernel collector."""

    urls: tuple[ListenUrl, ...] = ()
    max_exporters: int = 1024  # exporters kept; the one heard from longest ago goes
    max_templates: int = 128  # templates per exporter
    template_lifetime: float = 1800.0  # s a UDP template lives without a refresh
    queue_mb: int = 64  # received, not yet decoded datagrams at most (full: counted)

    def __post_init__(self) -> None:
        seen: set[tuple[str, int, bool]] = set()
        for u in self.urls:
            for tcp in [t for t, on in ((False, u.udp), (True, u.tcp)) if on]:
                if (u.host, u.port, tcp) in seen:
                    raise ConfigError(f"listen: {u} is given twice")
                seen.add((u.host, u.port, tcp))
        if not 1 <= self.max_exporters <= 1_000_000:
            raise ConfigError(f"listen.max_exporters must be 1..1000000, not {self.max_exporters}")
        if not 1 <= self.max_templates <= 65536:
            raise ConfigError(f"listen.max_templates must be 1..65536, not {self.max_templates}")
        if not 1 <= self.template_lifetime <= 86400:
            raise ConfigError(
                f"listen.template_lifetime must be 1..86400 s, not {self.template_lifetime}"
            )
        if not 1 <= self.queue_mb <= 4096:
            raise ConfigError(f"listen.queue_mb must be 1..4096, not {self.queue_mb}")


@dataclass(frozen=True, slots=True)
class Config:
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    ipfix: IpfixConfig = field(default_factory=IpfixConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    enrich: EnrichConfig = field(default_factory=EnrichConfig)
    names: NamesConfig = field(default_factory=NamesConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    # [health]: the TCP health verdict's thresholds (interfaces, remote groups)
    health: Thresholds = DEFAULT_THRESHOLDS
    monitors: tuple[MonitorConfig, ...] = ()  # [[monitor]]
    path: str | None = None  # the file it came from

    def __post_init__(self) -> None:
        # One source per run for now: received flows or this box's interfaces.
        if self.listen.urls and self.collector.interfaces:
            raise ConfigError(
                "listening (--listen, [listen]) and interfaces (-i, [interfaces]) "
                "do not go together (yet): run two flowtops"
            )


# -- the file -------------------------------------------------------------------------------


def _num(lo: float, hi: float) -> Callable[[str, Any], float]:
    def check(key: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{key} must be a number, not {type(v).__name__}")
        if not lo <= v <= hi:
            raise ConfigError(f"{key} must be between {lo:g} and {hi:g}, not {v}")
        return float(v)

    return check


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key} must be a whole number, not {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(f"{key} must be between {lo} and {hi}, not {v}")
        return v

    return check


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{key} must be a string, not {type(v).__name__}")
    return v


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, not {v!r}")
    return v


def _strs(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{key} must be a list of strings")
    return tuple(v)


def _ports(key: str, v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in v
    ):
        raise ConfigError(f"{key} must be a list of port numbers")
    return tuple(v)


def _listen_urls(key: str, v: Any) -> tuple[ListenUrl, ...]:
    return tuple(parse_url(x, key) for x in _strs(key, v))


def _endpoints(key: str, v: Any) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(x, key) for x in _strs(key, v))


def _listen(key: str, v: Any) -> Endpoint:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    return parse_endpoint(_str(key, v), key, default_host="127.0.0.1")


# section -> key -> (dataclass field, checker)
SCHEMA: dict[str, dict[str, tuple[str, Callable[[str, Any], Any]]]] = {
    "interfaces": {"include": ("interfaces", _strs)},
    "collector": {
        "interval": ("interval", _num(0.05, 3600)),
        "idle_timeout": ("idle_timeout", _num(0.1, 86400)),
        "active_timeout": ("active_timeout", _num(0.1, 86400)),
        "max_flows": ("max_flows", _int(1, 50_000_000)),
        "map_size": ("map_size", _int(1, 16_777_216)),
        "attach": ("attach", _str),
        "tc_priority": ("tc_priority", _int(1, 65535)),
        "sockops": ("sockops", _bool),
        "passive_rtt": ("passive_rtt", _bool),
        "owners": ("owners", _bool),
        "drops": ("drops", _bool),
        "program_cache": ("program_cache", _bool),
    },
    "ipfix": {
        "collectors": ("collectors", _endpoints),
        "transport": ("transport", _str),
        "domain_id": ("domain_id", _int(0, 0xFFFFFFFF)),
        "max_message_size": ("max_message_size", _int(256, 65535)),
        "template_refresh": ("template_refresh", _num(1, 86400)),
        "template_refresh_messages": ("template_refresh_messages", _int(0, 1_000_000)),
        "options_interval": ("options_interval", _num(1, 86400)),
    },
    "prometheus": {
        "listen": ("listen", _listen),
        "tls_cert": ("tls_cert", _str),
        "tls_key": ("tls_key", _str),
        "max_series": ("max_series", _int(10, 100_000)),
    },
    "enrich": {
        "geoip_asn": ("geoip_asn", _str),
        "geoip_city": ("geoip_city", _str),
        "labels": ("labels", _str),
        "resolve": ("resolve", _bool),
        "host_zone": ("host_zone", _str),
    },
    # The verdict thresholds (core/thresholds.Thresholds); a [[monitor]] takes
    # the same keys for its own verdict.
    "health": {
        "rtt_factor": ("rtt_factor", _num(1, 1000)),
        "rtt_floor_ms": ("rtt_floor_us", lambda k, v: _num(0, 60_000)(k, v) * 1000),
        "min_rtt_samples": ("min_rtt_samples", _int(1, 1_000_000)),
        "retransmit_ratio": ("retransmit_ratio", _num(0, 1)),
        "min_segments": ("min_segments", _int(0, 1_000_000_000)),
        "min_retransmits": ("min_retransmits", _int(0, 1_000_000_000)),
        "min_rto": ("min_rto", _int(1, 1_000_000_000)),
    },
    "names": {
        "enabled": ("enabled", _bool),
        "dns_ports": ("dns_ports", _ports),
        "rate": ("rate", _int(1, 1_000_000)),
        "min_ttl": ("min_ttl", _int(0, 3600)),
    },
    "listen": {
        "urls": ("urls", _listen_urls),
        "max_exporters": ("max_exporters", _int(1, 1_000_000)),
        "max_templates": ("max_templates", _int(1, 65536)),
        "template_lifetime": ("template_lifetime", _num(1, 86400)),
        "queue_mb": ("queue_mb", _int(1, 4096)),
    },
}


def read_file(path: str, explicit: bool) -> Mapping[str, Any]:
    """The parsed TOML, {} when the default file does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file not found: {path}") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config {path} is not a regular file")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"config {path} is writable by group or others (mode {st.st_mode & 0o777:04o}); "
            f"run: chmod go-w {path}"
        )
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None


_MONITOR_KEYS = ("name", "local", "remote", *SCHEMA["health"])


def _monitor_expr(where: str, key: str, v: Any) -> str:
    from flowtop.query.filterexpr import FilterError, check_static

    text = _str(f"{where}.{key}", v)
    if not text.strip():
        raise ConfigError(f"{where}.{key} is empty (a filter expression)")
    try:
        check_static(text)
    except FilterError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None
    return text


def _monitors(v: Any, health: Thresholds) -> tuple[MonitorConfig, ...]:
    """[[monitor]] tables: each key checked, names unique, expressions parsed."""
    if not isinstance(v, list) or not all(isinstance(m, dict) for m in v):
        raise ConfigError("monitor must be an array of tables ([[monitor]])")
    if len(v) > MAX_MONITORS:
        raise ConfigError(f"at most {MAX_MONITORS} [[monitor]] tables, not {len(v)}")
    out: list[MonitorConfig] = []
    for i, body in enumerate(v, 1):
        name = body.get("name")
        if not isinstance(name, str) or not MONITOR_NAME.fullmatch(name):
            shown = f" {name!r}" if name is not None else ""
            raise ConfigError(
                f"monitor {i}: name{shown} must be a letter, then up to 31 letters, digits, "
                "'_' or '-'"
            )
        where = f"monitor {name}"
        if any(m.name == name for m in out):
            raise ConfigError(f"{where}: the name is given twice")
        over: dict[str, Any] = {}
        for key, value in body.items():
            if key not in _MONITOR_KEYS:
                raise ConfigError(
                    f"{where}: unknown key {key!r} (known: {', '.join(_MONITOR_KEYS)})"
                )
            if key in SCHEMA["health"]:
                fname, check = SCHEMA["health"][key]
                over[fname] = check(f"{where}.{key}", value)
        for key in ("local", "remote"):
            if key not in body:
                raise ConfigError(f"{where}: {key} is missing (a filter expression)")
        local = _monitor_expr(where, "local", body["local"])
        remote = _monitor_expr(where, "remote", body["remote"])
        out.append(MonitorConfig(name, local, remote, replace(health, **over)))
    return tuple(out)


def from_mapping(data: Mapping[str, Any], path: str | None = None) -> Config:
    """Config from parsed TOML; every key checked, unknown ones rejected."""
    values: dict[str, dict[str, Any]] = {s: {} for s in SCHEMA}
    for section, body in data.items():
        if section == "monitor":
            continue  # an array of tables, read below (after [health], its defaults)
        if section not in SCHEMA:
            known = ", ".join((*SCHEMA, "monitor"))
            raise ConfigError(f"unknown config section [{section}] (known: {known})")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key, value in body.items():
            spec = SCHEMA[section].get(key)
            if spec is None:
                raise ConfigError(
                    f"unknown config key {section}.{key} (known: {', '.join(SCHEMA[section])})"
                )
            name, check = spec
            values[section][name] = check(f"{section}.{key}", value)
    coll = dict(values["interfaces"], **values["collector"])
    health = Thresholds(**values["health"])
    return Config(
        collector=CollectorConfig(**coll),
        ipfix=IpfixConfig(**values["ipfix"]),
        prometheus=PrometheusConfig(**values["prometheus"]),
        enrich=EnrichConfig(**values["enrich"]),
        names=NamesConfig(**values["names"]),
        listen=ListenConfig(**values["listen"]),
        health=health,
        monitors=_monitors(data["monitor"], health) if "monitor" in data else (),
        path=path,
    )


def load(path: str | None) -> Config:
    """The config file (the default path when None; missing default = defaults)."""
    explicit = path is not None
    p = path or DEFAULT_PATH
    data = read_file(p, explicit)
    return from_mapping(data, p if data or explicit else None)
