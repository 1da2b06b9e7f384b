"""A minimal pcap writer: UDP/IPv4 datagrams in Ethernet frames (for tshark)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path


def _checksum(header: bytes) -> int:
    total = int(sum(struct.unpack(f"!{len(header) // 2}H", header)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload  # no UDP checksum
    s = ipaddress.IPv4Address(src[0]).packed
    d = ipaddress.IPv4Address(dst[0]).packed
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = bytes.fromhex("0200000000020200000000010800")
    return eth + ip + udp


def write(path: Path, src: tuple[str, int], dst: tuple[str, int], payloads: list[bytes]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # LINKTYPE_ETHERNET
    for i, p in enumerate(payloads):
        frame = udp_frame(src, dst, p)
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
