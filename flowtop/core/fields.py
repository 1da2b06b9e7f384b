"""One description of a flow record's fields, and the names each has outside.

FIELDS lists every field of a flow record once, in the order of `flowtop dump
--json`'s keys. A field's `name` is the one internal name, used from the flow
table onward: the table's column, the FlowBatch column, the FlowRecord
attribute. Where a field must keep another name outside (the dump JSON key
`retransmits` of `retrans`, the sort name `first_seen` of `first_ns`, an IPFIX
Information Element, a Prometheus metric), its Field says so; this is the
only place that mapping is written down. The kernel's struct member names
(layout.FLOW_STATS, TCP_SAMPLE, FLOW_KEY) stay what bpf/flowtop.h calls them:
`member` maps them.

What reads this:
- core/flowtable.py: the columns and their dtypes (`dtype`), how a drained
  interval merges into them (`merge`, `rate_of`), what a flow-end FlowBatch
  carries (BATCH_FIELDS) and the FlowRecord values (`value`); sorting (`sort`).
- core/model.py: FlowRecord has one attribute per RECORD_FIELDS entry.
- run/dump.py: the JSON keys and their order (`json`, `json_when`), the text
  table's columns (`text`, TEXT_COLUMNS order).
- tui/columns.py, tui/screens/detail.py: the talkers columns (`tui`, `sort`)
  and the detail labels (`title`).
- export/ipfix/records.py: which field fills each Information Element (`ie`).
- export/prometheus.py: the per-flow counter families and the TCP metrics
  (`metrics`), the flow series labels (`label`).

Adding a field takes one Field here, its FlowRecord attribute and the code
that fills it; tests/unit/test_fields.py shows a made-up counter and TCP field
reaching the table, flow-end records, dump JSON and text from FIELDS alone:
- kernel counter: the member in bpf/flowtop.h and layout.FLOW_STATS (the BPF
  code fills it), and a Field with origin KERNEL, `member` and `merge`; the
  flow table then keeps, merges, exports and dumps it with no other change.
- TCP health, enrichment or socket owner: a Field with origin TCP, ENRICH or
  OWNER; the code that fills it writes the column with FlowTable.set_column
  (core/tcphealth.join, the engine's enrichment and owner join).
- FlowRecord (core/model.py) gets the attribute with the field's Python type
  (test_fields fails until its attributes are exactly RECORD_FIELDS).
- a value computed where it is shown (origin SHOWN): its renderer in the
  module that shows it (dump.py `_json_value`/`_cell`, tui/columns.CELLS).
- with `json`: nothing more (FIELDS order is the key order).
- with `text`: its name in TEXT_COLUMNS, where the column goes.
- with `ie`: the element in export/ipfix/ie.py (IANA id and type) and in a
  template of export/ipfix/template.py: the wire layout of a template is
  public (tests/export/test_golden.py), so that is a new template id, never a
  changed one. An element needing more than its value as it is gets an
  encoder in records.py.
- with `metrics`: a kernel counter on a FLOW_LABELS family is summed per
  series by export/prometheus.py as it is; other families need their code.
- with `tui`: the view (query/) must carry the value on its rows; its cell in
  tui/columns.CELLS and its place in tui/columns.choose().
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flowtop.core.model import EndReason
from flowtop.core.owners import OWNER_PENDING, UID_NONE
from flowtop.kernel import layout
from flowtop.wirenames.names import NAME_PENDING

# Where a field's value comes from (Field.origin).
KEY = "key"  # a member of the flow key (layout.FLOW_KEY), kept with the key
KERNEL = "kernel"  # a member of layout.FLOW_STATS, merged interval by interval
TCP = "tcp"  # from layout.TCP_SAMPLE records, written by core/tcphealth.join
ENRICH = "enrich"  # written by the engine from the Enricher
OWNER = "owner"  # written by the engine from its OwnerTable (core/owners.py)
WIRE = "wire"  # written by the engine from its WireNames (wirenames/names.py)
DROP = "drop"  # written by the engine from its DropTable (core/drops.py)
RATE = "rate"  # derived by the flow table over the last interval (live flows only)
CONV = "conv"  # from the key, by the flow table when it creates the row (core/conversations.py)
END = "end"  # set by the flow table when it emits a record
SHOWN = "shown"  # computed from other fields where it is shown (no column)

# How two readings of one flow combine (Field.merge): the flow table merging a
# drained interval, and dump folding a run's records into one line per key.
SUM, MIN, MAX, OR, LAST = "sum", "min", "max", "or", "last"

# When a dump JSON key is there (Field.json_when).
ALWAYS = "always"
KNOWN = "known"  # only when the value is not None
NAMES = "names"  # only when names were asked for (dump --resolve) or come from the wire
WIRE_ON = "wire_on"  # only when names from the wire are on (the run has a WireNames)

MONO_NS = "ns, CLOCK_MONOTONIC"  # unit of times: add the clock offset for unix time

Row = Mapping[str, int | float]  # one record's raw column values, by field name
ValueOf = Callable[[Row, int | float], object]


@dataclass(frozen=True, slots=True)
class Text:
    """A column of `flowtop dump`'s text table (order: TEXT_COLUMNS)."""

    header: str
    right: bool = False  # right-aligned (numbers)
    # None: always shown; else shown when some flow has a value in a column of
    # the same group ("entity": when entities are known, dump --enrich).
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Tui:
    """A column of the live view's top talkers (tui/columns.py)."""

    label: str
    width: int  # minimum width
    grow: int = 0  # extra cells it may take when there is room
    numeric: bool = False


