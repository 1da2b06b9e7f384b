"""ViewRows from aggregated rows: only the rows the screen shows become
Python objects, each with the columns its group keeps."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence

import numpy as np

from flowtop.core.flowtable import NS
from flowtop.core.model import proto_name
from flowtop.core.owners import UID_NONE
from flowtop.kernel import layout
from flowtop.query.entities import EntityArrays, group_value, zone_pair_text
from flowtop.query.grouping import Aggregate, service_port
from flowtop.query.names import NO_NAME, NameArrays, shown_id, source_name
from flowtop.query.owners import (
    GROUP_COLUMN,
    NO_OWNER,
    UNATTRIBUTED,
    UNATTRIBUTED_GROUP,
    OwnerArrays,
)
from flowtop.query.types import ENTITY_GROUPS, NAME_GROUPS, OWNER_GROUPS, ZONE_GROUPS, ViewRow
from flowtop.sanitize import clean

# The columns each group keeps (the others are None in its rows).
_GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "flow": ("src", "dst", "ports", "proto", "iface", "vlan"),
    "src": ("src",),
    "dst": ("dst",),
    "pair": ("src", "dst"),
    "port": ("proto", "service"),
    "proto": ("proto",),
    "iface": ("iface",),
    "asn": (),
    "country": (),
    "label": (),
    "process": (),
    "service": (),
    "container": (),
    "name": (),
    "exporter": (),  # the group value: the exporter's address (query/exporters.py)
    "zone": (),  # the group value: "src zone→dst zone" (query/entities.py)
    # client (src) and server (dst); iface and the up/down columns come from
    # query/conversations.row_fields
    "conversation": ("src", "dst", "ports", "proto", "vlan"),
}
# Groups whose rows carry a representative flow's owner and names.
_FLOW_LIKE = ("flow", "conversation")


_V4_PREFIX = bytes(10)  # an IPv6 address starting so may embed an IPv4 one


def _addr(raw: bytes, version: int) -> str:
    # inet_ntop is ipaddress's text at a tenth of the cost, except where
    # glibc writes an embedded IPv4 address (::ffff:a.b.c.d, ::a.b.c.d):
    # those keep ipaddress's text (both zero-compress the first longest run
    # of two or more zero groups, in lower case).
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:10] == _V4_PREFIX:
        return str(ipaddress.IPv6Address(raw))
    return socket.inet_ntop(socket.AF_INET6, raw)


def _ends(
    a: Aggregate, i: int, ea: EntityArrays | None, shown: tuple[str, ...]
) -> dict[str, object]:
    out: dict[str, object] = {}
    if ea is None:
        return out
    for end in ("src", "dst"):
        eid = int((a.src_ent if end == "src" else a.dst_ent)[i])
        if end not in shown or eid < 0:
            continue
        e = ea.entity(eid)
        out[f"{end}_asn"] = e.asn
        out[f"{end}_country"] = e.country
        out[f"{end}_label"] = e.label
    return out


def _owner(a: Aggregate, i: int, oa: OwnerArrays | None) -> dict[str, object]:
    """A flow row's owner: ids and names, None where unknown."""
    if oa is None or "owner_state" not in a.owner:
        return {}
    o = {n: int(c[i]) for n, c in a.owner.items()}
    pid, uid = o["pid"], o["uid"]
    return {
        "pid": pid or None,
        "uid": None if uid == UID_NONE else uid,
        "comm": oa.name("comm_id", o["comm_id"]),
        "service": oa.name("service_id", o["service_id"]),
        "container": oa.name("container_id", o["container_id"]),
        "pod": oa.name("pod_id", o["pod_id"]),
        "cgroup": oa.cgroup_path(o["cgroup_id"]),
        "owner_state": o["owner_state"],
    }


def _wire(a: Aggregate, i: int, na: NameArrays | None) -> dict[str, object]:
    """A flow row's names from the wire, None where none."""
    if na is None or "name_source" not in a.wire:
        return {}
    w = {n: int(c[i]) for n, c in a.wire.items()}
    return {
        "src_name": na.name(w["src_name_id"]),
        "dst_name": na.name(w["dst_name_id"]),
        "name_cname": na.name(w["name_cname_id"]),
        "name_source": source_name(w["name_source"]),
    }


def _group_value(
    a: Aggregate,
    i: int,
    group: str,
    ea: EntityArrays | None,
    group_eid: np.ndarray | None,
    oa: OwnerArrays | None,
    na: NameArrays | None,
) -> str | None:
    """What row i of a shows in the Group column (None: a group without one)."""
    if group in ENTITY_GROUPS:
        eid = int(group_eid[i]) if group_eid is not None else 0
        return group_value(group, ea, eid)
    if group in OWNER_GROUPS:
        column = GROUP_COLUMN[group]
        nid = int(a.owner[column][i]) if column in a.owner else 0
        if int(a.ids[i]) == UNATTRIBUTED_GROUP:
            return UNATTRIBUTED
        return (oa.name(column, nid) if oa is not None else None) or NO_OWNER
    if group in NAME_GROUPS:
        nid = int(shown_id({n: c[i : i + 1] for n, c in a.wire.items()})[0]) if a.wire else 0
        return (na.name(nid) if na is not None else None) or NO_NAME
    if group in ZONE_GROUPS:
        return zone_pair_text(ea, int(a.ids[i]))
    return None


