"""Local TCP health: bpf/sockops.c on the cgroup v2 root, read in batches.

The sock_ops program follows every TCP connection that opens on this host
(in flowtop's own network namespace by default) and keeps the socket's own
figures: smoothed RTT and its variation, minimum RTT, retransmitted and data
segments, retransmission timeouts, bytes acked/received, state. The
tcp:tcp_retransmit_skb tracepoint counts retransmit events beside it.
Entries are refreshed at every callback, and (per_ack) at every segment the
socket receives, so they stay one ACK behind what `ss -ti` shows.

The pieces: cgroup.py finds the cgroup v2 root, sockops_attach.py attaches
the program there and removes the stale ones of dead runs (its docstring
says how a program is owned), sockops_records.py decodes the maps; the
compile runs in a child (build.py), which also finds tcp_sock.mdev_us in the
kernel's BTF (btf.py); the tracepoint programs are attached here
(tracefs.py), the child's own attachments closed before it hands them over.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from pathlib import Path

import numpy as np

from flowtop.errors import ConfigError, FlowtopError, KernelFeatureError, NotRootError
from flowtop.kernel import counters, layout, tracefs
from flowtop.kernel.bpfsys import prog_id_of
from flowtop.kernel.build import BACKGROUND_NICE, BPF_DIR, SOCK_OPS, Loaded, Request
from flowtop.kernel.maps import BatchReader, percpu_sums, update
from flowtop.kernel.sockops_attach import (
    attach_sock_ops,
    detach_sock_ops,
    remove_stale_programs,
    sockops_prog_name,
)
from flowtop.kernel.sockops_records import (
    CLOSED_KEY,
    CONN,
    CONN_RECORD,
    live_records,
    merge_records,
    to_tcp_samples,
)
from flowtop.kernel.staged import StagedProgram, cgroup2_root

log = logging.getLogger(__name__)

SO_NETNS_COOKIE = 71
# The one-slot array both bpf/sockops.c and bpf/drops.c read their namespace
# filter's cookie from: a run-time value, so that one build (and one program
# cache entry) serves every namespace.
NETNS_MAP = "netns_cfg"


def netns_cookie() -> int:
    """Cookie of the calling thread's network namespace (SO_NETNS_COOKIE)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot read the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+): "
                f"{exc.strerror}"
            ) from None
    value: int = struct.unpack("<Q", raw)[0]
    return value


def set_netns_cookie(fd: int, cookie: int) -> None:
    """Writes cookie into slot 0 of a NETNS_MAP array (its programs count
    nothing until then); KernelFeatureError when the kernel refuses."""
    try:
        update(fd, np.zeros(1, dtype="<u4"), np.array([cookie], dtype="<u8"))
    except OSError as exc:
        raise KernelFeatureError(
            f"cannot set the network namespace filter: {exc.strerror}"
        ) from None


