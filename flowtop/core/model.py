"""Records shared by the engine, the views and the exporters (no dependencies)."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from flowtop.kernel import counters
from flowtop.listen import counters as listen_counters

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTO_NAMES = {
    1: "icmp",
    2: "igmp",
    4: "ipip",
    6: "tcp",
    17: "udp",
    33: "dccp",
    41: "ipv6",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "icmpv6",
    89: "ospf",
    103: "pim",
    112: "vrrp",
    132: "sctp",
    136: "udplite",
}

TCP_FLAG_LETTERS = "FSRPAUEC"  # bit 0 (FIN) .. bit 7 (CWR)
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def tcp_flags_str(flags: int) -> str:
    """nfdump-style flags: one letter per set bit, '.' for clear, CWR first."""
    return "".join(TCP_FLAG_LETTERS[i] if flags & (1 << i) else "." for i in range(7, -1, -1))


class Direction(enum.IntEnum):
    INGRESS = 0
    EGRESS = 1

    @property
    def label(self) -> str:
        return self.name.lower()


class EndReason(enum.IntEnum):
    """Why a flow record was emitted; values are IPFIX flowEndReason (RFC 5102)."""

    IDLE_TIMEOUT = 1
    ACTIVE_TIMEOUT = 2
    END_OF_FLOW = 3  # TCP FIN or RST seen
    FORCED_END = 4  # shutdown
    LACK_OF_RESOURCES = 5  # evicted because the table was full


@dataclass(frozen=True, slots=True)
class FlowKey:
    ifindex: int
    direction: Direction
    ip_version: int
    proto: int
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    vlan: int

    @property
    def is_icmp(self) -> bool:
        return self.proto in (1, 58)

    @property
    def icmp_type_code(self) -> tuple[int, int]:
        return self.dport >> 8, self.dport & 0xFF


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A flow's fields at one moment (snapshot) or over one export period (end),
    as Python values: one attribute per flowtop.core.fields.RECORD_FIELDS entry,
    named and valued as that Field says (tests/unit/test_fields.py checks)."""

    key: FlowKey
    clock_offset: float  # seconds from CLOCK_MONOTONIC to unix time (unix())
    packets: int
    bytes: int
    first_ns: int  # CLOCK_MONOTONIC
    last_ns: int
    tcp_flags: int
    dscp: int
    # Top MPLS label of the flow's last packet (20 bits), None: it had none
    mpls: int | None = None
    # TCP health (None: unknown or not TCP)
    rtt_us: int | None = None
    rtt_min_us: int | None = None
    retrans: int | None = None
    rto: int | None = None
    rtt_source: str | None = None  # "sockops" or "passive"
    retrans_source: str | None = None
    rtt_samples: int | None = None
    data_segs: int | None = None
    # Enricher entity ids of the two ends (-1: not looked up) and their AS numbers
    src_ent: int = -1
    src_asn: int | None = None
    dst_ent: int = -1
    dst_asn: int | None = None
    # The local socket's owner (fields.OWNER; core/owners.py): pid, uid and
    # cgroup id (None: unknown), NameTable ids into the engine's
    # OwnerTable.names (0: none), and owners.STATE_* (255, OWNER_PENDING: not joined)
    pid: int | None = None
    comm_id: int = 0
    uid: int | None = None
    cgroup_id: int | None = None
    service_id: int = 0
    container_id: int = 0
    pod_id: int = 0
    owner_state: int = 255
    # Kernel drops of this flow on this box (fields.DROP; core/drops.py):
    # packets (None: none), their bytes, the reason value with the most (None: none)
    drop_packets: int | None = None
    drop_bytes: int = 0
    drop_reason: int | None = None
    pps: float = 0.0  # rates over the last interval (live flows)
    bps: float = 0.0  # bits per second
    end_reason: EndReason | None = None  # flow-end records
    conv_id: int = 0  # live rows: the conversation id (fields.CONV; core/conversations.py)
    # Names from the wire (fields.WIRE; wirenames/names.py): WireNames.names
    # ids of each end's name and the CNAME chain end (0: none), the named
    # end's names.SOURCE_*, and names.NAME_* (255, NAME_PENDING: not joined)
    src_name_id: int = 0
    dst_name_id: int = 0
    name_cname_id: int = 0
    name_source: int = 0
    name_state: int = 255

    def unix(self, ns: int) -> float:
        """A CLOCK_MONOTONIC time of this record (first_ns, last_ns) in unix seconds."""
        return ns / 1_000_000_000 + self.clock_offset


