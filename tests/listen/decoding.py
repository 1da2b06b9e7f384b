"""Drive the listener's Decoder with messages and read back flows (test helper)."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

import numpy as np

from flowtop.kernel import layout
from flowtop.listen.collector import Decoder, ListenOptions
from flowtop.listen.sockets import Message


@dataclass(frozen=True)
class Flow:
    iface: str
    direction: int
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    packets: int
    bytes: int
    flags: int
    dscp: int
    age_ns: int  # last_seen - first_seen


def decoder(**kw: object) -> Decoder:
    return Decoder(ListenOptions(urls=(), **kw))  # type: ignore[arg-type]


def feed(
    d: Decoder,
    msgs: list[bytes],
    addr: str = "192.0.2.1",
    protocol: str = "ipfix",
    now: float | None = None,
    tcp: bool = False,
) -> None:
    d.decode([Message(m, addr, protocol, tcp) for m in msgs], now)


def flows(d: Decoder) -> list[Flow]:
    out = []
    batches = d.flows(time.monotonic_ns())
    names = d.ifmap.names()
    for keys, stats in batches:
        for k, s in zip(keys, stats, strict=True):
            n = 16 if k["ip_version"] == 6 else 4
            src = ipaddress.ip_address(bytes(k["src"])[:n])
            dst = ipaddress.ip_address(bytes(k["dst"])[:n])
            out.append(
                Flow(
                    names[int(k["ifindex"])],
                    int(k["direction"]),
                    str(src),
                    str(dst),
                    int(k["sport"]),
                    int(k["dport"]),
                    int(k["proto"]),
                    int(s["packets"]),
                    int(s["bytes"]),
                    int(s["tcp_flags"]),
                    int(s["dscp"]),
                    int(s["last_seen_ns"]) - int(s["first_seen_ns"]),
                )
            )
    return sorted(out, key=lambda f: (f.iface, f.src, f.dst, f.sport, f.dport))


def assert_distinct(d: Decoder) -> None:
    for keys, _ in d.flows(time.monotonic_ns()):
        assert len(np.unique(keys.view(f"V{layout.FLOW_KEY.itemsize}"))) == len(keys)