class SockOpsTracker(StagedProgram):
    """Per-connection TCP figures of this host's sockets (see the module doc).

    netns_only: only sockets of the network namespace of the thread that
    calls start(); otherwise every namespace's (their 5-tuples may collide:
    counted in tuple_collisions).

    per_ack: also refresh a connection on every segment it receives, so that
    its srtt is at most one ACK behind `ss` (without: up to a round trip, and
    several while a loss is repaired). Costs one program run per received
    segment of a tracked socket.
    """

    what = "the sock_ops tracker"

    def __init__(
        self,
        cgroup: str | None = None,
        map_size: int = 65536,
        netns_only: bool = True,
        per_ack: bool = True,
    ) -> None:
        super().__init__()
        if map_size < 1:
            raise ConfigError(f"sock_ops map size must be at least 1, not {map_size}")
        self.cgroup_arg = cgroup
        self.map_size = map_size
        self.netns_only = netns_only
        self.per_ack = per_ack
        self.cgroup: str | None = None
        self.netns_cookie: int | None = None
        self.prog_name = sockops_prog_name()
        self.prog_id: int | None = None
        self.rttvar_available = False
        self.removed_stale: list[str] = []
        self._events: Path | None = None
        self._perf_fds: list[int] = []
        self._prog_fd = -1
        self._cg_fd = -1
        self._attached = False
        self._reader: BatchReader | None = None
        self._drainer: BatchReader | None = None

    # -- lifecycle (StagedProgram) --------------------------------------------------------

    def _request(self, tp_format: str) -> Request:
        """The build of bpf/sockops.c (the compiler adds FT_MDEV_OFF: it reads
        the kernel's BTF there, not here)."""
        has_err = "field:int err;" in tp_format
        cflags = [
            f"-I{BPF_DIR}",
            f"-DFT_PROG_NAME={self.prog_name}",
            f"-DFT_CONN_MAP_SIZE={self.map_size}",
            f"-DFT_CLOSED_MAP_SIZE={self.map_size}",
            f"-DFT_NETNS_ONLY={int(self.netns_only)}",
            f"-DFT_TP_HAS_ERR={int(has_err)}",
            f"-DFT_PER_ACK={int(self.per_ack)}",
        ]
        return Request(
            src=str(BPF_DIR / "sockops.c"),
            cflags=cflags,
            first=[(self.prog_name, SOCK_OPS)],
            maps=["conns", "closed", "so_counters", NETNS_MAP],
            what="the sock_ops program",
            sockops=True,
            # beside the TC program's build, which the first attachment waits for
            nice=BACKGROUND_NICE,
        )

    def _prepare(self) -> Request:
        """The checks and stale programs of dead runs removed, in the network
        namespace whose sockets to report (netns_only)."""
        if os.geteuid() != 0:
            raise NotRootError(
                "local TCP health needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
            )
        cgroup = cgroup2_root(self.cgroup_arg)
        self._events = tracefs.events_dir()
        tp_format = tracefs.tracepoint_format(self._events, "tcp", "tcp_retransmit_skb")
        src = BPF_DIR / "sockops.c"
        if not src.is_file():
            raise KernelFeatureError(f"BPF source not found: {src}")
        self.cgroup = cgroup
        self.netns_cookie = netns_cookie()
        self.removed_stale = remove_stale_programs(cgroup)
        return self._request(tp_format)

    def _attach(self, loaded: Loaded) -> None:
        """The namespace filter's cookie (before anything runs the programs),
        the tracepoint programs, then the sock_ops program."""
        assert self.cgroup is not None and self._events is not None
        assert self.netns_cookie is not None
        set_netns_cookie(loaded.maps[NETNS_MAP], self.netns_cookie)
        self.rttvar_available = int(loaded.meta.get("mdev_off", -1)) >= 0
        self._prog_fd = loaded.progs[self.prog_name]
        try:
            for name, fd in loaded.progs.items():
                if name.startswith(tracefs.TRACEPOINT_PREFIX):
                    category, event = tracefs.tracepoint_of(name)
                    self._perf_fds.append(
                        tracefs.attach_tracepoint(fd, self._events, category, event)
                    )
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot attach the sock_ops tracker's tracepoints: {exc.strerror}"
            ) from None
        try:
            self._cg_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
            attach_sock_ops(self._cg_fd, self._prog_fd)
            self._attached = True
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot attach sock_ops to {self.cgroup}: {exc.strerror}"
            ) from None
        self.prog_id = prog_id_of(self._prog_fd)
        self._reader = BatchReader(
            self.map_size, layout.FLOW_KEY, CONN, what="the sock_ops connection map"
        )
        self._drainer = BatchReader(
            self.map_size, CLOSED_KEY, CONN_RECORD, True, "the sock_ops closed map"
        )

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            try:
                detach_sock_ops(self._cg_fd, self._prog_fd)
            except OSError as exc:
                log.warning("detaching %s from %s: %s", self.prog_name, self.cgroup, exc)
        if self._cg_fd >= 0:
            os.close(self._cg_fd)
            self._cg_fd = -1
        for fd in self._perf_fds:
            tracefs.detach_tracepoint(fd)
        self._perf_fds = []
        self._prog_fd = -1
        self._reader = None
        self._drainer = None

    @property
    def started(self) -> bool:
        return self._loaded is not None and self._attached

    # -- data -------------------------------------------------------------------------

    def read_records(self) -> np.ndarray:
        """Every tracked connection as a CONN_RECORD: the live ones, then
        those closed since the last read (state TCP_CLOSE), each once."""
        if self._loaded is None or self._reader is None or self._drainer is None:
            raise FlowtopError("the sock_ops tracker is not started")
        keys, vals = self._reader.read(self._loaded.maps["conns"])
        live = live_records(keys, vals)
        _ck, closed = self._drainer.read(self._loaded.maps["closed"])
        return merge_records(live, closed.copy())

    def read(self, now_ns: int | None = None) -> np.ndarray:
        """layout.TCP_SAMPLE records, one per connection, cumulative.

        now_ns is the caller's drain time; this source does not need it (the
        kernel stamps last_ns on every update) but takes it so that both TCP
        sources are read the same way.
        """
        del now_ns
        return to_tcp_samples(self.read_records())

    def stats(self) -> dict[str, int]:
        """Every counter of bpf/sockops.h, losses and bookkeeping alike."""
        names = counters.SOCKOPS_COUNTERS
        if self._loaded is None:
            return dict.fromkeys(names, 0)
        sums = percpu_sums(self._loaded.maps["so_counters"], len(names))
        return dict(zip(names, sums, strict=True))

    def counters(self) -> dict[str, int]:
        """What could not be accounted for: connections not tracked (map
        full, callbacks refused, 5-tuple held by another socket) and closed
        connections whose last record was dropped."""
        s = self.stats()
        return {name: s[name] for name in counters.SOCKOPS_REPORTED}
