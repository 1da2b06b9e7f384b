"""ViewRows from aggregated rows: only the rows the screen shows become
Python objects, each with the columns its group keeps."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import numpy as np

from flowtop.core.flowtable import NS
from flowtop.core.model import proto_name
from flowtop.core.owners import UID_NONE
from flowtop.kernel import layout
from flowtop.query.entities import EntityArrays, group_value
from flowtop.query.grouping import Aggregate, service_port
from flowtop.query.names import NO_NAME, NameArrays, shown_id, source_name
from flowtop.query.owners import (
    GROUP_COLUMN,
    NO_OWNER,
    UNATTRIBUTED,
    UNATTRIBUTED_GROUP,
    OwnerArrays,
)
from flowtop.query.types import ENTITY_GROUPS, NAME_GROUPS, OWNER_GROUPS, ViewRow
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
}


def _addr(raw: bytes, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


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


def view_row(
    a: Aggregate,
    i: int,
    group: str,
    offset: float,
    ifnames: Mapping[int, str],
    ea: EntityArrays | None = None,
    group_eid: np.ndarray | None = None,
    oa: OwnerArrays | None = None,
    na: NameArrays | None = None,
) -> ViewRow:
    """Row i of a, as a query grouped by `group` shows it; offset: the
    table's clock offset (monotonic ns -> wall-clock seconds)."""
    k = np.ascontiguousarray(a.words[i]).view(layout.FLOW_KEY)[0]
    shown = _GROUP_COLUMNS[group]
    ver = int(k["ip_version"])
    proto = int(k["proto"])
    ifindex = int(k["ifindex"])
    ports = "ports" in shown
    dport = int(k["dport"]) if ports else None
    if "service" in shown:
        dport = int(service_port(a.words[i : i + 1])[0])
    gval = None
    if group in ENTITY_GROUPS:
        eid = int(group_eid[i]) if group_eid is not None else 0
        gval = group_value(group, ea, eid)
    elif group in OWNER_GROUPS:
        column = GROUP_COLUMN[group]
        nid = int(a.owner[column][i]) if column in a.owner else 0
        if int(a.ids[i]) == UNATTRIBUTED_GROUP:
            gval = UNATTRIBUTED
        else:
            gval = (oa.name(column, nid) if oa is not None else None) or NO_OWNER
    elif group in NAME_GROUPS:
        nid = int(shown_id({n: c[i : i + 1] for n, c in a.wire.items()})[0]) if a.wire else 0
        gval = (na.name(nid) if na is not None else None) or NO_NAME
    rtt = int(a.rtt[i])
    return ViewRow(
        key=f"{group}:{int(a.ids[i]):016x}",
        src=_addr(bytes(k["src"]), ver) if "src" in shown else None,
        sport=int(k["sport"]) if ports else None,
        dst=_addr(bytes(k["dst"]), ver) if "dst" in shown else None,
        dport=dport,
        proto=proto if "proto" in shown else None,
        proto_name=proto_name(proto) if "proto" in shown else None,
        iface=clean(ifnames.get(ifindex, f"if{ifindex}")) if "iface" in shown else None,
        direction=("in", "out")[int(k["direction"])] if "iface" in shown else None,
        vlan=int(k["vlan"]) if "vlan" in shown else None,
        bps=float(a.bps[i]),
        pps=float(a.pps[i]),
        bytes=int(a.bytes[i]),
        packets=int(a.packets[i]),
        flows=int(a.flows[i]),
        first_seen=int(a.first_ns[i]) / NS + offset,
        last_seen=int(a.last_ns[i]) / NS + offset,
        tcp_flags=int(a.flags[i]),
        rtt_us=float(rtt) if rtt else None,
        retransmits=int(a.retrans[i]) if a.retr_known[i] else None,
        group=gval,
        drops=int(a.drops[i]) if len(a.drops) else 0,
        **_ends(a, i, ea, shown),  # type: ignore[arg-type]
        **(_owner(a, i, oa) if group == "flow" else {}),  # type: ignore[arg-type]
        **(_wire(a, i, na) if group == "flow" else {}),  # type: ignore[arg-type]
    )
