"""MMDB enrichment against MaxMind's test databases and hostile ones.

Expected values come from MaxMind's `source-data/*.json` (the records each
test database was built from), matched here with a plain longest-prefix search
in Python, independent of flowtop's vectorised tree walk. Databases flowtop
must refuse (corrupt, wrong type, half-written) are fed to the Enricher under a
time bound: one warning, that enrichment off, no exception, no hang.

A small MMDB writer (MMDB spec 2.0) builds databases with hostile strings and
types, and with 24/28/32-bit records, to check the walk and the cleaning.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowtop.enrich import Enricher, EnrichOptions, Entity
from flowtop.enrich.geo import (
    KIND_ASN,
    KIND_CITY,
    MmdbDatabase,
    MmdbError,
    canonical_from_ips,
)
from flowtop.enrich.text import safe_text
from flowtop.kernel import layout

# MaxMind's test databases, vendored with their licences (tests/data/mmdb/README.md).
MMDB = Path(__file__).resolve().parents[1] / "data" / "mmdb"

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
ASN_DBS = ("GeoLite2-ASN-Test", "GeoIP2-ISP-Test")
CITY_DBS = ("GeoIP2-City-Test", "GeoLite2-City-Test", "GeoLite2-Country-Test")


def bounded(fn: Callable[[], Any], seconds: float = 5.0) -> Any:
    """Runs fn in a thread; fails the test if it takes longer than `seconds`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"did not finish within {seconds} s (hang)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --------------------------------------------------------------------------- #
# ground truth from source-data/*.json
# --------------------------------------------------------------------------- #


def _space(net: str) -> tuple[int, int, int]:
    """(version as flows carry it, network as a 128-bit int in the tree's space, bits)."""
    n = ipaddress.ip_network(net)
    if n.version == 4:
        return 4, int(n.network_address), 96 + n.prefixlen
    # ::a.b.c.d/96+ is where MaxMind's writer keeps IPv4 networks
    is4 = n.prefixlen >= 96 and int(n.network_address) >> 32 == 0
    return (4 if is4 else 6), int(n.network_address), n.prefixlen


