"""Kernel drop reasons: bpf/drops.c on the skb:kfree_skb tracepoint, drained in batches.

The program counts every packet the kernel drops (kfree_skb with a reason
other than SKB_NOT_DROPPED_YET and SKB_CONSUMED) per flow key and reason in
a per-CPU hash map, for the devices flowtop watches (or every device);
DropCollector drains that map once per interval with lookup-and-delete
batches. The compile runs in a child (build.py), which reads the sk_buff
and net_device member offsets and the not-a-drop reason values from the
kernel's BTF (btf.py) and hands the whole `enum skb_drop_reason` back in
its meta, so that reason names come from the running kernel
(dropreasons.py); the tracepoint program is attached here (tracefs.py),
with a perf event whose fd this process alone holds: closing it, or dying
(kill -9 included), detaches it.

Not wired into the engine yet: the collector, view, dump and Prometheus
take these records in a later change.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from flowtop.errors import ConfigError, FlowtopError, KernelFeatureError, NotRootError
from flowtop.kernel import counters, tracefs
from flowtop.kernel.bpfsys import BPF_OBJ_GET_INFO_BY_FD, bpf, prog_id_of
from flowtop.kernel.build import BACKGROUND_NICE, BPF_DIR, Loaded, Request
from flowtop.kernel.drop_records import DROP_KEY, DROP_STATS, decode
from flowtop.kernel.dropreasons import ENUM, DropReasons, load
from flowtop.kernel.maps import BatchReader, delete, percpu, percpu_sums, update, update_u32
from flowtop.kernel.sockops import NETNS_MAP, netns_cookie, set_netns_cookie
from flowtop.kernel.staged import StagedProgram

log = logging.getLogger(__name__)

PROG = "tracepoint__skb__kfree_skb"  # bcc's name for TRACEPOINT_PROBE(skb, kfree_skb)
MAPS = ["drops", "drop_watch", "drop_config", "drop_counters", NETNS_MAP]

# What bpf/drops.c reads, at offsets from the kernel's BTF: (macro, struct,
# member, size in bytes); the compiler fails the build on any it cannot place.
BTF_OFFSETS: list[tuple[str, str, str, int]] = [
    ("FT_SKB_DEV_OFF", "sk_buff", "dev", 8),
    ("FT_SKB_IIF_OFF", "sk_buff", "skb_iif", 4),
    ("FT_SKB_LEN_OFF", "sk_buff", "len", 4),
    ("FT_SKB_HEAD_OFF", "sk_buff", "head", 8),
    ("FT_SKB_NH_OFF", "sk_buff", "network_header", 2),
    # an offset from head (sk_buff_data_t on 64-bit kernels; a pointer, 8
    # bytes, on 32-bit ones, which flowtop does not run on)
    ("FT_SKB_TAIL_OFF", "sk_buff", "tail", 4),
    ("FT_DEV_IFINDEX_OFF", "net_device", "ifindex", 4),
    ("FT_DEV_NET_OFF", "net_device", "nd_net.net", 8),
    ("FT_NET_COOKIE_OFF", "net", "net_cookie", 8),
    ("FT_SK_NET_OFF", "sock", "__sk_common.skc_net.net", 8),
]
BTF_CONSTANTS: list[tuple[str, str, str]] = [
    ("FT_REASON_NOT_DROPPED", ENUM, "SKB_NOT_DROPPED_YET"),
    ("FT_REASON_CONSUMED", ENUM, "SKB_CONSUMED"),
]

# struct bpf_prog_info: run_time_ns u64 @192, run_cnt u64 @200, recursion_misses u64 @208
_PROG_INFO_SIZE = 216
_RUN_STATS = struct.Struct("<QQQ")
_RUN_STATS_OFF = 192


def prog_run_stats(fd: int) -> tuple[int, int, int]:
    """(run_time_ns, run_cnt, recursion_misses) of a loaded program; the
    first two stay 0 unless kernel.bpf_stats_enabled is 1."""
    info = ct.create_string_buffer(_PROG_INFO_SIZE)
    attr = ct.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, fd, _PROG_INFO_SIZE, ct.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    run_time, run_cnt, misses = _RUN_STATS.unpack_from(info.raw, _RUN_STATS_OFF)
    return int(run_time), int(run_cnt), int(misses)


class DropCollector(StagedProgram):
    """Packets the kernel dropped, per flow key and reason.

    What it gives the engine: drain(), once per interval, returns the drops
    since the previous drain as drop_records.DROP_RECORD rows (flow key as
    layout.FLOW_KEY, reason value, packets, IP bytes), each (key, reason)
    once; `reasons` names the values (the running kernel's table);
    counters() says what the kernel side could not count. The flow key is
    the TC program's, so rows join the flow table by key (bpf/drops.h says
    how device and direction are chosen); a drop that is not IP has
    ip_version 0 and only its device and reason.

    watch(ifindexes): only drops on those devices (by default every
    device). netns_only: only drops on devices of the network namespace of
    the thread that calls begin() (ifindexes are per namespace); without
    it, devices of every namespace, whose ifindexes can coincide.
    """

    what = "the drop collector"

    def __init__(self, map_size: int = 16384, watch_max: int = 1024, netns_only: bool = True):
        super().__init__()
        if map_size < 1:
            raise ConfigError(f"drop map size must be at least 1, not {map_size}")
        if watch_max < 1:
            raise ConfigError(f"drop watch list size must be at least 1, not {watch_max}")
        self.map_size = map_size
        self.watch_max = watch_max
        self.netns_only = netns_only
        self.netns_cookie: int | None = None
        self.prog_id: int | None = None
        self.reasons: DropReasons | None = None
        self._format = ""
        self._events: Path | None = None
        self._perf_fds: list[int] = []
        self._watched: set[int] = set()
        self._reader: BatchReader | None = None

    # -- lifecycle (StagedProgram) --------------------------------------------------------

    def _request(self) -> Request:
        """The build of bpf/drops.c (the compiler adds the BTF offsets and
        reason values: it reads the kernel's BTF there, not here)."""
        cflags = [
            f"-I{BPF_DIR}",
            f"-DFT_DROP_MAP_SIZE={self.map_size}",
            f"-DFT_WATCH_MAX={self.watch_max}",
            f"-DFT_TP_HAS_RX_SK={int('rx_sk;' in self._format)}",
            f"-DFT_NETNS_ONLY={int(self.netns_only)}",
        ]
        return Request(
            src=str(BPF_DIR / "drops.c"),
            cflags=cflags,
            first=[],
            maps=MAPS,
            what="the drop reasons program",
            tracepoints=True,
            btf_offsets=BTF_OFFSETS,
            btf_constants=BTF_CONSTANTS,
            nice=BACKGROUND_NICE,
        )

    def _prepare(self) -> Request:
        """The checks, in the network namespace whose devices to watch (netns_only)."""
        if os.geteuid() != 0:
            raise NotRootError("drop reasons need root (or CAP_BPF and CAP_PERFMON)")
        self._events = tracefs.events_dir()
        self._format = tracefs.tracepoint_format(self._events, "skb", "kfree_skb")
        if "reason;" not in self._format:
            raise KernelFeatureError(
                "this kernel's skb:kfree_skb tracepoint has no drop reason (Linux 5.17+)"
            )
        if not (BPF_DIR / "drops.c").is_file():
            raise KernelFeatureError(f"BPF source not found: {BPF_DIR / 'drops.c'}")
        self.netns_cookie = netns_cookie() if self.netns_only else None
        return self._request()

    def _attach(self, loaded: Loaded) -> None:
        """The reason names from the build's meta, the namespace filter's
        cookie (before the program runs: it counts nothing until then), then
        the tracepoint program."""
        assert self._events is not None
        self.reasons = load(loaded.meta.get("enums", {}).get(ENUM), self._format)
        if self.reasons is None:
            raise KernelFeatureError(
                "neither the kernel's BTF nor skb:kfree_skb's format lists the drop reasons"
            )
        if self.netns_cookie is not None:
            set_netns_cookie(loaded.maps[NETNS_MAP], self.netns_cookie)
        fd = loaded.progs[PROG]
        try:
            self._perf_fds.append(tracefs.attach_tracepoint(fd, self._events, "skb", "kfree_skb"))
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot attach the drop reasons program to skb:kfree_skb: {exc.strerror}"
            ) from None
        self.prog_id = prog_id_of(fd)
        self._reader = BatchReader(
            self.map_size, DROP_KEY, percpu(DROP_STATS), True, "the drops map"
        )
        if self._watched:
            self._apply_watch(set(), self._watched)

    def _detach(self) -> None:
        for fd in self._perf_fds:
            try:
                tracefs.detach_tracepoint(fd)
            except OSError as exc:
                log.warning("detaching the drop reasons program: %s", exc)
        self._perf_fds = []
        self._reader = None

    @property
    def started(self) -> bool:
        return self._loaded is not None and bool(self._perf_fds)

    @property
    def prog_fd(self) -> int:
        """The loaded program's fd (benches read its run statistics); -1 when not started."""
        return self._loaded.progs.get(PROG, -1) if self._loaded is not None else -1

    # -- what to count ----------------------------------------------------------------

    def watch(self, ifindexes: Iterable[int]) -> None:
        """Count only drops on these devices from now on; none given: every
        device. May be called before start() (applied when it attaches)."""
        want = {int(i) for i in ifindexes}
        if len(want) > self.watch_max:
            raise ConfigError(
                f"{len(want)} devices to watch for drops, more than the {self.watch_max} "
                "the drop program was built for"
            )
        if any(not 0 < i < 1 << 32 for i in want):
            raise ConfigError(f"not an interface index: {sorted(want)}")
        old, self._watched = self._watched, want
        if self._loaded is not None:
            self._apply_watch(old, want)

    def _apply_watch(self, old: set[int], want: set[int]) -> None:
        assert self._loaded is not None
        watch_fd, config_fd = self._loaded.maps["drop_watch"], self._loaded.maps["drop_config"]
        one = np.ones(1, dtype=np.uint8)
        try:
            # Added before the filter is switched on, removed after: no drop
            # on a device watched throughout is missed in between.
            for i in sorted(want - old):
                update(watch_fd, np.array([i], dtype="<u4"), one)
            update_u32(config_fd, 0, 1 if want else 0)
            for i in sorted(old - want):
                delete(watch_fd, np.array([i], dtype="<u4"))
        except OSError as exc:
            raise KernelFeatureError(f"cannot set the drop watch list: {exc.strerror}") from None

    # -- data -------------------------------------------------------------------------

    def drain(self) -> np.ndarray:
        """The drops since the last drain as DROP_RECORDs (see the class doc),
        deleted from the kernel's map as they are read."""
        if self._loaded is None or self._reader is None:
            raise FlowtopError("the drop collector is not started")
        keys, vals = self._reader.read(self._loaded.maps["drops"])
        return decode(keys, vals)

    def counters(self) -> dict[str, int]:
        """Every counter of enum ft_drop_counter (bpf/drops.h) and the program's
        recursion_misses: map_full, unreadable and recursion_misses are kernel
        drops that were not counted; no_netns drops of an unknown namespace,
        left out in netns_only mode."""
        names = counters.DROPS_COUNTERS
        if self._loaded is None:
            return dict.fromkeys((*names, *counters.DROPS_DERIVED), 0)
        sums = percpu_sums(self._loaded.maps["drop_counters"], len(names))
        out = dict(zip(names, sums, strict=True))
        out["recursion_misses"] = prog_run_stats(self.prog_fd)[2]
        return out
