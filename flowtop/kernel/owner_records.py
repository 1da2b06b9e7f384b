"""Who owns a local socket's tuple, as the cgroup programs of bpf/owner.c report it.

numpy mirrors of struct ft_owner_tuple and struct ft_owner (bpf/owner.h, the
source of truth; tests/kernel/test_owners.py checks them against what bcc
compiled), and decode(), which turns a drained batch of the ``endpoints``
map into OWNER_RECORDs.

The tuple is seen from the local socket: local address and port, remote
address and port. Addresses are laid out as in layout.FLOW_KEY (16 bytes;
IPv4 in the first 4, network order, the rest zero) and sit on 8-byte
boundaries, so a join compares them as whole uint64 words
(OWNER_TUPLE_WORDS) against FLOW_KEY_WORDS' src/dst; ports are host order
like FLOW_KEY's sport/dport. An egress flow key (src, sport, dst, dport)
matches (local, lport, remote, rport); an ingress one the reverse.
"""

from __future__ import annotations

import numpy as np

from flowtop.kernel.layout import KeyWords

# struct ft_owner.flags (FT_OWNER_F_* in bpf/owner.h)
# socket older than flowtop: no creator recorded (tgid, uid, comm, cgroup 0; netns_cookie
# too where cgroup_skb programs lack bpf_get_netns_cookie, OwnerCollector.skb_netns False)
OWNER_UNKNOWN = 1 << 0
OWNER_FROM_PACKET = 1 << 1  # tuple read from the packet's headers (socket not connected)
OWNER_INGRESS = 1 << 2  # reported from an incoming packet (else an outgoing one)
# Userspace only: a record of the start-up snapshot (core/procsockets.py), not the kernel's.
OWNER_FROM_PROC = 1 << 31

OWNER_TUPLE = np.dtype(
    [
        ("family", "u1"),  # 4 or 6: the packet's IP version (an AF_INET6 socket speaking IPv4 is 4)
        ("proto", "u1"),  # 6 TCP, 17 UDP
        ("lport", "<u2"),  # local port, host order
        ("rport", "<u2"),  # remote port, host order
        ("pad", "<u2"),
        ("local", "V16"),  # local address (IPv4: first 4 bytes, network order)
        ("remote", "V16"),  # remote address
    ]
)

OWNER = np.dtype(
    [
        ("sock_cookie", "<u8"),  # bpf_get_socket_cookie of the socket that reported it
        ("cgroup_id", "<u8"),  # cgroup v2 id of the creator (the cgroup directory's inode)
        ("netns_cookie", "<u8"),  # network namespace cookie of the socket (0: unknown)
        ("created_ns", "<u8"),  # CLOCK_MONOTONIC when the socket was created (0: unknown)
        ("tgid", "<u4"),  # creating process (0 with OWNER_UNKNOWN)
        ("uid", "<u4"),  # its real uid
        ("gid", "<u4"),  # its real gid
        ("flags", "<u4"),  # OWNER_* bits
        ("comm", "S16"),  # its command name (bpf_get_current_comm; untrusted text)
    ]
)

# One drained endpoints entry: the tuple and who owns it.
OWNER_RECORD = np.dtype([("tuple", OWNER_TUPLE), ("owner", OWNER)])

# The tuple as uint64 words (KeyWords): family/proto/lport/rport in word 0,
# local in words 1-2, remote in words 3-4.
OWNER_TUPLE_WORDS = KeyWords.of(OWNER_TUPLE)

assert OWNER_TUPLE.itemsize == 40
assert OWNER.itemsize == 64
assert OWNER_RECORD.itemsize == 104


def decode(keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """A drained batch (keys: OWNER_TUPLE, vals: OWNER, as many of each) as
    OWNER_RECORDs, a copy (the batch reader's buffers are reused)."""
    if len(keys) != len(vals):
        raise ValueError(f"{len(keys)} tuples for {len(vals)} owners")
    ks, vs = OWNER_TUPLE.itemsize, OWNER.itemsize
    if keys.dtype.itemsize != ks or vals.dtype.itemsize != vs:
        raise TypeError(f"{keys.dtype.itemsize}/{vals.dtype.itemsize}-byte entries, not {ks}/{vs}")
    raw = np.empty((len(keys), OWNER_RECORD.itemsize), dtype=np.uint8)
    # Raw bytes: numpy copies nested records field by field, much slower.
    raw[:, :ks] = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), ks)
    raw[:, ks:] = np.ascontiguousarray(vals).view(np.uint8).reshape(len(vals), vs)
    out: np.ndarray = raw.view(OWNER_RECORD).reshape(len(keys))
    return out
