"""Every counter the BPF programs keep, described once.

The TC program counts into the per-CPU array ``counters``, indexed by ``enum
ft_counter`` (bpf/flowtop.h); the sock_ops program into ``so_counters``,
indexed by ``enum ft_so_counter`` (bpf/sockops.h); the socket owner
programs into ``owner_counters``, indexed by ``enum ft_own_counter``
(bpf/owner.h); the drop reasons program into ``drop_counters``, indexed by
``enum ft_drop_counter`` (bpf/drops.h). One record here per
enum value (plus the figures userspace works out beside them) says what the
rest of flowtop does with it: the key it has in ``CollectorHealth.kernel``,
whether it is a problem (``CollectorHealth.problems``, named in the live
view's header), whether its packets are in no flow (the counted-once
invariant), and the help text of its Prometheus counter
``flowtop_kernel_<name>``. The tuples below are what the readers, the
health model, the exporter and the header use; nothing else lists counter
names. tests/unit/test_counters.py checks the records against the two C
enums, value by value.

This module imports nothing, so the health model can use it without the
kernel side.
"""

from __future__ import annotations

from dataclasses import dataclass

TC = "tc"  # enum ft_counter, bpf/flowtop.h
SOCKOPS = "sockops"  # enum ft_so_counter, bpf/sockops.h
OWNER = "owner"  # enum ft_own_counter, bpf/owner.h
DROPS = "drops"  # enum ft_drop_counter, bpf/drops.h
USERSPACE = "userspace"  # worked out by the reader, no kernel slot


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter, where it lives and what it means to flowtop.

    index is its enum value (its slot in the program's counter array), None
    for USERSPACE ones; c_name is the enum constant. help: the Prometheus
    help text, None when it is not exported. problem: lost or unattributed
    traffic on flowtop's side. shown: named in the live view's header when
    not 0 although it is no problem (problems always are). not_in_flow:
    packets counted here are in no flow (layout.NOT_IN_FLOW). reported: in
    CollectorHealth.kernel at all (the sock_ops program's bookkeeping
    counters are read by SockOpsTracker.stats() only).
    """

    name: str
    program: str
    index: int | None
    c_name: str | None
    help: str | None = None
    problem: bool = False
    shown: bool = False
    not_in_flow: bool = False
    reported: bool = True

    @property
    def key(self) -> str:
        """Its name in CollectorHealth.kernel (sock_ops and owner ones are prefixed)."""
        prefixed = (SOCKOPS, OWNER, DROPS)
        return f"{self.program}_{self.name}" if self.program in prefixed else self.name


def _tc(index: int, name: str, help: str, **kw: bool) -> Counter:
    return Counter(name, TC, index, f"FT_CTR_{name.upper()}", help, **kw)


def _so(index: int, name: str, c_name: str, **kw: bool) -> Counter:
    return Counter(name, SOCKOPS, index, f"FT_SO_{c_name}", None, **kw)


def _own(index: int, name: str, **kw: bool) -> Counter:
    return Counter(name, OWNER, index, f"FT_OWN_{name.upper()}", None, **kw)


def _drop(index: int, name: str, **kw: bool) -> Counter:
    return Counter(name, DROPS, index, f"FT_DROP_{name.upper()}", None, **kw)


COUNTERS: tuple[Counter, ...] = (
    # enum ft_counter, in order
    _tc(
        0,
        "flow_map_full",
        "flow inserts that failed because the kernel flow map was full",
        problem=True,
    ),
    # lost_packets counts the segments of failed inserts (flow_map_full counts
    # the inserts and stays out of not_in_flow so that they count once)
    _tc(
        1,
        "lost_packets",
        "packets not counted in any flow (their insert failed)",
        shown=True,
        not_in_flow=True,
    ),
    _tc(2, "lost_bytes", "IP bytes not counted in any flow (their insert failed)"),
    _tc(3, "iface_map_full", "interface counter inserts that failed", problem=True),
    _tc(
        4,
        "truncated",
        "frames that ended inside their link-layer or IP headers (in no flow)",
        not_in_flow=True,
    ),
    _tc(5, "malformed", "frames with an impossible header field (in no flow)", not_in_flow=True),
    _tc(
        6,
        "ipv6_ext_limit",
        "IPv6 packets with more extension headers than flowtop walks",
        problem=True,
        not_in_flow=True,
    ),
    _tc(
        7,
        "no_flow_map",
        "packets seen while no interval flow map was active (in no flow)",
        problem=True,
        not_in_flow=True,
    ),
    _tc(8, "non_ip", "frames that are not IP (counted on interfaces only)", not_in_flow=True),
    _tc(9, "tcp_conn_new", "connections the passive TCP tracker started following"),
    _tc(
        10,
        "tcp_conn_map_full",
        "connections the passive TCP tracker could not insert",
        problem=True,
    ),
    _tc(11, "tcp_ts_stale", "passive RTT samples given up (TSval never echoed within 1 s)"),
    # no_ports packets are in a flow (with ports 0/0): README.md, "What is counted"
    _tc(12, "no_ports", "packets counted in a flow without ports: their L4 header was cut"),
    _tc(
        13,
        "mpls_limit",
        "MPLS packets with a deeper label stack than flowtop walks (in no flow)",
        problem=True,
        not_in_flow=True,
    ),
    _tc(
        14,
        "net_seek_limit",
        "packets on a device without an Ethernet header whose network header "
        "flowtop did not find (in no flow)",
        problem=True,
        not_in_flow=True,
    ),
    # Names from the wire (bpf/wirenames.h): events not handed up, and those
    # that were; their packets are in their flows all the same
    _tc(
        15,
        "wire_rate_limited",
        "DNS responses and first TCP segments not handed up for names: over the rate",
        problem=True,
    ),
    _tc(
        16,
        "wire_ring_full",
        "DNS responses and first TCP segments not handed up for names: the ring was full",
        problem=True,
    ),
    _tc(17, "wire_events", "DNS responses and first TCP segments handed up for names"),
    # LRU evictions of the passive TCP map: what the kernel inserted minus what
    # userspace deleted minus what is left (tcpconn.TcpConnTable)
    Counter(
        "tcp_conn_evicted",
        USERSPACE,
        None,
        None,
        "passive TCP connections evicted from the full LRU map",
        problem=True,
    ),
    # enum ft_so_counter, in order; the first four are data the tracker lost
    _so(0, "conn_map_full", "CONN_MAP_FULL", problem=True),
    _so(1, "closed_map_full", "CLOSED_MAP_FULL", problem=True),
    _so(2, "flags_failed", "FLAGS_FAILED"),
    _so(3, "tuple_collisions", "TUPLE_COLLISION"),
    _so(4, "adopted", "ADOPTED", reported=False),
    _so(5, "stale_replaced", "STALE_REPLACED", reported=False),
    _so(6, "retrans_untracked", "TP_UNTRACKED", reported=False),
    # enum ft_own_counter, in order (OwnerCollector.counters()); the first
    # three are attribution lost. Not in CollectorHealth yet (reported=False,
    # so no problem flag either): the collector does not run the owner
    # programs yet.
    _own(0, "endpoints_full", reported=False),
    _own(1, "update_failed", reported=False),
    _own(2, "storage_failed", reported=False),
    _own(3, "tuple_unparsed", reported=False),
    _own(4, "reported", reported=False),
    _own(5, "unknown_sockets", reported=False),
    # enum ft_drop_counter, in order (DropCollector.counters()); the first two
    # are kernel drops flowtop did not count, in CollectorHealth as
    # drops_<name> (KernelCollector.health) and problems there (model.py
    # PROBLEM_COUNTERS, as the owner losses); no_netns (drops in other
    # namespaces, left out on purpose) is not reported.
    _drop(0, "map_full"),
    _drop(1, "unreadable"),
    _drop(2, "no_netns", reported=False),
)


def _of(program: str) -> tuple[Counter, ...]:
    return tuple(sorted((c for c in COUNTERS if c.program == program), key=lambda c: c.index or 0))


# Slot order of the TC program's counter array (enum ft_counter).
TC_COUNTERS: tuple[str, ...] = tuple(c.name for c in _of(TC))
# Slot order of the sock_ops program's counter array (enum ft_so_counter).
SOCKOPS_COUNTERS: tuple[str, ...] = tuple(c.name for c in _of(SOCKOPS))
# The sock_ops counters in CollectorHealth.kernel (as sockops_<name>).
SOCKOPS_REPORTED: tuple[str, ...] = tuple(c.name for c in _of(SOCKOPS) if c.reported)
# Slot order of the socket owner programs' counter array (enum ft_own_counter).
OWNER_COUNTERS: tuple[str, ...] = tuple(c.name for c in _of(OWNER))
# Of those, attribution lost (a tuple or a socket not attributed).
OWNER_LOSSES: tuple[str, ...] = ("endpoints_full", "update_failed", "storage_failed")
# Slot order of the drop program's counter array (enum ft_drop_counter).
DROPS_COUNTERS: tuple[str, ...] = tuple(c.name for c in _of(DROPS))
# Of those, kernel drops flowtop did not count.
DROPS_LOSSES: tuple[str, ...] = ("map_full", "unreadable")
# Read beside them by DropCollector.counters(): runs of the drop program the
# kernel skipped because it was already running on that CPU (a kfree_skb
# inside one: their drops are not counted), the program's recursion_misses.
DROPS_DERIVED: tuple[str, ...] = ("recursion_misses",)
# Counted by userspace readers beside the TC program's array.
TC_DERIVED: tuple[str, ...] = tuple(c.name for c in COUNTERS if c.program == USERSPACE)
# Kernel counters of packets that are in no flow: over non-GSO traffic, the
# packets of every flow plus these equal the packets the programs saw.
NOT_IN_FLOW: tuple[str, ...] = tuple(c.name for c in COUNTERS if c.not_in_flow)
# CollectorHealth.kernel keys that mean lost or unattributed traffic.
PROBLEMS: tuple[str, ...] = tuple(c.key for c in COUNTERS if c.problem)
# Named in the header when not 0 without being problems.
SHOWN: tuple[str, ...] = tuple(c.key for c in COUNTERS if c.shown and not c.problem)
# flowtop_kernel_<name> -> help text, the exported ones.
PROMETHEUS_HELP: dict[str, str] = {c.name: c.help for c in COUNTERS if c.help is not None}
