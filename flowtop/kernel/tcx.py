"""TCX attach/detach (Linux 6.6+): flowtop's TC programs as bpf links.

Neither library here does this: bcc 0.26 has no link API for TC (its
``attach_func`` is BPF_PROG_ATTACH, an attachment that outlives the
process), pyroute2 0.9.7 speaks netlink only (TCX is bpf(2) only), and the
libbpf 1.1 inside libbcc predates the TCX fields of ``bpf_link_create_opts``
and ``bpf_program__attach_tcx``. So this module makes the few bpf(2) calls
itself (through ``bpfsys.bpf``), with the ``union bpf_attr`` layouts below
taken from the kernel's uapi (include/uapi/linux/bpf.h, checked against the
running kernel's BTF).

Ownership. A TCX link is an fd held by the process that made it: it is
detached when its last reference goes, so a flowtop that exits, crashes or is
killed with SIGKILL leaves no link behind (no pid in a name, no stale-entry
clean-up as with clsact filters). bpf(2) fds are O_CLOEXEC: a child that
execs (every subprocess flowtop starts does) does not inherit them; a child
forked without exec would, and would keep the links attached until it exits
(flowtop forks no such child). TcxAttacher.detach() uses BPF_LINK_DETACH
before closing, so its detach is immediate even if such a copy existed. A
link is only ever detached by its holder, except by
``remove_links(everyone=True)`` (``flowtop detach --all``), which detaches
the flowtop links other live flowtops hold (the holder keeps a defunct fd).
Programs that are not named ``flowtop_*`` are never touched.

Position and verdicts. Each program is attached at the head of its hook
(BPF_F_BEFORE with no relative object: "prepend"), so flowtop sees every
packet before the programs attached so far can drop, redirect or rewrite it;
a program attached later with BPF_F_BEFORE goes in front of it. flowtop's
programs return TC_ACT_UNSPEC (-1), which is TCX_NEXT: the kernel's tcx_run()
goes on to the next TCX program, and when the last one also says TCX_NEXT,
to the clsact (cls_bpf, u32, ...) filters, which always run after every TCX
program. So flowtop changes no later program's verdict. Unlike with
clsact, where ``--tc-priority`` can put a packet-rewriting filter (one that
pushes a VLAN tag, say) in front of flowtop, in TCX mode flowtop runs before
every clsact filter and sees packets as they were before any rewrite.

Network namespaces. An ifindex means a device of the caller's network
namespace at the time of the bpf(2) call. A TcxAttacher remembers the
namespace it was made in and makes its calls from there (as TcAttacher's
netlink socket keeps working in the namespace it was opened in).
Enumeration asks each device of the caller's namespace for its TCX programs
(BPF_PROG_QUERY), not the global link list: a link's info carries an ifindex
but not its namespace.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
import re
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from flowtop.errors import AttachError, ConfigError, InterfaceError, KernelFeatureError
from flowtop.kernel.bpfsys import (
    BPF_LINK_CREATE,
    BPF_LINK_DETACH,
    BPF_LINK_GET_FD_BY_ID,
    BPF_OBJ_GET_INFO_BY_FD,
    BPF_PROG_LOAD,
    BPF_PROG_QUERY,
    BPF_PROG_TYPE_SCHED_CLS,
    bpf,
    prog_name_by_id,
)
from flowtop.kernel.layout import DIRECTIONS

# -- kernel ABI (include/uapi/linux/bpf.h) -----------------------------------------

BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_LINK_TYPE_TCX = 11
BPF_F_BEFORE = 1 << 3
BPF_MPROG_MAX = 64  # programs per TCX hook (include/linux/bpf_mprog.h)

ATTACH_TYPES = {"ingress": BPF_TCX_INGRESS, "egress": BPF_TCX_EGRESS}
DIRECTION_OF = {v: k for k, v in ATTACH_TYPES.items()}
assert tuple(ATTACH_TYPES) == DIRECTIONS

# union bpf_attr, the members used here (offsets in bytes):
#   link_create: prog_fd u32 @0, target_ifindex u32 @4, attach_type u32 @8,
#                flags u32 @12, tcx.relative_fd|relative_id u32 @16,
#                tcx.expected_revision u64 @24                       (64 bytes)
#   link_detach / *_GET_FD_BY_ID: link_fd | link_id u32 @0           (12 bytes)
#   query: target_ifindex u32 @0, attach_type u32 @4, query_flags u32 @8,
#          attach_flags u32 @12, prog_ids u64 @16, count u32 @24,
#          prog_attach_flags u64 @32, link_ids u64 @40,
#          link_attach_flags u64 @48, revision u64 @56               (64 bytes)
#   prog_load: prog_type u32 @0, insn_cnt u32 @4, insns u64 @8, license u64 @16,
#              ..., prog_name char[16] @48                           (72 bytes)
# struct bpf_link_info: type u32 @0, id u32 @4, prog_id u32 @8,
#                       tcx.ifindex u32 @16, tcx.attach_type u32 @20 (24 bytes)
LINK_CREATE = struct.Struct("<IIIIIxxxxQ32x")
LINK_INFO = struct.Struct("<IIIxxxxII")
QUERY = struct.Struct("<IIIIQIxxxxQQQQ")

PROG_PREFIX = "flowtop_"
ATTACH_MODES = ("auto", "tcx", "tc")

# A SCHED_CLS program that returns TC_ACT_UNSPEC: r0 = -1; exit.
_PROBE_INSNS = struct.pack("<BBhi", 0xB7, 0, 0, -1) + struct.pack("<BBhi", 0x95, 0, 0, 0)

_libc = ct.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


# -- bpf(2) wrappers ------------------------------------------------------------------


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE of a TCX link; returns the link fd (raises OSError)."""
    attr = ct.create_string_buffer(LINK_CREATE.size)
    LINK_CREATE.pack_into(attr, 0, prog_fd, ifindex, attach_type, flags, 0, 0)
    return bpf(BPF_LINK_CREATE, attr)


