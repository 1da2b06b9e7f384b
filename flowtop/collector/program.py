"""Compile bpf/tc.c with bcc and give raw access to its maps.

Options reach the C code as -D cflags; the source is never edited.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowtop.collector import layout
from flowtop.errors import KernelFeatureError, NotRootError

BPF_DIR = Path(os.environ.get("FLOWTOP_BPF_DIR", Path(__file__).resolve().parents[2] / "bpf"))


def import_bcc() -> Any:
    try:
        import bcc
    except ImportError:
        raise KernelFeatureError(
            "bcc is not importable: install Debian's python3-bpfcc (run `make setup`)"
        ) from None
    return bcc


@dataclass(frozen=True, slots=True)
class ProgramOptions:
    flow_map_size: int = 65536
    iface_map_size: int = 4096
    iface_slots: int = 4096

    def cflags(self) -> list[str]:
        return [
            f"-I{BPF_DIR}",
            f"-DFT_FLOW_MAP_SIZE={self.flow_map_size}",
            f"-DFT_IFACE_MAP_SIZE={self.iface_map_size}",
            f"-DFT_IFACE_SLOTS={self.iface_slots}",
        ]


class BatchDrainer:
    """Drains a hash map with BPF_MAP_LOOKUP_AND_DELETE_BATCH into raw buffers.

    One syscall per chunk instead of two per key, and the keys and values
    arrive as contiguous bytes that numpy views without per-entry ctypes.
    """

    def __init__(self, lib: Any, capacity: int, key_dtype: np.dtype, val_dtype: np.dtype) -> None:
        self._lib = lib
        self._cap = capacity
        self._kd = key_dtype
        self._vd = val_dtype
        self._keys = ct.create_string_buffer(capacity * key_dtype.itemsize)
        self._vals = ct.create_string_buffer(capacity * val_dtype.itemsize)

    def drain(self, fd: int) -> tuple[np.ndarray, np.ndarray]:
        in_batch = ct.c_uint32(0)
        out_batch = ct.c_uint32(0)
        count = ct.c_uint32(0)
        total = 0
        first = True
        ks, vs = self._kd.itemsize, self._vd.itemsize
        while total < self._cap:
            count.value = self._cap - total
            res = self._lib.bpf_lookup_and_delete_batch(
                fd,
                None if first else ct.byref(in_batch),
                ct.byref(out_batch),
                ct.byref(self._keys, ks * total),
                ct.byref(self._vals, vs * total),
                ct.byref(count),
            )
            err = ct.get_errno()
            total += count.value
            if res != 0:
                if err == errno.ENOENT:
                    break
                raise KernelFeatureError(
                    f"draining the flow map failed: {os.strerror(err or -res)}"
                )
            first = False
            in_batch.value = out_batch.value
        keys = np.frombuffer(memoryview(self._keys), dtype=self._kd, count=total).copy()
        vals = np.frombuffer(memoryview(self._vals), dtype=self._vd, count=total).copy()
        return keys, vals


class TcProgram:
    """The compiled TC programs and their maps."""

    def __init__(self, options: ProgramOptions) -> None:
        if os.geteuid() != 0:
            raise NotRootError("flowtop needs root (or CAP_BPF and CAP_NET_ADMIN) to load BPF")
        bcc = import_bcc()
        self.options = options
        src = BPF_DIR / "tc.c"
        if not src.is_file():
            raise KernelFeatureError(f"BPF source not found: {src}")
        try:
            with _quiet_stderr():
                self.bpf = bcc.BPF(src_file=str(src).encode(), cflags=options.cflags())
            self.ingress = self.bpf.load_func(b"flowtop_ingress", bcc.BPF.SCHED_CLS)
            self.egress = self.bpf.load_func(b"flowtop_egress", bcc.BPF.SCHED_CLS)
        except Exception as exc:  # bcc raises bare Exception for compile/load failures
            raise KernelFeatureError(f"cannot compile or load the TC program: {exc}") from None
        self._lib = bcc.libbcc.lib
        self._inner = [self.bpf[b"flows_a"].map_fd, self.bpf[b"flows_b"].map_fd]
        self._outer = self.bpf[b"flow_maps"].map_fd
        self._active = 0
        self._set_active(0)
        self._drainer = BatchDrainer(
            self._lib, options.flow_map_size, layout.FLOW_KEY, layout.FLOW_STATS
        )
        self._ifaces = self.bpf[b"iface_counters"]
        self._slots = self.bpf[b"iface_slots"]
        self._counters = self.bpf[b"counters"]

    def _set_active(self, idx: int) -> None:
        # Updating an array-of-maps slot waits for an RCU grace period in the
        # kernel: once this returns, no program still uses the old map.
        key = ct.c_int(0)
        val = ct.c_int(self._inner[idx])
        if self._lib.bpf_update_elem(self._outer, ct.byref(key), ct.byref(val), 0) != 0:
            raise KernelFeatureError(f"cannot switch flow maps: {os.strerror(ct.get_errno())}")
        self._active = idx

    def drain_flows(self) -> tuple[np.ndarray, np.ndarray]:
        """Swap interval maps and return (keys, stats) of the interval just ended."""
        old = self._active
        self._set_active(1 - old)
        return self._drainer.drain(self._inner[old])

    def iface_counters(
        self, ifindexes: Iterable[int]
    ) -> dict[tuple[int, int, int], tuple[int, int]]:
        """(ifindex, direction, family) -> (packets, bytes), summed over CPUs."""
        out: dict[tuple[int, int, int], tuple[int, int]] = {}
        for ifindex in ifindexes:
            if ifindex >= self.options.iface_slots:
                continue
            for slot_key in _iface_slot_keys(ifindex):
                per_cpu = self._slots[ct.c_int(layout.iface_slot(*slot_key))]
                out[slot_key] = (
                    sum(v.packets for v in per_cpu),
                    sum(v.bytes for v in per_cpu),
                )
        for k, per_cpu in self._ifaces.items():
            out[(k.ifindex, k.direction, k.family)] = (
                sum(v.packets for v in per_cpu),
                sum(v.bytes for v in per_cpu),
            )
        return out

    def reset_iface(self, ifindex: int) -> None:
        """Zero an interface's counters (at attach: ifindexes can be reused)."""
        if ifindex < self.options.iface_slots:
            for slot_key in _iface_slot_keys(ifindex):
                self._slots.clearitem(ct.c_int(layout.iface_slot(*slot_key)))
        for k in list(self._ifaces.keys()):
            if k.ifindex == ifindex:
                with contextlib.suppress(KeyError):
                    del self._ifaces[k]

    def counters(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(layout.COUNTERS):
            out[name] = int(sum(self._counters[ct.c_int(i)]))
        return out

    def close(self) -> None:
        self.bpf.cleanup()


def _iface_slot_keys(ifindex: int) -> Iterator[tuple[int, int, int]]:
    for direction in (layout.DIR_INGRESS, layout.DIR_EGRESS):
        for family in range(len(layout.FAMILIES)):
            yield (ifindex, direction, family)


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """bcc's clang prints header warnings straight to fd 2; keep them for errors only."""
    if os.environ.get("FLOWTOP_BCC_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except Exception as exc:
            os.dup2(saved, 2)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            errors = [ln for ln in text.splitlines() if "error" in ln]
            if errors:
                raise type(exc)(f"{exc}: {errors[0]}") from exc
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
