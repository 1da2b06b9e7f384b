"""The TC program's build request (bpf/tc.c): its options, cflags, function
and map names.

Apart from program.py (TcProgram, which re-exports these): nothing here
imports numpy, so that the cli starts the build (kernel/build.begin_early,
a compile child or the program cache's loads) before the run's heavy
imports rather than after numpy's (issue 13).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from flowtop.kernel.build import BPF_DIR, SCHED_CLS, Request
from flowtop.kernel.cpus import cpu_ids


@dataclass(frozen=True, slots=True)
class WireOptions:
    """The build of names from the wire (bpf/wirenames.h): extra DNS ports
    (at most 4; 53 always), events per second per CPU (a burst of one
    second's worth), payload bytes per event, ring size in bytes (a power
    of two of pages). config.NamesConfig checks what users give."""

    dns_ports: tuple[int, ...] = ()
    rate: int = 2000
    cap: int = 2048
    ring_bytes: int = 1 << 20

    def cflags(self) -> list[str]:
        ports = [*self.dns_ports, *([53] * (4 - len(self.dns_ports)))]
        if len(ports) != 4 or not all(1 <= p <= 65535 for p in ports):
            raise ValueError(f"at most 4 extra DNS ports, 1..65535: {self.dns_ports}")
        pages = self.ring_bytes // mmap.PAGESIZE
        if pages < 1 or pages & (pages - 1) or pages * mmap.PAGESIZE != self.ring_bytes:
            raise ValueError(f"ring size {self.ring_bytes}: not a power of two of pages")
        if self.rate < 1 or not 1 <= self.cap <= 65535:
            raise ValueError(f"wire rate {self.rate} or capture length {self.cap} out of range")
        cost = 1_000_000_000 // self.rate
        return [
            "-DFT_WIRE_NAMES=1",
            *(f"-DFT_WIRE_PORT{i + 1}={p}" for i, p in enumerate(ports)),
            f"-DFT_WIRE_COST_NS={cost}ULL",
            f"-DFT_WIRE_BURST_NS={cost * self.rate}ULL",
            f"-DFT_WIRE_CAP={self.cap}",
            f"-DFT_WIRE_RING_PAGES={pages}",
        ]


@dataclass(frozen=True, slots=True)
class ProgramOptions:
    flow_map_size: int = 65536
    iface_map_size: int = 4096
    iface_slots: int = 4096
    cache_slots: int = 1024  # per CPU, a power of two
    passive_rtt: bool = True  # passive TCP RTT/retransmits (bpf/tcprtt.h)
    tcp_conn_map_size: int = 65536  # connections it tracks (LRU)
    # Names from the wire (bpf/wirenames.h): off unless the run asks, so that
    # nothing fills a ring nobody reads.
    wire: WireOptions | None = None

    def cflags(self) -> list[str]:
        wire = self.wire.cflags() if self.wire is not None else ["-DFT_WIRE_NAMES=0"]
        return [
            # No debug info: a sixth of the compile the first attachment waits
            # for (issue 13), and the same instructions; the maps lose their
            # BTF, which none of these needs (bpftool dumps them as hex).
            "-g0",
            f"-I{BPF_DIR}",
            f"-DFT_FLOW_MAP_SIZE={self.flow_map_size}",
            f"-DFT_IFACE_MAP_SIZE={self.iface_map_size}",
            f"-DFT_IFACE_SLOTS={self.iface_slots}",
            f"-DFT_CACHE_SLOTS={self.cache_slots}",
            f"-DFT_NR_CPUS={cpu_ids()}",
            f"-DFT_PASSIVE_RTT={int(self.passive_rtt)}",
            f"-DFT_TCP_CONN_MAP_SIZE={self.tcp_conn_map_size}",
            *wire,
        ]


# Function names by (direction, l3): l3 is a device without an Ethernet header.
# The kernel keeps 15 characters of a name: the four stay distinct.
FUNCTIONS = {
    ("ingress", False): "flowtop_ingress",
    ("egress", False): "flowtop_egress",
    ("ingress", True): "flowtop_l3_ingress",
    ("egress", True): "flowtop_l3_egress",
}
# The maps userspace reads or writes.
MAPS = (
    "active_gen", "flows_a", "flows_b", "flow_maps", "cache_a", "cache_b",
    "iface_slots", "iface_counters", "counters",
)  # fmt: skip
# Names from the wire (only with ProgramOptions.wire): the ring buffer, and
# the program both pairs tail-call for the packets they hand up, put in
# slot 0 of the prog array WIRE_TAIL at load (kept open: the kernel empties
# a prog array when its last fd closes).
WIRE_RING = "wire_ring"
WIRE_TAIL = "wire_tail"
WIRE_FUNCTION = "flowtop_wire"


def request(options: ProgramOptions) -> Request:
    """The build of bpf/tc.c: the Ethernet pair and the maps first, the pair
    for L3 devices (no Ethernet header: tun, WireGuard, PPP, IP tunnels) in a
    second message, compiled (FT_L3_PAIR=1, on the same maps) and verified
    while this process attaches the first: the first attachment waits for
    half the compile."""
    names = (*MAPS, "tcp_conns", "tcp_pkts") if options.passive_rtt else MAPS
    first = [(name, SCHED_CLS) for (_d, l3), name in FUNCTIONS.items() if not l3]
    if options.wire is not None:
        names = (*names, WIRE_RING, WIRE_TAIL)
        first.append((WIRE_FUNCTION, SCHED_CLS))
    return Request(
        src=str(BPF_DIR / "tc.c"),
        cflags=options.cflags(),
        first=first,
        maps=list(names),
        what="the TC program",
        later=[(name, SCHED_CLS) for (_d, l3), name in FUNCTIONS.items() if l3],
        later_what="the TC program for L3 devices",
        later_cflags=[*options.cflags(), "-DFT_L3_PAIR=1"],
    )


def wire_options(enabled: bool, dns_ports: tuple[int, ...], rate: int) -> WireOptions | None:
    """ProgramOptions.wire for a run's [names] (config.NamesConfig): None when off."""
    return WireOptions(dns_ports=dns_ports, rate=rate) if enabled else None