def link_detach(link_fd: int) -> None:
    """BPF_LINK_DETACH: off its hook now, whoever else holds the link."""
    attr = ct.create_string_buffer(12)
    struct.pack_into("<I", attr, 0, link_fd)
    bpf(BPF_LINK_DETACH, attr)


def link_fd_by_id(link_id: int) -> int:
    attr = ct.create_string_buffer(12)
    struct.pack_into("<I", attr, 0, link_id)
    return bpf(BPF_LINK_GET_FD_BY_ID, attr)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """What the kernel says about a link (struct bpf_link_info, TCX part).
    ifindex is 0 once the link is defunct (detached, or its device gone)."""

    type: int
    link_id: int
    prog_id: int
    ifindex: int
    attach_type: int


def link_info(link_fd: int) -> LinkInfo:
    info = ct.create_string_buffer(LINK_INFO.size)
    attr = ct.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, link_fd, LINK_INFO.size, ct.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    typ, link_id, prog_id, ifindex, attach_type = LINK_INFO.unpack_from(info, 0)
    if typ != BPF_LINK_TYPE_TCX:
        ifindex = attach_type = 0  # the union holds another link type's fields
    return LinkInfo(typ, link_id, prog_id, ifindex, attach_type)


def query_hook(ifindex: int, attach_type: int) -> list[tuple[int, int]]:
    """(prog_id, link_id) of each program on a TCX hook, in run order; link_id
    is 0 for a program attached without a link (BPF_PROG_ATTACH)."""
    cap = BPF_MPROG_MAX
    while True:
        progs = (ct.c_uint32 * cap)()
        links = (ct.c_uint32 * cap)()
        attr = ct.create_string_buffer(QUERY.size)
        QUERY.pack_into(attr, 0, ifindex, attach_type, 0, 0, ct.addressof(progs), cap, 0,
                        ct.addressof(links), 0, 0)  # fmt: skip
        try:
            bpf(BPF_PROG_QUERY, attr)
        except OSError as exc:
            if exc.errno == errno.ENOSPC and cap < 4 * BPF_MPROG_MAX:
                cap *= 4
                continue
            raise
        count = min(QUERY.unpack_from(attr, 0)[5], cap)
        return [(progs[i], links[i]) for i in range(count)]