@dataclass(frozen=True, slots=True)
class Metric:
    """A Prometheus metric family a field feeds (counters get _total on the wire)."""

    name: str
    help: str
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a flow record: what it is, where it comes from, what it is called outside."""

    name: str  # the internal name (flow table column, FlowBatch, FlowRecord)
    origin: str  # KEY, KERNEL, TCP, ENRICH, OWNER, DROP, WIRE, RATE, CONV, END or SHOWN
    unit: str
    member: str | None = None  # the struct member: FLOW_KEY (KEY), FLOW_STATS, TCP_SAMPLE
    dtype: str = ""  # numpy dtype of its column ("" when it has none)
    merge: str = LAST
    blank: int = 0  # the column's value before anything is known
    value: ValueOf | None = None  # FlowRecord's value from the row; None: the number
    rate_of: str | None = None  # RATE: the counter field it is the rate of ...
    scale: int = 1  # ... times this (8: bits)
    json: str | None = None  # dump JSON key
    json_when: str = ALWAYS
    entity: tuple[str, str] | None = None  # dump: (entity id field, Entity attribute) shown
    text: Text | None = None
    tui: Tui | None = None
    title: str | None = None  # what the detail screen calls it
    sort: str | None = None  # its sort name (the view's sort keys, FlowTable.top)
    ie: tuple[str, ...] = ()  # the IPFIX Information Elements it fills
    metrics: tuple[Metric, ...] = ()  # the Prometheus families it feeds
    label: str | None = None  # the Prometheus label it is on flow series

    @property
    def column(self) -> bool:
        """A flow table column."""
        return self.origin in (KERNEL, TCP, ENRICH, OWNER, DROP, WIRE, RATE, CONV)

    @property
    def in_batch(self) -> bool:
        """A column of flow-end records (FlowBatch)."""
        return self.origin in (KERNEL, TCP, ENRICH, OWNER, DROP, WIRE, END)


def _tcp_known(source: str, *codes: int) -> ValueOf:
    """None unless the row's `source` field says where the value came from
    (one of codes, when given) and, for RTTs, it is not 0."""

    def value(row: Row, v: int | float) -> int | None:
        src = int(row[source])
        ok = src != 0 and (not codes or src in codes)
        return int(v) if ok else None

    return value


def _rtt(row: Row, v: int | float) -> int | None:
    return int(v) if row["rtt_source"] and v else None


def _source(row: Row, v: int | float) -> str | None:
    return layout.TCP_SOURCES[int(v)] or None


def _nonzero(row: Row, v: int | float) -> int | None:
    return int(v) or None


def _mpls(row: Row, v: int | float) -> int | None:
    return layout.mpls_label(int(v))


def _uid(row: Row, v: int | float) -> int | None:
    return None if int(v) == UID_NONE else int(v)


def _end_reason(row: Row, v: int | float) -> EndReason:
    return EndReason(int(v))


# The labels of flowtop_flow_bytes/_packets: the fields with a `label`, in order.
FLOW_LABELS = ("ifname", "direction", "proto")
_BY_FLOW = ", by interface, direction and protocol"


def _entity_fields(end: str, long: str) -> tuple[Field, ...]:
    """What enrichment knows of one end: its entity id and the entity's attributes."""
    ent = f"{end}_ent"
    shown = (("as_org", "AS organisation"), ("country", "ISO country code"), ("city", "city"),
             ("label", "CIDR label"),
             ("zone", "zone: the label's, or for this host's addresses the host zone"))  # fmt: skip
    return (
        Field(ent, ENRICH, "Enricher entity id (-1: not looked up)", dtype="<i4", blank=-1),
        Field(
            f"{end}_asn", ENRICH, "AS number (0 in the column: unknown)", dtype="<u4",
            value=_nonzero, json=f"{end}_asn", entity=(ent, "asn"),
            ie=(f"bgp{long.title()}AsNumber",),
        ),
        *(Field(f"{end}_{a}", SHOWN, doc, json=f"{end}_{a}", entity=(ent, a)) for a, doc in shown),
        Field(
            f"{end}_as", SHOWN, "the label or AS, and country, for display",
            text=Text(f"{end.upper()}_AS", group="entity"),
            tui=Tui(f"{end.title()} AS", 10), title=f"{long} AS",
        ),
    )  # fmt: skip


