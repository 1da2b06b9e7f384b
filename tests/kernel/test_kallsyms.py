"""The build child's one-line /proc/kallsyms (flowtop/kernel/kallsyms.py).

Ground truth: the real /proc/kallsyms (does the kernel have
bpf_probe_read_kernel?), what a process inside and outside the child's
mount namespace reads there, both processes' /proc/PID/mountinfo, and the
instructions bcc compiles with and without the shortcut (the helper a
bpf_probe_read_kernel call becomes is the one thing bcc reads kallsyms for).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowtop.kernel import kallsyms

from .dump import RUN_DIR, python

pytestmark = pytest.mark.kernel

BPF_FUNC_probe_read = 4
BPF_FUNC_probe_read_kernel = 113
BPF_CALL = 0x85  # BPF_JMP | BPF_CALL

SOURCE = """
int reads(struct __sk_buff *skb) {
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)(long)skb->data);
    return v == 7;
}
"""

# argv: "short" or "real", the source; prints what /proc/kallsyms held
# during the compile (its line count and first line), then the hex of the
# compiled instructions; between the two it waits for a line on stdin.
CHILD = """
import sys, types
from flowtop.kernel import compiler, kallsyms
from flowtop.kernel.build import SCHED_CLS, Request
mode, src = sys.argv[1], sys.argv[2]
if mode == "short":
    assert kallsyms.private()
bcc = compiler.load_bcc()
def peek(**kw):
    with open("/proc/kallsyms") as f:
        lines = f.read().splitlines()
    print(len(lines), lines[0] if lines else "-", flush=True)
    sys.stdin.readline()
    return bcc.BPF(**kw)
req = Request(src=src, cflags=[], first=[("reads", SCHED_CLS)], maps=[], what="the test program")
b, _meta = compiler._compile(types.SimpleNamespace(BPF=peek), req)
with open("/proc/kallsyms") as f:
    after = len(f.read().splitlines())
print(after, b.dump_func(b"reads").hex(), flush=True)
"""


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def _real_has_symbol() -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.rstrip("\n").split(" ")[2:3] == ["bpf_probe_read_kernel"] for line in f)


def _mounted_on_kallsyms(pid: int | str) -> bool:
    with open(f"/proc/{pid}/mountinfo") as f:
        return any(line.split()[4] == "/proc/kallsyms" for line in f)


def _helpers(insns: bytes) -> list[int]:
    """The helper ids of the BPF_CALL instructions in insns."""
    out = []
    for i in range(0, len(insns), 8):
        if insns[i] == BPF_CALL and insns[i + 1] >> 4 == 0:
            out.append(int.from_bytes(insns[i + 4 : i + 8], sys.byteorder, signed=True))
    return out


def _compile(mode: str, src: Path) -> tuple[int, str, int, bytes]:
    """The child's view during and after the compile, and the instructions;
    while it compiles, this process's own view is checked."""
    proc = subprocess.Popen(
        [python(), "-c", CHILD, mode, str(src)],
        cwd=RUN_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        count, first = proc.stdout.readline().split(" ", 1)
        # Meanwhile, here (outside its namespace): the real file, no mount.
        assert not _mounted_on_kallsyms("self")
        with open("/proc/kallsyms") as f:
            assert len(f.read().splitlines()) > 1000
        assert _mounted_on_kallsyms(proc.pid) == (mode == "short")
        proc.stdin.write("\n")
        proc.stdin.flush()
        after, insns = proc.stdout.readline().split()
    finally:
        proc.stdin.close()
        rc = proc.wait(timeout=60)
    assert rc == 0
    return int(count), first.strip(), int(after), bytes.fromhex(insns)


def test_the_btf_answers_what_kallsyms_does() -> None:
    assert kallsyms.has_symbol() == _real_has_symbol()


def test_the_compile_reads_one_line_and_builds_the_same(tmp_path: Path) -> None:
    """With the shortcut the compile sees one line (and only while it
    compiles: the real file after), nothing is mounted outside the child,
    and bcc builds the very same instructions as from the real file: a
    bpf_probe_read_kernel call stays that helper."""
    src = tmp_path / "reads.c"
    src.write_text(SOURCE)
    real_count, _first, _after, real_insns = _compile("real", src)
    count, first, after, insns = _compile("short", src)
    assert real_count > 1000
    has = _real_has_symbol()
    assert count == int(has)
    if has:
        assert first.split()[1:] == ["T", "bpf_probe_read_kernel"], first
    assert after > 1000  # unmounted once the compile is done
    assert insns == real_insns
    helper = BPF_FUNC_probe_read_kernel if has else BPF_FUNC_probe_read
    assert helper in _helpers(insns), _helpers(insns)
    assert not _mounted_on_kallsyms("self")
