// SPDX-License-Identifier: GPL-2.0
/*
 * flowtop local TCP health: a sock_ops program on the cgroup v2 root and the
 * tcp:tcp_retransmit_skb tracepoint keep one entry per TCP connection of this
 * host (struct ft_conn) with the socket's own RTT estimate, retransmits and
 * timeouts. Userspace reads the live entries in batches; a connection that
 * closes moves to the `closed` map, which userspace drains, so that its last
 * figures are reported exactly once.
 *
 * Why sock_ops: the callbacks run in the TCP stack with the socket locked and
 * hand us the kernel's own srtt, min RTT and total_retrans, so no estimate of
 * ours can drift from what `ss -ti` shows. The RTT, retransmit, RTO and state
 * callbacks cost nothing until a program asks for them per socket
 * (bpf_sock_ops_cb_flags_set), which we do when a connection opens.
 *
 * Build-time options come as -D cflags from flowtop/kernel/sockops.py (FT_MDEV_OFF from
 * flowtop/kernel/compiler.py, which reads the running kernel's BTF):
 *   FT_PROG_NAME        name of the sock_ops function, ftsops_<pid>: the kernel
 *                       keeps it as the program name, which is how a later run
 *                       tells a program of a dead flowtop from anyone else's
 *   FT_CONN_MAP_SIZE    live connections tracked at once
 *   FT_CLOSED_MAP_SIZE  closed connections queued between two reads
 *   FT_NETNS_ONLY       1: only sockets of flowtop's network namespace, whose
 *                       cookie userspace writes into netns_cfg (a run-time
 *                       value, not a flag: one build serves every namespace)
 *   FT_MDEV_OFF         byte offset of mdev_us in struct tcp_sock, from the
 *                       running kernel's BTF; -1 when unknown (rttvar stays 0)
 *   FT_TP_HAS_ERR       1 when tcp_retransmit_skb carries `err` (6.12+): it
 *                       then fires for attempts that sent nothing, too
 *   FT_PER_ACK          1: refresh entries on every received segment (below)
 */
#include <uapi/linux/bpf.h>

#include "sockops.h"

#ifndef FT_CONN_MAP_SIZE
#define FT_CONN_MAP_SIZE 65536
#endif
#ifndef FT_CLOSED_MAP_SIZE
#define FT_CLOSED_MAP_SIZE 65536
#endif
#ifndef FT_NETNS_ONLY
#define FT_NETNS_ONLY 0
#endif
#ifndef FT_MDEV_OFF
#define FT_MDEV_OFF -1
#endif
#ifndef FT_TP_HAS_ERR
#define FT_TP_HAS_ERR 0
#endif
#ifndef FT_PER_ACK
#define FT_PER_ACK 1
#endif

#define FT_AF_INET 2
#define FT_AF_INET6 10
#define FT_IPPROTO_TCP 6
#define FT_TCP_CLOSE 7
/* The third word of a v4-mapped IPv6 address (::ffff:0:0/96), as loaded
 * from network order on a little-endian host. */
#define FT_V4MAPPED_WORD 0xffff0000U

/*
 * RTT_CB comes once per round trip, and not at all while a loss is being
 * repaired (snd_una stands still), when the RTT moves most: a queue drains.
 * With FT_PER_ACK the program also runs for every segment the socket
 * receives (PARSE_HDR_OPT_CB, before the segment is processed), which keeps
 * an entry one ACK behind the socket instead of up to several round trips.
 */
#if FT_PER_ACK
#define FT_ACK_FLAG BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG
#else
#define FT_ACK_FLAG 0
#endif
#define FT_CB_FLAGS                                                                 \
	(BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG |                  \
	 BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG | FT_ACK_FLAG)

