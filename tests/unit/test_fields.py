"""core/fields.py is the one description: what derives from it matches it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowtop.core import fields, flowtable
from flowtop.core.fields import FIELD, FIELDS
from flowtop.core.flowtable import NS, SORT_COLUMNS, FlowTable
from flowtop.core.model import CollectorHealth, FlowRecord
from flowtop.enrich.enricher import Entity
from flowtop.kernel import layout
from flowtop.run.dump import Extras, FlowAccumulator, emit

from .test_flowtable import T0, keys, stats

ROOT = Path(__file__).resolve().parents[2]
BOOKKEEPING = {"exp_packets", "exp_bytes", "exp_start_ns", "live", "conv_leg"}


def test_flow_record_has_one_attribute_per_record_field() -> None:
    want = {"key", "clock_offset", *(f.name for f in fields.RECORD_FIELDS)}
    assert set(FlowRecord.__dataclass_fields__) == want


def test_table_and_batch_columns_have_the_described_dtypes() -> None:
    t = FlowTable(clock_offset=0.0)
    # The writable columns are allocated at their first write (flowtable._LAZY).
    assert set(t._c) | set(flowtable._LAZY) == {f.name for f in fields.TABLE_FIELDS} | BOOKKEEPING
    for f in fields.TABLE_FIELDS:
        assert t._c[f.name].dtype == np.dtype(f.dtype), f.name
    t.merge(keys(3), stats(3), 1.0)
    b = t.flush()
    assert list(b.columns) == [f.name for f in fields.BATCH_FIELDS]
    for f in fields.BATCH_FIELDS:
        assert b[f.name].dtype == np.dtype(f.dtype) and len(b[f.name]) == 3, f.name


def _run(tcp: bool) -> FlowAccumulator:
    """Three TCP flows through a real table: one labelled, TCP health written."""
    t = FlowTable(clock_offset=1_700_000_000.0)
    acc = FlowAccumulator(t.clock_offset)
    s = stats(3, packets=4, nbytes=400, flags=0x18)
    s["bytes"] = [400, 300, 200]  # dump sorts by bytes: ports 1000, 1001, 1002
    s["mpls"][0] = layout.MPLS_PRESENT | 77 << 4 | 1
    s["last_seen_ns"] = T0 + 2 * NS
    acc.flows_ended(t.merge(keys(3, proto=6), s, 1.0))
    rows = t.live_rows()
    if tcp:
        t.set_column("rtt_us", rows, 2500)
        t.set_column("rtt_source", rows, layout.TCP_SOURCE_PASSIVE)
        t.set_column("retrans", rows, 9)
        t.set_column("retrans_source", rows, layout.TCP_SOURCE_SOCKOPS)
    t.set_column("src_ent", rows, 0)
    acc.flows_ended(t.flush())
    return acc


def _json(acc: FlowAccumulator, extras: Extras) -> list[dict[str, object]]:
    out = io.StringIO()
    emit(acc.per_key(), {7: "veth0"}, [], CollectorHealth(), as_json=True, out=out, extras=extras)
    return [x for x in map(json.loads, out.getvalue().splitlines()) if x["type"] == "flow"]


def test_json_keys_are_the_described_ones_in_order() -> None:
    ent = Entity(asn=64500, as_org="Example", country="NL", city="Amsterdam", label=None)
    names = Extras(entity_of=lambda e: ent if e == 0 else None, name_of=lambda a: "h.example")
    labelled, plain, _ = _json(_run(tcp=True), names)
    always = [f.json for f in fields.JSON_FIELDS if f.json_when == fields.ALWAYS]
    named = [f.json for f in fields.JSON_FIELDS if f.json_when == fields.NAMES]
    assert list(labelled) == ["type", *always, "mpls_label", *named]
    assert list(plain) == ["type", *always, *named]
    (bare, *_) = _json(_run(tcp=False), Extras())
    assert list(bare) == ["type", *always, "mpls_label"]
    # The values are the fields', under their public names.
    assert labelled["mpls_label"] == 77 and labelled["sport"] == 1000
    assert (labelled["rtt_us"], labelled["rtt_source"], labelled["retransmits"]) == (
        2500,
        "passive",
        9,
    )
    assert labelled["first_seen"] == "2023-11-14T22:30:00.000+00:00"  # T0 + clock offset
    assert labelled["last_seen"] == "2023-11-14T22:30:02.000+00:00"
    src = (labelled["src_asn"], labelled["src_country"], labelled["dst_asn"])
    assert src == (64500, "NL", None)
    assert labelled["src_name"] == "h.example"
    assert (bare["rtt_us"], bare["retransmits"], bare["rto"]) == (None, None, None)


def test_text_table_columns_follow_the_description() -> None:
    def header(acc: FlowAccumulator, extras: Extras) -> list[str]:
        out = io.StringIO()
        emit(acc.per_key(), {7: "veth0"}, [], CollectorHealth(), as_json=False, out=out,
             extras=extras)  # fmt: skip
        return out.getvalue().splitlines()[0].split()

    every = [t.header for _, t in fields.TEXT_COLUMNS]
    plain = [t.header for _, t in fields.TEXT_COLUMNS if t.group is None]
    # No flow of _run has a socket owner, drops or a wire name: PROCESS, DROPS
    # and NAME are the columns left out.
    assert header(_run(tcp=True), Extras(entity_of=lambda e: None)) == [
        h for h in every[:-1] if h not in ("DROPS", "NAME")
    ]
    assert every[-1] == "PROCESS"
    assert header(_run(tcp=False), Extras()) == [*plain, "MPLS"]  # one flow is labelled


@pytest.mark.parametrize("by", SORT_COLUMNS)
def test_every_sortable_table_field_sorts(by: str) -> None:
    f = fields.SORTABLE[by]
    t = FlowTable(clock_offset=0.0)
    t.merge(keys(20), stats(20), 1.0)
    rows = t.live_rows()
    values = np.random.default_rng(len(by)).permutation(20) + 1
    t._c.allocate(f.name)[rows] = values  # the column the description names (allocated if lazy)
    t.set_column("rtt_source", rows, layout.TCP_SOURCE_PASSIVE)  # TCP values known
    t.set_column("retrans_source", rows, layout.TCP_SOURCE_PASSIVE)
    top = t.top(5, by=by)
    assert [getattr(r, f.name) for r in top] == sorted(values.tolist(), reverse=True)[:5]
    low = t.top(3, by=by, descending=False)
    assert [getattr(r, f.name) for r in low] == [1, 2, 3]


def test_sort_names_are_the_views() -> None:
    from flowtop.query.types import SORT_KEYS

    assert set(SORT_KEYS) - set(fields.SORTABLE) == {"flows"}  # a group's, not a flow's
    assert set(fields.SORTABLE) <= set(SORT_KEYS)


def test_every_ipfix_element_of_the_flow_templates_has_its_field() -> None:
    from flowtop.export.ipfix.template import flow_template

    used = set()
    for v in (4, 6):
        for bgp in (False, True):
            for mpls in (False, True):
                used |= {e.name for e in flow_template(v, bgp, mpls).fields}
    assert used == set(fields.BY_IE)


def test_prometheus_families_are_the_described_ones() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from flowtop.export.prometheus import FlowMetrics, FlowtopCollector
    from flowtop.kernel.collector import Drain

    m = FlowMetrics()
    k = keys(4)
    s = stats(4, packets=3, nbytes=150)
    m.add_drain(Drain([(k, s)], 0, 1.0))
    m.publish({7: "eth7"}, [], 4, CollectorHealth(), 0.0, 1)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FlowtopCollector(m))
    text = generate_latest(reg).decode()
    metrics = [m for f in FIELDS for m in f.metrics]
    assert {m.name for m in metrics} >= {"flowtop_flow_bytes", "flowtop_flow_packets"}
    for metric in metrics:
        assert f"# HELP {metric.name}" in text and metric.help in text, metric.name
    labels = 'direction="ingress",ifname="eth7",proto="udp"'
    assert f"flowtop_flow_bytes_total{{{labels}}} 600.0" in text
    assert f"flowtop_flow_packets_total{{{labels}}} 12.0" in text


def test_tui_columns_are_the_described_ones() -> None:
    from flowtop.tui.columns import COLUMNS, CONVERSATION_COLUMNS

    for f in FIELDS:
        if f.tui is not None:
            c = COLUMNS[f.name]
            assert (c.label, c.width, c.grow, c.numeric, c.sort) == (
                f.tui.label, f.tui.width, f.tui.grow, f.tui.numeric, f.sort,
            )  # fmt: skip
    # Besides the fields: the group columns and the conversation rows' own.
    own = {"flows", "group"} | {c.key for c in CONVERSATION_COLUMNS}
    assert set(COLUMNS) - {f.name for f in FIELDS if f.tui} == own


def test_the_description_matches_the_kernel_structs() -> None:
    structs = {fields.KERNEL: layout.FLOW_STATS, fields.TCP: layout.TCP_SAMPLE}
    structs[fields.KEY] = layout.FLOW_KEY
    for f in FIELDS:
        if f.origin in structs:
            assert f.member in (structs[f.origin].names or ()), f.name
    assert FIELD["first_ns"].member == "first_seen_ns" and FIELD["retrans"].json == "retransmits"


# Adding a field is one Field (plus FlowRecord's attribute, plus the code that
# fills it): in a fresh interpreter, the description gets a second counter
# summed from FLOW_STATS.packets and a TCP field from TCP_SAMPLE.rttvar_us.
_NEW_FIELDS = """
import dataclasses, io, json, pathlib, sys, types
import numpy as np
import flowtop.core.model as model

