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
says how a program is owned), sockops_records.py decodes the maps, btf.py
finds tcp_sock.mdev_us for the compile.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

import numpy as np

from flowtop.errors import ConfigError, FlowtopError, KernelFeatureError, NotRootError
from flowtop.kernel import counters, layout, tracefs
from flowtop.kernel.bpfsys import prog_id_of
from flowtop.kernel.btf import tcp_sock_offset
from flowtop.kernel.build import BPF_DIR, SOCK_OPS, Compiled
from flowtop.kernel.cgroup import find_cgroup2
from flowtop.kernel.maps import BatchReader, percpu_sums
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

log = logging.getLogger(__name__)

SO_NETNS_COOKIE = 71


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


class SockOpsTracker:
    """Per-connection TCP figures of this host's sockets (see the module doc).

    netns_only: only sockets of the network namespace of the thread that
    calls start(); otherwise every namespace's (their 5-tuples may collide:
    counted in tuple_collisions).

    per_ack: also refresh a connection on every segment it receives, so that
    its srtt is at most one ACK behind `ss` (without: up to a round trip, and
    several while a loss is repaired). Costs one program run per received
    segment of a tracked socket.
    """

    def __init__(
        self,
        cgroup: str | None = None,
        map_size: int = 65536,
        netns_only: bool = True,
        per_ack: bool = True,
    ) -> None:
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
        self._compiled: Compiled | None = None
        self._maps: dict[str, int] = {}
        self._prog_fd = -1
        self._cg_fd = -1
        self._attached = False
        self._reader: BatchReader | None = None
        self._drainer: BatchReader | None = None

    def __enter__(self) -> SockOpsTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle --------------------------------------------------------------------

    def _cflags(self, tp_format: str) -> list[str]:
        mdev_off = tcp_sock_offset("mdev_us")
        self.rttvar_available = mdev_off is not None
        has_err = "field:int err;" in tp_format
        return [
            f"-I{BPF_DIR}",
            f"-DFT_PROG_NAME={self.prog_name}",
            f"-DFT_CONN_MAP_SIZE={self.map_size}",
            f"-DFT_CLOSED_MAP_SIZE={self.map_size}",
            f"-DFT_NETNS_ONLY={int(self.netns_only)}",
            f"-DFT_NETNS_COOKIE={self.netns_cookie}ULL",
            f"-DFT_MDEV_OFF={mdev_off if mdev_off is not None else -1}",
            f"-DFT_TP_HAS_ERR={int(has_err)}",
            f"-DFT_PER_ACK={int(self.per_ack)}",
        ]

    def start(self) -> None:
        if self._compiled is not None:
            return
        if os.geteuid() != 0:
            raise NotRootError(
                "local TCP health needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
            )
        cgroup = self.cgroup_arg or find_cgroup2()
        if cgroup is None:
            raise KernelFeatureError(
                "no cgroup v2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
            )
        if not os.path.isfile(os.path.join(cgroup, "cgroup.controllers")):
            raise KernelFeatureError(f"{cgroup} is not a cgroup v2 directory")
        tp_format = tracefs.tracepoint_format(tracefs.events_dir(), "tcp", "tcp_retransmit_skb")
        src = BPF_DIR / "sockops.c"
        if not src.is_file():
            raise KernelFeatureError(f"BPF source not found: {src}")
        self.cgroup = cgroup
        self.netns_cookie = netns_cookie()
        cflags = self._cflags(tp_format)
        try:
            self.removed_stale = remove_stale_programs(cgroup)
            self._compiled = Compiled(src, cflags, "the sock_ops program")
            self._prog_fd = self._compiled.prog_fd(self.prog_name, SOCK_OPS)
            self._maps = {n: self._compiled.map_fd(n) for n in ("conns", "closed", "so_counters")}
        except FlowtopError:
            self.close()
            raise
        try:
            self._cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
            attach_sock_ops(self._cg_fd, self._prog_fd)
            self._attached = True
        except OSError as exc:
            self.close()
            raise KernelFeatureError(
                f"cannot attach sock_ops to {cgroup}: {exc.strerror}"
            ) from None
        self.prog_id = prog_id_of(self._prog_fd)
        self._reader = BatchReader(
            self.map_size, layout.FLOW_KEY, CONN, what="the sock_ops connection map"
        )
        self._drainer = BatchReader(
            self.map_size, CLOSED_KEY, CONN_RECORD, True, "the sock_ops closed map"
        )

    def close(self) -> None:
        """Detach and free; safe to call twice and after a failed start()."""
        if self._attached:
            self._attached = False
            try:
                detach_sock_ops(self._cg_fd, self._prog_fd)
            except OSError as exc:
                log.warning("detaching %s from %s: %s", self.prog_name, self.cgroup, exc)
        if self._cg_fd >= 0:
            os.close(self._cg_fd)
            self._cg_fd = -1
        if self._compiled is not None:
            compiled, self._compiled = self._compiled, None
            compiled.close()
        self._prog_fd = -1
        self._maps = {}
        self._reader = None
        self._drainer = None

    @property
    def started(self) -> bool:
        return self._compiled is not None and self._attached

    # -- data -------------------------------------------------------------------------

    def read_records(self) -> np.ndarray:
        """Every tracked connection as a CONN_RECORD: the live ones, then
        those closed since the last read (state TCP_CLOSE), each once."""
        if self._compiled is None or self._reader is None or self._drainer is None:
            raise FlowtopError("the sock_ops tracker is not started")
        keys, vals = self._reader.read(self._maps["conns"])
        live = live_records(keys, vals)
        _ck, closed = self._drainer.read(self._maps["closed"])
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
        if self._compiled is None:
            return dict.fromkeys(names, 0)
        return dict(zip(names, percpu_sums(self._maps["so_counters"], len(names)), strict=True))

    def counters(self) -> dict[str, int]:
        """What could not be accounted for: connections not tracked (map
        full, callbacks refused, 5-tuple held by another socket) and closed
        connections whose last record was dropped."""
        s = self.stats()
        return {name: s[name] for name in counters.SOCKOPS_REPORTED}