/* bcc declares this helper as returning u32; the kernel returns a u64. */
static __u64 (*ft_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;

/* Live connections. Key: the 5-tuple, local -> remote. Value: its figures.
 * Created by the sock_ops program when a connection opens (or by the
 * tracepoint in all-namespaces mode); deleted by the kernel side when the
 * connection closes, after a copy went to `closed`. Userspace only reads. */
BPF_TABLE("hash", struct flow_key, struct ft_conn, conns, FT_CONN_MAP_SIZE);

/* Closed connections not read yet. Key: socket and close time. Value: the
 * connection's last figures. Inserted here at close; userspace deletes each
 * entry as it reads it (lookup-and-delete batches). */
BPF_TABLE("hash", struct ft_closed_key, struct ft_closed_conn, closed, FT_CLOSED_MAP_SIZE);

/* What could not be tracked, and how entries were made (enum ft_so_counter).
 * Per CPU, never deleted; userspace reads the sums. */
BPF_PERCPU_ARRAY(so_counters, __u64, FT_SO_CTR_MAX);

/* Slot 0: the cookie of flowtop's network namespace (FT_NETNS_ONLY), written
 * by userspace after the load and before the program is attached, never
 * deleted. It is 0 until then, and no namespace's cookie is 0 (the kernel
 * hands them out from a counter incremented before use): a program that
 * runs before it is filled counts nothing rather than everything. */
BPF_ARRAY(netns_cfg, __u64, 1);

static __always_inline void count(__u32 idx)
{
	__u64 *v = so_counters.lookup(&idx);

	if (v)
		*v += 1;
}

/*
 * Fills the address part of a key from two IPv6 addresses (4 words each,
 * network order). A v4-mapped pair is an IPv4 connection on the wire and the
 * TC side keys it as IPv4, so it is keyed as one here too.
 */
static __always_inline void key_set_v6(struct flow_key *k, const __u32 *s, const __u32 *d)
{
	if (s[0] == 0 && s[1] == 0 && s[2] == FT_V4MAPPED_WORD && d[0] == 0 && d[1] == 0 &&
	    d[2] == FT_V4MAPPED_WORD) {
		k->ip_version = 4;
		__builtin_memcpy(k->src, &s[3], 4);
		__builtin_memcpy(k->dst, &d[3], 4);
		return;
	}
	k->ip_version = 6;
	__builtin_memcpy(k->src, s, 16);
	__builtin_memcpy(k->dst, d, 16);
}

/* The key of the socket behind a sock_ops callback; -1 if not IPv4/IPv6. */
static __always_inline int key_from_skops(struct bpf_sock_ops *skops, struct flow_key *k)
{
	__u32 family = skops->family;

	k->proto = FT_IPPROTO_TCP;
	k->sport = (__u16)skops->local_port; /* host order already */
	/* remote_port holds the network-order port in its upper 16 bits on a
	 * little-endian host: swapping the word yields it in host order. */
	k->dport = (__u16)__builtin_bswap32(skops->remote_port);
	if (family == FT_AF_INET) {
		__u32 s = skops->local_ip4, d = skops->remote_ip4;

		k->ip_version = 4;
		__builtin_memcpy(k->src, &s, 4);
		__builtin_memcpy(k->dst, &d, 4);
		return 0;
	}
	if (family != FT_AF_INET6)
		return -1;
	__u32 s6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2],
		       skops->local_ip6[3]};
	__u32 d6[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2],
		       skops->remote_ip6[3]};
	key_set_v6(k, s6, d6);
	return 0;
}

/*
 * The key of a tracepoint's socket. Tracepoint fields are read with
 * bpf_probe_read_kernel: the address arrays are not aligned for direct
 * context loads. Ports arrive in host order. -1 if not IPv4/IPv6.
 */
static __always_inline int key_from_tp(struct flow_key *k, __u16 family, __u16 sport,
				       __u16 dport, const void *s4, const void *d4,
				       const void *s6, const void *d6)
{
	k->proto = FT_IPPROTO_TCP;
	k->sport = sport;
	k->dport = dport;
	if (family == FT_AF_INET) {
		k->ip_version = 4;
		bpf_probe_read_kernel(k->src, 4, s4);
		bpf_probe_read_kernel(k->dst, 4, d4);
		return 0;
	}
	if (family != FT_AF_INET6)
		return -1;
	__u32 s[4] = {}, d[4] = {};

	bpf_probe_read_kernel(s, 16, s6);
	bpf_probe_read_kernel(d, 16, d6);
	key_set_v6(k, s, d);
	return 0;
}