path = pathlib.Path(sys.argv[1])
src = path.read_text()
marker = "    # -- enrichment ---"
assert marker in src
new = (
    '    Field("echo_packets", KERNEL, "packets", member="packets", dtype="<u8", merge=SUM,'
    ' json="echo_packets"),\\n'
    '    Field("rtt_var_us", TCP, "us", member="rttvar_us", dtype="<u4", value=_rtt,'
    ' json="rtt_var_us", text=Text("RTTVAR")),\\n'
)
src = src.replace(marker, new + marker, 1)
src = src.replace('"vlan", "mpls",', '"vlan", "rtt_var_us", "mpls",')
mod = types.ModuleType("flowtop.core.fields")
mod.__file__ = str(path)
sys.modules["flowtop.core.fields"] = mod
exec(compile(src, str(path), "exec"), mod.__dict__)
model.FlowRecord = dataclasses.make_dataclass(
    "FlowRecord",
    [("echo_packets", int, dataclasses.field(default=0)),
     ("rtt_var_us", "int | None", dataclasses.field(default=None))],
    bases=(model.FlowRecord,), frozen=True, slots=True,
)

from flowtop.core.flowtable import NS, FlowTable
from flowtop.core.model import CollectorHealth
from flowtop.run.dump import FlowAccumulator, emit
from tests.unit.test_flowtable import T0, keys, stats