@dataclass(frozen=True, slots=True)
class InterfaceCounters:
    ifindex: int
    name: str
    family: str  # ipv4 / ipv6 / other
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int


# The counters of CollectorHealth.as_dict() that mean lost or unattributed
# traffic, or a failed part, on flowtop's side (CollectorHealth.problems adds
# them up; the live view's header names the ones that are not 0): the kernel
# ones (flowtop.kernel.counters) and the parts' failures counted here.
PROBLEM_COUNTERS = (
    *counters.PROBLEMS,
    "forced_evictions",
    "drain_errors",
    "attach_errors",
    "enrich_errors",
    "output_errors",
    "record_errors",
    "resolve_errors",
    # socket owners: the owner programs' losses, and flows of local sockets
    # whose owner is unknown (older than flowtop and not in its snapshot)
    *(c.key for c in counters.COUNTERS if c.program == counters.OWNER
      and c.name in counters.OWNER_LOSSES),
    "owners_unattributed",
    # drop reasons: kernel drops the drop program could not count
    *(c.key for c in counters.COUNTERS if c.program == counters.DROPS
      and c.name in counters.DROPS_LOSSES),
    # names from the wire: entries dropped for room, hellos/requests and TCP
    # DNS answers flowtop could not read whole (names_malformed, broken
    # traffic, is not one)
    "names_dropped",
    "names_unparsed",
    # received flows (--listen): records lost, templates missing, decode errors, ...
    *listen_counters.LOSSES,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CollectorHealth:
    """Everything counted but not in a flow: a number we lost is a number we show.

    problems adds up what means lost or unattributed traffic on flowtop's side
    (full maps, evictions, errors, header chains longer than the kernel walks);
    traffic that is itself broken or not IP (truncated, malformed, non_ip) and
    informational counts (no_ports, tcp_conn_new, ...) are not problems."""

    kernel: dict[str, int] = field(default_factory=dict)
    forced_evictions: int = 0
    drain_errors: int = 0
    attach_errors: int = 0
    # Failures of the parts beside the flow path: flowtop.core.engine.Failures counts
    # the first three, the reverse DNS resolver its own
    enrich_errors: int = 0
    output_errors: int = 0
    record_errors: int = 0
    resolve_errors: int = 0
    # Flows settled as STATE_UNATTRIBUTED (the engine's owner join), each once
    owners_unattributed: int = 0
    # Names from the wire (the engine's WireNames.counters): entries and waiting
    # connections dropped for room; TCP DNS responses spanning segments and
    # ClientHellos/HTTP heads still cut after their segments; DNS responses and
    # TLS handshakes that do not parse
    names_dropped: int = 0
    names_unparsed: int = 0
    names_malformed: int = 0

    @property
    def problems(self) -> int:
        d = self.as_dict()
        return sum(d.get(name, 0) for name in PROBLEM_COUNTERS)

    def as_dict(self) -> dict[str, int]:
        d = dict(self.kernel)
        d["forced_evictions"] = self.forced_evictions
        d["drain_errors"] = self.drain_errors
        d["attach_errors"] = self.attach_errors
        d["enrich_errors"] = self.enrich_errors
        d["output_errors"] = self.output_errors
        d["record_errors"] = self.record_errors
        d["resolve_errors"] = self.resolve_errors
        d["owners_unattributed"] = self.owners_unattributed
        d["names_dropped"] = self.names_dropped
        d["names_unparsed"] = self.names_unparsed
        d["names_malformed"] = self.names_malformed
        return d
