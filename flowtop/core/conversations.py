"""Conversation identity: a flow key and its reverse are one connection.

A conversation is a flow key with the interface and the direction dropped
and its two (address, port) ends put in a canonical order, so that every leg
and direction of one connection (on a router: ingress on one leg, egress on
the other, both ways) has the same canonical key. Its u64 hash is the
conversation id, which the flow table keeps in its conv_id column
(fields.CONV, filled once when a row is created); query/conversations.py
aggregates by it.

ICMP and ICMPv6 keep the type and code in dport: an echo request and its
reply have different ones, so their ports are dropped from the canonical key
and the conversation is the address pair (and protocol, VLAN).

Counted once: a packet this box forwards is seen twice (ingress on one leg,
egress on the other). For each conversation and direction, what counts is
its rows observed on ingress when it has any, else its egress rows (a router
counts the leg a packet arrived on; a host what it sends on egress and what
it receives on ingress). counted_once() is that rule as a mask over records;
query/conversations.py applies it to per-leg sums (the same rule: a test
checks the two agree).

The flow table also keeps each row's leg of its conversation (legs: which
canonical direction, which hook), so that a refresh of the conversation
view reads two columns per row and aggregates.

Everything here is vectorised over layout.FLOW_KEY_WORDS words: no Python
per flow.
"""

from __future__ import annotations

import numpy as np

from flowtop.core.flowindex import hash_words
from flowtop.kernel import layout

_KEY = layout.FLOW_KEY_WORDS
# The members the canonical key keeps besides the two ends.
_KEPT = _KEY.mask(("ip_version", "proto"))
_SRC = _KEY.spans["src"]
_DST = _KEY.spans["dst"]
_ICMP = (1, 58)


def ports(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sport, dport) of each key as the canonical key sees them: 0 for ICMP."""
    sport = _KEY.field(words, "sport")
    dport = _KEY.field(words, "dport")
    proto = _KEY.field(words, "proto")
    icmp = (proto == _ICMP[0]) | (proto == _ICMP[1])  # np.isin sorts: several times slower
    if icmp.any():
        sport = np.where(icmp, 0, sport).astype(np.uint64)
        dport = np.where(icmp, 0, dport).astype(np.uint64)
    return sport, dport


def src_is_low(words: np.ndarray) -> np.ndarray:
    """Whether each key's source end (address, port) is the canonical key's
    first (lower) end: its conversation's canonical direction 0. A key whose
    two ends are equal is direction 0 both ways."""
    s, d = words[:, _SRC], words[:, _DST]
    sport, dport = ports(words)
    # Lexicographic (address words in memory order, then the port): any
    # total order does, as long as every reader uses this one.
    low: np.ndarray = (s[:, 0] < d[:, 0]) | (
        (s[:, 0] == d[:, 0]) & ((s[:, 1] < d[:, 1]) | ((s[:, 1] == d[:, 1]) & (sport <= dport)))
    )
    return low


def canonical_words(words: np.ndarray, low: np.ndarray | None = None) -> np.ndarray:
    """The direction-independent key of each flow key, as words: version,
    protocol, VLAN, the lower end and the higher end; no interface, no
    direction. low: src_is_low(words), when the caller has it."""
    if low is None:
        low = src_is_low(words)
    sport, dport = ports(words)
    out = np.empty((len(words), 6), dtype=np.uint64)
    out[:, 0] = words[:, 0] & _KEPT[0]
    lo = low[:, None]
    out[:, 1:3] = np.where(lo, words[:, _SRC], words[:, _DST])
    out[:, 3:5] = np.where(lo, words[:, _DST], words[:, _SRC])
    vlan = _KEY.field(words, "vlan")
    out[:, 5] = np.where(low, sport, dport) | (np.where(low, dport, sport) << np.uint64(16))
    out[:, 5] |= vlan << np.uint64(32)
    return out


def conversation_ids(words: np.ndarray) -> np.ndarray:
    """The u64 conversation id of each flow key (layout.FLOW_KEY_WORDS words):
    equal for a key and its reverse, on any interface and in any direction."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.uint64)
    return hash_words(canonical_words(words))


def port_direction(canon: np.ndarray) -> np.ndarray:
    """Per canonical key: the canonical direction (0: low end -> high end)
    that is client -> server by the ports (the server has the lower non-zero
    port, as query/grouping.service_port decides), -1 when they do not
    decide (equal ports, ICMP)."""
    lp = canon[:, 5] & np.uint64(0xFFFF)
    hp = (canon[:, 5] >> np.uint64(16)) & np.uint64(0xFFFF)
    lo_srv = (lp != 0) & ((lp < hp) | (hp == 0))
    hi_srv = (hp != 0) & ((hp < lp) | (lp == 0))
    out: np.ndarray = np.where(hi_srv, 0, np.where(lo_srv, 1, -1)).astype(np.int8)
    return out


