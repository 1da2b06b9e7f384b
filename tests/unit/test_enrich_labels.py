"""CIDR labels and local networks.

The vectorised longest-prefix match is compared with a brute-force search in
Python (`ipaddress` containment over every prefix) on random addresses in
and around the prefixes; local networks with what `ip -j addr` reports.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flowtop.enrich import Enricher, EnrichOptions, Entity
from flowtop.enrich.geo import canonical_from_ips
from flowtop.enrich.labels import Label, PrefixTable, host_networks, load_labels
from flowtop.errors import ConfigError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

EXAMPLE = """\
# name        prefixes                              options
corp          10.0.0.0/8                            zone=a
dc            10.20.0.0/16
payments-db   10.20.0.0/24                          zone=b
gateway       10.20.0.1                             # a host
office        192.168.10.0/24 2001:db8:10::/48
v6-all        ::/0
lab           2001:db8::/32\tzone=lab
lab-host      2001:db8:10::7/128
everything    0.0.0.0/0
"""


def flow_addrs(ips: list[IP]) -> tuple[np.ndarray, np.ndarray]:
    raw = np.zeros((len(ips), 16), dtype=np.uint8)
    ver = np.zeros(len(ips), dtype=np.uint8)
    for i, ip in enumerate(ips):
        raw[i, : len(ip.packed)] = np.frombuffer(ip.packed, dtype=np.uint8)
        ver[i] = ip.version
    return raw.view("V16").ravel(), ver


def brute_force(entries: list[tuple[Net, Label]], ip: IP) -> Label | None:
    best: tuple[int, Label] | None = None
    for net, label in entries:
        if net.version == ip.version and ip in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, label)
    return best[1] if best else None


def entries_of(text: str) -> list[tuple[Net, Label]]:
    """The file's entries parsed by hand, for the brute-force side."""
    out = []
    for line in text.splitlines():
        toks = line.split("#")[0].split()
        if not toks:
            continue
        zone = next((t[5:] for t in toks if t.startswith("zone=")), None)
        for t in toks[1:]:
            if "=" not in t:
                out.append((ipaddress.ip_network(t), Label(toks[0], zone)))
    return out