FIELDS: tuple[Field, ...] = (
    # -- the key ------------------------------------------------------------------
    Field(
        "iface", SHOWN, "interface name (of ifindex)", member="ifindex", json="iface",
        text=Text("IFACE"), tui=Tui("Iface", 13, grow=8), title="interface", sort="iface",
        label="ifname",
    ),
    Field(
        "ifindex", KEY, "interface index", member="ifindex", json="ifindex",
        ie=("ingressInterface", "egressInterface"),
    ),
    Field(
        "direction", KEY, "0 ingress, 1 egress", member="direction", json="direction",
        text=Text("DIR"), ie=("flowDirection",), label="direction",
    ),
    Field("ip_version", KEY, "4 or 6", member="ip_version", json="ip_version", ie=("ipVersion",)),
    Field(
        "proto", KEY, "IP protocol number", member="proto", json="proto",
        tui=Tui("Proto", 6), title="protocol", sort="proto", ie=("protocolIdentifier",),
    ),
    Field(
        "proto_name", SHOWN, "protocol name", member="proto", json="proto_name",
        text=Text("PROTO"), label="proto",
    ),
    Field(
        "src", KEY, "source address", member="src", json="src", text=Text("SRC"),
        tui=Tui("Source", 15, grow=24), title="source", sort="src",
        ie=("sourceIPv4Address", "sourceIPv6Address"),
    ),
    Field(
        "dst", KEY, "destination address", member="dst", json="dst", text=Text("DST"),
        tui=Tui("Destination", 15, grow=24), title="destination", sort="dst",
        ie=("destinationIPv4Address", "destinationIPv6Address"),
    ),
    Field(
        "sport", KEY, "source port (0 for ICMP)", member="sport", json="sport",
        tui=Tui("SPort", 5, grow=7), title="source port", sort="sport",
        ie=("sourceTransportPort",),
    ),
    Field(
        "dport", KEY, "destination port; ICMP: type << 8 | code", member="dport", json="dport",
        tui=Tui("DPort", 5, grow=7), title="destination port", sort="dport",
        ie=("destinationTransportPort", "icmpTypeCodeIPv4", "icmpTypeCodeIPv6"),
    ),
    Field(
        "vlan", KEY, "802.1Q VLAN id (0: none)", member="vlan", json="vlan", text=Text("VLAN"),
        title="vlan", ie=("vlanId",),
    ),
    # -- counters (layout.FLOW_STATS) --------------------------------------------
    Field(
        "packets", KERNEL, "packets (GSO segments)", member="packets", dtype="<u8", merge=SUM,
        json="packets", text=Text("PKTS", right=True), tui=Tui("Pkts", 6, numeric=True),
        title="packets", sort="packets", ie=("packetDeltaCount",),
        metrics=(Metric("flowtop_flow_packets",
                        "packets of flows (segments of GSO packets)" + _BY_FLOW, FLOW_LABELS),),
    ),
    Field(
        "bytes", KERNEL, "octets (IP header + payload)", member="bytes", dtype="<u8", merge=SUM,
        json="bytes", text=Text("BYTES", right=True), tui=Tui("Total", 7, numeric=True),
        title="bytes", sort="bytes", ie=("octetDeltaCount",),
        metrics=(
            Metric("flowtop_flow_bytes", "IP bytes of flows (IP header + payload)" + _BY_FLOW,
                   FLOW_LABELS),
            Metric("flowtop_remote_bytes",
                   "IP bytes by direction and the remote end's AS and country (ingress: source, "
                   "egress: destination), bounded by max_series", ("direction", "asn", "country")),
        ),
    ),
    Field(
        "first_ns", KERNEL, MONO_NS, member="first_seen_ns", dtype="<u8", merge=MIN,
        json="first_seen", title="first seen", sort="first_seen", ie=("flowStartMilliseconds",),
    ),
    Field(
        "last_ns", KERNEL, MONO_NS, member="last_seen_ns", dtype="<u8", merge=MAX,
        json="last_seen", title="last seen", sort="last_seen", ie=("flowEndMilliseconds",),
    ),
    Field(
        "tcp_flags", KERNEL, "TCP flag bits seen (FIN 0x01 .. CWR 0x80), | layout.TCP_SYN_ONLY "
        "(shown and exported without it: layout.tcp_wire_flags)", member="tcp_flags",
        dtype="<u2", merge=OR, json="tcp_flags", text=Text("FLAGS"), title="TCP flags",
        ie=("tcpControlBits",),
    ),
    Field(
        "dscp", KERNEL, "DSCP of the last packet", member="dscp", dtype="u1",
        ie=("ipClassOfService",),
    ),
    # -- TCP health (layout.TCP_SAMPLE, joined by core/tcphealth.join) ----------
    Field(
        "rtt_us", TCP, "µs, smoothed path RTT (0: unknown)", member="srtt_us", dtype="<u4",
        value=_rtt, json="rtt_us", text=Text("RTT_MS", right=True, group="tcp"),
        tui=Tui("RTT", 7, numeric=True), title="RTT", sort="rtt",
        metrics=(Metric("flowtop_tcp_rtt_seconds",
                        "smoothed TCP round-trip times, one observation per connection with a new "
                        "sample per interval (sock_ops for local sockets, passive for forwarded "
                        "TCP)", ("ifname",)),),
    ),
    Field(
        "rtt_min_us", TCP, "µs, minimum RTT of the connection", member="min_rtt_us", dtype="<u4",
        value=_rtt, json="rtt_min_us",
    ),
    Field(
        "retrans", TCP, "segments this flow's sender retransmitted", member="retrans",
        dtype="<u8", value=_tcp_known("retrans_source"), json="retransmits",
        text=Text("RETR", right=True, group="tcp"), tui=Tui("Retr", 5, numeric=True),
        title="retransmits", sort="retrans",
        metrics=(Metric("flowtop_tcp_retransmits", "TCP segments retransmitted", ("ifname",)),),
    ),
    Field(
        "rto", TCP, "retransmission timeouts (sock_ops only)", member="rto", dtype="<u4",
        value=_tcp_known("retrans_source", layout.TCP_SOURCE_SOCKOPS), json="rto",
        metrics=(Metric("flowtop_tcp_rto", "TCP retransmission timeouts of local sockets",
                        ("ifname",)),),
    ),
    Field(
        "rtt_source", TCP, "layout.TCP_SOURCE_* of the RTT (record: sockops/passive)",
        member="source", dtype="u1", value=_source, json="rtt_source",
    ),
    Field(
        "retrans_source", TCP, "layout.TCP_SOURCE_* of retrans/data_segs/rto", member="source",
        dtype="u1", value=_source,
    ),
    Field(
        "rtt_samples", TCP, "RTT samples so far", member="rtt_samples", dtype="<u4",
        value=_tcp_known("rtt_source"),
    ),
    Field(
        "data_segs", TCP, "data segments the sender sent", member="data_segs", dtype="<u8",
        value=_tcp_known("retrans_source"),
    ),
    # -- enrichment ---------------------------------------------------------------
    *_entity_fields("src", "source"),
    *_entity_fields("dst", "destination"),
    # -- socket owner (core/owners.py: the engine joins OwnerTable to new rows) ------
    # Names are NameTable ids into the engine's OwnerTable.names (0: none);
    # the SHOWN ones are resolved where shown. No IPFIX element carries these.
    Field(
        "pid", OWNER, "process id of the local socket's creator (0 in the column: unknown)",
        dtype="<u4", value=_nonzero, json="pid", title="pid",
    ),
    Field("comm_id", OWNER, "OwnerNames.comm id of its command name", dtype="<u4"),
    Field("comm", SHOWN, "command name (cleaned: untrusted text)", json="comm", title="command"),
    Field(
        "uid", OWNER, "its real uid (UID_NONE in the column: unknown)", dtype="<u4",
        blank=UID_NONE, value=_uid, json="uid", title="user",
    ),
    Field("cgroup_id", OWNER, "its cgroup v2 id (0 in the column: unknown)", dtype="<u8",
          value=_nonzero),
    Field("cgroup", SHOWN, "its cgroup v2 path (cleaned)", json="cgroup", title="cgroup"),
    Field("service_id", OWNER, "OwnerNames.service id of its systemd unit", dtype="<u4"),
    Field("service", SHOWN, "systemd unit of its cgroup", json="service", title="service",
          tui=Tui("Service", 12, grow=18)),
    Field("container_id", OWNER, "OwnerNames.container id of its container", dtype="<u4"),
    Field("container", SHOWN, "container id of its cgroup", json="container",
          title="container", tui=Tui("Container", 12)),
    Field("pod_id", OWNER, "OwnerNames.pod id of its pod", dtype="<u4"),
    Field("pod", SHOWN, "kubelet pod UID of its cgroup", json="pod", title="pod"),
    Field(
        "owner_state", OWNER, "owners.STATE_* (OWNER_PENDING: not joined yet)", dtype="u1",
        blank=OWNER_PENDING,
    ),
    Field("process", SHOWN, "comm/pid, for display", text=Text("PROCESS", group="owner"),
          tui=Tui("Process", 12, grow=12), title="process"),
    # -- kernel drops (core/drops.py: the engine joins each drain's drops by key) --
    # Cumulative over the row's life (merge LAST: a flow-end record carries the
    # total so far). `drops` (reason name -> packets) is the DropTable's, per
    # key over the run: dump and the detail screen ask it.
    Field(
        "drop_packets", DROP, "packets of this flow the kernel dropped on this box "
        "(record: None when none)", dtype="<u8", value=_nonzero,
        text=Text("DROPS", right=True, group="drops"), tui=Tui("Drops", 5, numeric=True),
        title="dropped packets", sort="drops",
    ),
    Field("drop_bytes", DROP, "their IP bytes", dtype="<u8", title="dropped bytes"),
    Field(
        "drop_reason", DROP, "enum skb_drop_reason value with the most dropped packets "
        "(0: none; record: None)", dtype="<u4", value=_nonzero,
    ),
    Field(
        "drops", SHOWN, "dropped packets by reason name, most first ({}: none; the key "
        "is left out when drops are not collected)", json="drops", json_when=KNOWN,
    ),
    # -- sometimes there --------------------------------------------------------
    Field(
        "mpls", KERNEL, "top MPLS label entry of the last packet: layout.MPLS_PRESENT | "
        "label << 4 | TC << 1 | S (record: the 20-bit label, None without MPLS)",
        member="mpls", dtype="<u4", value=_mpls, json="mpls_label", json_when=KNOWN,
        text=Text("MPLS", group="mpls"), ie=("mplsTopLabelStackSection",),
    ),
    # -- rates (live flows) ----------------------------------------------------
    Field(
        "pps", RATE, "packets/s over the last interval", dtype="<f4", rate_of="packets",
        tui=Tui("Pkt/s", 6, numeric=True), title="packets/s", sort="pps",
    ),
    Field(
        "bps", RATE, "bit/s over the last interval", dtype="<f4", rate_of="bytes", scale=8,
        tui=Tui("Rate", 9, numeric=True), title="rate", sort="bps",
    ),
    # -- conversation (core/conversations.py: the table fills it on a new row) ----
    # Live rows only (the view's conversation group); flow-end records leave
    # it out: dump computes it from their keys.
    Field("conv_id", CONV, "u64 id of the flow's conversation (its key and the reverse)",
          dtype="<u8"),
    # -- flow-end records -------------------------------------------------------
    Field(
        "end_reason", END, "why the record was emitted (EndReason: IPFIX flowEndReason)",
        dtype="u1", value=_end_reason, ie=("flowEndReason",),
    ),
    # -- names from the wire (wirenames/: the engine joins WireNames to new rows) -----
    # Ids into the engine's WireNames.names (0: none); the server end's is set.
    Field("src_name_id", WIRE, "WireNames.names id of the source's wire name", dtype="<u4"),
    Field("dst_name_id", WIRE, "WireNames.names id of the destination's wire name",
          dtype="<u4"),
    Field("name_cname_id", WIRE, "WireNames.names id of the DNS answer's CNAME chain end",
          dtype="<u4", title="CNAME chain end"),
    Field(
        "name_source", WIRE, "names.SOURCE_* of the named end's name (0: none; dump: dns, "
        "sni, http, rdns or null)", dtype="u1", json="name_source", json_when=WIRE_ON,
        title="name source",
    ),
    Field("name_state", WIRE, "names.NAME_* (NAME_PENDING: not joined yet)", dtype="u1",
          blank=NAME_PENDING),
    Field("name", SHOWN, "the named end's name and its source, for display",
          text=Text("NAME", group="wire"), tui=Tui("Name", 16, grow=16), title="name"),
    # -- names: from the wire, else reverse DNS (dump --resolve) -------------------
    Field("src_name", SHOWN, "wire name, else reverse DNS name", member="src", json="src_name",
          json_when=NAMES),
    Field("dst_name", SHOWN, "wire name, else reverse DNS name", member="dst", json="dst_name",
          json_when=NAMES),
)  # fmt: skip

