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

from flowtop import resources
from flowtop.errors import KernelFeatureError, NotRootError
from flowtop.kernel import layout

BPF_DIR: Path = resources.bpf_dir()


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
    cache_slots: int = 1024  # per CPU, a power of two
    passive_rtt: bool = True  # passive TCP RTT/retransmits (bpf/tcprtt.h)
    tcp_conn_map_size: int = 65536  # connections it tracks (LRU)

    def cflags(self) -> list[str]:
        return [
            f"-I{BPF_DIR}",
            f"-DFT_FLOW_MAP_SIZE={self.flow_map_size}",
            f"-DFT_IFACE_MAP_SIZE={self.iface_map_size}",
            f"-DFT_IFACE_SLOTS={self.iface_slots}",
            f"-DFT_CACHE_SLOTS={self.cache_slots}",
            f"-DFT_PASSIVE_RTT={int(self.passive_rtt)}",
            f"-DFT_TCP_CONN_MAP_SIZE={self.tcp_conn_map_size}",
        ]


class CacheDrainer:
    """Reads a per-CPU flow cache array with one batch lookup and zeroes it with
    one batch update. Returns one (keys, stats) pair per CPU: each CPU's slots
    hold distinct flows, but one flow can sit in several CPUs' caches."""

    def __init__(self, lib: Any, slots: int, ncpus: int) -> None:
        self._lib = lib
        self._slots = slots
        self._ncpus = ncpus
        self._keys = np.arange(slots, dtype=np.uint32)
        self._vals = np.zeros((slots, ncpus), dtype=layout.FLOW_CACHE_ENTRY)
        self._zeros = np.zeros((slots, ncpus), dtype=layout.FLOW_CACHE_ENTRY)
        self._out_keys = np.zeros(slots, dtype=np.uint32)

    def drain(self, fd: int) -> list[tuple[np.ndarray, np.ndarray]]:
        count = ct.c_uint32(self._slots)
        out_batch = ct.c_uint32(0)
        res = self._lib.bpf_lookup_batch(
            fd,
            None,
            ct.byref(out_batch),
            self._out_keys.ctypes.data_as(ct.c_void_p),
            self._vals.ctypes.data_as(ct.c_void_p),
            ct.byref(count),
        )
        err = ct.get_errno()
        if res != 0 and err != errno.ENOENT:
            raise KernelFeatureError(f"reading the flow cache failed: {os.strerror(err)}")
        if count.value != self._slots:
            raise KernelFeatureError(
                f"reading the flow cache returned {count.value} of {self._slots} slots"
            )
        out = []
        for cpu in range(self._ncpus):
            col = self._vals[:, cpu]
            used = col[col["stats"]["packets"] > 0]
            if len(used):
                out.append((used["key"].copy(), used["stats"].copy()))
        count.value = self._slots
        res = self._lib.bpf_update_batch(
            fd,
            self._keys.ctypes.data_as(ct.c_void_p),
            self._zeros.ctypes.data_as(ct.c_void_p),
            ct.byref(count),
        )
        if res != 0:
            raise KernelFeatureError(
                f"clearing the flow cache failed: {os.strerror(ct.get_errno())}"
            )
        return out


class BatchReader:
    """Reads a whole hash map in one pass of BPF_MAP_LOOKUP_BATCH, or
    BPF_MAP_LOOKUP_AND_DELETE_BATCH with delete=True: one syscall per chunk
    instead of two per key, keys and values as contiguous bytes that numpy
    views without per-entry ctypes. The buffers are kept and grown as
    needed (fresh memory costs a page fault per 4 KiB, more than the
    decoding): what read() returns are views, valid until the next read()."""

    def __init__(
        self,
        lib: Any,
        capacity: int,
        key_dtype: np.dtype,
        val_dtype: np.dtype,
        delete: bool = False,
        what: str = "a BPF map",
    ) -> None:
        self._op = lib.bpf_lookup_and_delete_batch if delete else lib.bpf_lookup_batch
        self._what = what
        self._keys = np.zeros(capacity, dtype=key_dtype)
        self._vals = np.zeros(capacity, dtype=val_dtype)

    def _grow(self, keep: int) -> None:
        keys = np.zeros(2 * len(self._keys), dtype=self._keys.dtype)
        vals = np.zeros(2 * len(self._vals), dtype=self._vals.dtype)
        keys[:keep] = self._keys[:keep]
        vals[:keep] = self._vals[:keep]
        self._keys, self._vals = keys, vals

    def read(self, fd: int) -> tuple[np.ndarray, np.ndarray]:
        in_batch = ct.c_uint32(0)
        out_batch = ct.c_uint32(0)
        count = ct.c_uint32(0)
        first = True
        total = 0
        ks, vs = self._keys.itemsize, self._vals.itemsize
        while True:
            if total == len(self._keys):
                self._grow(total)
            count.value = len(self._keys) - total
            res = self._op(
                fd,
                None if first else ct.byref(in_batch),
                ct.byref(out_batch),
                ct.c_void_p(self._keys.ctypes.data + total * ks),
                ct.c_void_p(self._vals.ctypes.data + total * vs),
                ct.byref(count),
            )
            err = ct.get_errno()
            total += count.value
            if res != 0:
                if err == errno.ENOENT:
                    break
                if err == errno.ENOSPC and count.value == 0:
                    self._grow(total)  # one hash bucket holds more than the room left
                    continue
                raise KernelFeatureError(f"reading {self._what} failed: {os.strerror(err or -res)}")
            first = False
            in_batch.value = out_batch.value
        return self._keys[:total], self._vals[:total]


