"""Socket owners from the kernel: bpf/owner.c on the cgroup v2 root.

Three programs, attached with BPF_F_ALLOW_MULTI to the root of the cgroup
v2 hierarchy (cgroup.find_cgroup2), so that they run for every socket of
every network namespace on the host (containers included):
``cgroup/sock_create`` records who created each TCP/UDP socket (tgid, uid,
comm, cgroup id, netns cookie) in the socket's local storage; the
``cgroup_skb`` egress and ingress programs write the socket's tuple and its
owner to the ``endpoints`` map when the tuple changes. drain() empties that
map (lookup-and-delete batches): each socket tuple comes up once.

Ownership and clean-up as for the sock_ops program (sockops_attach.py):
the programs are named ``ftownc_<pid>`` (sock_create), ``ftowne_<pid>``
(egress) and ``ftowni_<pid>`` (ingress); close() detaches them, and each
start detaches those of flowtops that are gone (cgroup attachments
outlive a kill -9).

Sockets that existed before start() have no recorded creator: their tuples
come with OWNER_UNKNOWN (tgid 0); userspace attributes those from /proc.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

import numpy as np

from flowtop.errors import ConfigError, FlowtopError, KernelFeatureError, NotRootError
from flowtop.kernel import counters
from flowtop.kernel.bpfsys import prog_id_of
from flowtop.kernel.build import (
    BACKGROUND_NICE,
    BPF_DIR,
    CGROUP_SKB_EGRESS,
    CGROUP_SKB_INGRESS,
    CGROUP_SOCK_CREATE,
    Build,
    Loaded,
    Request,
)
from flowtop.kernel.maps import BatchReader, percpu_sums
from flowtop.kernel.owner_records import OWNER, OWNER_TUPLE, decode
from flowtop.kernel.sockops_attach import attach_prog, detach_prog, remove_stale
from flowtop.kernel.staged import StagedProgram, cgroup2_root

log = logging.getLogger(__name__)

# enum bpf_attach_type
BPF_CGROUP_INET_INGRESS = 0
BPF_CGROUP_INET_EGRESS = 1
BPF_CGROUP_INET_SOCK_CREATE = 2

# One letter per program: c(reate), e(gress), i(ngress); "ftownc_4194304"
# (the longest pid) is 13 characters of the kernel's 15.
PROG_NAME_RE = re.compile(r"^ftown[cei]_(\d+)$")
# (program letter, cflag naming it, build kind, attach type), in attach order:
# sock_create first, so that no socket made meanwhile goes unrecorded.
PROGRAMS: tuple[tuple[str, str, str, int], ...] = (
    ("c", "FT_CREATE_NAME", CGROUP_SOCK_CREATE, BPF_CGROUP_INET_SOCK_CREATE),
    ("e", "FT_EGRESS_NAME", CGROUP_SKB_EGRESS, BPF_CGROUP_INET_EGRESS),
    ("i", "FT_INGRESS_NAME", CGROUP_SKB_INGRESS, BPF_CGROUP_INET_INGRESS),
)
ATTACH_TYPES: tuple[int, ...] = tuple(p[3] for p in PROGRAMS)
ENDPOINTS_SIZE = 65536
# Seconds after which a socket still sending the same tuple reports it again
# (FT_REREPORT_NS), at most: its owner-table entry outlives an idle socket.
REREPORT_MAX = 5.0
WHAT = "socket owner"


def owner_prog_name(letter: str, pid: int | None = None) -> str:
    """ftown<letter>_<pid>: the name of process pid's owner program."""
    return f"ftown{letter}_{pid if pid is not None else os.getpid()}"


def remove_stale_owner_programs(cgroup: str | None = None, everyone: bool = False) -> list[str]:
    """Detach the owner programs of flowtops that are gone (everyone: all but
    this process's live ones); one "name (id N) from PATH" per removal."""
    return remove_stale(ATTACH_TYPES, PROG_NAME_RE, WHAT, cgroup, everyone)


