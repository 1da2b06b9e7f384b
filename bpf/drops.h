/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures shared by bpf/drops.c and its userspace reader
 * (flowtop/kernel/drop_records.py mirrors them with numpy dtypes;
 * tests/kernel/test_drops.py checks the two byte for byte against the types
 * bcc builds from this file). Explicit padding throughout.
 *
 * A drop is keyed like a flow (struct flow_key, so that userspace joins it
 * to the flow table by the same 48 bytes) plus the kernel's reason:
 *   ifindex     the device the packet was on: skb->dev's ifindex; when
 *               skb->dev is NULL (a socket's queue, where the kernel clears
 *               it), skb->skb_iif, the device it came in on; else 0
 *   direction   FT_DIR_INGRESS when the packet was received on that device
 *               (skb->skb_iif, set by the receive path, equals it: also a
 *               forwarded packet dropped before it is routed out, e.g. in the
 *               netfilter FORWARD chain, since skb->dev is still the input
 *               device there); FT_DIR_EGRESS otherwise: sent by this host
 *               (skb_iif 0) or forwarded and dropped on its way out (skb->dev
 *               is the output device, skb_iif the input one)
 *   ip_version, src, dst, proto, sport, dport
 *               from the packet's IP and L4 headers, laid out as the TC
 *               program lays them out (addresses in network order, IPv4 in
 *               the first 4 bytes, ports in host order; ICMP: dport = type
 *               << 8 | code); ip_version 0 and everything else 0 for a packet
 *               that is not IPv4/IPv6 (ARP, ...) or whose headers could not
 *               be read; ports 0 for a later fragment and when the L4
 *               header is not in the skb's linear data (bytes the program
 *               reads end at skb->tail: what is past it is in fragments)
 *   vlan        always 0: the drop point rarely still has the tag (the TC
 *               program keys tagged traffic by it; such a drop joins by the
 *               rest of the key)
 */
#ifndef FLOWTOP_DROPS_H
#define FLOWTOP_DROPS_H

#include "flowtop.h" /* struct flow_key, FT_DIR_* */

struct ft_drop_key {
	struct flow_key flow;
	__u32 reason; /* enum skb_drop_reason, as the running kernel numbers it */
	__u32 pad;
};

/* Per CPU (the map is per-CPU): packets and IP bytes dropped under one key
 * since userspace last drained it. A packet is one skb (a GSO skb dropped
 * whole counts once); bytes are the IP header's length (IPv4 total length,
 * IPv6 40 + payload length), skb->len where that says 0 (BIG TCP) or the
 * packet is not IP. */
struct ft_drop_stats {
	__u64 packets;
	__u64 bytes;
};

/*
 * Indexes into the drop_counters per-CPU array (flowtop/kernel/counters.py
 * describes each once). The first two are drops we lost; the others are
 * drops deliberately not counted.
 */
enum ft_drop_counter {
	FT_DROP_MAP_FULL = 0,   /* a drop not counted: the drops map was full (or the update failed) */
	FT_DROP_UNREADABLE = 1, /* a drop whose sk_buff or device could not be read */
	FT_DROP_NO_NETNS = 2,   /* namespace-only mode: a drop with neither device nor socket,
	                         * whose namespace is unknown (not counted) */
	FT_DROP_CTR_MAX = 3,
};

#endif /* FLOWTOP_DROPS_H */
