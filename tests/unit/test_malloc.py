"""run/malloc.py: glibc's mmap threshold fixed, so freed large arrays leave the process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowtop.run import malloc

# A fresh interpreter frees one 4 MiB block, allocates 64 MiB in 4 MiB
# blocks and a 200 KiB one after them, frees the 4 MiB ones and prints how
# much of them its RSS still holds. Under glibc's default policy the first
# free raises the threshold, so the blocks come from the heap, whose top
# stays mapped under the 200 KiB block.
PROBE = r"""
import sys
from flowtop.run.malloc import return_large_frees
if sys.argv[1] == "fix":
    assert return_large_frees()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
first = bytearray(4 << 20); del first
before = rss()
blocks = [bytearray(4 << 20) for _ in range(16)]
pin = bytearray(200 << 10)  # allocated above them: it keeps the heap top mapped
del blocks
print(rss() - before)
"""


def _held_kb(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )  # fmt: skip
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_freed_large_blocks_leave_the_process() -> None:
    assert malloc.return_large_frees()  # glibc here
    assert _held_kb("fix") < 8 * 1024
    assert _held_kb("default") > 32 * 1024  # what the fix is for


def test_the_users_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not malloc.return_large_frees()