def _probe_prog() -> int:
    """Loads the smallest SCHED_CLS program (for the TCX probe); returns its fd."""
    insns = ct.create_string_buffer(_PROBE_INSNS, len(_PROBE_INSNS))
    lic = ct.create_string_buffer(b"GPL")
    attr = ct.create_string_buffer(72)
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_SCHED_CLS, len(_PROBE_INSNS) // 8,
                     ct.addressof(insns), ct.addressof(lic))  # fmt: skip
    struct.pack_into("16s", attr, 48, b"ft_tcx_probe")
    return bpf(BPF_PROG_LOAD, attr)


# -- feature probe and mode choice ----------------------------------------------------


def tcx_supported() -> tuple[bool, str]:
    """Whether this kernel attaches TC programs with TCX links, and why (one line).

    The probe asks for a TCX link of a trivial SCHED_CLS program on ifindex
    0, which no device has. A kernel with TCX gets as far as looking the
    device up and says ENODEV; one without TCX (before 6.6, or built without
    CONFIG_NET_XGRESS) rejects the attach type with EINVAL first. Nothing is
    attached anywhere either way, no interface or namespace is touched, and it
    costs one program load and two syscalls. (A throw-away namespace with a
    real device would need a child process and would prove no more.)
    """
    try:
        prog = _probe_prog()
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return False, "cannot probe for TCX without root (CAP_BPF and CAP_NET_ADMIN)"
        return False, f"cannot load a TC program to probe for TCX: {exc.strerror}"
    try:
        fd = link_create(prog, 0, BPF_TCX_INGRESS)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return True, "the kernel has TCX links (Linux 6.6+)"
        if exc.errno == errno.EINVAL:
            return False, f"the kernel has no TCX links (Linux {os.uname().release}; needs 6.6+)"
        return False, f"TCX probe failed: {exc.strerror}"
    finally:
        os.close(prog)
    os.close(fd)  # cannot happen: no device has ifindex 0
    return False, "TCX probe attached to ifindex 0: not trusting this kernel's TCX"


def resolve_attach_mode(mode: str) -> tuple[str, str]:
    """`--attach auto|tcx|tc` -> ("tcx" or "tc", why), for the collector and doctor.
    auto takes TCX when the kernel has it; tcx without kernel support is an error."""
    if mode not in ATTACH_MODES:
        raise ConfigError(f"--attach must be one of {', '.join(ATTACH_MODES)}, not {mode!r}")
    if mode == "tc":
        return "tc", "clsact with cls_bpf filters, as asked (--attach tc)"
    ok, why = tcx_supported()
    if ok:
        return "tcx", f"TCX links: {why}"
    if mode == "tcx":
        raise KernelFeatureError(f"--attach tcx: {why} (use --attach tc or auto)")
    return "tc", f"clsact with cls_bpf filters: {why}"


# -- network namespace of an attacher -------------------------------------------------


def _netns_ident(fd: int | None = None) -> tuple[int, int]:
    st = os.fstat(fd) if fd is not None else os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ct.get_errno()
        raise AttachError(f"cannot enter the attacher's network namespace: {os.strerror(err)}")


