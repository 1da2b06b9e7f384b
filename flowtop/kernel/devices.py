"""Which TC program a device needs: the one for Ethernet headers, or the one for none.

The kernel's device type (``ARPHRD_*``, include/uapi/linux/if_arp.h; the
``ifi_type`` of an RTM_NEWLINK message, ``/sys/class/net/IF/type``; read
here over rtnetlink, rtnl.py) says how
a device frames packets. Ethernet devices (and loopback, which uses Ethernet
headers too) get ``flowtop_{ingress,egress}``, which parse the Ethernet
header, VLAN tags, PPPoE and MPLS. Every other device gets the ``_l3``
programs, which start from the network header and take the packet's kind
from ``skb->protocol``: tun in IFF_TUN mode and WireGuard (``ARPHRD_NONE``),
PPP, raw-IP modems (``ARPHRD_RAWIP``), the IP tunnels (ipip, sit, ip6tnl,
GRE, ip6gre), SLIP, and anything else that has no Ethernet header. The L3
programs find the network header even when up to 64 bytes precede it (an
outer tunnel header, another link-layer header), so an unknown type is
safer there than on the Ethernet programs. A tap device is Ethernet.

The decision is made once per device, at attach time (a device's type does
not change while it is up); attach.TcAttacher and tcx.TcxAttacher both ask
``is_l3``.
"""

from __future__ import annotations

from flowtop.errors import InterfaceError
from flowtop.kernel.rtnl import Rtnl

# The device types with an Ethernet header in front of every packet TC sees.
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ETHERNET_TYPES = frozenset({ARPHRD_ETHER, ARPHRD_LOOPBACK})

# A few of the others, by name (for messages and tests).
ARPHRD_NAMES = {
    ARPHRD_ETHER: "ether",
    ARPHRD_LOOPBACK: "loopback",
    256: "slip",
    512: "ppp",
    519: "rawip",
    768: "ipip",
    769: "ip6tnl",
    776: "sit",
    778: "gre",
    823: "ip6gre",
    0xFFFE: "none",
}


def l3_type(arphrd: int) -> bool:
    """Whether devices of type arphrd need the programs for no Ethernet header."""
    return arphrd not in ETHERNET_TYPES


def link_type(ifindex: int, rtnl: Rtnl | None = None) -> int:
    """The ARPHRD_* type of a device of the current network namespace (or of
    rtnl's). InterfaceError when there is no such device."""
    sock = Rtnl() if rtnl is None else rtnl
    try:
        link = sock.link(ifindex)
    except OSError as exc:
        raise InterfaceError(f"no interface with index {ifindex} ({exc.strerror})") from None
    finally:
        if rtnl is None:
            sock.close()
    if link is None:
        raise InterfaceError(f"no interface with index {ifindex}")
    return link.type


def is_l3(ifindex: int, ifname: str = "", rtnl: Rtnl | None = None) -> bool:
    """Whether the device needs the programs for no Ethernet header (ifname is
    only for the error message; rtnl: a netlink socket to reuse)."""
    try:
        return l3_type(link_type(ifindex, rtnl))
    except InterfaceError:
        raise InterfaceError(f"no such interface: {ifname or ifindex}") from None