# A connection nobody has sent anything on for this long is forgotten (it is
# picked up again, without its handshake, if it wakes up).
TCP_IDLE_NS = 300 * 1_000_000_000


class TcpConnTable:
    """Userspace side of the passive TCP tracker (bpf/tcprtt.h): reads the
    connection map, turns it into layout.TCP_SAMPLE records and deletes what
    is finished.

    A closed connection (FIN both ways, or RST) is reported with its final
    figures once more, at the next read, and deleted then: the last ACK
    and any retransmitted FIN still land in the entry meanwhile. Idle ones
    (TCP_IDLE_NS) go at once. LRU evictions are what the kernel inserted
    minus what we deleted minus what is left; the figure is a lower bound
    while inserts race the read, exact when they don't.
    """

    def __init__(self, lib: Any, bpf: Any) -> None:
        self._lib = lib
        self._fd = bpf[b"tcp_conns"].map_fd
        self._reader = BatchReader(
            lib, 4096, layout.TCP_CONN_KEY, layout.TCP_CONN, what="the TCP connection map"
        )
        self._closed: set[bytes] = set()  # reported closed once; deleted at the next read
        self.deleted = 0
        self.evicted = 0

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The map's entries (views, valid until the next read)."""
        return self._reader.read(self._fd)

    def samples(self, now_ns: int, inserted: int, idle_ns: int = TCP_IDLE_NS) -> np.ndarray:
        keys, vals = self.read()
        self.evicted = max(self.evicted, inserted - self.deleted - len(keys))
        out = conn_samples(keys, vals)
        half = vals["side"]["half"]
        closed = ((vals["flags"] & layout.CONN_RST) != 0) | (
            (half["flags"][:, 0] & half["flags"][:, 1] & layout.HALF_FIN) != 0
        )
        idle = half["last_ns"].max(axis=1).astype(np.int64) + idle_ns < now_ns
        raw = keys.view(f"V{layout.TCP_CONN_KEY.itemsize}")
        go = idle.copy()
        if self._closed:
            was = np.fromiter((k in self._closed for k in raw[closed].tolist()), bool)
            go[np.flatnonzero(closed)[was]] = True
        self._closed = set(raw[closed & ~go].tolist())
        if go.any():
            self._delete(np.ascontiguousarray(keys[go]))
        return out

    def _delete(self, keys: np.ndarray) -> None:
        done, n = 0, len(keys)
        size = layout.TCP_CONN_KEY.itemsize
        base = keys.ctypes.data
        while done < n:
            count = ct.c_uint32(n - done)
            res = self._lib.bpf_delete_batch(
                self._fd, ct.c_void_p(base + done * size), ct.byref(count)
            )
            err = ct.get_errno()
            self.deleted += count.value
            done += count.value
            if res != 0:
                if err != errno.ENOENT:
                    raise KernelFeatureError(
                        f"deleting TCP connections failed: {os.strerror(err or -res)}"
                    )
                done += 1  # evicted since we read it: the kernel was first


def _with_words(dtype: np.dtype, fields: dict[str, str]) -> np.dtype:
    """dtype with the named 16-byte address fields seen as two uint64 words:
    numpy copies V16 fields an element at a time, uint64 pairs in bulk."""
    assert dtype.fields is not None
    names = list(dtype.fields)
    formats: list[Any] = []
    offsets = []
    for n in names:
        sub, off = dtype.fields[n][:2]
        formats.append(("<u8", (2,)) if n in fields else sub)
        offsets.append(off)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": dtype.itemsize}
    )


_CONN_KEY_W = _with_words(layout.TCP_CONN_KEY, {"addr0": "", "addr1": ""})
_FLOW_KEY_W = _with_words(layout.FLOW_KEY, {"src": "", "dst": ""})
_SAMPLE_W = np.dtype(
    {
        "names": ["key"],
        "formats": [_FLOW_KEY_W],
        "offsets": [0],
        "itemsize": layout.TCP_SAMPLE.itemsize,
    }
)