class Netns:
    """The network namespace a TcxAttacher was made in: calls that name an
    ifindex run there, whichever namespace the calling thread is in."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.ident = _netns_ident(self.fd)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        if _netns_ident() == self.ident:
            yield
            return
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.fd)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- the attacher ---------------------------------------------------------------------

# The program for (direction, l3): "ingress"/"egress", and whether the device
# is an L3 one (tun, wg, ppp: no Ethernet header). A mapping or a callable.
ProgFds = Callable[[str, bool], int] | Mapping[tuple[str, bool], int]
# Whether a device (ifindex, ifname) is an L3 one.
IsL3 = Callable[[int, str], bool]


@dataclass(frozen=True, slots=True)
class TcxLink:
    """One link this process holds: closing fd (or exiting) detaches it."""

    direction: str
    fd: int
    link_id: int
    prog_id: int


@dataclass
class TcxAttachment:
    """What we put on one interface, so that we remove exactly that."""

    ifindex: int
    ifname: str
    l3: bool
    links: list[TcxLink] = field(default_factory=list)


def _prog_fd_getter(prog_fds: ProgFds) -> Callable[[str, bool], int]:
    if callable(prog_fds):
        return prog_fds
    table = dict(prog_fds)

    def get(direction: str, l3: bool) -> int:
        try:
            return table[(direction, l3)]
        except KeyError:
            kind = "L3" if l3 else "Ethernet"
            raise AttachError(f"no {direction} program for {kind} devices") from None

    return get


def _attach_error(exc: OSError, ifname: str, direction: str) -> Exception:
    hook = f"the TCX {direction} hook of {ifname}"
    code = exc.errno
    if code == errno.ENODEV:
        return InterfaceError(f"interface {ifname} disappeared while attaching")
    if code == errno.EINVAL:
        return KernelFeatureError(
            f"cannot attach to {hook}: {exc.strerror} (TCX needs Linux 6.6+: use --attach tc)"
        )
    if code == errno.ERANGE:
        return AttachError(f"cannot attach to {hook}: it is full ({BPF_MPROG_MAX} programs)")
    if code == errno.EEXIST:
        return AttachError(f"cannot attach to {hook}: this program is already on it")
    if code in (errno.EPERM, errno.EACCES):
        return AttachError(f"cannot attach to {hook}: not permitted (needs CAP_BPF, CAP_NET_ADMIN)")
    return AttachError(f"cannot attach to {hook}: {exc.strerror}")


def _release(link: TcxLink) -> OSError | None:
    """Detach (even if another process holds the link too) and close."""
    err = None
    try:
        link_detach(link.fd)
    except OSError as exc:
        err = exc
    finally:
        os.close(link.fd)
    return err


class TcxAttacher:
    """Attaches flowtop's ingress/egress programs to interfaces by ifindex with
    TCX links, at the head of each hook. Same surface as attach.TcAttacher.

    prog_fds gives the program fd for (direction, l3); is_l3 says whether a
    device is an L3 one (default: none is). Both are asked at each attach,
    inside the attacher's network namespace.
    """

    def __init__(self, prog_fds: ProgFds, is_l3: IsL3 | None = None) -> None:
        self._prog_fd = _prog_fd_getter(prog_fds)
        self._is_l3: IsL3 = is_l3 if is_l3 is not None else (lambda _i, _n: False)
        self._netns = Netns()
        self.attached: dict[int, TcxAttachment] = {}

    def attach(self, ifindex: int, ifname: str) -> TcxAttachment:
        if ifindex in self.attached:
            return self.attached[ifindex]
        with self._netns.entered():
            att = TcxAttachment(ifindex, ifname, self._is_l3(ifindex, ifname))
            self.attached[ifindex] = att
            direction = DIRECTIONS[0]
            try:
                for direction in DIRECTIONS:
                    fd = link_create(
                        self._prog_fd(direction, att.l3),
                        ifindex,
                        ATTACH_TYPES[direction],
                        BPF_F_BEFORE,
                    )
                    try:
                        info = link_info(fd)
                    except OSError:
                        os.close(fd)
                        raise
                    att.links.append(TcxLink(direction, fd, info.link_id, info.prog_id))
            except OSError as exc:
                self.detach(ifindex)
                raise _attach_error(exc, ifname, direction) from None
            except BaseException:
                self.detach(ifindex)
                raise
        return att

    def detach(self, ifindex: int) -> None:
        att = self.attached.pop(ifindex, None)
        if att is None:
            return
        errors = [e for e in (_release(link) for link in att.links) if e is not None]
        if errors:
            raise AttachError(f"cannot detach from {att.ifname}: {errors[0].strerror}")

    def forget(self, ifindex: int) -> None:
        """The interface is gone; the kernel detached its links: free them."""
        att = self.attached.pop(ifindex, None)
        if att is not None:
            for link in att.links:
                os.close(link.fd)

    def detach_all(self) -> None:
        errors: list[AttachError] = []
        for ifindex in list(self.attached):
            try:
                self.detach(ifindex)
            except AttachError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Detaches and closes whatever is still attached (no errors: this is
        the last word), then forgets the namespace. Idempotent."""
        try:
            for att in self.attached.values():
                for link in att.links:
                    _release(link)
            self.attached.clear()
        finally:
            self._netns.close()


