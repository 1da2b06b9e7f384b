/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures shared by the kernel programs and flowtop's userspace decoder.
 *
 * This header is the source of truth for the map layouts. The Python side
 * (flowtop/collector/layout.py) mirrors it with numpy dtypes, and
 * tests/kernel/test_layout.py checks the two byte for byte against the types
 * bcc builds from this file. Every struct is padded explicitly so that the
 * layout does not depend on the compiler.
 */
#ifndef FLOWTOP_H
#define FLOWTOP_H

#define FT_DIR_INGRESS 0
#define FT_DIR_EGRESS 1

/* Address family of an interface counter (struct iface_key.family). */
#define FT_FAMILY_OTHER 0
#define FT_FAMILY_IPV4 1
#define FT_FAMILY_IPV6 2

/*
 * Flow identity. Addresses are 16 bytes: IPv4 uses the first 4 (network
 * order), the rest stays zero. Ports are host order. ICMP/ICMPv6 flows put
 * (type << 8 | code) in dport and 0 in sport, as NetFlow does, so that echo
 * requests and unreachables are different flows. Non-first IPv4/IPv6
 * fragments have no ports (0, 0). vlan is the outermost VLAN ID (offloaded
 * tag first, then the first in-band 802.1Q/802.1ad tag), 0 when untagged.
 */
struct flow_key {
	__u32 ifindex;
	__u8 direction;  /* FT_DIR_* */
	__u8 ip_version; /* 4 or 6 */
	__u8 proto;      /* L4 protocol number (after IPv6 extension headers) */
	__u8 pad0;
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u16 vlan;
	__u16 pad1;
} __attribute__((aligned(8)));

/*
 * Per-flow counters for one collection interval. packets counts GSO/GRO
 * super-packets as their segments; bytes are IP octets (IP header and
 * payload, as IPFIX octetDeltaCount), with the headers of every segment.
 * packets, bytes and tcp_flags are updated atomically: several CPUs can hit
 * one flow at once.
 */
struct flow_stats {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns; /* CLOCK_MONOTONIC_COARSE (bpf_ktime_get_coarse_ns) */
	__u64 last_seen_ns;
	__u64 tcp_flags;     /* OR of the TCP flags byte (CWR..FIN) */
	__u8 dscp;           /* DSCP of the last packet seen */
	__u8 pad[7];
};

/*
 * One slot of the per-CPU flow cache: a flow and its counters for the
 * current interval on this CPU. packets == 0 marks a free slot.
 */
struct flow_cache_entry {
	struct flow_key key;
	struct flow_stats stats;
};

/* Slot of an interface counter in the iface_slots array. */
#define FT_IFACE_SLOT(ifindex, dir, family) ((ifindex) * 6 + (dir) * 3 + (family))

/* Interface counter identity (the hash map, for ifindexes past the array). */
struct iface_key {
	__u32 ifindex;
	__u8 direction; /* FT_DIR_* */
	__u8 family;    /* FT_FAMILY_* */
	__u16 pad;
};

/*
 * L2 counters as the device's own statistics (ip -s link) count them: one
 * packet and skb->len bytes per skb, Ethernet header included, plus the 4
 * bytes of a received VLAN tag the kernel moved into skb->vlan_tci.
 */
struct iface_stats {
	__u64 packets;
	__u64 bytes;
};

/*
 * Indexes into the `counters` per-CPU array: everything the data path could
 * not account for in a flow, so that userspace can report it.
 */
enum ft_counter {
	FT_CTR_FLOW_MAP_FULL = 0,   /* flow insert failed: the interval map is full */
	FT_CTR_LOST_PACKETS = 1,    /* packets (segments) of those failed inserts */
	FT_CTR_LOST_BYTES = 2,      /* IP bytes of those failed inserts */
	FT_CTR_IFACE_MAP_FULL = 3,  /* interface counter insert failed */
	FT_CTR_TRUNCATED = 4,       /* frame ended inside a header we needed */
	FT_CTR_MALFORMED = 5,       /* impossible header field (IHL < 5, ...) */
	FT_CTR_IPV6_EXT_LIMIT = 6,  /* more IPv6 extension headers than we walk */
	FT_CTR_NO_FLOW_MAP = 7,     /* no active interval map (should never happen) */
	FT_CTR_NON_IP = 8,          /* frames that are not IP (ARP, LLDP, ...) */
	FT_CTR_MAX = 9,
};

#endif /* FLOWTOP_H */
