"""A network namespace's links and addresses over rtnetlink, with no netlink library.

What a start needs of netlink before its first attachment is small: the
links (index, name, flags, device type), for interface hot-plug their
RTM_NEWLINK/RTM_DELLINK events, and the host's addresses (the enricher's
local networks). TCX attaches with bpf(2) (tcx.py). pyroute2,
0.25-0.6 s of imports (the largest part of a cached start's main-thread
CPU), is left to what speaks tc over netlink: the clsact fallback
(attach.py) and the sweep of a dead flowtop's clsact filters, which
ingress_qdisc() lets the TCX path skip when a device has no ingress or
clsact qdisc (the usual case).

A netlink socket belongs to the network namespace of the thread that opened
it, as pyroute2's IPRoute did: Rtnl and LinkEvents answer for that
namespace, whichever one the caller is in later.

Wire format (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h,
pkt_sched.h, if_addr.h): each message is an nlmsghdr, a fixed header
(ifinfomsg, tcmsg, ifaddrmsg) and rtattrs (length, type, value; each padded to 4 bytes).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

NETLINK_ROUTE = 0
RTMGRP_LINK = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWQDISC = 36
RTM_GETQDISC = 38
IFLA_IFNAME = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
TCA_KIND = 1
TC_H_INGRESS = 0xFFFFFFF1  # the parent of the ingress and clsact qdiscs
EVENTS = {RTM_NEWLINK: "RTM_NEWLINK", RTM_DELLINK: "RTM_DELLINK"}

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type (ARPHRD_*), index, flags, change
_TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")  # len, type
_ERR = struct.Struct("=i")
# One datagram of a dump (the kernel sizes them to about a page or two) or
# of events; a larger one would come truncated, which is an error below.
RECV_BYTES = 1 << 18


@dataclass(frozen=True, slots=True)
class Link:
    """One link as RTM_NEWLINK describes it."""

    index: int
    name: str  # "" when the message carried none (some RTM_DELLINK)
    flags: int  # IFF_*
    type: int  # ARPHRD_* (devices.py)


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A link came, changed (up, down, renamed) or went: RTM_NEWLINK or RTM_DELLINK."""

    event: str  # EVENTS' names
    link: Link


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + _RTA.size <= end:
        length, kind = _RTA.unpack_from(buf, off)
        if length < _RTA.size or off + length > end:
            break  # malformed: keep what came before it
        out[kind & 0x3FFF] = buf[off + _RTA.size : off + length]  # without NLA_F_* bits
        off += _align(length)
    return out


def _text(value: bytes | None) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace") if value else ""


def _messages(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, start of the payload, its end) of each message in a datagram."""
    off = 0
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size or off + length > len(buf):
            return
        yield kind, seq, off + _NLMSG.size, off + length
        off += _align(length)


def _link(buf: bytes, start: int, end: int) -> Link:
    _family, arphrd, index, flags, _change = _IFINFO.unpack_from(buf, start)
    name = _text(_attrs(buf, start + _IFINFO.size, end).get(IFLA_IFNAME))
    return Link(index, name, flags, arphrd)


def _receive(sock: socket.socket) -> bytes:
    data, _anc, flags, _addr = sock.recvmsg(RECV_BYTES)
    if flags & socket.MSG_TRUNC:
        raise OSError(errno.EMSGSIZE, "a netlink message larger than the receive buffer")
    return data


def _socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


class Rtnl:
    """Requests on one NETLINK_ROUTE socket: the link dump, one link, the
    qdiscs of a device. OSError for what the kernel refuses (link() maps
    ENODEV to None)."""

    def __init__(self) -> None:
        self._sock = _socket()
        self._seq = 0

    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes, int, int]]:
        """(type, datagram, payload start, end) of the answers to one request,
        until NLMSG_DONE (a dump) or its one answer; NLMSG_ERROR raises."""
        self._seq += 1
        seq = self._seq
        header = _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0)
        self._sock.send(header + body)
        dump = bool(flags & NLM_F_DUMP)
        out: list[tuple[int, bytes, int, int]] = []
        while True:
            data = _receive(self._sock)
            for mtype, mseq, start, end in _messages(data):
                if mseq != seq:
                    continue  # an answer to an earlier request given up on
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = _ERR.unpack_from(data, start)
                    if code == 0:  # an acknowledgement
                        return out
                    raise OSError(-code, os.strerror(-code))
                out.append((mtype, data, start, end))
                if not dump:
                    return out

    def links(self) -> list[Link]:
        """Every link of the namespace, by RTM_GETLINK dump."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [
            _link(data, start, end)
            for mtype, data, start, end in self._request(RTM_GETLINK, NLM_F_DUMP, body)
            if mtype == RTM_NEWLINK and end - start >= _IFINFO.size
        ]

    def link(self, ifindex: int) -> Link | None:
        """The link with this index; None when there is none."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0)
        try:
            got = self._request(RTM_GETLINK, 0, body)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        for mtype, data, start, end in got:
            if mtype == RTM_NEWLINK and end - start >= _IFINFO.size:
                return _link(data, start, end)
        return None

    def ingress_qdisc(self, ifindex: int) -> str | None:
        """The kind of the device's qdisc on the ingress parent ("clsact" or
        "ingress", where tc filters go on the ingress hook), None without one."""
        body = _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, 0, 0)
        for mtype, data, start, end in self._request(RTM_GETQDISC, NLM_F_DUMP, body):
            if mtype != RTM_NEWQDISC or end - start < _TCMSG.size:
                continue
            _family, index, _handle, parent, _info = _TCMSG.unpack_from(data, start)
            if index == ifindex and parent == TC_H_INGRESS:
                return _text(_attrs(data, start + _TCMSG.size, end).get(TCA_KIND)) or None
        return None

    def addresses(self) -> list[tuple[int, bytes, int]]:
        """(family, address, prefix length) of every interface address, by
        RTM_GETADDR dump: the local address (IFA_LOCAL) where there is one
        (on a point-to-point link IFA_ADDRESS is the peer's), else IFA_ADDRESS."""
        body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        out: list[tuple[int, bytes, int]] = []
        for mtype, data, start, end in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            if mtype != RTM_NEWADDR or end - start < _IFADDR.size:
                continue
            family, prefixlen, _flags, _scope, _index = _IFADDR.unpack_from(data, start)
            attrs = _attrs(data, start + _IFADDR.size, end)
            addr = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if addr:
                out.append((family, addr, prefixlen))
        return out

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LinkEvents:
    """The link events of the namespace it was opened in (the RTMGRP_LINK
    group): select() on fileno(), then read(). An overrun socket raises
    OSError(ENOBUFS) from read(): the events meanwhile are lost."""

    def __init__(self) -> None:
        self._sock = _socket(RTMGRP_LINK)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[LinkEvent]:
        """The events of one datagram (blocks until one comes)."""
        data = _receive(self._sock)
        return [
            LinkEvent(EVENTS[mtype], _link(data, start, end))
            for mtype, _seq, start, end in _messages(data)
            if mtype in EVENTS and end - start >= _IFINFO.size
        ]

    def close(self) -> None:
        self._sock.close()