t = FlowTable(clock_offset=0.0, active_timeout=5.0)
acc = FlowAccumulator(0.0)
t.merge(keys(2), stats(2, packets=3), 1.0)
t.merge(keys(2), stats(2, packets=4, t=T0 + NS), 1.0)
rows = t.live_rows()
t.set_column("rtt_var_us", rows, 321)
t.set_column("rtt_source", rows, 2)
acc.flows_ended(t.expire(T0 + 6 * NS))  # active timeout: a period's delta
t.merge(keys(2), stats(2, packets=5, t=T0 + 7 * NS), 1.0)
acc.flows_ended(t.flush())
out = io.StringIO()
emit(acc.per_key(), {7: "veth0"}, [], CollectorHealth(), as_json=True, out=out)
text = io.StringIO()
emit(acc.per_key(), {7: "veth0"}, [], CollectorHealth(), as_json=False, out=text)
print(json.dumps({
    "dtypes": [str(t._c["echo_packets"].dtype), str(t._c["rtt_var_us"].dtype)],
    "flows": [json.loads(x) for x in out.getvalue().splitlines() if '"flow"' in x],
    "header": text.getvalue().splitlines()[0].split(),
}))
"""


def test_a_field_added_to_the_description_reaches_table_records_json_and_text() -> None:
    p = subprocess.run(
        [sys.executable, "-c", _NEW_FIELDS, str(ROOT / "flowtop/core/fields.py")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["dtypes"] == ["uint64", "uint32"]
    for f in got["flows"]:
        keys_ = list(f)
        at = keys_.index("rtt_source") + 1  # where they were added
        assert keys_[at : at + 3] == ["echo_packets", "rtt_var_us", "src_asn"]
        # merged like packets: the active-timeout export and the rest add up
        assert f["echo_packets"] == f["packets"] == 12
        assert f["rtt_var_us"] == 321
    assert got["header"][got["header"].index("VLAN") + 1] == "RTTVAR"


def test_owner_fields_are_columns_the_engine_writes_and_dump_resolves() -> None:
    from flowtop.core.owners import (
        OWNER_PENDING,
        STATE_ATTRIBUTED,
        UID_NONE,
        NameTable,
        OwnerNames,
    )

    owner = [f.name for f in FIELDS if f.origin == fields.OWNER]
    assert owner == ["pid", "comm_id", "uid", "cgroup_id", "service_id", "container_id",
                     "pod_id", "owner_state"]  # fmt: skip
    assert all(FIELD[n].column and FIELD[n].in_batch and not FIELD[n].ie for n in owner)
    t = FlowTable(clock_offset=0.0)
    t.merge(keys(2), stats(2), 1.0)
    rows = t.live_rows()
    assert t.column("owner_state", rows).tolist() == [OWNER_PENDING] * 2  # the blank
    assert t.column("uid", rows).tolist() == [UID_NONE] * 2
    names = OwnerNames(NameTable(), NameTable(), NameTable(), NameTable())
    comm, unit = names.comm.intern("nginx"), names.service.intern("nginx.service")

    class Lookup:
        def __init__(self) -> None:
            self.names = names

        def cgroup_path(self, cgroup_id: int) -> str | None:
            return {55: "/system.slice/nginx.service"}.get(cgroup_id)

    one = rows[:1]
    for name, v in (("pid", 812), ("uid", 33), ("cgroup_id", 55), ("comm_id", comm),
                    ("service_id", unit), ("owner_state", STATE_ATTRIBUTED)):  # fmt: skip
        t.set_column(name, one, v)
    acc = FlowAccumulator(0.0)
    acc.flows_ended(t.flush())
    out = io.StringIO()
    emit(acc.per_key(), {7: "veth0"}, [], CollectorHealth(), as_json=True, out=out,
         extras=Extras(owners=Lookup()))  # fmt: skip
    flows = {x["sport"]: x for x in map(json.loads, out.getvalue().splitlines())
             if x["type"] == "flow"}  # fmt: skip
    keys_ = ("pid", "comm", "uid", "cgroup", "service", "container", "pod")
    assert [flows[1000][k] for k in keys_] == [
        812, "nginx", 33, "/system.slice/nginx.service", "nginx.service", None, None,
    ]  # fmt: skip
    assert [flows[1001][k] for k in keys_] == [None] * 7
    text = io.StringIO()
    emit(acc.per_key(), {7: "veth0"}, [], CollectorHealth(), as_json=False, out=text,
         extras=Extras(owners=Lookup()))  # fmt: skip
    lines = text.getvalue().splitlines()
    assert lines[0].split()[-1] == "PROCESS"
    assert next(ln for ln in lines if ":1000 " in ln).rstrip().endswith("nginx/812")
