/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures shared by bpf/sockops.c and its userspace reader
 * (flowtop/kernel/sockops_records.py, which mirrors them with numpy dtypes;
 * tests/kernel/test_sockops.py checks the two byte for byte against the
 * types bcc builds from this file). Explicit padding throughout, so that
 * the layout does not depend on the compiler.
 */
#ifndef FLOWTOP_SOCKOPS_H
#define FLOWTOP_SOCKOPS_H

#include "flowtop.h" /* struct flow_key: connections join flows by it */

/* Who created a connection entry (struct ft_conn.origin). */
#define FT_ORIGIN_SOCKOPS 1    /* the sock_ops program: the socket's own figures */
#define FT_ORIGIN_TRACEPOINT 2 /* only a tcp_retransmit_skb event (all-netns mode) */

/*
 * One local TCP connection, cumulative since it was opened (sock_ops
 * origin) or first seen. The key (struct flow_key, ifindex/direction/vlan
 * 0, proto 6) is oriented local -> remote: src/sport is this host's socket.
 * A v4-mapped IPv6 socket is keyed as IPv4, as its packets are.
 */
struct ft_conn {
	__u64 sock_cookie;    /* bpf_get_socket_cookie(); 0 for tracepoint entries */
	__u64 skaddr;         /* kernel address of the socket: tracepoint events name
	                       * their socket by it, so they attach to the right one */
	__u64 netns_cookie;   /* network namespace of the socket */
	__u64 retrans;        /* tcp_sock.total_retrans: segments retransmitted */
	__u64 data_segs;      /* tcp_sock.data_segs_out */
	__u64 bytes_acked;    /* tcp_sock.bytes_acked */
	__u64 bytes_received; /* tcp_sock.bytes_received */
	__u64 tp_retrans;     /* tcp:tcp_retransmit_skb events that sent (err == 0) */
	__u64 first_ns;       /* CLOCK_MONOTONIC when the entry was created */
	__u64 last_ns;        /* CLOCK_MONOTONIC of the last update */
	__u32 srtt_us;        /* smoothed RTT (tcp_sock.srtt_us >> 3), 0 = none yet */
	__u32 rttvar_us;      /* tcp_sock.mdev_us >> 2, as TCP_INFO's tcpi_rttvar;
	                       * 0 when the kernel's BTF does not say where it is */
	__u32 min_rtt_us;     /* lowest tcp_min_rtt() seen, 0 = none yet */
	__u32 rtt_samples;    /* BPF_SOCK_OPS_RTT_CB calls seen */
	__u32 rto;            /* BPF_SOCK_OPS_RTO_CB calls seen (retransmission timeouts) */
	__u8 state;           /* TCP state (TCP_ESTABLISHED = 1 ... TCP_CLOSE = 7) */
	__u8 server;          /* 1: remote end is the server (we connected), 2: we are */
	__u8 origin;          /* FT_ORIGIN_* */
	__u8 pad;
};

/* Key of the closed-connections map: unique per socket and close. */
struct ft_closed_key {
	__u64 sock_id;  /* sock_cookie, or skaddr for a tracepoint entry */
	__u64 close_ns; /* CLOCK_MONOTONIC of the close */
};

/* A connection's last state, queued for userspace when it closed. */
struct ft_closed_conn {
	struct flow_key key;
	struct ft_conn conn;
};

/*
 * Indexes into the so_counters per-CPU array. The first four are data we
 * lost; the others say how entries came to be and are not losses.
 */
enum ft_so_counter {
	FT_SO_CONN_MAP_FULL = 0,    /* a connection could not be inserted: map full */
	FT_SO_CLOSED_MAP_FULL = 1,  /* a closed connection's last record was dropped */
	FT_SO_FLAGS_FAILED = 2,     /* the kernel refused some sock_ops callback flags */
	FT_SO_TUPLE_COLLISION = 3,  /* a socket whose 5-tuple another tracked socket holds */
	FT_SO_ADOPTED = 4,          /* entries created mid-connection (opened before us) */
	FT_SO_STALE_REPLACED = 5,   /* a new connection replaced an entry left unclosed */
	FT_SO_TP_UNTRACKED = 6,     /* retransmit events of connections we do not track */
	FT_SO_CTR_MAX = 7,
};

#endif /* FLOWTOP_SOCKOPS_H */
