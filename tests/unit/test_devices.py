"""Which program a device gets: by its ARPHRD_* type (flowtop.kernel.devices)."""

from __future__ import annotations

import socket

import pytest

from flowtop.errors import AttachError, InterfaceError
from flowtop.kernel import devices
from flowtop.kernel.attach import TcAttacher

# include/uapi/linux/if_arp.h
ETHERNET = {"ether": 1, "loopback": 772}
NO_ETHERNET = {
    "none (tun, wireguard)": 0xFFFE,
    "ppp": 512,
    "rawip": 519,
    "tunnel (ipip)": 768,
    "tunnel6 (ip6tnl)": 769,
    "sit": 776,
    "ipgre": 778,
    "ip6gre": 823,
    "slip": 256,
    "infiniband": 32,
    "void": 0xFFFF,
}


@pytest.mark.parametrize("arphrd", ETHERNET.values(), ids=ETHERNET.keys())
def test_ethernet_types_get_the_ethernet_programs(arphrd: int) -> None:
    assert not devices.l3_type(arphrd)


@pytest.mark.parametrize("arphrd", NO_ETHERNET.values(), ids=NO_ETHERNET.keys())
def test_every_other_type_gets_the_l3_programs(arphrd: int) -> None:
    assert devices.l3_type(arphrd)


def test_reads_the_type_over_netlink() -> None:
    """lo of this namespace: ARPHRD_LOOPBACK, which has Ethernet headers."""
    lo = socket.if_nametoindex("lo")
    assert devices.link_type(lo) == 772
    assert devices.is_l3(lo, "lo") is False


def test_missing_device_is_an_interface_error() -> None:
    with pytest.raises(InterfaceError, match="no such interface: ghost0"):
        devices.is_l3(2**31 - 1, "ghost0")


def test_attacher_takes_a_program_chooser() -> None:
    chosen: list[tuple[str, bool]] = []

    def fd(direction: str, l3: bool) -> int:
        chosen.append((direction, l3))
        return 0

    att = TcAttacher(fd, priority=3)
    att.close()
    with pytest.raises(TypeError, match="by keyword"):
        TcAttacher(fd, 3)  # type: ignore[arg-type]


def test_legacy_attacher_refuses_l3_devices() -> None:
    """TcAttacher(ingress_fd, egress_fd) has no L3 programs: an L3 device is
    refused before anything is put on it, not given the Ethernet ones."""
    att = TcAttacher(10, 11, is_l3=lambda _i, _n: True)
    try:
        with pytest.raises(AttachError, match="without an Ethernet header"):
            att.attach(2**31 - 1, "tun0")
        assert att.attached == {}
    finally:
        att.close()
