"""The Information Element table and the compiled templates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flowtop.errors import ConfigError
from flowtop.export.ipfix import IpfixExporter
from flowtop.export.ipfix.ie import IES, ie
from flowtop.export.ipfix.template import EXPORTER_RELIABILITY, IPV4_FLOW, flow_template

# IANA "IPFIX Information Elements" registry: id, name, abstract type, length.
IANA = {
    1: ("octetDeltaCount", "unsigned64", 8),
    2: ("packetDeltaCount", "unsigned64", 8),
    4: ("protocolIdentifier", "unsigned8", 1),
    5: ("ipClassOfService", "unsigned8", 1),
    6: ("tcpControlBits", "unsigned16", 2),
    8: ("sourceIPv4Address", "ipv4Address", 4),
    27: ("sourceIPv6Address", "ipv6Address", 16),
    32: ("icmpTypeCodeIPv4", "unsigned16", 2),
    61: ("flowDirection", "unsigned8", 1),
    136: ("flowEndReason", "unsigned8", 1),
    139: ("icmpTypeCodeIPv6", "unsigned16", 2),
    144: ("exportingProcessId", "unsigned32", 4),
    152: ("flowStartMilliseconds", "dateTimeMilliseconds", 8),
    166: ("notSentFlowTotalCount", "unsigned64", 8),
    167: ("notSentPacketTotalCount", "unsigned64", 8),
    168: ("notSentOctetTotalCount", "unsigned64", 8),
    323: ("observationTimeMilliseconds", "dateTimeMilliseconds", 8),
}


def test_table_matches_iana() -> None:
    for ie_id, (name, kind, length) in IANA.items():
        e = ie(name)
        assert (e.id, e.type, e.length) == (ie_id, kind, length)
    assert len({e.id for e in IES.values()}) == len(IES)


def test_table_is_immutable() -> None:
    with pytest.raises(TypeError):
        IES["x"] = ie("octetDeltaCount")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ie("octetDeltaCount").id = 3  # type: ignore[misc]
    with pytest.raises(KeyError, match="unknown IPFIX"):
        ie("noSuchElement")


def test_struct_and_dtype_agree() -> None:
    for t in (IPV4_FLOW, flow_template(6), flow_template(4, bgp=True), EXPORTER_RELIABILITY):
        arr = t.empty(1)
        values = [(i + 1) * 3 for i in range(len(t.fields))]
        packed_values: list[int | bytes] = []
        for col, f, v in zip(t.columns, t.fields, values, strict=True):
            if f.type.startswith("ipv"):
                arr[col] = np.full(f.length, v, dtype=np.uint8)
                packed_values.append(bytes([v]) * f.length)
            else:
                arr[col] = v
                packed_values.append(v)
        assert arr.tobytes() == t.pack(*packed_values)
        assert t.dtype.itemsize == t.record_size  # packed, no padding


def test_bgp_variant_has_its_own_id() -> None:
    t = flow_template(4, bgp=True)
    assert t.template_id != IPV4_FLOW.template_id
    assert t.columns[-2:] == ("bgpSourceAsNumber", "bgpDestinationAsNumber")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"collectors": []}, "at least one collector"),
        ({"transport": "sctp"}, "udp or tcp"),
        ({"domain_id": 2**32}, "32 bits"),
        ({"max_message_size": 100}, "too small"),
        ({"max_message_size": 70000}, "1..65535"),
        ({"template_refresh": 0}, "positive"),
        ({"collectors": [("127.0.0.1", 0)]}, "bad IPFIX collector"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"collectors": [("127.0.0.1", 4739)], "start": False}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        IpfixExporter(**args)  # type: ignore[arg-type]