def test_example_file_longest_prefix_wins(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(EXAMPLE)
    e = Enricher(
        EnrichOptions(labels=str(path), search_default_paths=False, local_networks=[]),
        warn=pytest.fail,
    )
    cases = {
        "10.20.0.1": Entity(label="gateway"),
        "10.20.0.77": Entity(label="payments-db", zone="b"),
        "10.20.1.1": Entity(label="dc"),
        "10.99.0.1": Entity(label="corp", zone="a"),
        "192.168.10.20": Entity(label="office"),
        "8.8.8.8": Entity(label="everything"),
        "2001:db8:10::7": Entity(label="lab-host"),
        "2001:db8:10::8": Entity(label="office"),
        "2001:db8:ff::1": Entity(label="lab", zone="lab"),
        "2a00::1": Entity(label="v6-all"),
        # an IPv4-mapped address is the IPv4 address, not under ::/0
        "::ffff:10.20.0.77": Entity(label="payments-db", zone="b"),
    }
    ips = [ipaddress.ip_address(a) for a in cases]
    ids = e.lookup(*flow_addrs(ips))
    for (addr, want), eid in zip(cases.items(), ids.tolist(), strict=True):
        assert e.entity(eid) == want, addr
    assert e.status()["labels"] == f"10 prefixes from {path}"


def test_vectorised_match_equals_brute_force() -> None:
    rnd = random.Random(7)
    nets: set[Net] = set()
    while len(nets) < 400:
        if rnd.random() < 0.6:
            plen = rnd.randint(0, 32)
            net: Net = ipaddress.ip_network(
                f"{ipaddress.IPv4Address(rnd.getrandbits(32))}/{plen}", strict=False
            )
        else:
            plen = rnd.choice([0, 8, 16, 32, 48, 56, 64, 65, 96, 100, 127, 128])
            net = ipaddress.ip_network(
                f"{ipaddress.IPv6Address(rnd.getrandbits(128))}/{plen}", strict=False
            )
        nets.add(net)
    entries = [(n, Label(f"n{i}", None)) for i, n in enumerate(sorted(nets, key=str))]
    table = PrefixTable([(n, i) for i, (n, _) in enumerate(entries)])
    probes: list[IP] = []
    for net, _ in entries:  # inside, at the edges, just outside
        first, last = int(net.network_address), int(net.broadcast_address)
        cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        top = (1 << net.max_prefixlen) - 1
        for v in (first, last, rnd.randint(first, last), first - 1, last + 1):
            if 0 <= v <= top:
                probes.append(cls(v))
    probes += [ipaddress.IPv4Address(rnd.getrandbits(32)) for _ in range(2000)]
    probes += [ipaddress.IPv6Address(rnd.getrandbits(128)) for _ in range(2000)]
    got = table.match(canonical_from_ips(probes)).tolist()
    labels = [lab for _, lab in entries]
    hits = 0
    for ip, g in zip(probes, got, strict=True):
        want = brute_force(entries, ip)
        assert (labels[g] if g >= 0 else None) == want, ip
        hits += want is not None
    assert hits > len(probes) // 2


def test_hostile_names_are_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(
        "\x1b[31mred\x1b[0m\u202e 10.0.0.0/8 zone=\x1b]52;c;QUJD\x07b\n"
        "[bold]markup[/bold] 10.1.0.0/16\n".encode()
    )
    ls = load_labels(str(path))
    assert ls.labels == [Label("red", "b"), Label("[bold]markup[/bold]", None)]


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("10.0.0.0/8 zone=a", "2: missing name before prefix '10.0.0.0/8'"),
        ("db 10.0.0.300/8", "2: bad prefix '10.0.0.300/8'"),
        ("db 10.20.0.1/24", "2: host bits set in '10.20.0.1/24' (did you mean 10.20.0.0/24?)"),
        ("db 10.0.0.0/8 color=red", "2: unknown key 'color' (known: zone)"),
        ("db zone=a", "2: no prefix for 'db'"),
        ("db 10.0.0.0/8 zone=a zone=b", "2: zone given twice"),
        ("db 10.0.0.0/8 zone=", "2: empty zone"),
        ("\x1b[2J 10.0.0.0/8", "2: name is empty once control characters are removed"),
        ("zone=a 10.0.0.0/8", "2: missing name before 'zone=a'"),
        ("db 2001:db8::/129", "2: bad prefix '2001:db8::/129'"),
        ("again 192.168.0.0/16", "2: prefix 192.168.0.0/16 already labelled at line 1"),
    ],
)
def test_bad_lines_are_one_line_config_errors(tmp_path: Path, line: str, what: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(f"ok 192.168.0.0/16\n{line}\n")
    with pytest.raises(ConfigError) as ei:
        Enricher(EnrichOptions(labels=str(path), search_default_paths=False, local_networks=[]))
    msg = str(ei.value)
    assert msg == f"labels {path}:{what}", msg
    assert "\n" not in msg and "\x1b" not in msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^labels .*/nope: No such file or directory$"):
        load_labels(str(tmp_path / "nope"))
    bad = tmp_path / "latin1"
    bad.write_bytes(b"ok 10.0.0.0/8\ncaf\xe9 10.1.0.0/16\n")
    with pytest.raises(ConfigError, match=r"latin1:2: not UTF-8 text$"):
        load_labels(str(bad))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"not a regular file \(a FIFO\)$"):
        load_labels(str(fifo))


