"""`flowtop dump --json` with enrichment on real traffic: the MaxMind test
databases, a labels file, local networks, a corrupt database (warning, the
rest still works)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .dump import run_dump
from .netns import Pair, entered

pytestmark = pytest.mark.kernel

# MaxMind's test databases, vendored with their licences (tests/data/mmdb/README.md).
MMDB = Path(__file__).resolve().parents[1] / "data" / "mmdb"
TELSTRA = "1.128.0.1"  # GeoLite2-ASN-Test: 1.128.0.0/11 AS1221 Telstra Pty Ltd
LONDON = "81.2.69.142"  # GeoIP2-City-Test: London, GB
B = "10.200.1.2"


def send_from(pair: Pair, src: str, n: int, port: int) -> None:
    """UDP from an extra address of A's to B (one way: B never answers)."""
    pair.a.ip("addr", "add", f"{src}/32", "dev", "va")
    with entered(pair.a.name):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src, 0))
        for _ in range(n):
            s.sendto(b"x" * 100, (B, port))
    finally:
        s.close()


def test_dump_json_enrichment_fields(quiet_pair: Pair, tmp_path: Path) -> None:
    p = quiet_pair
    labels = tmp_path / "labels"
    labels.write_text("lab-b 10.200.1.2/32 zone=b\n# the test pair's far end\n")

    def traffic() -> None:
        send_from(p, TELSTRA, 3, 7001)
        send_from(p, LONDON, 2, 7002)

    res = run_dump(
        p.b,
        ["vb"],
        traffic,
        extra_args=[
            "--geoip-asn", str(MMDB / "GeoLite2-ASN-Test.mmdb"),
            "--geoip-city", str(MMDB / "GeoIP2-City-Test.mmdb"),
            "--labels", str(labels),
        ],
    )  # fmt: skip
    tel = res.flow(iface="vb", direction="ingress", src=TELSTRA, dst=B, proto=17)
    lon = res.flow(iface="vb", direction="ingress", src=LONDON, dst=B, proto=17)
    assert tel is not None and lon is not None, res.flows
    assert tel["packets"] == 3 and lon["packets"] == 2
    assert (tel["src_asn"], tel["src_as_org"]) == (1221, "Telstra Pty Ltd")
    assert (lon["src_country"], lon["src_city"], lon["src_asn"]) == ("GB", "London", None)
    for f in (tel, lon):
        assert f["dst_label"] == "lab-b"
        assert f["src_label"] is None and f["dst_asn"] is None
        assert f["rtt_us"] is None and f["retransmits"] is None  # UDP
        # no --resolve, and nothing on the wire named them: the keys are there
        # (names from the wire are on) with no name
        assert (f["src_name"], f["dst_name"], f["name_source"]) == (None, None, None)
    assert "warning" not in res.stderr.lower(), res.stderr


def test_corrupt_database_warns_and_the_rest_still_works(quiet_pair: Pair, tmp_path: Path) -> None:
    p = quiet_pair
    labels = tmp_path / "labels"
    labels.write_text("lab-b 10.200.1.0/24\n")
    res = run_dump(
        p.b,
        ["vb"],
        lambda: send_from(p, TELSTRA, 2, 7003),
        extra_args=[
            "--geoip-asn", str(MMDB / "MaxMind-DB-test-broken-search-tree-24.mmdb"),
            "--labels", str(labels),
        ],
    )  # fmt: skip
    f = res.flow(iface="vb", direction="ingress", src=TELSTRA, dst=B, proto=17)
    assert f is not None and f["packets"] == 2
    assert f["src_asn"] is None and f["dst_label"] == "lab-b"
    warn = [ln for ln in res.stderr.splitlines() if "geoip-asn" in ln]
    assert len(warn) == 1 and "ASN enrichment disabled" in warn[0], res.stderr
    assert "Traceback" not in res.stderr