/* Copies the socket's cumulative figures into its entry. */
static __always_inline void refresh(struct ft_conn *e, struct bpf_sock_ops *skops, __u64 now)
{
	__u32 min_rtt = skops->rtt_min;

	__u32 srtt = skops->srtt_us;

	/* The kernel calls RTT_CB once per round trip, just before it stores
	 * the new srtt: skops->srtt_us is still the previous one there, and
	 * args[1] (Linux 6.10+) the new one. Between two RTT_CBs srtt moves
	 * without telling us, so an entry lags `ss` by at most a round trip. */
	if (skops->op == BPF_SOCK_OPS_RTT_CB && skops->args[1])
		srtt = skops->args[1];
	e->srtt_us = srtt >> 3;
	/* rtt_min is the kernel's windowed minimum (tcp_min_rtt_wlen, 5 min by
	 * default), ~0U before the first sample; keep the lowest ever seen. */
	if (min_rtt != 0 && min_rtt != ~0U && (e->min_rtt_us == 0 || min_rtt < e->min_rtt_us))
		e->min_rtt_us = min_rtt;
	e->retrans = skops->total_retrans;
	e->data_segs = skops->data_segs_out;
	e->bytes_acked = skops->bytes_acked;
	e->bytes_received = skops->bytes_received;
	e->state = skops->state;
	e->last_ns = now;
#if FT_MDEV_OFF >= 0
	/* bpf_sock_ops has no mdev_us. The verifier checks this load against the
	 * running kernel's BTF, the same BTF userspace took the offset from, so
	 * it either reads tcp_sock.mdev_us or the program does not load. */
	struct bpf_sock *sk = skops->sk;

	if (sk) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

		if (tp)
			e->rttvar_us = *(__u32 *)((char *)tp + FT_MDEV_OFF) >> 2;
	}
#endif
}

/* A new entry for key; NULL (and counted) when the map is full. An entry
 * left under the same key (stale, see handle_sockops) is overwritten. */
static __always_inline struct ft_conn *new_conn(struct flow_key *key, __u64 cookie,
						__u64 skaddr, __u64 netns, __u64 now,
						__u8 origin)
{
	struct ft_conn c = {};

	c.sock_cookie = cookie;
	c.skaddr = skaddr;
	c.netns_cookie = netns;
	c.first_ns = now;
	c.last_ns = now;
	c.origin = origin;
	if (conns.update(key, &c) != 0) {
		count(FT_SO_CONN_MAP_FULL);
		return 0;
	}
	return conns.lookup(key);
}

/* Queues the connection's last figures for userspace and forgets it. */
static __always_inline void close_conn(struct flow_key *key, struct ft_conn *e, __u64 now)
{
	struct ft_closed_key ck = {};
	struct ft_closed_conn c = {};

	ck.sock_id = e->sock_cookie ? e->sock_cookie : e->skaddr;
	ck.close_ns = now;
	c.key = *key;
	c.conn = *e;
	c.conn.state = FT_TCP_CLOSE;
	c.conn.last_ns = now;
	if (closed.insert(&ck, &c) != 0)
		count(FT_SO_CLOSED_MAP_FULL);
	conns.delete(key);
}

/*
 * Every callback for one socket runs with that socket locked (process
 * context, softirq and timers alike), so the plain increments on an entry
 * below cannot race: an entry belongs to one socket, checked by its cookie.
 */
static __always_inline int handle_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	int opening = op == BPF_SOCK_OPS_TCP_CONNECT_CB ||
		      op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ||
		      op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB;
	int per_ack = op == BPF_SOCK_OPS_PARSE_HDR_OPT_CB;

	if (!opening && !per_ack && op != BPF_SOCK_OPS_RTT_CB &&
	    op != BPF_SOCK_OPS_RETRANS_CB && op != BPF_SOCK_OPS_RTO_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (!skops->is_fullsock)
		return 1;
	__u64 netns = bpf_get_netns_cookie(skops);
#if FT_NETNS_ONLY
	/* Every namespace's sockets run the cgroup's programs. */
	__u32 zero = 0;
	__u64 *own = netns_cfg.lookup(&zero);

	if (!own || netns != *own)
		return 1;
#endif
	struct flow_key key = {};

	if (key_from_skops(skops, &key) < 0)
		return 1;
	__u64 cookie = ft_socket_cookie(skops);
	__u64 skaddr = (__u64)(unsigned long)skops->sk;
	__u64 now = bpf_ktime_get_ns();
	int closing = op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == FT_TCP_CLOSE;
	struct ft_conn *e = conns.lookup(&key);

	if (e && e->sock_cookie != cookie) {
		if (e->origin == FT_ORIGIN_TRACEPOINT && e->skaddr == skaddr) {
			/* The tracepoint saw this socket first: sock_ops takes over. */
			e->sock_cookie = cookie;
			e->origin = FT_ORIGIN_SOCKOPS;
		} else if (opening && e->netns_cookie == netns) {
			/* Two sockets of one namespace never share a 5-tuple while
			 * both are open: the old entry missed its close. */
			count(FT_SO_STALE_REPLACED);
			e = 0;
		} else {
			count(FT_SO_TUPLE_COLLISION);
			return 1;
		}
	}
	if (!e) {
		/* Nothing to adopt per segment: the other callbacks will. */
		if (closing || per_ack)
			return 1;
		e = new_conn(&key, cookie, skaddr, netns, now, FT_ORIGIN_SOCKOPS);
		if (!e)
			return 1;
		/* Callbacks for a socket we did not see open: its flags were set
		 * by another program (or by our own crashed predecessor). */
		if (!opening)
			count(FT_SO_ADOPTED);
	}
	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		e->server = op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB ? 2 : 1;
		/* OR with what is set: other programs' callbacks stay on. A
		 * non-zero return lists flags this kernel would not set. */
		if (bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | FT_CB_FLAGS))
			count(FT_SO_FLAGS_FAILED);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		e->rtt_samples += 1;
		break;
	case BPF_SOCK_OPS_RTO_CB:
		e->rto += 1;
		break;
	}
	refresh(e, skops, now);
	if (op == BPF_SOCK_OPS_STATE_CB) {
		/* Called before the socket changes state: args[1] is the new one. */
		e->state = (__u8)skops->args[1];
		if (closing)
			close_conn(&key, e, now);
	}
	return 1;
}