class OwnerCollector(StagedProgram):
    """Who owns the local sockets behind flows, for the engine.

    drain() returns the OWNER_RECORDs (owner_records.py: a tuple as the
    local socket sees it, and the process, user, command, cgroup id and
    netns cookie of the socket's creator) reported since the last drain: a
    socket's tuple once, when its first packet with that tuple crossed the
    socket's egress or ingress. A TCP socket accepted by a listener carries
    the listener's creator. The engine joins them to flows by 5-tuple and
    keeps the attribution with the flow. counters() says what was lost
    (counters.OWNER_COUNTERS; the OWNER_LOSSES ones mean unattributed
    traffic).
    """

    what = "the socket owner collector"

    def __init__(
        self,
        cgroup: str | None = None,
        endpoints_size: int = ENDPOINTS_SIZE,
        rereport: float | None = None,
    ) -> None:
        super().__init__()
        if endpoints_size < 1:
            raise ConfigError(f"the owner endpoints map needs a size above 0, not {endpoints_size}")
        # A tuple is reported again after this many seconds (bpf/owner.c FT_REREPORT_NS).
        self.rereport = REREPORT_MAX if rereport is None else max(0.1, rereport)
        self.cgroup_arg = cgroup
        self.cgroup: str | None = None
        self.endpoints_size = endpoints_size
        self.names = {letter: owner_prog_name(letter) for letter, *_ in PROGRAMS}
        self.removed_stale: list[str] = []
        self.prog_ids: dict[str, int] = {}
        # Whether cgroup_skb programs may call bpf_get_netns_cookie (recent
        # kernels): tried first, built without when the kernel refuses.
        self.skb_netns = True
        self._cg_fd = -1
        self._attached: list[tuple[int, int, str]] = []  # (prog fd, attach type, name)
        self._reader: BatchReader | None = None

    # -- lifecycle (StagedProgram) --------------------------------------------------------

    def _request(self) -> Request:
        cflags = [
            f"-I{BPF_DIR}",
            f"-DFT_ENDPOINTS_SIZE={self.endpoints_size}",
            f"-DFT_SKB_NETNS={int(self.skb_netns)}",
            f"-DFT_REREPORT_NS={int(self.rereport * 1e9)}ULL",
        ]
        cflags += [f"-D{flag}={self.names[letter]}" for letter, flag, *_ in PROGRAMS]
        return Request(
            src=str(BPF_DIR / "owner.c"),
            cflags=cflags,
            first=[(self.names[letter], kind) for letter, _, kind, _ in PROGRAMS],
            maps=["endpoints", "owner_counters"],
            what="the socket owner programs",
            # Beside the TC compile, which the first attachment waits for.
            nice=BACKGROUND_NICE,
        )

    def _prepare(self) -> Request:
        """The checks and stale programs of dead runs removed."""
        if os.geteuid() != 0:
            raise NotRootError("socket owners need root (or CAP_BPF and CAP_NET_ADMIN)")
        cgroup = cgroup2_root(self.cgroup_arg)
        src = BPF_DIR / "owner.c"
        if not src.is_file():
            raise KernelFeatureError(f"BPF source not found: {src}")
        self.cgroup = cgroup
        self.removed_stale = remove_stale_owner_programs(cgroup)
        return self._request()

    def _wait(self, build: Build, checkpoint: Callable[[], None]) -> Loaded:
        try:
            return build.wait(checkpoint)
        except KernelFeatureError as exc:
            # bcc's words for a program the verifier refused (not a compile
            # error, a dead child or a timeout: those fail alike)
            if not self.skb_netns or "Failed to load BPF program" not in str(exc):
                raise
            # An older kernel: no netns cookie for sockets older than us.
            log.info("socket owner programs without netns cookies in cgroup_skb: %s", exc)
        self.skb_netns = False
        self._build = Build(self._request())
        return self._build.wait(checkpoint)

    def _attach(self, loaded: Loaded) -> None:
        """sock_create, egress and ingress, in that order."""
        assert self.cgroup is not None
        try:
            self._cg_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise KernelFeatureError(f"cannot open cgroup {self.cgroup}: {exc.strerror}") from None
        for letter, _, _, attach_type in PROGRAMS:
            name = self.names[letter]
            fd = loaded.progs[name]
            try:
                attach_prog(self._cg_fd, fd, attach_type)
            except OSError as exc:
                raise KernelFeatureError(
                    f"cannot attach the socket owner program {name} to {self.cgroup}: "
                    f"{exc.strerror}"
                ) from None
            self._attached.append((fd, attach_type, name))
            self.prog_ids[name] = prog_id_of(fd)
        self._reader = BatchReader(
            min(self.endpoints_size, 4096), OWNER_TUPLE, OWNER, True, "the socket owner map"
        )

    def _detach(self) -> None:
        for fd, attach_type, name in reversed(self._attached):
            try:
                detach_prog(self._cg_fd, fd, attach_type)
            except OSError as exc:
                log.warning("detaching %s from %s: %s", name, self.cgroup, exc)
        self._attached = []
        if self._cg_fd >= 0:
            os.close(self._cg_fd)
            self._cg_fd = -1
        self._reader = None

    @property
    def started(self) -> bool:
        return self._loaded is not None and len(self._attached) == len(PROGRAMS)

    # -- data -------------------------------------------------------------------------

    def drain(self) -> np.ndarray:
        """The OWNER_RECORDs reported since the last drain (a copy), deleted
        from the kernel's map as they are read."""
        if self._loaded is None or self._reader is None:
            raise FlowtopError("the socket owner collector is not started")
        keys, vals = self._reader.read(self._loaded.maps["endpoints"])
        return decode(keys, vals)

    def counters(self) -> dict[str, int]:
        """Every counter of enum ft_own_counter (counters.OWNER_COUNTERS), summed
        over CPUs: the losses (counters.OWNER_LOSSES), tuples the packet
        headers did not give, tuples reported, sockets older than flowtop."""
        names = counters.OWNER_COUNTERS
        if self._loaded is None:
            return dict.fromkeys(names, 0)
        sums = percpu_sums(self._loaded.maps["owner_counters"], len(names))
        return dict(zip(names, sums, strict=True))