# -- enumeration and `flowtop detach` -------------------------------------------------


@dataclass(frozen=True, slots=True)
class FoundLink:
    """A flowtop TCX link on a device of this network namespace."""

    ifindex: int
    ifname: str
    direction: str
    link_id: int
    prog_id: int
    prog_name: str
    holders: tuple[int, ...]  # pids with an fd on the link (this pid namespace)


_LINK_ID_RE = re.compile(r"^link_id:\s*(\d+)$", re.MULTILINE)


def link_holders(link_ids: Iterable[int]) -> dict[int, tuple[int, ...]]:
    """link_id -> pids whose fd table has that link (from /proc/*/fdinfo).
    Reading fdinfo takes no reference: looking does not keep a link alive."""
    want = set(link_ids)
    found: dict[int, set[int]] = {i: set() for i in want}
    if not want:
        return {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") != "anon_inode:bpf_link":
                    continue
                with open(f"/proc/{entry.name}/fdinfo/{fd}") as f:
                    m = _LINK_ID_RE.search(f.read())
            except OSError:
                continue
            if m and int(m.group(1)) in want:
                found[int(m.group(1))].add(int(entry.name))
    return {i: tuple(sorted(p)) for i, p in found.items()}


def tcx_links(prefix: str = PROG_PREFIX) -> list[FoundLink]:
    """The TCX links of this network namespace whose program name starts with
    prefix ("" for all), per device and hook in run order (for doctor and
    `flowtop detach`). Programs attached without a link are not listed."""
    rows: list[tuple[int, str, str, int, int, str]] = []
    for ifindex, ifname in socket.if_nameindex():
        for direction, attach_type in ATTACH_TYPES.items():
            try:
                chain = query_hook(ifindex, attach_type)
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.EINVAL):
                    continue  # device gone since the listing, or no TCX
                raise AttachError(f"cannot list TCX programs on {ifname}: {exc.strerror}") from None
            for prog_id, link_id in chain:
                name = prog_name_by_id(prog_id) if link_id else None
                if name is not None and name.startswith(prefix):
                    rows.append((ifindex, ifname, direction, link_id, prog_id, name))
    holders = link_holders(r[3] for r in rows)
    return [FoundLink(*r, holders=holders.get(r[3], ())) for r in rows]


def detach_link(found: FoundLink) -> bool:
    """Detach a link someone else holds (BPF_LINK_DETACH through an fd got by
    its id). False when it went away meanwhile or its id now names another."""
    try:
        fd = link_fd_by_id(found.link_id)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise AttachError(f"cannot open TCX link {found.link_id}: {exc.strerror}") from None
    try:
        info = link_info(fd)
        if info.type != BPF_LINK_TYPE_TCX or info.prog_id != found.prog_id or not info.ifindex:
            return False
        link_detach(fd)
    except OSError as exc:
        raise AttachError(
            f"cannot detach TCX link {found.link_id} from {found.ifname}: {exc.strerror}"
        ) from None
    finally:
        os.close(fd)
    return True


def remove_links(everyone: bool = False) -> list[FoundLink]:
    """`flowtop detach` for TCX: the flowtop links of this network namespace
    that no process holds (only possible when one is pinned in bpffs, or held
    from another pid namespace); with everyone, also those of live flowtops.
    Never this process's own. Returns what was detached.

    A dead flowtop cannot leave a TCX link (its fds died with it), so without
    everyone this normally finds nothing."""
    out = []
    me = os.getpid()
    for found in tcx_links():
        if me in found.holders or (found.holders and not everyone):
            continue
        if detach_link(found):
            out.append(found)
    return out