def test_reload_changed_labels_and_keep_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("old 10.0.0.0/8\n")
    w: list[str] = []
    e = Enricher(
        EnrichOptions(labels=str(path), search_default_paths=False, local_networks=[]), w.append
    )
    one = flow_addrs([ipaddress.ip_address("10.1.1.1")])
    old = int(e.lookup(*one)[0])
    assert e.entity(old).label == "old"
    assert e.maybe_reload() is False
    tmp = tmp_path / "new"
    tmp.write_text("new 10.0.0.0/8 zone=z\n")
    os.replace(tmp, path)
    assert e.maybe_reload() is True
    new = int(e.lookup(*one)[0])
    assert e.entity(new) == Entity(label="new", zone="z") and e.entity(old).label == "old"
    tmp.write_text("broken 10.0.0.0/33\n")
    os.replace(tmp, path)
    assert e.maybe_reload() is False
    assert w == [f"labels {path}:1: bad prefix '10.0.0.0/33'; keeping the labels loaded before"]
    assert e.maybe_reload() is False and len(w) == 1
    assert e.entity(int(e.lookup(*one)[0])).label == "new"


def test_local_networks_given_and_combined_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("lan 192.168.1.0/24\n")
    e = Enricher(
        EnrichOptions(
            labels=str(path),
            search_default_paths=False,
            local_networks=[
                ipaddress.ip_network("192.168.0.0/16"),
                ipaddress.ip_network("fd00::/8"),
            ],
        ),
        warn=pytest.fail,
    )
    ips = [ipaddress.ip_address(a) for a in ("192.168.1.5", "192.168.2.5", "fd12::1", "10.0.0.1")]
    ents = [e.entity(i) for i in e.lookup(*flow_addrs(ips)).tolist()]
    assert ents == [
        Entity(label="lan", local=True),
        Entity(local=True),
        Entity(local=True),
        Entity(),
    ]
    assert e.active and e.status()["local-networks"] == "2 networks given"


def _ip_addr_networks() -> set[Net]:
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True)
    nets: set[Net] = set()
    for link in json.loads(out.stdout):
        for a in link.get("addr_info", []):
            nets.add(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
    return nets


def test_local_networks_detected_like_ip_addr() -> None:
    """Auto-detection (netlink) against iproute2's view of this namespace."""
    want = _ip_addr_networks()
    assert set(host_networks()) == want
    e = Enricher(EnrichOptions(search_default_paths=False), warn=pytest.fail)
    assert set(e.local_networks) == want
    lo = flow_addrs([ipaddress.ip_address("127.0.0.1")])
    assert e.entity(int(e.lookup(*lo)[0])).local is True


def test_address_cache_survives_hash_collisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address cache keys on a 64-bit hash and compares full addresses;
    with a hash that collides all the time the answers must not change."""
    from flowtop.enrich import enricher as mod

    path = tmp_path / "labels.txt"
    path.write_text("".join(f"n{i} 10.0.{i}.0/24\nm{i} fd00:0:0:{i:x}::/64\n" for i in range(64)))
    rnd = random.Random(3)
    ips: list[IP] = []
    for _ in range(3000):
        i = rnd.randrange(70)
        if rnd.random() < 0.5:
            ips.append(ipaddress.IPv4Address(f"10.0.{i}.{rnd.randrange(256)}"))
        else:
            ips.append(ipaddress.IPv6Address(f"fd00:0:0:{i:x}::{rnd.randrange(1 << 16):x}"))
    opts = EnrichOptions(labels=str(path), search_default_paths=False, local_networks=[])
    good = Enricher(opts)
    want = [good.entity(i) for i in good.lookup(*flow_addrs(ips)).tolist()]
    assert len({w.label for w in want}) > 100
    monkeypatch.setattr(mod, "_hash", lambda hi, lo: lo & np.uint64(3))
    bad = Enricher(opts)
    for _ in range(2):  # cold, then through the cache
        got = [bad.entity(i) for i in bad.lookup(*flow_addrs(ips)).tolist()]
        assert got == want
    small = Enricher(
        EnrichOptions(
            labels=str(path), search_default_paths=False, local_networks=[], cache_max=100
        )
    )
    got = [small.entity(i) for i in small.lookup(*flow_addrs(ips[:500])).tolist()]
    got += [small.entity(i) for i in small.lookup(*flow_addrs(ips[500:])).tolist()]
    assert got == want and small.stats()["cache_clears"] >= 1
