"""Bad input: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def flowtop(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flowtop", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_one_line_error(p: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert words in lines[0], lines[0]
    assert p.stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["dump", "--duration", "-1"], 2, "--duration must be positive"),
        (["dump", "--duration", "abc"], 2, "invalid float value"),
        (["dump", "--tc-priority", "70000"], 2, "tc priority must be 1..65535"),
        (["dump", "--max-flows", "0"], 2, "max flows must be"),
        (["dump", "--idle-timeout", "0"], 2, "idle timeout must be positive"),
        (["dump", "-i", "bad name"], 2, "not an interface name"),
        (["--bogus"], 2, "unrecognized arguments"),
        (["nosuchcommand"], 2, "invalid choice"),
    ],
)
def test_bad_options(args: list[str], code: int, words: str) -> None:
    assert_one_line_error(flowtop(*args), code, words)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to get past the privilege check")
def test_unknown_interface() -> None:
    assert_one_line_error(flowtop("dump", "-i", "nosuchif0"), 3, "no such interface: nosuchif0")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody"
)
def test_not_root() -> None:
    p = flowtop("dump", "-i", "lo", "--duration", "1", user="nobody")
    assert_one_line_error(p, 77, "needs root")


CORE_MODULES = (
    "flowtop.engine", "flowtop.commands", "flowtop.flowtable", "flowtop.dump", "flowtop.view",
    "flowtop.filterexpr", "flowtop.record", "flowtop.sources", "flowtop.outputs",
    "flowtop.service", "flowtop.collector.collector", "flowtop.export.ipfix",
    "flowtop.export.prometheus", "flowtop.enrich", "flowtop.enrich.dns", "flowtop.tcphealth",
    "flowtop.collector.sockops",
)  # fmt: skip


def test_core_modules_do_not_import_textual() -> None:
    """The engine, collector and exporters work without the UI libraries (STYLE.md)."""
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {CORE_MODULES!r}]; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def _main_with(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}; from flowtop.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_bcc_missing() -> None:
    p = _main_with("sys.modules['bcc'] = None", "dump", "-i", "lo", "--duration", "1")
    assert_one_line_error(p, 69, "bcc is not importable")


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")
def test_program_that_does_not_compile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "tc.c").write_text("int flowtop_ingress(struct __sk_buff *skb) { return nope; }\n")
    os.environ["FLOWTOP_BPF_DIR"] = str(tmp_path)
    try:
        p = flowtop("dump", "-i", "lo", "--duration", "1")
    finally:
        del os.environ["FLOWTOP_BPF_DIR"]
    assert_one_line_error(p, 69, "cannot compile or load the TC program")
