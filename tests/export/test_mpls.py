"""mplsTopLabelStackSection (IE 70): the top MPLS label of flows that carried one.

A flow with a label goes out with the template variant that has the field;
one without keeps the plain template (no made-up label 0). The 3 octets are
label << 4 | traffic class << 1 | bottom of stack, checked against the
RFC 3032 layout by hand, against the tests' own decoder and against tshark.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flowtop.core.flowtable import FlowBatch
from flowtop.export.ipfix.records import split_by_version
from flowtop.export.ipfix.template import (
    IPV4_FLOW,
    IPV6_FLOW,
    flow_template,
)
from flowtop.kernel import layout

from . import pcap
from .decode import Decoder, fields
from .flows import Flow, batch
from .test_interop import COLLECTOR, _walk, export_udp, tshark

IE_MPLS = 70


def entry(label: int, tc: int = 0, bottom: bool = True) -> int:
    """A FLOW_STATS.mpls value: the present bit and the top entry without TTL."""
    return layout.MPLS_PRESENT | label << 4 | tc << 1 | int(bottom)


def labelled(flows: list[Flow], mpls: list[int]) -> FlowBatch:
    b = batch(flows)
    cols = {**b.columns, "mpls": np.array(mpls, dtype="<u4")}
    return FlowBatch(b.keys, cols, b.clock_offset)


FLOWS = [
    Flow("10.0.0.1", "10.0.0.2", 17, 1001, 53, bytes=100),
    Flow("10.0.0.1", "10.0.0.3", 17, 1002, 53, bytes=200),
    Flow("2001:db8::1", "2001:db8::2", 6, 1003, 443, bytes=300),
    Flow("2001:db8::1", "2001:db8::3", 6, 1004, 443, bytes=400),
]
MPLS = [entry(100, 5), 0, entry(0xFFFFF, 7, bottom=False), 0]


def test_template_variants_carry_ie70_last() -> None:
    ids = set()
    for v in (4, 6):
        for bgp in (False, True):
            t = flow_template(v, bgp, mpls=True)
            assert (t.fields[-1].id, t.fields[-1].length) == (IE_MPLS, 3)
            assert t.fields[-1].type == "octetArray"
            plain = flow_template(v, bgp)
            assert t.fields[:-1] == plain.fields and IE_MPLS not in [f.id for f in plain.fields]
            ids |= {t.template_id, plain.template_id}
    assert len(ids) == 8 and 260 not in ids  # 260: the reliability options template


def test_labelled_rows_use_the_mpls_template_with_exact_octets() -> None:
    b = labelled(FLOWS, MPLS)
    v4m, v6m = flow_template(4, mpls=True), flow_template(6, mpls=True)
    encoded, other = split_by_version(b, IPV4_FLOW, IPV6_FLOW, mpls=(v4m, v6m))
    assert len(other) == 0
    by_tmpl = {e.template.template_id: e for e in encoded}
    assert sorted(by_tmpl) == sorted(t.template_id for t in (IPV4_FLOW, IPV6_FLOW, v4m, v6m))
    assert [int(x) for x in by_tmpl[v4m.template_id].octets] == [100]
    assert [int(x) for x in by_tmpl[v6m.template_id].octets] == [300]
    assert [int(x) for x in by_tmpl[IPV4_FLOW.template_id].octets] == [200]
    # label 100 = 0x00064, TC 5, S 1: 0000 0000 0000 0110 0100 | 101 | 1
    rec4 = by_tmpl[v4m.template_id].records.tobytes()
    assert rec4[-3:] == bytes([0x00, 0x06, 0x4B])
    # label 0xFFFFF, TC 7, S 0
    assert by_tmpl[v6m.template_id].records.tobytes()[-3:] == bytes([0xFF, 0xFF, 0xFE])


def test_without_mpls_templates_every_row_is_plain() -> None:
    encoded, _ = split_by_version(labelled(FLOWS, MPLS), IPV4_FLOW, IPV6_FLOW)
    assert sorted(e.template.template_id for e in encoded) == [256, 257]
    assert sum(len(e) for e in encoded) == len(FLOWS)


def test_exporter_sends_the_label_and_only_for_labelled_flows() -> None:
    raw, _local = export_udp(labelled(FLOWS, MPLS))
    dec = Decoder()
    got = {}
    for data in raw:
        for tid, values in dec.message(data).records:
            f = fields(values)
            if 7 in f:  # sourceTransportPort: a flow record
                got[f[7]] = (tid, f.get(IE_MPLS))
    assert got == {
        1001: (261, 100 << 4 | 5 << 1 | 1),
        1002: (256, None),
        1003: (262, 0xFFFFF << 4 | 7 << 1),
        1004: (257, None),
    }


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_the_top_label(tmp_path: Path) -> None:
    raw, local = export_udp(labelled(FLOWS, MPLS))
    path = tmp_path / "mpls.pcap"
    pcap.write(path, local, COLLECTOR, raw)
    heads = [p["_source"]["layers"]["cflow"] for p in json.loads(tshark(path, "-T", "json"))]
    got = {}
    for f in (f for f in _walk(heads) if "cflow.octets" in f):
        label = [v for k, v in f.items() if k.startswith("MPLS-Label1") and isinstance(v, dict)]
        got[int(str(f["cflow.srcport"]))] = (
            (int(label[0]["cflow.mpls_label"]), int(label[0]["cflow.mpls_exp"]),
             int(label[0]["cflow.mpls_bos"])) if label else None
        )  # fmt: skip
    assert got == {1001: (100, 5, 1), 1002: None, 1003: (0xFFFFF, 7, 0), 1004: None}
