"""What the live view asks and gets back: the query types a ViewSource speaks.

The TUI (and the recorder, the tests) talk to the engine only through these:
a ViewQuery goes in, a Snapshot with ViewRows and InterfaceRows comes out. No
numpy and no Textual here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flowtop.core.drops import DropSummary
from flowtop.core.tcphealth import HealthGroup

if TYPE_CHECKING:
    from flowtop.query.monitors import MonitorStatus

GROUPS = (
    "flow", "src", "dst", "pair", "port", "proto", "iface", "asn", "country", "label",
    "process", "service", "container", "name", "exporter", "conversation", "zone",
)  # fmt: skip
# Groups by what enrichment knows of each flow's remote end.
ENTITY_GROUPS = ("asn", "country", "label")
# Groups by the flow's socket owner (query/owners.py): process is the command
# name (comm), so the workers of one program are one row.
OWNER_GROUPS = ("process", "service", "container")
# Groups by the flow's name from the wire (query/names.py): the named end's.
NAME_GROUPS = ("name",)
# Groups by the exporter a received flow came from (--listen; query/exporters.py).
FLEET_GROUPS = ("exporter",)
# One row per connection: a flow key and its reverse over every interface and
# direction, each direction counted once (query/conversations.py).
CONVERSATION_GROUPS = ("conversation",)
# Groups by the zones of both ends, "a→b" (query/entities.zone_pair_ids).
ZONE_GROUPS = ("zone",)
SORT_KEYS = (
    "bps",
    "pps",
    "bytes",
    "packets",
    "flows",
    "src",
    "dst",
    "sport",
    "dport",
    "proto",
    "iface",
    "first_seen",
    "last_seen",
    "rtt",
    "retrans",
    "drops",
)


@dataclass(frozen=True, slots=True)
class ViewQuery:
    """What the screen wants: a filter expression (filterexpr), a group
    (GROUPS), a sort key (SORT_KEYS) and direction, and how many rows."""

    filter: str = ""
    group_by: str = "flow"
    sort: str = "bps"
    descending: bool = True
    limit: int = 100

    def __post_init__(self) -> None:
        if self.group_by not in GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
        if self.sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")


@dataclass(frozen=True, slots=True)
class ViewRow:
    """One row on screen: a flow or a group. Columns the group does not keep
    (the ports of a group by source, say) are None. key identifies the row
    across refreshes (its rate history)."""

    key: str
    src: str | None
    sport: int | None
    dst: str | None
    dport: int | None
    proto: int | None
    proto_name: str | None
    iface: str | None
    direction: str | None
    vlan: int | None
    bps: float
    pps: float
    bytes: int
    packets: int
    flows: int
    first_seen: float
    last_seen: float
    tcp_flags: int
    rtt_us: float | None = None
    retransmits: int | None = None
    src_asn: int | None = None
    src_country: str | None = None
    dst_asn: int | None = None
    dst_country: str | None = None
    src_label: str | None = None
    dst_label: str | None = None
    group: str | None = None  # the value of an asn/country/label/owner group
    # The socket owner of a flow row (query/owners.py; names cleaned), None
    # when unknown or in groups. owner_state: owners.STATE_*, None without
    # attribution.
    pid: int | None = None
    uid: int | None = None
    comm: str | None = None
    service: str | None = None
    container: str | None = None
    pod: str | None = None
    cgroup: str | None = None  # the cgroup v2 path
    owner_state: int | None = None
    drops: int = 0  # packets the kernel dropped on this box (core/drops.py)
    # A flow row's drops by reason name, most first (the detail screen); () in groups.
    drop_reasons: tuple[tuple[str, int], ...] = ()
    # Names from the wire of a flow row (query/names.py; cleaned), None when
    # none or in groups: each end's, the CNAME chain end, and the source of
    # the named (server) end's name: dns, sni or http
    src_name: str | None = None
    dst_name: str | None = None
    name_cname: str | None = None
    name_source: str | None = None
    # A conversation row (group "conversation", query/conversations.py); None
    # in every other row. src/sport is the client end, dst/dport the server;
    # bps/pps/bytes/packets are both directions together; up = client->server,
    # down = server->client, each direction counted once (its ingress rows if
    # it has any, else its egress rows); iface is "IN→OUT" for a forwarded
    # conversation, else the one interface; role: "client" (this host is the
    # client), "server" or "forwarded"; flows: its flow rows (legs x
    # directions); rtt_us the worst of its rows; retransmits both directions.
    role: str | None = None
    up_bps: float | None = None
    up_pps: float | None = None
    up_bytes: int | None = None
    up_packets: int | None = None
    down_bps: float | None = None
    down_pps: float | None = None
    down_bytes: int | None = None
    down_packets: int | None = None
    up_retransmits: int | None = None
    down_retransmits: int | None = None


@dataclass(frozen=True, slots=True)
class InterfaceRow:
    """One attached interface: rates over the last step and totals."""

    name: str
    ifindex: int
    rx_bps: float
    tx_bps: float
    rx_pps: float
    tx_pps: float
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True, slots=True)
class ExporterRow:
    """One exporter a listening run hears from (query/exporters.ExporterRates):
    records/s over the last interval, records and lost in all, and whether
    its figures are estimates (sampled, scaled up)."""

    address: str
    records_per_s: float
    records: int
    lost: int
    estimated: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A ViewSource's answer to a ViewQuery: the top rows, how many rows
    matched, the interfaces, the collector's health and TCP health groups.
    filter_error: why the query's filter was not used (the previous one was)."""

    time: float
    interval: float
    host: str
    query: ViewQuery
    rows: tuple[ViewRow, ...]
    matched: int
    active_flows: int
    interfaces: tuple[InterfaceRow, ...]
    rx_bps: float
    tx_bps: float
    health: dict[str, int]
    problems: int
    filter_error: str | None = None
    tcp_health: tuple[HealthGroup, ...] = ()  # worst first
    # Kernel drops on this box (the drops panel); None: drops not collected.
    drops: DropSummary | None = None
    # The exporters heard from, busiest first; () when not listening.
    exporters: tuple[ExporterRow, ...] = ()
    # The configured monitors ([[monitor]]; query/monitors.py), in config order.
    monitors: tuple[MonitorStatus, ...] = ()
    # Bits/s between two different zones over the last interval (query/zones.py);
    # None when no zone is configured (the header shows nothing then).
    cross_zone_bps: float | None = None


class ViewSource(Protocol):
    """What the TUI drives: a live or replayed engine (source.TableSource)."""

    interval: float

    def step(self) -> None: ...

    def snapshot(self, query: ViewQuery) -> Snapshot: ...

    def history(self, row_key: str) -> list[tuple[float, float]]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...