def conn_samples(keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """layout.TCP_SAMPLE records of connections (layout.TCP_CONN_KEY/TCP_CONN):
    one per direction that carried data, src = that direction's sender.

    The RTT fields describe the whole path, the same in both records: the
    sum of the two halves' smoothed RTTs (mean deviations, minima), 0 until
    both halves have a sample; rtt_samples counts both halves' samples.
    """
    half = vals["side"]["half"]
    rtt = vals["side"]["rtt"]
    u32 = np.iinfo(np.uint32).max

    def pair(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return col[:, 0], col[:, 1]

    s0, s1 = pair(rtt["srtt_ns"])
    both = (s0 > 0) & (s1 > 0)

    def us(col: np.ndarray, floor: int) -> np.ndarray:
        a, b = pair(col)
        v = np.where(both, np.maximum((a + b) // 1000, floor), 0)
        return np.minimum(v, u32).astype(np.uint32)

    srtt_us = us(rtt["srtt_ns"], 1)
    rttvar_us = us(rtt["mdev_ns"], 0)
    min_us = us(rtt["min_ns"], 1)
    n0, n1 = pair(rtt["samples"])
    samples = np.minimum(n0.astype(np.uint64) + n1, u32)
    l0, l1 = pair(half["last_ns"])
    last = np.maximum(l0, l1)
    kw = keys.view(_CONN_KEY_W)
    client = vals["client"]
    sels = [np.flatnonzero(half["data_segs"][:, d] > 0) for d in (0, 1)]
    out = np.zeros(len(sels[0]) + len(sels[1]), dtype=layout.TCP_SAMPLE)
    for d, sel in enumerate(sels):
        rec = out[: len(sel)] if d == 0 else out[len(sels[0]) :]
        k = rec.view(_SAMPLE_W)["key"]
        k["ip_version"] = keys["ip_version"][sel]
        k["proto"] = 6
        k["src"] = kw[f"addr{d}"][sel]
        k["dst"] = kw[f"addr{1 - d}"][sel]
        k["sport"] = keys[f"port{d}"][sel]
        k["dport"] = keys[f"port{1 - d}"][sel]
        rec["srtt_us"] = srtt_us[sel]
        rec["rttvar_us"] = rttvar_us[sel]
        rec["min_rtt_us"] = min_us[sel]
        rec["rtt_samples"] = samples[sel]
        rec["retrans"] = half["retrans"][sel, d]
        rec["data_segs"] = half["data_segs"][sel, d]
        rec["source"] = layout.TCP_SOURCE_PASSIVE
        c = client[sel]
        rec["server"] = np.where(c == d + 1, 1, np.where(c == 2 - d, 2, 0))
        rec["last_ns"] = last[sel]
    return out


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
            # Devices with an Ethernet header; the pair for devices without
            # one (l3: tun, WireGuard, PPP, IP tunnels) is verified and loaded
            # when the first such device is attached (fd()): each load is a
            # verifier pass of a few hundred ms. The kernel keeps 15
            # characters of a name: the four stay distinct.
            self.ingress = self.bpf.load_func(b"flowtop_ingress", bcc.BPF.SCHED_CLS)
            self.egress = self.bpf.load_func(b"flowtop_egress", bcc.BPF.SCHED_CLS)
        except Exception as exc:  # bcc raises bare Exception for compile/load failures
            raise KernelFeatureError(f"cannot compile or load the TC program: {exc}") from None
        self._sched_cls = bcc.BPF.SCHED_CLS
        self._fds: dict[tuple[str, bool], int] = {
            ("ingress", False): self.ingress.fd,
            ("egress", False): self.egress.fd,
        }
        self._lib = bcc.libbcc.lib
        self._gen = _Generations(self._lib, self.bpf)
        self._drainer = BatchReader(
            self._lib,
            options.flow_map_size,
            layout.FLOW_KEY,
            layout.FLOW_STATS,
            delete=True,
            what="the flow map",
        )
        from bcc.utils import get_possible_cpus

        ncpus = len(get_possible_cpus())
        self._cache_drainer = CacheDrainer(self._lib, options.cache_slots, ncpus)
        self._ifaces = self.bpf[b"iface_counters"]
        self._slots = self.bpf[b"iface_slots"]
        self._counters = self.bpf[b"counters"]
        self._tcp = TcpConnTable(self._lib, self.bpf) if options.passive_rtt else None

    def fd(self, direction: str, l3: bool) -> int:
        """The program fd for a hook ("ingress"/"egress") of a device with an
        Ethernet header (l3=False) or without one (l3=True, devices.is_l3):
        what an attacher (attach.TcAttacher, tcx.TcxAttacher) attaches."""
        if direction not in layout.DIRECTIONS:
            raise ValueError(f"no TC program for direction {direction!r}")
        if (direction, l3) not in self._fds:
            self._load_l3()
        return self._fds[(direction, l3)]

    def _load_l3(self) -> None:
        try:
            with _quiet_stderr():
                ingress = self.bpf.load_func(b"flowtop_l3_ingress", self._sched_cls)
                egress = self.bpf.load_func(b"flowtop_l3_egress", self._sched_cls)
        except Exception as exc:
            raise KernelFeatureError(f"cannot load the TC program for L3 devices: {exc}") from None
        self._fds[("ingress", True)] = ingress.fd
        self._fds[("egress", True)] = egress.fd

    def prog_fds(self) -> dict[tuple[str, bool], int]:
        """{(direction, l3): fd} of the four programs (see fd()), all loaded."""
        if ("ingress", True) not in self._fds:
            self._load_l3()
        return dict(self._fds)

    def drain_flows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Swap buffers and return the interval just ended as (keys, stats) batches.

        Keys are distinct within a batch, not across batches: the hash map
        first, then each CPU's cache (a flow can be in all of them).
        """
        old_flows, old_cache = self._gen.flip()
        keys, stats = self._drainer.read(old_flows)
        batches = [(keys.copy(), stats.copy())]  # the engine keeps them past the next drain
        batches.extend(self._cache_drainer.drain(old_cache))
        return batches

    def active_flow_map(self) -> tuple[bytes, int]:
        """(name, fd) of the hash map the programs fill now (for tests and benches)."""
        name = (b"flows_a", b"flows_b")[self._gen.active]
        return name, self.bpf[name].map_fd

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
        # Not a kernel counter: worked out by tcp_samples() (see TcpConnTable).
        out["tcp_conn_evicted"] = self._tcp.evicted if self._tcp is not None else 0
        return out

    def _counter(self, name: str) -> int:
        return int(sum(self._counters[ct.c_int(layout.COUNTERS.index(name))]))

    def tcp_samples(self, now_ns: int) -> np.ndarray:
        """layout.TCP_SAMPLE records of the connections the passive tracker
        follows (two per connection when data went both ways), cumulative per
        connection; deletes closed connections (after reporting them once
        more) and idle ones. now_ns: time.monotonic_ns(). Empty when the
        program was built without passive RTT."""
        if self._tcp is None:
            return np.zeros(0, dtype=layout.TCP_SAMPLE)
        return self._tcp.samples(now_ns, self._counter("tcp_conn_new"))

    def tcp_conns(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw connection map: (layout.TCP_CONN_KEY, layout.TCP_CONN) arrays."""
        if self._tcp is None:
            return np.zeros(0, dtype=layout.TCP_CONN_KEY), np.zeros(0, dtype=layout.TCP_CONN)
        keys, vals = self._tcp.read()
        return keys.copy(), vals.copy()

    def close(self) -> None:
        self.bpf.cleanup()


def _iface_slot_keys(ifindex: int) -> Iterator[tuple[int, int, int]]:
    for direction in (layout.DIR_INGRESS, layout.DIR_EGRESS):
        for family in range(len(layout.FAMILIES)):
            yield (ifindex, direction, family)


class _Generations:
    """The two generations of interval maps (see the comment in bpf/tc.c).

    flip() makes the other generation active and returns the fds of the
    retired one once no program can still be writing to it: the rewrite of
    a map-in-map slot waits for an RCU grace period, one per flip.
    """

    def __init__(self, lib: Any, bpf: Any) -> None:
        self._lib = lib
        self._gen_fd = bpf[b"active_gen"].map_fd
        self._flow_maps = bpf[b"flow_maps"].map_fd
        self._flows = (bpf[b"flows_a"].map_fd, bpf[b"flows_b"].map_fd)
        self._caches = (bpf[b"cache_a"].map_fd, bpf[b"cache_b"].map_fd)
        cache_maps = bpf[b"cache_maps"].map_fd
        for gen in (0, 1):
            self._update(self._flow_maps, gen, self._flows[gen])
            self._update(cache_maps, gen, self._caches[gen])
        self.active = 0
        self._update(self._gen_fd, 0, 0)

    def _update(self, fd: int, key: int, value: int) -> None:
        k, v = ct.c_uint32(key), ct.c_uint32(value)
        if self._lib.bpf_update_elem(fd, ct.byref(k), ct.byref(v), 0) != 0:
            raise KernelFeatureError(f"cannot switch maps: {os.strerror(ct.get_errno())}")

    def flip(self) -> tuple[int, int]:
        old = self.active
        self._update(self._gen_fd, 0, 1 - old)
        self.active = 1 - old
        # The fence: same value, but the kernel waits for running programs.
        self._update(self._flow_maps, old, self._flows[old])
        return self._flows[old], self._caches[old]


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
