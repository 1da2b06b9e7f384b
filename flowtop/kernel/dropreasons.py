"""Why the kernel freed a packet: `enum skb_drop_reason` as the running kernel has it.

The skb:kfree_skb tracepoint reports a reason number; which number means
what changes between kernels (reasons are added in the middle), so the
table is read at run time, never written down here: from the kernel's BTF
(`enum skb_drop_reason`, through btf.Btf.enum or a build's meta) or, failing
that, from the tracepoint's own format, whose print fmt carries the same
table as `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`.

Names are given without the SKB_DROP_REASON_ prefix ("NO_SOCKET",
"NETFILTER_DROP"), as the tracepoint prints them. Two values are not drops:
SKB_NOT_DROPPED_YET (0) and SKB_CONSUMED (1, 6.1+: a packet freed after
use, reported through kfree_skb by some paths); the format's table leaves
them out, so there the values below its first entry are the not-drops.
SKB_DROP_REASON_MAX is the end marker, SKB_DROP_REASON_SUBSYS_MASK a mask:
neither is a reason. Values with bits above 16 belong to a subsystem's own
reason list (mac80211, openvswitch), which the core enum does not name:
name() calls them SUBSYS_<n>_<value>.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

PREFIX = "SKB_DROP_REASON_"
ENUM = "skb_drop_reason"
# Constants of the enum that are no reasons at all.
NOT_REASONS = ("MAX", "SUBSYS_MASK")
SUBSYS_SHIFT = 16

_SYMBOLIC = re.compile(r"__print_symbolic\(\s*REC->reason\s*,(.*)\)\s*$", re.DOTALL)
_ENTRY = re.compile(r'\{\s*(\d+)\s*,\s*"([^"]*)"\s*\}')


@dataclass(frozen=True)
class DropReasons:
    """The running kernel's reason table. names: drop value -> name;
    not_drops: the values kfree_skb reports for packets that were not
    dropped (bpf/drops.c skips them; this says which they were); source:
    where the table came from ("btf" or "tracepoint format")."""

    names: Mapping[int, str]
    not_drops: frozenset[int]
    source: str

    def name(self, value: int) -> str:
        known = self.names.get(value)
        if known is not None:
            return known
        if value >> SUBSYS_SHIFT:
            return f"SUBSYS_{value >> SUBSYS_SHIFT}_{value & ((1 << SUBSYS_SHIFT) - 1)}"
        return f"UNKNOWN_{value}"

    def is_drop(self, value: int) -> bool:
        return value not in self.not_drops

    def value(self, name: str) -> int | None:
        """The number of reason name (without the prefix); None when unknown."""
        for v, n in self.names.items():
            if n == name:
                return v
        return None


def from_enum(enum: Mapping[str, int]) -> DropReasons:
    """The table from `enum skb_drop_reason`'s constants ({name: value}):
    SKB_DROP_REASON_* are drops, the other constants (SKB_NOT_DROPPED_YET,
    SKB_CONSUMED) are not."""
    names: dict[int, str] = {}
    not_drops: set[int] = set()
    for const, value in enum.items():
        if not const.startswith(PREFIX):
            not_drops.add(value)
            continue
        short = const.removeprefix(PREFIX)
        if short not in NOT_REASONS:
            names[value] = short
    return DropReasons(MappingProxyType(dict(sorted(names.items()))), frozenset(not_drops), "btf")


def from_format(text: str) -> DropReasons | None:
    """The table from skb:kfree_skb's format (its print fmt's
    __print_symbolic over REC->reason); None when the format has none."""
    fmt = next((ln for ln in text.splitlines() if ln.startswith("print fmt:")), "")
    m = _SYMBOLIC.search(fmt)
    if m is None:
        return None
    entries = {int(v): n for v, n in _ENTRY.findall(m.group(1)) if n not in NOT_REASONS}
    if not entries:
        return None
    first = min(entries)
    return DropReasons(
        MappingProxyType(dict(sorted(entries.items()))),
        frozenset(range(first)),
        "tracepoint format",
    )


def load(enum: Mapping[str, int] | None, tp_format: str) -> DropReasons | None:
    """The BTF table when there is one, else the format's; None when neither
    says anything (a kernel without reasons)."""
    if enum:
        return from_enum(enum)
    return from_format(tp_format)