_ADDRS_KEPT = 8192  # address texts kept: the rows of many refreshes
_addrs: dict[tuple[bytes, int], str] = {}


def _addr_text(raw: bytes, version: int) -> str:
    # The rows on screen are mostly the same flows every refresh: their
    # addresses are formatted once (ipaddress is most of a row's cost).
    text = _addrs.get((raw, version))
    if text is None:
        if len(_addrs) >= _ADDRS_KEPT:
            _addrs.clear()
        text = _addrs[raw, version] = _addr(raw, version)
    return text


def view_rows(
    a: Aggregate,
    order: Sequence[int] | np.ndarray,
    group: str,
    offset: float,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
    group_eid: np.ndarray | None = None,
    oa: OwnerArrays | None = None,
    na: NameArrays | None = None,
    conv: tuple[list[str], list[dict[str, object]]] | None = None,
) -> list[ViewRow]:
    """Rows `order` of a (in that order), as a query grouped by `group` shows
    them; offset: the table's clock offset (monotonic ns -> wall-clock seconds);
    conv: a conversation row's iface and own fields, per row of order
    (conversations.row_fields).

    The columns are read for those rows at once (numpy -> Python values in one
    tolist each, not a numpy scalar per field per row): the view builds
    these every refresh.
    """
    at = np.asarray(order, dtype=np.intp).reshape(-1)
    if not len(at):
        return []
    k = np.ascontiguousarray(a.words[at]).view(layout.FLOW_KEY).reshape(-1)
    shown = _GROUP_COLUMNS[group]
    ports = "ports" in shown
    vers, protos = k["ip_version"].tolist(), k["proto"].tolist()
    ifindexes, directions = k["ifindex"].tolist(), k["direction"].tolist()
    sports, dports, vlans = k["sport"].tolist(), k["dport"].tolist(), k["vlan"].tolist()
    if "service" in shown:
        dports = service_port(a.words[at]).tolist()
    srcs = k["src"].tolist() if "src" in shown else None  # V16: bytes each
    dsts = k["dst"].tolist() if "dst" in shown else None
    ids, rtts = a.ids[at].tolist(), a.rtt[at].tolist()
    bps, pps = a.bps[at].tolist(), a.pps[at].tolist()
    nbytes, packets, flows = a.bytes[at].tolist(), a.packets[at].tolist(), a.flows[at].tolist()
    firsts, lasts, flags = a.first_ns[at].tolist(), a.last_ns[at].tolist(), a.flags[at].tolist()
    retrans, known = a.retrans[at].tolist(), a.retr_known[at].tolist()
    drops = a.drops[at].tolist() if len(a.drops) else None
    ifaces: dict[int, str] = {}  # ifindex -> cleaned name, once per call
    out = []
    for j, i in enumerate(at.tolist()):
        ver, proto, ifindex, rtt = vers[j], protos[j], ifindexes[j], int(rtts[j])
        iface = conv[0][j] if conv is not None else None
        if "iface" in shown:
            iface = ifaces.get(ifindex)
            if iface is None:
                iface = ifaces[ifindex] = clean(ifnames.get(ifindex, f"if{ifindex}"))
        out.append(
            ViewRow(
                key=f"{group}:{int(ids[j]):016x}",
                src=_addr_text(srcs[j], ver) if srcs is not None else None,
                sport=int(sports[j]) if ports else None,
                dst=_addr_text(dsts[j], ver) if dsts is not None else None,
                dport=int(dports[j]) if ports or "service" in shown else None,
                proto=proto if "proto" in shown else None,
                proto_name=proto_name(proto) if "proto" in shown else None,
                iface=iface,
                direction=("in", "out")[directions[j]] if "iface" in shown else None,
                vlan=int(vlans[j]) if "vlan" in shown else None,
                bps=float(bps[j]),
                pps=float(pps[j]),
                bytes=int(nbytes[j]),
                packets=int(packets[j]),
                flows=int(flows[j]),
                first_seen=int(firsts[j]) / NS + offset,
                last_seen=int(lasts[j]) / NS + offset,
                tcp_flags=layout.tcp_wire_flags(int(flags[j])),
                rtt_us=float(rtt) if rtt else None,
                retransmits=int(retrans[j]) if known[j] else None,
                group=_group_value(a, i, group, ea, group_eid, oa, na),
                drops=int(drops[j]) if drops is not None else 0,
                **_ends(a, i, ea, shown),  # type: ignore[arg-type]
                **(_owner(a, i, oa) if group in _FLOW_LIKE else {}),  # type: ignore[arg-type]
                **(_wire(a, i, na) if group in _FLOW_LIKE else {}),  # type: ignore[arg-type]
                **(conv[1][j] if conv is not None else {}),  # type: ignore[arg-type]
            )
        )
    return out