int FT_PROG_NAME(struct bpf_sock_ops *skops)
{
	return handle_sockops(skops);
}

/*
 * Retransmit events. For a connection sock_ops tracks, `retrans` comes from
 * tcp_sock.total_retrans and is the authoritative count: the kernel adds a
 * retransmitted skb's segment count to it on the same line that adds to
 * TcpRetransSegs (__tcp_retransmit_skb), so it is in segments and includes
 * SYN retransmits and attempts the device then refused, like the SNMP
 * counter. This tracepoint counts skbs instead (a GSO skb is several
 * segments) and, since 6.12, also fires for attempts that sent nothing
 * (err != 0); its count (tp_retrans) is a cross-check there. It is the only
 * source for a connection sock_ops never saw open (all-namespaces mode only:
 * a tracepoint cannot tell which namespace its socket is in).
 */
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
#if FT_TP_HAS_ERR
	if (args->err)
		return 0;
#endif
	struct flow_key key = {};

	if (key_from_tp(&key, args->family, args->sport, args->dport, args->saddr, args->daddr,
			args->saddr_v6, args->daddr_v6) < 0)
		return 0;
	__u64 skaddr = (__u64)(unsigned long)args->skaddr;
	struct ft_conn *e = conns.lookup(&key);

	if (e && e->skaddr == skaddr) {
		/* Atomic: unlike the sock_ops callbacks, nothing promises that
		 * every path to this tracepoint holds the socket lock. */
		__sync_fetch_and_add(&e->tp_retrans, 1);
		if (e->origin == FT_ORIGIN_TRACEPOINT) {
			e->state = (__u8)args->state;
			e->last_ns = bpf_ktime_get_ns();
		}
		return 0;
	}
#if !FT_NETNS_ONLY
	if (!e) {
		__u64 now = bpf_ktime_get_ns();

		e = new_conn(&key, 0, skaddr, 0, now, FT_ORIGIN_TRACEPOINT);
		if (e) {
			e->tp_retrans = 1;
			e->state = (__u8)args->state;
		}
		return 0;
	}
#endif
	count(FT_SO_TP_UNTRACKED);
	return 0;
}

#if !FT_NETNS_ONLY
/* Closes entries the tracepoint created: sock_ops sees no state changes of
 * a socket whose callbacks nobody enabled. */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != FT_IPPROTO_TCP || args->newstate != FT_TCP_CLOSE)
		return 0;
	struct flow_key key = {};

	if (key_from_tp(&key, args->family, args->sport, args->dport, args->saddr, args->daddr,
			args->saddr_v6, args->daddr_v6) < 0)
		return 0;
	struct ft_conn *e = conns.lookup(&key);

	if (e && e->origin == FT_ORIGIN_TRACEPOINT &&
	    e->skaddr == (__u64)(unsigned long)args->skaddr)
		close_conn(&key, e, bpf_ktime_get_ns());
	return 0;
}
#endif