class Truth:
    """Longest-prefix match over the networks of one source-data file."""

    def __init__(self, name: str) -> None:
        data = json.loads((MMDB / "source-data" / f"{name}.json").read_text())
        self.by_len: dict[int, dict[int, Any]] = {}
        self.networks: list[tuple[int, int, int]] = []
        for ent in data:
            ((net, rec),) = ent.items()
            ver, base, bits = _space(net)
            self.by_len.setdefault(bits, {})[base] = rec
            self.networks.append((ver, base, bits))
        self.lengths = sorted(self.by_len, reverse=True)

    def record(self, ip: IP) -> Any:
        v = int(ip)  # IPv4 a.b.c.d is ::a.b.c.d in the tree
        for bits in self.lengths:
            key = (v >> (128 - bits)) << (128 - bits) if bits else 0
            if key in self.by_len[bits]:
                return self.by_len[bits][key]
        return None

    def probes(self) -> list[IP]:
        """First, middle and last address of every network, as flows carry them."""
        out: list[IP] = []
        for ver, base, bits in self.networks:
            size = 1 << (128 - bits)
            for v in (base, base + size // 2, base + size - 1):
                out.append(ipaddress.IPv4Address(v) if ver == 4 else ipaddress.IPv6Address(v))
        return out


def asn_fields(rec: Any) -> tuple[int | None, str | None]:
    rec = rec or {}
    return rec.get("autonomous_system_number"), rec.get("autonomous_system_organization")


def city_fields(rec: Any) -> tuple[str | None, str | None]:
    rec = rec or {}
    return rec.get("country", {}).get("iso_code"), rec.get("city", {}).get("names", {}).get("en")


def flow_addrs(ips: Iterable[IP]) -> tuple[np.ndarray, np.ndarray]:
    """Flow-key style addresses: V16 with IPv4 in the first 4 bytes, plus versions."""
    ips = list(ips)
    raw = np.zeros((len(ips), 16), dtype=np.uint8)
    ver = np.zeros(len(ips), dtype=np.uint8)
    for i, ip in enumerate(ips):
        raw[i, : len(ip.packed)] = np.frombuffer(ip.packed, dtype=np.uint8)
        ver[i] = ip.version
    return raw.view("V16").ravel(), ver


def enricher(warnings: list[str], **kw: Any) -> Enricher:
    opts = EnrichOptions(search_default_paths=False, local_networks=[], **kw)
    return Enricher(opts, warn=warnings.append)


# --------------------------------------------------------------------------- #
# well-formed databases
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("asn_db", ASN_DBS)
@pytest.mark.parametrize("city_db", CITY_DBS)
def test_lookups_match_source_data(asn_db: str, city_db: str) -> None:
    asn_truth, city_truth = Truth(asn_db), Truth(city_db)
    ips = asn_truth.probes() + city_truth.probes()
    warnings: list[str] = []
    e = enricher(
        warnings,
        geoip_asn=str(MMDB / f"{asn_db}.mmdb"),
        geoip_city=str(MMDB / f"{city_db}.mmdb"),
    )
    assert warnings == []
    addrs, vers = flow_addrs(ips)
    ids = e.lookup(addrs, vers)
    assert ids.dtype == np.int32 and ids.shape == (len(ips),)
    seen = {4: 0, 6: 0}
    for ip, eid in zip(ips, ids.tolist(), strict=True):
        ent = e.entity(eid)
        want_asn = asn_fields(asn_truth.record(ip))
        want_city = city_fields(city_truth.record(ip))
        assert (ent.asn, ent.as_org) == want_asn, ip
        assert (ent.country, ent.city) == want_city, ip
        if want_asn[0] is not None or want_city[0] is not None:
            seen[ip.version] += 1
    # the comparison covered real data in both families
    assert seen[4] > 50 and seen[6] > 50, seen
    # asn_of agrees with the entities, vectorised
    asns = e.asn_of(ids)
    assert asns.dtype == np.uint32
    assert asns.tolist() == [e.entity(i).asn or 0 for i in ids.tolist()]
    assert e.active
    st = e.status()
    assert st["geoip-asn"].startswith(str(MMDB / f"{asn_db}.mmdb"))
    assert "built 20" in st["geoip-city"]
    e.close()


def test_known_values() -> None:
    """The README's examples, as a reader would check them by hand."""
    w: list[str] = []
    e = enricher(
        w,
        geoip_asn=str(MMDB / "GeoLite2-ASN-Test.mmdb"),
        geoip_city=str(MMDB / "GeoIP2-City-Test.mmdb"),
    )
    ips = [ipaddress.ip_address(a) for a in ("1.128.0.1", "81.2.69.142", "2001:218::1")]
    ids = e.lookup(*flow_addrs(ips))
    assert e.entity(int(ids[0])) == Entity(asn=1221, as_org="Telstra Pty Ltd")
    assert e.entity(int(ids[1])) == Entity(country="GB", city="London")
    assert e.entity(int(ids[2])).country == "JP"
    assert e.asn_of(np.array([ids[0], -1, 10**6])).tolist() == [1221, 0, 0]
    # straight from the fields of flow keys (strided views of a record array)
    keys = np.zeros(3, dtype=layout.FLOW_KEY)
    keys["dst"], keys["ip_version"] = flow_addrs(ips)
    assert (e.lookup(keys["dst"], keys["ip_version"]) == ids).all()
    e.close()


def test_cache_dedup_and_flow_key_details() -> None:
    w: list[str] = []
    e = enricher(w, geoip_asn=str(MMDB / "GeoLite2-ASN-Test.mmdb"))
    v4 = ipaddress.ip_address("1.128.0.1")
    # the same 4 bytes as an IPv6 address (0180:0001::) is another address
    v6_same_bytes = ipaddress.IPv6Address(v4.packed + bytes(12))
    mapped = ipaddress.ip_address("::ffff:1.128.0.1")
    addrs, vers = flow_addrs([v4, v6_same_bytes, mapped] * 1000)
    vers[5] = 0  # not an IP flow: nothing looked up
    ids = e.lookup(addrs, vers)
    assert ids[0] == ids[2] and e.entity(int(ids[0])).asn == 1221
    assert ids[1] != ids[0]
    assert ids[5] == 0
    st = e.stats()
    # ::ffff:1.128.0.1 is 1.128.0.1: two distinct addresses
    assert st["cache_misses"] == 2 and st["cache_size"] == 2
    ids2 = e.lookup(addrs, vers)
    assert (ids2 == ids).all()
    assert e.stats()["cache_misses"] == 2  # all from the cache
    # equal results share an entity: every address of 1.128.0.0/11 -> one id
    many = [ipaddress.IPv4Address(int(v4) + i * 4096) for i in range(200)]
    assert set(e.lookup(*flow_addrs(many)).tolist()) == {int(ids[0])}
    assert e.lookup(*flow_addrs([])).shape == (0,)
    e.close()


def test_default_paths_are_searched(tmp_path: Path) -> None:
    shutil.copy(MMDB / "GeoLite2-ASN-Test.mmdb", tmp_path / "GeoLite2-ASN.mmdb")
    w: list[str] = []
    e = Enricher(EnrichOptions(default_dirs=[str(tmp_path)], local_networks=[]), w.append)
    st = e.status()
    assert st["geoip-asn"].startswith(str(tmp_path / "GeoLite2-ASN.mmdb"))
    assert st["geoip-city"] == f"not found in {tmp_path}"
    assert w == []  # nothing asked for, nothing missing
    # a City database installed later is picked up
    shutil.copy(MMDB / "GeoLite2-Country-Test.mmdb", tmp_path / "GeoLite2-Country.mmdb")
    assert e.maybe_reload() is True
    assert "GeoLite2-Country" in e.status()["geoip-city"]
    e.close()
    off = Enricher(EnrichOptions(search_default_paths=False, local_networks=[]), w.append)
    assert off.status()["geoip-asn"] == "off" and not off.active


# --------------------------------------------------------------------------- #
# bad databases
# --------------------------------------------------------------------------- #

CORRUPT = sorted(
    [p for p in MMDB.glob("*.mmdb") if "Broken" in p.name or "Invalid" in p.name]
    + list(MMDB.glob("MaxMind-DB-test-broken-*.mmdb"))
    + list((MMDB / "bad-data").glob("*.mmdb")),
    key=lambda p: p.name,
)


def _spread() -> list[IP]:
    """Addresses that reach every network of the test databases, and beyond."""
    ips: list[IP] = []
    for name in ASN_DBS + CITY_DBS:
        ips += Truth(name).probes()
    ips += [ipaddress.IPv4Address(i << 24 | 0x010203) for i in range(256)]
    return ips


SPREAD = _spread()


@pytest.mark.parametrize("path", CORRUPT, ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["asn", "city"])
def test_corrupt_database_disables_with_one_warning(path: Path, kind: str) -> None:
    assert len(CORRUPT) >= 25
    option = f"geoip-{kind}"
    w: list[str] = []

    def run() -> Enricher:
        e = enricher(w, **{f"geoip_{kind}": str(path)})
        e.lookup(*flow_addrs(SPREAD))
        return e

    e = bounded(run)
    assert len(w) == 1, w
    msg = w[0]
    assert msg.startswith(f"{option}: {path}: ")
    assert msg.endswith("ASN enrichment disabled" if kind == "asn" else "enrichment disabled")
    assert "\n" not in msg and msg == safe_text(msg, 1000)
    assert e.status()[option].startswith("disabled: ")
    assert e.stats()["db_errors"] >= 1
    # disabled means no data from it, and the Enricher keeps answering
    ids = e.lookup(*flow_addrs(SPREAD))
    assert all(e.entity(i).asn is None and e.entity(i).country is None for i in set(ids.tolist()))
    assert len(w) == 1  # still one warning
    e.close()


def test_broken_data_found_at_lookup_time() -> None:
    """GeoIP2-City-Test-Broken-Double-Format opens fine and breaks only at
    some records: the first lookup that hits one disables the City database
    (one warning), the ASN database goes on, nothing raises."""
    w: list[str] = []
    e = enricher(
        w,
        geoip_asn=str(MMDB / "GeoLite2-ASN-Test.mmdb"),
        geoip_city=str(MMDB / "GeoIP2-City-Test-Broken-Double-Format.mmdb"),
    )
    assert w == []  # the probes at open did not touch a broken record
    good = ipaddress.ip_address("1.128.0.1")
    london = ipaddress.ip_address("81.2.69.142")  # a broken record in this file
    ids = bounded(lambda: e.lookup(*flow_addrs([good, london])))
    assert len(w) == 1 and w[0].startswith("geoip-city: ") and "corrupt data" in w[0]
    assert e.entity(int(ids[0])).asn == 1221
    assert e.entity(int(ids[1])).country is None
    assert e.status()["geoip-city"].startswith("disabled: ")
    assert e.status()["geoip-asn"].startswith(str(MMDB / "GeoLite2-ASN-Test.mmdb"))
    e.close()


@pytest.mark.parametrize(
    ("kind", "name", "why"),
    [
        ("asn", "GeoIP2-City-Test", "database type 'GeoIP2-City' is not an ASN/ISP database"),
        ("city", "GeoLite2-ASN-Test", "database type 'GeoLite2-ASN' is not a City/Country"),
        ("city", "MaxMind-DB-test-ipv4-24", "database type 'Test' is not a City/Country"),
        ("asn", "MaxMind-DB-test-mixed-24", "database type 'Test' is not an ASN/ISP"),
    ],
)
def test_wrong_type(kind: str, name: str, why: str) -> None:
    w: list[str] = []
    e = enricher(w, **{f"geoip_{kind}": str(MMDB / f"{name}.mmdb")})
    assert len(w) == 1 and why in w[0], w
    assert not e.active


def test_missing_unreadable_and_odd_files(tmp_path: Path) -> None:
    cases = {
        "missing": (tmp_path / "nope.mmdb", "No such file or directory"),
        "directory": (tmp_path, "not a regular file (a directory)"),
        "fifo": (tmp_path / "fifo.mmdb", "not a regular file (a FIFO)"),
        "empty": (tmp_path / "empty.mmdb", "empty file"),
        "text": (tmp_path / "text.mmdb", "not a valid MaxMind DB file"),
        "device": (Path("/dev/zero"), "not a regular file (a device)"),
    }
    (tmp_path / "empty.mmdb").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.mmdb")  # opening must not wait for a writer
    (tmp_path / "text.mmdb").write_text("hello\n" * 100)
    for label, (path, why) in cases.items():
        w: list[str] = []
        bounded(lambda p=path, w=w: enricher(w, geoip_asn=str(p)))  # type: ignore[misc]
        assert len(w) == 1 and why in w[0], (label, w)
    if os.geteuid() != 0:  # root reads any file: permissions cannot be tested
        p = tmp_path / "locked.mmdb"
        shutil.copy(MMDB / "GeoLite2-ASN-Test.mmdb", p)
        p.chmod(0)
        w = []
        enricher(w, geoip_asn=str(p))
        assert "Permission denied" in w[0]


@pytest.mark.parametrize(
    "path",
    CORRUPT + sorted(MMDB.glob("MaxMind-DB-test-*.mmdb")),
    ids=lambda p: p.name,
)
def test_hostile_databases_through_the_lookup_path(path: Path) -> None:
    """Without the type check, every bad database goes through the tree walk
    and the record decoding: it is refused (MmdbError, one line) or gives
    clean fields; nothing else escapes, nothing hangs."""

    def run() -> list[tuple[Any, ...]]:
        for kind in (KIND_ASN, KIND_CITY):
            try:
                db = MmdbDatabase(str(path), kind, check_type=False)
            except MmdbError as e:
                assert "\n" not in str(e)
                continue
            try:
                db.lookup(canonical_from_ips(SPREAD))
            except MmdbError as e:
                assert "\n" not in str(e)
            finally:
                db.close()
            return db.results
        return []

    for fields in bounded(run, 10):
        for f in fields:
            assert f is None or isinstance(f, int) or f == safe_text(f)


# --------------------------------------------------------------------------- #
# replaced databases
# --------------------------------------------------------------------------- #


def _differs() -> ipaddress.IPv4Address:
    """An IPv4 address whose AS number differs between the ASN and ISP databases."""
    asn, isp = Truth("GeoLite2-ASN-Test"), Truth("GeoIP2-ISP-Test")
    for ip in isp.probes():
        a, b = asn_fields(asn.record(ip))[0], asn_fields(isp.record(ip))[0]
        if ip.version == 4 and a and b and a != b:
            assert isinstance(ip, ipaddress.IPv4Address)
            return ip
    raise AssertionError("no such address in the test data")


def test_atomic_replace_is_picked_up_half_written_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "asn.mmdb"
    shutil.copy(MMDB / "GeoLite2-ASN-Test.mmdb", target)
    w: list[str] = []
    e = enricher(w, geoip_asn=str(target))
    ip = _differs()
    before = asn_fields(Truth("GeoLite2-ASN-Test").record(ip))
    want = asn_fields(Truth("GeoIP2-ISP-Test").record(ip))
    old_id = int(e.lookup(*flow_addrs([ip]))[0])
    assert (e.entity(old_id).asn, e.entity(old_id).as_org) == before
    assert e.maybe_reload() is False  # nothing changed

    # half-written: the first half of the new file renamed into place
    data = (MMDB / "GeoIP2-ISP-Test.mmdb").read_bytes()
    part = tmp_path / "asn.mmdb.part"
    part.write_bytes(data[: len(data) // 2])
    os.replace(part, target)
    assert e.maybe_reload() is False
    assert len(w) == 1 and "keeping the database loaded before" in w[0], w
    assert "GeoLite2-ASN" in e.status()["geoip-asn"]
    assert e.maybe_reload() is False and len(w) == 1  # warned once for this version
    assert e.entity(int(e.lookup(*flow_addrs([ip]))[0])).asn == before[0]  # old data

    # the complete file, atomically
    part.write_bytes(data)
    os.replace(part, target)
    assert e.maybe_reload() is True
    assert "GeoIP2-ISP" in e.status()["geoip-asn"]
    new = e.entity(int(e.lookup(*flow_addrs([ip]))[0]))
    assert (new.asn, new.as_org) == want
    assert e.entity(old_id).asn == before[0]  # old ids keep their meaning
    assert e.stats()["reloads"] == 1
    e.close()


def test_rewritten_in_place_while_loaded(tmp_path: Path) -> None:
    """The file truncated and rewritten under a loaded database (same inode):
    lookups go on from the private copy (an mmap of the file itself would die
    of SIGBUS), the broken version is refused, the rewritten one taken."""
    target = tmp_path / "city.mmdb"
    shutil.copy(MMDB / "GeoIP2-City-Test.mmdb", target)
    w: list[str] = []
    e = enricher(w, geoip_city=str(target))
    tokyo = [ipaddress.ip_address("2001:218::1")]
    london = [ipaddress.ip_address("81.2.69.142")]
    assert e.entity(int(e.lookup(*flow_addrs(tokyo))[0])).country == "JP"
    data = (MMDB / "GeoLite2-Country-Test.mmdb").read_bytes()
    with open(target, "r+b") as f:
        f.truncate(0)
        f.write(data[:1000])
        f.flush()
        assert e.maybe_reload() is False  # sees a broken file: refused
        # a first lookup of London walks the tree of the copy in memory
        assert e.entity(int(e.lookup(*flow_addrs(london))[0])).city == "London"
        f.write(data[1000:])
    assert e.maybe_reload() is True
    ent = e.entity(int(e.lookup(*flow_addrs(london))[0]))
    assert (ent.country, ent.city) == ("GB", None)  # a Country database now
    assert len(w) == 1 and "keeping the database loaded before" in w[0]
    e.close()


def test_missing_then_installed_and_recovery_after_lookup_failure(tmp_path: Path) -> None:
    target = tmp_path / "city.mmdb"
    w: list[str] = []
    e = enricher(w, geoip_city=str(target))
    assert len(w) == 1 and "No such file" in w[0]
    assert e.maybe_reload() is False and len(w) == 1
    shutil.copy(MMDB / "GeoIP2-City-Test-Broken-Double-Format.mmdb", target)
    assert e.maybe_reload() is True  # opens; broken records are not yet known
    london = flow_addrs([ipaddress.ip_address("81.2.69.142")])
    assert e.entity(int(e.lookup(*london)[0])).city is None
    assert len(w) == 2 and "corrupt data" in w[1]
    assert e.maybe_reload() is False  # the same broken file is not retried
    part = tmp_path / "part"
    shutil.copy(MMDB / "GeoIP2-City-Test.mmdb", part)
    os.replace(part, target)
    assert e.maybe_reload() is True
    assert e.entity(int(e.lookup(*london)[0])).city == "London"
    e.close()


# --------------------------------------------------------------------------- #
# hostile strings and types, and record sizes: databases written here
# --------------------------------------------------------------------------- #


def _ctrl(type_: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        head, extra = 30, struct.pack(">H", size - 285)
    else:
        head, extra = 31, struct.pack(">I", size - 65821)[1:]
    if type_ <= 7:
        return bytes([type_ << 5 | head]) + extra
    return bytes([head, type_ - 7]) + extra


class Uint:
    """An unsigned integer of a given MMDB type (5 uint16, 6 uint32, 9 uint64):
    libmaxminddb insists on exact types in the metadata."""

    def __init__(self, type_: int, value: int) -> None:
        self.type, self.value = type_, value


def enc(v: Any) -> bytes:
    """MMDB data section encoding of a Python value (map keys: str)."""
    if isinstance(v, Uint):
        b = v.value.to_bytes((v.value.bit_length() + 7) // 8, "big")
        return _ctrl(v.type, len(b)) + b
    if isinstance(v, bool):
        return _ctrl(14, int(v))
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return _ctrl(2, len(b)) + b
    if isinstance(v, bytes):
        return _ctrl(4, len(v)) + v
    if isinstance(v, float):
        return _ctrl(3, 8) + struct.pack(">d", v)
    if isinstance(v, int):
        if v < 0:
            return _ctrl(8, 4) + struct.pack(">i", v)
        b = v.to_bytes((v.bit_length() + 7) // 8, "big")
        type_ = 5 if v < 1 << 16 else 6 if v < 1 << 32 else 9 if v < 1 << 64 else 10
        return _ctrl(type_, len(b)) + b
    if isinstance(v, dict):
        return _ctrl(7, len(v)) + b"".join(enc(k) + enc(x) for k, x in v.items())
    if isinstance(v, list):
        return _ctrl(11, len(v)) + b"".join(enc(x) for x in v)
    raise TypeError(type(v))


def write_mmdb(
    path: Path,
    entries: list[tuple[str, Any]],
    database_type: str,
    record_size: int = 28,
    ip_version: int = 6,
) -> None:
    """A MaxMind DB (format 2.0) with one record per network; IPv4 networks
    live at ::a.b.c.d/96+n of an IPv6 tree, as MaxMind's writer puts them."""
    data = b""
    offsets: list[int] = []
    for _, rec in entries:
        offsets.append(len(data))
        data += enc(rec)
    tree: list[list[Any]] = [[None, None]]  # child: ("n", idx) | ("d", offset) | None
    for (net_s, _), off in zip(entries, offsets, strict=True):
        net = ipaddress.ip_network(net_s)
        width = 32 if ip_version == 4 else 128
        bits = net.prefixlen + (96 if net.version == 4 and ip_version == 6 else 0)
        value = int(net.network_address)
        node = 0
        for depth in range(bits):
            b = (value >> (width - 1 - depth)) & 1
            if depth == bits - 1:
                tree[node][b] = ("d", off)
            else:
                if tree[node][b] is None:
                    tree.append([None, None])
                    tree[node][b] = ("n", len(tree) - 1)
                node = tree[node][b][1]
    n = len(tree)

    def rec_value(child: Any) -> int:
        if child is None:
            return n
        kind, x = child
        return int(x) if kind == "n" else n + 16 + int(x)

    out = bytearray()
    for left_c, right_c in tree:
        left, right = rec_value(left_c), rec_value(right_c)
        if record_size == 24:
            out += left.to_bytes(3, "big") + right.to_bytes(3, "big")
        elif record_size == 28:
            mid = ((left >> 24) << 4) | (right >> 24)
            out += (left & 0xFFFFFF).to_bytes(3, "big") + bytes([mid])
            out += (right & 0xFFFFFF).to_bytes(3, "big")
        else:
            out += left.to_bytes(4, "big") + right.to_bytes(4, "big")
    meta = {
        "binary_format_major_version": Uint(5, 2),
        "binary_format_minor_version": Uint(5, 0),
        "build_epoch": Uint(9, 1700000000),
        "database_type": database_type,
        "description": {"en": "flowtop test"},
        "ip_version": Uint(5, ip_version),
        "languages": ["en"],
        "node_count": Uint(6, n),
        "record_size": Uint(5, record_size),
    }
    path.write_bytes(bytes(out) + bytes(16) + data + b"\xab\xcd\xefMaxMind.com" + enc(meta))


HOSTILE_ORG = "\x1b[2J[bold]Evil\u202eCorp\x1b]52;c;SGVsbG8=\x07\u200b\x9b31m!"


def test_hostile_strings_and_types(tmp_path: Path) -> None:
    entries = [
        (
            "10.1.0.0/16",
            {"autonomous_system_number": 64500, "autonomous_system_organization": HOSTILE_ORG},
        ),
        ("10.2.0.0/16", {"autonomous_system_number": "64501", "autonomous_system_organization": 7}),
        ("10.3.0.0/16", {"autonomous_system_number": 1 << 40}),
        ("10.4.0.0/16", {"autonomous_system_number": True}),
        ("10.5.0.0/16", ["not", "a", "map"]),
        (
            "10.6.0.0/16",
            {"autonomous_system_number": 64502, "autonomous_system_organization": "x" * 500},
        ),
        (
            "2001:db8::/32",
            {
                "autonomous_system_number": 64503,
                "autonomous_system_organization": "\x1b]0;title\x1b\\ok",
            },
        ),
    ]
    write_mmdb(tmp_path / "asn.mmdb", entries, "GeoLite2-ASN")
    city_entries = [
        (
            "10.1.0.0/16",
            {"country": {"iso_code": "\x1b["}, "city": {"names": {"en": "[red]Pwn\x1b[0m\u2028x"}}},
        ),
        ("10.2.0.0/16", {"country": "US", "city": {"names": "Paris"}}),
        ("10.3.0.0/16", {"country": {"iso_code": "de"}, "city": {"names": {"en": 5}}}),
    ]
    write_mmdb(tmp_path / "city.mmdb", city_entries, "GeoLite2-City")
    w: list[str] = []
    e = enricher(w, geoip_asn=str(tmp_path / "asn.mmdb"), geoip_city=str(tmp_path / "city.mmdb"))
    assert w == []
    ips = [
        ipaddress.ip_address(a)
        for a in (
            "10.1.2.3",
            "10.2.0.1",
            "10.3.0.1",
            "10.4.0.1",
            "10.5.0.1",
            "10.6.0.1",
            "2001:db8::5",
        )
    ]
    ents = [e.entity(i) for i in e.lookup(*flow_addrs(ips)).tolist()]
    assert (ents[0].asn, ents[0].as_org) == (64500, "[bold]EvilCorp!")
    assert (ents[0].country, ents[0].city) == (None, "[red]Pwnx")
    assert (ents[1].asn, ents[1].as_org, ents[1].country, ents[1].city) == (None, None, None, None)
    assert ents[2].asn is None and ents[2].country == "DE" and ents[2].city is None
    assert ents[3].asn is None
    assert ents[4] == Entity()
    assert ents[5].as_org is not None and len(ents[5].as_org) == 96
    assert ents[6].as_org == "ok"
    for ent in ents:
        for s in (ent.as_org, ent.city, ent.country):
            assert s is None or not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in s)
    e.close()


@pytest.mark.parametrize("record_size", [24, 28, 32])
@pytest.mark.parametrize("ip_version", [4, 6])
def test_tree_walk_record_sizes(tmp_path: Path, record_size: int, ip_version: int) -> None:
    """The vectorised walk against libmaxminddb on trees of each record size
    (flowtop cross-checks every decoded record's prefix length with it too)."""
    rng = np.random.default_rng(record_size + ip_version)
    nets: dict[str, int] = {}
    while len(nets) < 300:
        plen = int(rng.integers(8, 29))
        a = ipaddress.IPv4Address(int(rng.integers(0, 1 << 32)))
        net = ipaddress.ip_network(f"{a}/{plen}", strict=False)
        if not any(net.overlaps(ipaddress.ip_network(o)) for o in nets):
            nets[str(net)] = len(nets) + 1
    if ip_version == 6:
        for i in range(100):
            nets[f"2001:db8:{i:x}::/48"] = 1000 + i
    entries = [(n, {"autonomous_system_number": asn}) for n, asn in nets.items()]
    path = tmp_path / "t.mmdb"
    write_mmdb(path, entries, "Test-ASN", record_size=record_size, ip_version=ip_version)
    db = MmdbDatabase(str(path), KIND_ASN)
    assert db.record_size == record_size
    probes: list[IP] = []
    for n in nets:
        net = ipaddress.ip_network(n)
        probes += [net.network_address, net.broadcast_address]
    probes += [ipaddress.IPv4Address(int(x)) for x in rng.integers(0, 1 << 32, 2000)]
    rid = db.lookup(canonical_from_ips(probes))
    import maxminddb

    with maxminddb.open_database(str(path)) as ref:
        for ip, r in zip(probes, rid.tolist(), strict=True):
            if ip.version == 6 and ip_version == 4:
                continue
            want: Any = ref.get(str(ip))
            got = db.results[r][0]
            assert got == (want["autonomous_system_number"] if want else None), ip
    db.close()
