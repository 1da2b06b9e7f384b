"""How this process hands freed memory back: large blocks go straight to the OS.

Each interval the engine builds and drops arrays of megabytes (a drained
batch of 65,536 flows, its hashes, the merge's temporaries). glibc serves
blocks above its mmap threshold (128 KiB) with mmap and unmaps them on
free, but it raises that threshold each time such a block is freed, up to
32 MiB, after which the same arrays come from the heap and their pages stay
with the process when freed. A long-running flowtop on a router would keep
a high-water mark of transient arrays forever: at 100k flows that is about
a third of its table's memory (bench/memory.py: 306 -> 192 bytes/flow).

Fixing the threshold (mallopt(M_MMAP_THRESHOLD), which also turns the
raising off) keeps large blocks on mmap: the cost is fresh pages, faulted in
again, for each large array (well under a millisecond per interval at 65k
flows; a one-off 1M-flow merge takes about 1.5x as long).

$MALLOC_MMAP_THRESHOLD_ set by the user wins: then nothing is changed.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024  # glibc's initial value


def return_large_frees() -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc mallopt
    (another libc) or the user chose a threshold."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:  # the process's own symbols (libc among them): no library search
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
