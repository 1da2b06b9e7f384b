"""`flowtop doctor` on this machine: every line well formed, bcc works, fallback headers named."""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator

import pytest

from flowtop import doctor

LINE = re.compile(r"^(OK    |WARN  |FAIL  )([a-z0-9 ]+): (\S.*?)( -> fix: \S.*)?$")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="doctor's bcc load needs root")


def run() -> tuple[int, list[str]]:
    out = io.StringIO()
    code = doctor.run_doctor(out)
    return code, out.getvalue().splitlines()


def by_check(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = LINE.match(line)
        assert match, f"malformed doctor line: {line!r}"
        found[match.group(2)] = line
    return found


@needs_root
def test_every_line_is_well_formed_and_flowtop_can_run_here() -> None:
    code, lines = run()
    checks = by_check(lines)
    for line in lines:
        if line.startswith("FAIL"):
            assert " -> fix: " in line, line
    assert not [line for line in lines if line.startswith("FAIL")], lines
    assert code == 0
    for name in ("privileges", "kernel", "bpf program types", "clsact", "attach", "kernel headers"):
        assert name in checks, lines
    # This machine kind runs 6.18: auto must choose TCX (clsact is the fallback).
    assert "uses TCX links" in checks["attach"], checks["attach"]
    for name in ("bcc import", "bcc compile", "bpffs", "tracefs", "cgroup v2"):
        assert name in checks, lines


@needs_root
def test_bcc_compile_check_passes() -> None:
    _, lines = run()
    assert by_check(lines)["bcc compile"].startswith("OK    bcc compile: ")


def test_headers_line_names_the_fallback() -> None:
    release = os.uname().release
    build = f"/lib/modules/{release}/build"
    if not os.path.isdir(build):
        pytest.skip(f"{build} missing")
    target = os.path.realpath(build)
    line = by_check([r.line() for r in doctor.check_headers()])["kernel headers"]
    if release in target:
        assert line.startswith("OK    kernel headers: "), line
    else:
        # This machine: a custom kernel with Debian's 6.1 cloud headers linked in by setup.sh.
        headers = os.path.basename(target).removeprefix("linux-headers-")
        assert line.startswith(f"WARN  kernel headers: fallback headers {headers} in use"), line
        assert f"for kernel {release} (UAPI-only programs)" in line


def test_missing_bcc_is_a_fail_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)
    code, lines = run()
    checks = by_check(lines)
    assert checks["bcc import"].startswith("FAIL  bcc import: import bcc failed")
    assert "make setup" in checks["bcc import"]
    assert checks["bcc compile"].startswith("FAIL  bcc compile: skipped")
    assert code == 1


def test_a_crashing_check_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def check_boom() -> Iterator[doctor.Result]:
        raise RuntimeError("boom")
        yield  # pragma: no cover

    monkeypatch.setattr(doctor, "CHECKS", (check_boom,))
    code, lines = run()
    assert lines == ["FAIL  boom: check crashed: RuntimeError: boom -> fix: report a bug"]
    assert code == 1


def test_warn_does_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    def check_meh() -> Iterator[doctor.Result]:
        yield doctor.warn("meh", "optional thing\nmissing", "install it")
        yield doctor.ok("fine", "yes")

    monkeypatch.setattr(doctor, "CHECKS", (check_meh,))
    code, lines = run()
    assert lines == ["WARN  meh: optional thing missing -> fix: install it", "OK    fine: yes"]
    assert code == 0