FIELD: Mapping[str, Field] = MappingProxyType({f.name: f for f in FIELDS})
assert len(FIELD) == len(FIELDS), "two fields with one name"

# The flow table's columns, what flow-end records carry, FlowRecord's attributes.
TABLE_FIELDS = tuple(f for f in FIELDS if f.column)
BATCH_FIELDS = tuple(f for f in FIELDS if f.in_batch)
RECORD_FIELDS = tuple(f for f in FIELDS if f.column or f.in_batch)
JSON_FIELDS = tuple(f for f in FIELDS if f.json)
# The text table's columns, left to right.
TEXT_COLUMNS: tuple[tuple[Field, Text], ...] = tuple(
    (FIELD[n], t)
    for n in (
        "iface", "direction", "proto_name", "src", "dst", "packets", "bytes", "tcp_flags",
        "vlan", "mpls", "rtt_us", "retrans", "drop_packets", "src_as", "dst_as", "name",
        "process",
    )
    if (t := FIELD[n].text) is not None
)  # fmt: skip
SORTABLE: Mapping[str, Field] = MappingProxyType({f.sort: f for f in FIELDS if f.sort})
BY_IE: Mapping[str, Field] = MappingProxyType({e: f for f in FIELDS for e in f.ie})


def _check() -> None:
    """The description agrees with the kernel's structs and with itself."""
    members = {KEY: layout.FLOW_KEY.names, KERNEL: layout.FLOW_STATS.names}
    members[TCP] = layout.TCP_SAMPLE.names
    for f in FIELDS:
        if f.origin in members:
            assert f.member in (members[f.origin] or ()), f"{f.name}: no member {f.member}"
        assert bool(f.dtype) == (f.column or f.in_batch), f"{f.name}: dtype"
        assert (f.rate_of is not None) == (f.origin == RATE), f"{f.name}: rate_of"
    assert {f.name for f, _ in TEXT_COLUMNS} == {f.name for f in FIELDS if f.text}
    assert len(SORTABLE) == len([f for f in FIELDS if f.sort]), "two fields with one sort name"
    assert tuple(f.label for f in FIELDS if f.label) == FLOW_LABELS, "flow series labels"
    assert len(BY_IE) == sum(len(f.ie) for f in FIELDS), "an element filled by two fields"


_check()


def title(name: str) -> str:
    """What the detail screen calls a field."""
    t = FIELD[name].title
    assert t is not None, name
    return t


def member(name: str | None) -> str:
    """The struct member a field comes from (KEY, KERNEL and TCP fields)."""
    m = FIELD[name or ""].member
    assert m is not None, name
    return m
