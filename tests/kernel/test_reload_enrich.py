"""`flowtop --export-only` with MaxMind databases, SIGHUP twice, SIGTERM: every
reload replaces the databases and closes the ones it replaced.

flowtop.enrich.geo copies each database file into a memfd ("flowtop-mmdb")
and reads it through maxminddb, which keeps one descriptor to it open, and
through a mapping. A database not closed would stay in /proc/<pid>/fd and
/proc/<pid>/maps. After start and after each reload there must be exactly
one copy per configured database (ASN and City): one descriptor each, the
mapped ones the same, new ones each time.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from .dump import READY_MARK, READY_TIMEOUT, REPO, export_only
from .netns import Pair, flowtop_filters

pytestmark = pytest.mark.kernel

MMDB = REPO / "tests" / "data" / "mmdb"


def _write(path: Path, asn: Path) -> None:
    # Both databases named: nothing is searched for in /usr/share/GeoIP.
    path.write_text(
        '[interfaces]\ninclude = ["va"]\n'
        f'[enrich]\ngeoip_asn = "{asn}"\ngeoip_city = "{MMDB / "GeoLite2-City-Test.mmdb"}"\n'
    )
    path.chmod(0o600)


def _databases(pid: int) -> dict[int, int]:
    """inode -> size of every database copy the process has mapped."""
    out: dict[int, int] = {}
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if "flowtop-mmdb" not in line:
                continue
            span, _perms, _off, _dev, inode = line.split()[:5]
            out[int(inode)] = os.stat(f"/proc/{pid}/map_files/{span}").st_size
    return out


def _database_fds(pid: int) -> list[int]:
    """The inode of every descriptor the process holds to a database copy."""
    inodes = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "flowtop-mmdb" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                inodes.append(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except OSError:  # closed meanwhile
            continue
    return sorted(inodes)


def test_sighup_twice_keeps_exactly_one_copy_of_each_database(
    quiet_pair: Pair, tmp_path: Path
) -> None:
    p = quiet_pair
    first, second = tmp_path / "asn-1.mmdb", tmp_path / "asn-2.mmdb"
    for copy in (first, second):
        shutil.copyfile(MMDB / "GeoLite2-ASN-Test.mmdb", copy)
    sizes = sorted((first.stat().st_size, (MMDB / "GeoLite2-City-Test.mmdb").stat().st_size))
    conf = tmp_path / "flowtop.toml"
    _write(conf, first)
    proc, err, ready = export_only(p.a, "--config", str(conf))
    seen: list[dict[int, int]] = []
    fds: list[list[int]] = []
    try:
        assert ready.wait(READY_TIMEOUT), "".join(err.lines)
        seen.append(_databases(proc.pid))
        fds.append(_database_fds(proc.pid))
        for n, asn in ((1, second), (2, first)):
            _write(conf, asn)
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while "".join(err.lines).count("config reloaded") < n:
                assert proc.poll() is None, "".join(err.lines)
                assert time.monotonic() < deadline, "".join(err.lines)
                time.sleep(0.05)
            seen.append(_databases(proc.pid))
            fds.append(_database_fds(proc.pid))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        err.join(5)
    text = "".join(err.lines)
    assert rc == 0, text
    assert READY_MARK in text and "Traceback" not in text, text
    assert [sorted(s.values()) for s in seen] == [sizes] * 3, seen
    start, after_one, after_two = (set(s) for s in seen)
    assert not start & after_one and not after_one & after_two, seen  # new copies each time
    assert fds == [sorted(s) for s in seen], (fds, seen)  # one descriptor per copy
    for hook in ("ingress", "egress"):
        assert flowtop_filters(p.a, "va", hook) == []
