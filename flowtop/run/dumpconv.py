"""`flowtop dump --conversations`: a run's flow records as conversations.

The run's per-key flow records (dump.FlowAccumulator.per_key) are aggregated
by query/conversations.py, the live view's conversation rows: one per
connection, client and server ends, each direction counted once (its
ingress records when it has any, else its egress ones). Rates are over the
conversation's life (first to last packet), not over one interval.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from flowtop.core.flowtable import NS, FlowBatch
from flowtop.core.model import proto_name
from flowtop.core.owners import STATE_ATTRIBUTED, UID_NONE
from flowtop.kernel import layout
from flowtop.query.conversations import (
    ROLE_FORWARDED,
    ROLES,
    Conversations,
    conversations,
    groups_of,
)
from flowtop.run.dump import EntityOf, Extras, NameOf, OwnerLookup, WireLookup, _print_rows, iso
from flowtop.sanitize import clean

_NAMES = ("comm_id", "service_id", "container_id")
# What a conversation row is built from: the flow-end records' columns (no rates).
_COLUMNS = (
    "packets", "bytes", "first_ns", "last_ns", "tcp_flags", "rtt_us", "retrans",
    "retrans_source", "src_ent", "dst_ent", "drop_packets", "pid", "uid", "cgroup_id",
    "comm_id", "service_id", "container_id", "pod_id", "owner_state", "src_name_id",
    "dst_name_id", "name_cname_id", "name_source",
)  # fmt: skip


def of_batch(batch: FlowBatch) -> Conversations:
    """The conversations of flow records (one per key: per_key())."""
    words = layout.FLOW_KEY_WORDS.view(batch.keys)
    cols = {n: batch[n] for n in _COLUMNS}
    cols["pps"] = cols["bps"] = np.zeros(len(batch), dtype=np.float64)
    return conversations(words, cols, groups_of(words, cols["first_ns"]))


def _addr(raw: bytes, version: int) -> str:
    a = ipaddress.IPv4Address(raw[:4]) if version == 4 else ipaddress.IPv6Address(raw)
    return str(a)


@dataclass(frozen=True)
class ConversationLines:
    """A run's conversations, most bytes first, as dump writes them: JSON
    objects (json()) and text table rows (table()). Lookups as dump.Extras:
    entity_of (entity id -> Entity), name_of (address -> reverse DNS name),
    owners (OwnerTable), wire (WireNames)."""

    conv: Conversations
    offset: float  # the clock offset (monotonic ns -> unix seconds)
    ifname: Mapping[int, str]

    @property
    def order(self) -> list[int]:
        a = self.conv.agg
        out: list[int] = np.lexsort((a.ids, -a.packets.astype(np.float64),
                                     -a.bytes.astype(np.float64))).tolist()  # fmt: skip
        return out

    def _iface(self, ifindex: int) -> str:
        return clean(self.ifname.get(ifindex, str(ifindex)))

    def json(
        self,
        entity_of: EntityOf | None = None,
        name_of: NameOf | None = None,
        owners: OwnerLookup | None = None,
        wire: WireLookup | None = None,
    ) -> list[dict[str, object]]:
        """One "conversation" object per conversation (fields: README, dump)."""
        c, a = self.conv, self.conv.agg
        k = np.ascontiguousarray(a.words).view(layout.FLOW_KEY).reshape(-1)
        out = []
        for i in self.order:
            ver, proto = int(k[i]["ip_version"]), int(k[i]["proto"])
            icmp = proto in (1, 58)
            client, server = _addr(bytes(k[i]["src"]), ver), _addr(bytes(k[i]["dst"]), ver)
            fwd = int(c.role[i]) == ROLE_FORWARDED
            first, last = int(a.first_ns[i]), int(a.last_ns[i])
            life = (last - first) / NS
            d: dict[str, object] = {
                "type": "conversation",
                "id": f"{int(a.ids[i]):016x}",
                "client": client,
                "client_port": None if icmp else int(k[i]["sport"]),
                "server": server,
                "server_port": None if icmp else int(k[i]["dport"]),
                "ip_version": ver,
                "proto": proto,
                "proto_name": proto_name(proto),
                "vlan": int(k[i]["vlan"]),
                "role": ROLES[int(c.role[i])],
                "iface": self._iface(int(c.in_ifindex[i]))
                + (f"\u2192{self._iface(int(c.out_ifindex[i]))}" if fwd else ""),
                "in_iface": self._iface(int(c.in_ifindex[i])) if fwd else None,
                "out_iface": self._iface(int(c.out_ifindex[i])) if fwd else None,
            }
            for name, s in (("up", c.up), ("down", c.down)):
                nbytes = int(s.bytes[i])
                d[f"{name}_bytes"] = nbytes
                d[f"{name}_packets"] = int(s.packets[i])
                d[f"{name}_bps"] = nbytes * 8 / life if life > 0 else None
            d.update(
                bytes=int(a.bytes[i]),
                packets=int(a.packets[i]),
                flows=int(a.flows[i]),
                first_seen=iso(first / NS + self.offset),
                last_seen=iso(last / NS + self.offset),
                tcp_flags=layout.tcp_wire_flags(int(a.flags[i])) if proto == 6 else None,
                rtt_us=int(a.rtt[i]) or None,
                up_retransmits=int(c.up.retrans[i]) if c.up.retr_known[i] else None,
                down_retransmits=int(c.down.retrans[i]) if c.down.retr_known[i] else None,
                drops=int(a.drops[i]),
            )
            d.update(self._extras(i, client, server, entity_of, name_of, owners, wire))
            out.append(d)
        return out

    def _extras(
        self,
        i: int,
        client: str,
        server: str,
        entity_of: EntityOf | None,
        name_of: NameOf | None,
        owners: OwnerLookup | None,
        wire: WireLookup | None,
    ) -> dict[str, object]:
        """Entities, names and the owner of the representative client ->
        server record, each only when dump has them."""
        a = self.conv.agg
        d: dict[str, object] = {}
        if entity_of is not None:
            for end, col in (("client", a.src_ent), ("server", a.dst_ent)):
                e = entity_of(int(col[i])) if int(col[i]) >= 0 else None
                d[f"{end}_asn"] = getattr(e, "asn", None)
                d[f"{end}_country"] = getattr(e, "country", None)
        if name_of is not None or wire is not None:
            for end, addr, nid_col in (
                ("client", client, "src_name_id"),
                ("server", server, "dst_name_id"),
            ):
                nid = int(a.wire[nid_col][i]) if nid_col in a.wire else 0
                got = wire.name(nid) if nid and wire is not None else None
                if not got and name_of is not None:
                    got = name_of(addr)
                d[f"{end}_name"] = clean(got) if got else None
        if owners is not None and "owner_state" in a.owner:
            o = {n: int(v[i]) for n, v in a.owner.items()}
            attributed = o["owner_state"] == STATE_ATTRIBUTED
            names = owners.names
            d["pid"] = o["pid"] or None if attributed else None
            d["uid"] = None if not attributed or o["uid"] == UID_NONE else o["uid"]
            for id_col in _NAMES:
                what = id_col.removesuffix("_id")
                nid = o[id_col]
                d[what] = getattr(names, what).get(nid) if attributed and nid else None
        return d

    def table(self) -> tuple[tuple[str, ...], list[tuple[str, ...]], set[int]]:
        """(header, rows, right-aligned columns) of the text table."""
        c, a = self.conv, self.conv.agg
        k = np.ascontiguousarray(a.words).view(layout.FLOW_KEY).reshape(-1)
        tcp = bool((a.retr_known > 0).any() or (a.rtt > 0).any())
        head: tuple[str, ...] = (
            "ROLE", "IFACE", "PROTO", "CLIENT", "SERVER", "UP_BYTES", "UP_PKTS", "DOWN_BYTES",
            "DOWN_PKTS", "FLOWS",
        )  # fmt: skip
        if tcp:
            head += ("RTT_MS", "UP_RETR", "DOWN_RETR")
        rows = []
        for i in self.order:
            ver, proto = int(k[i]["ip_version"]), int(k[i]["proto"])
            ends = []
            for end, port in (("src", "sport"), ("dst", "dport")):
                addr = _addr(bytes(k[i][end]), ver)
                addr = f"[{addr}]" if ver == 6 else addr
                ends.append(addr if proto in (1, 58) else f"{addr}:{int(k[i][port])}")
            iface = self._iface(int(c.in_ifindex[i]))
            if int(c.role[i]) == ROLE_FORWARDED:
                iface += f"\u2192{self._iface(int(c.out_ifindex[i]))}"
            row: tuple[str, ...] = (
                ROLES[int(c.role[i])], iface, proto_name(proto), *ends,
                str(int(c.up.bytes[i])), str(int(c.up.packets[i])),
                str(int(c.down.bytes[i])), str(int(c.down.packets[i])), str(int(a.flows[i])),
            )  # fmt: skip
            if tcp:
                rtt = int(a.rtt[i])
                row += (
                    f"{rtt / 1000:.2f}" if rtt else "",
                    str(int(c.up.retrans[i])) if c.up.retr_known[i] else "",
                    str(int(c.down.retrans[i])) if c.down.retr_known[i] else "",
                )
            rows.append(row)
        return head, rows, {5, 6, 7, 8, 9, 10, 11, 12}


def write_conversations(
    out: TextIO, batch: FlowBatch, ifname: Mapping[int, str], as_json: bool, extras: Extras
) -> None:
    """The run's conversations: one JSON line each, or the text table (in
    place of the flow table, which dump leaves out then)."""
    lines = ConversationLines(of_batch(batch), batch.clock_offset, ifname)
    if as_json:
        # json.dumps escapes every control and non-ASCII character (names).
        for d in lines.json(extras.entity_of, extras.name_of, extras.owners, extras.wire):
            out.write(json.dumps(d) + "\n")
        return
    head, rows, right = lines.table()
    _print_rows(out, [head, *rows], right)
    out.write("\n")
