"""dump --conversations and the FT_TCP_SYN_ONLY mask, on synthetic flow records."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import TCP_SYN, CollectorHealth
from flowtop.export.ipfix.records import encode_flows
from flowtop.export.ipfix.template import flow_template
from flowtop.kernel import layout
from flowtop.options import parse
from flowtop.run.dump import Extras, FlowAccumulator, emit

from .test_conversations import IFNAMES, T0, C, S, arrays, router

SYN_ONLY = TCP_SYN | layout.TCP_SYN_ONLY


def run() -> FlowAccumulator:
    """A router's run: the forwarded TCP connection (four records) and a
    forwarded one-way UDP stream (two), every flow ended by the flush."""
    t = FlowTable(clock_offset=0.0)
    acc = FlowAccumulator(0.0)
    spec = router(1000, 5000) + router(700, 0, proto=17, cport=41000, sport=5001)[:2]
    k, s = arrays(spec)
    s["last_seen_ns"] = T0 + 2 * NS  # two seconds of life
    acc.flows_ended(t.merge(k, s, 1.0))
    acc.flows_ended(t.flush())
    return acc


def dump(as_json: bool, conversations: bool = True) -> str:
    out = io.StringIO()
    extras = Extras(conversations=conversations)
    emit(run().per_key(), IFNAMES, [], CollectorHealth(), as_json, out=out, extras=extras)
    return out.getvalue()


def test_json_conversation_lines_then_the_flow_lines() -> None:
    lines = [json.loads(x) for x in dump(as_json=True).splitlines()]
    convs = [x for x in lines if x["type"] == "conversation"]
    flows = [x for x in lines if x["type"] == "flow"]
    assert len(flows) == 6 and len(convs) == 2
    assert lines.index(convs[-1]) < lines.index(flows[0])
    tcp, udp = convs  # most bytes first
    assert (tcp["client"], tcp["client_port"], tcp["server"], tcp["server_port"]) == (
        C, 40000, S, 443,
    )  # fmt: skip
    assert (tcp["proto_name"], tcp["role"], tcp["iface"]) == ("tcp", "forwarded", "veth-a→veth-b")
    assert (tcp["in_iface"], tcp["out_iface"], tcp["flows"]) == ("veth-a", "veth-b", 4)
    assert (tcp["up_bytes"], tcp["up_packets"], tcp["down_bytes"], tcp["down_packets"]) == (
        1000, 10, 5000, 20,
    )  # fmt: skip
    assert (tcp["bytes"], tcp["packets"]) == (6000, 30)
    # Rates over the conversation's life: first packet (T0) to last (T0 + 2 s).
    assert tcp["up_bps"] == pytest.approx(1000 * 8 / 2) and tcp["down_bps"] > 0
    assert tcp["tcp_flags"] == TCP_SYN | 0x10  # FT_TCP_SYN_ONLY masked off
    assert tcp["up_retransmits"] is None and tcp["rtt_us"] is None
    assert (udp["client_port"], udp["server_port"], udp["up_bytes"], udp["down_bytes"]) == (
        41000, 5001, 700, 0,
    )  # fmt: skip
    assert udp["tcp_flags"] is None and udp["flows"] == 2 and udp["down_packets"] == 0
    assert all(f["tcp_flags"] & layout.TCP_SYN_ONLY == 0 for f in flows)
    assert any(f["tcp_flags"] == 0x12 for f in flows)


def test_text_table_replaces_the_flow_table() -> None:
    text = dump(as_json=False)
    head, first, second = text.splitlines()[:3]
    assert head.split()[:10] == [
        "ROLE", "IFACE", "PROTO", "CLIENT", "SERVER", "UP_BYTES", "UP_PKTS", "DOWN_BYTES",
        "DOWN_PKTS", "FLOWS",
    ]  # fmt: skip
    assert first.split() == [
        "forwarded", "veth-a→veth-b", "tcp", f"{C}:40000", f"{S}:443", "1000", "10", "5000",
        "20", "4",
    ]  # fmt: skip
    assert second.split()[3:] == [f"{C}:41000", f"{S}:5001", "700", "10", "0", "0", "2"]
    assert "DIR" not in text  # no flow table
    flows = dump(as_json=False, conversations=False)
    assert "ROLE" not in flows and "DIR" in flows
    # Flow flags as on the wire: S and A, no ninth bit.
    assert "...A..S." in flows


def test_default_dump_has_no_conversation_lines() -> None:
    lines = [json.loads(x) for x in dump(as_json=True, conversations=False).splitlines()]
    assert {x["type"] for x in lines} == {"flow", "stats"}


def test_option_only_with_dump() -> None:
    assert parse(["dump", "--conversations"]).conversations is True
    assert parse(["dump"]).conversations is False


def test_ipfix_tcp_control_bits_without_the_syn_only_bit() -> None:
    batch = run().per_key()
    assert (batch["tcp_flags"] & layout.TCP_SYN_ONLY).any()  # the table kept the bit
    enc = encode_flows(batch, flow_template(4))
    got = np.asarray(enc.records["tcpControlBits"])
    assert (got == (batch["tcp_flags"] & 0xFF)).all() and (got & 0x100 == 0).all()