def legs(words: np.ndarray, low: np.ndarray | None = None) -> np.ndarray:
    """Each flow key's leg of its conversation: canonical direction * 2 +
    hook (0 ingress, 1 egress), 0..3. low: src_is_low(words), when known."""
    if low is None:
        low = src_is_low(words)
    d = (~low).astype(np.uint8)
    out: np.ndarray = d * 2 + _KEY.field(words, "direction").astype(np.uint8)
    return out


def ids_and_legs(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conversation_ids and legs of flow keys at once (what the flow table
    fills on a new row)."""
    low = src_is_low(words)
    return hash_words(canonical_words(words, low)), legs(words, low)


def counted_once(words: np.ndarray, conv: np.ndarray | None = None) -> np.ndarray:
    """Which of one interval's records (flow key words) count, so that a
    packet seen on several hooks counts once: every ingress record, and the
    egress records of oriented connections (conversation and direction)
    that have no ingress record among them. conv: the records'
    conversation ids when the caller has them (the flow table's conv_id)."""
    ingress = _KEY.field(words, "direction") == layout.DIR_INGRESS
    if ingress.all() or not ingress.any():
        return np.ones(len(words), dtype=bool)  # one direction of hooks only: all count
    way = src_is_low(words).astype(np.uint64)
    ids = conversation_ids(words) if conv is None else conv
    oriented = ids * np.uint64(2) + way
    out = np.ones(len(words), dtype=bool)
    egress = np.flatnonzero(~ingress)
    # Membership by one sort and a binary search (np.isin sorts both sides together).
    seen = np.sort(oriented[ingress])
    e = oriented[egress]
    pos = np.minimum(np.searchsorted(seen, e), len(seen) - 1)
    out[egress] = seen[pos] != e
    return out


def counted_by_legs(conv: np.ndarray, leg: np.ndarray) -> np.ndarray:
    """core/conversations.counted_once over records given by their
    conversation ids and legs (core/conversations.legs: the flow table's
    conv_id and conv_leg columns), so nothing is derived from the keys again:
    every ingress record counts, and the egress records of oriented
    connections (conversation and canonical direction) with no ingress
    record among them. tests/unit/test_zones_cost.py checks it against
    counted_once."""
    egress = (leg & 1).astype(bool)  # the leg's hook: 0 ingress, 1 egress
    if egress.all() or not egress.any():
        return np.ones(len(leg), dtype=bool)  # one direction of hooks only: all count
    oriented = conv * np.uint64(2) + (leg >> 1).astype(np.uint64)
    n = len(oriented)
    if n <= _INDEX_MASK:
        out = _counted_sorted(oriented, egress)
        if out is not None:
            return out
    return _counted_searched(oriented, egress)


# The low bits of a sort key (_counted_sorted): the hook (0 ingress, 1
# egress), then the record's index; the id's own bits above them.
_INDEX_BITS = 23
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_LOW_BITS = _INDEX_BITS + 1


def _counted_sorted(oriented: np.ndarray, egress: np.ndarray) -> np.ndarray | None:
    """The counted-once mask by one plain sort (numpy's vectorised sort; an
    argsort is several times slower): each record's oriented id shifted up
    by _LOW_BITS (its top bits dropped), then its hook and its index, sorted,
    puts the records of one id next to each other, its ingress ones first,
    and says where each one is: an id has an ingress record when the first
    of its run is one. Ids equal in their kept bits but not whole are caught
    by comparing the whole ids along the sorted order; if two different ids
    share a run (a truncated-hash collision, rare) None: the caller takes
    the exact search."""
    n = len(oriented)
    low = np.uint64(_LOW_BITS)
    key = oriented << low
    key |= egress.astype(np.uint64) << np.uint64(_INDEX_BITS)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    at = (key & np.uint64(_INDEX_MASK)).astype(np.intp)
    high = key >> low
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(high[1:], high[:-1], out=start[1:])
    whole = oriented[at]
    if ((whole[1:] != whole[:-1]) & ~start[1:]).any():
        return None
    ingress = (key & np.uint64(1 << _INDEX_BITS)) == 0
    first = np.flatnonzero(start)  # where each id's run begins
    has_ingress = ingress[first]
    out = np.empty(n, dtype=bool)
    out[at] = ingress | ~np.repeat(has_ingress, np.diff(first, append=n))
    return out


def _counted_searched(oriented: np.ndarray, egress: np.ndarray) -> np.ndarray:
    """The counted-once mask by a binary search of each egress id among the
    sorted ingress ones (what counted_once does)."""
    out = np.ones(len(oriented), dtype=bool)
    at = np.flatnonzero(egress)
    seen = np.sort(oriented[~egress])
    e = oriented[at]
    pos = np.minimum(np.searchsorted(seen, e), len(seen) - 1)
    out[at] = seen[pos] != e
    return out
