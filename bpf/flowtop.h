/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures shared by the kernel programs and flowtop's userspace decoder.
 *
 * This header is the source of truth for the map layouts. The Python side
 * (flowtop/kernel/layout.py) mirrors it with numpy dtypes, and
 * tests/kernel/test_layout.py checks the two byte for byte against the types
 * bcc builds from this file. Every struct is padded explicitly so that the
 * layout does not depend on the compiler.
 */
#ifndef FLOWTOP_H
#define FLOWTOP_H

#define FT_DIR_INGRESS 0
#define FT_DIR_EGRESS 1

/* struct flow_stats.mpls: a label stack was seen; the low 24 bits are its
 * top entry without the TTL. */
#define FT_MPLS_PRESENT (1U << 24)

/* struct flow_stats.tcp_flags, above the TCP flags byte: a packet of the
 * flow had SYN without ACK, so its sender opened the connection (the
 * client end of a conversation). Not a TCP flag: userspace masks it off
 * wherever flags are shown or exported (layout.tcp_wire_flags). */
#define FT_TCP_SYN_ONLY (1U << 8)

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
 * one flow at once. The MPLS label is not part of the flow key: packets of
 * one 5-tuple on different label switched paths are one flow, which keeps
 * the last label seen.
 */
struct flow_stats {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns; /* CLOCK_MONOTONIC_COARSE (bpf_ktime_get_coarse_ns) */
	__u64 last_seen_ns;
	__u64 tcp_flags;     /* OR of the TCP flags byte (CWR..FIN), | FT_TCP_SYN_ONLY */
	__u8 dscp;           /* DSCP of the last packet seen */
	__u8 pad[3];
	/* The last packet's top MPLS label stack entry without its TTL (label
	 * << 4 | TC << 1 | S) | FT_MPLS_PRESENT (1 << 24); 0: it had no label. */
	__u32 mpls;
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
 * Counters as the device's own statistics (ip -s link) count them. On
 * Ethernet: one packet per skb, skb->len bytes, Ethernet header included,
 * plus the 4 bytes of a received VLAN tag the kernel moved into
 * skb->vlan_tci. On a device without an Ethernet header (tun, WireGuard,
 * PPP, IP tunnels): one packet per segment of a GSO packet (tun and PPP
 * segment before counting), the bytes from the network header on.
 */
struct iface_stats {
	__u64 packets;
	__u64 bytes;
};

/*
 * Indexes into the `counters` per-CPU array: everything the data path could
 * not account for in a flow, so that userspace can report it, and a few
 * informational counts. Every packet a program sees is counted exactly
 * once: in a flow (its segments), or in one of FLOW_MAP_FULL (its segments
 * in LOST_PACKETS), TRUNCATED, MALFORMED, IPV6_EXT_LIMIT, NO_FLOW_MAP,
 * NON_IP, MPLS_LIMIT, NET_SEEK_LIMIT. NO_PORTS is informational: those
 * packets are in a flow. New counters go at the end (recordings and
 * userspace index by position).
 */
enum ft_counter {
	FT_CTR_FLOW_MAP_FULL = 0,   /* flow insert failed: the interval map is full */
	FT_CTR_LOST_PACKETS = 1,    /* packets (segments) of those failed inserts */
	FT_CTR_LOST_BYTES = 2,      /* IP bytes of those failed inserts */
	FT_CTR_IFACE_MAP_FULL = 3,  /* interface counter insert failed */
	FT_CTR_TRUNCATED = 4,       /* frame ended inside the L2 or IP headers */
	FT_CTR_MALFORMED = 5,       /* impossible header field (IHL < 5, IPv4
				     * total length < IHL, or 0 without GSO, ...) */
	FT_CTR_IPV6_EXT_LIMIT = 6,  /* more IPv6 extension headers than we walk */
	FT_CTR_NO_FLOW_MAP = 7,     /* no active interval map (should never happen) */
	FT_CTR_NON_IP = 8,          /* frames that are not IP (ARP, LLDP, ...) */
	/* Passive TCP RTT/retransmit tracking (bpf/tcprtt.h). */
	FT_CTR_TCP_CONN_NEW = 9,       /* connections inserted in tcp_conns (userspace
				        * works out LRU evictions from it) */
	FT_CTR_TCP_CONN_MAP_FULL = 10, /* connection insert failed: not tracked */
	FT_CTR_TCP_TS_STALE = 11,      /* TSval never echoed within 1 s: sample given up */
	FT_CTR_NO_PORTS = 12,       /* in a flow, but the L4 header was cut: ports 0/0 */
	FT_CTR_MPLS_LIMIT = 13,     /* MPLS label stack deeper than we walk */
	FT_CTR_NET_SEEK_LIMIT = 14, /* no Ethernet header, network header not found */
	/* Names from the wire (bpf/wirenames.h); the packets are in their flows. */
	FT_CTR_WIRE_RATE_LIMITED = 15, /* events refused by the per-CPU token bucket */
	FT_CTR_WIRE_RING_FULL = 16,    /* events refused because the ring was full */
	FT_CTR_WIRE_EVENTS = 17,       /* events handed up through wire_ring */
	FT_CTR_MAX = 18,
};

/* struct wire_event_hdr.kind (flowtop/kernel/wire_records.py KIND_*). */
#define FT_WIRE_KIND_DNS 1       /* a DNS response (from a DNS port) */
#define FT_WIRE_KIND_TCP_FIRST 2 /* a first data segment of a new TCP connection's client */
#define FT_WIRE_KIND_QUIC 3      /* a QUIC Initial: UDP to 443 (client to server) */

/* Payload bytes an event carries at most (a -D cflag from
 * flowtop/kernel/program.py). Records are as long as what they carry, so
 * the cap costs nothing for small packets; 2048 holds a whole ClientHello
 * with a post-quantum key share (~1.8 KB, often one GSO/GRO skb) whose
 * extensions a browser may put in any order, SNI last. */
#ifndef FT_WIRE_CAP
#define FT_WIRE_CAP 2048
#endif

/*
 * The header of one record of the wire_ring ring buffer (bpf/wirenames.h),
 * followed by cap_len bytes of L4 payload (after the UDP or TCP header):
 * the record is sizeof(struct wire_event_hdr) + cap_len bytes long.
 * Mirrored by flowtop/kernel/wire_records.py WIRE_EVENT_HDR.
 */
struct wire_event_hdr {
	struct flow_key key; /* the packet's own flow key */
	__u8 kind;           /* FT_WIRE_KIND_* */
	__u8 pad[3];
	__u32 seq;           /* TCP sequence number of the first payload byte; 0 for UDP */
	__u32 payload_len;   /* the payload's whole length in the packet */
	__u32 cap_len;       /* bytes of it that follow (<= FT_WIRE_CAP) */
};


/*
 * Passive TCP tracking (bpf/tcprtt.h): one entry per connection, whichever
 * interface and hook its packets cross, so a forwarded packet seen twice
 * (ingress of one leg, egress of the other) lands in the same entry.
 *
 * Canonical connection key: the two (address, port) endpoints ordered, the
 * lower first (addresses compared as two 64-bit words, then ports). An
 * endpoint's index (0 or 1) names the direction it sends: direction d goes
 * from endpoint d to endpoint 1 - d. Addresses as in struct flow_key; no
 * ifindex and no VLAN, which can differ between the legs of a router.
 * (addr0/addr1 rather than addr[2][16]: bcc's Python types get 2-D arrays
 * wrong.)
 */
struct tcp_conn_key {
	__u8 addr0[16];
	__u8 addr1[16];
	__u16 port0;    /* host order */
	__u16 port1;
	__u8 ip_version;
	__u8 pad[3];
};

/* struct tcp_half.flags */
#define FT_HALF_SEEN 0x01    /* the direction has an observation point */
#define FT_HALF_SEQ 0x02     /* seq_end is valid */
#define FT_HALF_TS 0x04      /* ts_last is valid (the sender uses timestamps) */
#define FT_HALF_FIN 0x08     /* the sender sent a FIN */
#define FT_HALF_ACK_DUE 0x10 /* the client's direction: SYN/ACK seen, its ACK not yet */

/*
 * One direction of a connection, as its packets see it at the observation
 * point (obs_ifindex, obs_hook: where the direction was first seen), which
 * is the only place its sequence and timestamp logic runs. Everything a
 * packet of an established connection reads or writes is here, in 56 bytes;
 * RTT figures, written once per sample, are in struct tcp_rtt.
 */
struct tcp_half {
	__u32 obs_ifindex;
	__u8 obs_hook;       /* FT_DIR_* of the observation point */
	__u8 flags;          /* FT_HALF_* */
	__u16 defer_cpu;     /* 0, or 1 + the CPU that may defer this direction's data segments */
	__u32 seq_end;       /* highest sequence end (seq + length) seen, but see defer_cpu */
	__u32 ts_last;       /* highest TSval seen */
	__u32 ts_pending;    /* TSval waiting for its echo ... */
	__u32 stamp;         /* nonzero, set when the direction is first seen: this half, not
			      * an earlier connection's on the same 4-tuple (deferred counts) */
	__u64 ts_time_ns;    /* ... first seen then; 0: no sample pending */
	__u64 data_segs;     /* segments with payload, retransmissions included (atomic) */
	__u64 retrans;       /* segments sent again (atomic) */
	__u64 last_ns;       /* CLOCK_MONOTONIC_COARSE of the last packet at obs point */
};

/*
 * The RTT between the box and the receiver of one direction ("half" of the
 * path: box -> receiver -> box), measured by the receiver echoing the
 * sender's TSval, or by the handshake.
 */
struct tcp_rtt {
	__u64 srtt_ns;       /* smoothed (EWMA, gain 1/8), 0: no sample yet */
	__u64 mdev_ns;       /* mean deviation (EWMA, gain 1/4) */
	__u64 min_ns;        /* smallest sample */
	__u64 next_start_ns; /* rate limit: no new sample starts before this */
	__u32 samples;       /* completed samples (handshake included) */
	__u32 pad;
};

/* struct tcp_conn.flags */
#define FT_CONN_RST 0x01          /* a RST was seen */
#define FT_CONN_SYN_AGAIN 0x02    /* the SYN was sent again: handshake half ambiguous */
#define FT_CONN_SYNACK_AGAIN 0x04 /* the SYN/ACK was sent again */

/*
 * One direction d: its sender's state and the RTT to its receiver. The
 * 64 bytes before `half` (the RTT, written once per sample, and padding)
 * keep the two directions' halves, written by every packet and often on
 * different CPUs, out of each other's cache lines, and half 0 out of the
 * key's (read by every lookup), wherever the entry starts.
 */
struct tcp_side {
	struct tcp_rtt rtt;
	__u8 pad[24];
	struct tcp_half half;
};

/*
 * Value of tcp_conns. Handshake times are the first sighting of each packet
 * (CLOCK_MONOTONIC, bpf_ktime_get_ns), 0 when not seen: SYN/ACK - SYN is the
 * server's half, ACK - SYN/ACK the client's.
 */
struct tcp_conn {
	__u64 syn_ns;
	__u64 synack_ns;
	__u64 ack_ns;
	__u32 isn;                 /* the client's initial sequence number */
	__u8 client;               /* 0: unknown, 1: endpoint 0 sent the SYN, 2: endpoint 1 */
	__u8 flags;                /* FT_CONN_* */
	__u8 pad[2];
	struct tcp_side side[2];   /* index: direction */
};

#endif /* FLOWTOP_H */
