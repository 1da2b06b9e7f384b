// SPDX-License-Identifier: GPL-2.0
/*
 * flowtop socket owners: which process, user and cgroup created the local
 * socket behind a flow. Three cgroup programs on the cgroup v2 root (they
 * run for the sockets of every network namespace, so containers are
 * covered); the TC program is not involved: userspace joins what these
 * report to the flows by 5-tuple (flowtop/core/owners.py).
 *
 *   cgroup/sock_create   runs in the process that calls socket(): records
 *                        its tgid, uid/gid, comm, cgroup id and the socket's
 *                        netns cookie in the socket's local storage.
 *   cgroup_skb/egress    run per packet of a local socket: build the tuple
 *   cgroup_skb/ingress   from the socket's point of view and, when it differs
 *                        from the last one the socket reported, write
 *                        endpoints[tuple] = owner. Always allow the packet.
 *
 * The common per-packet path is one sk-storage lookup, a coarse clock
 * read and a 40-byte compare; a socket that keeps its tuple reports it
 * again every FT_REREPORT_NS. A socket created before these programs were attached has no
 * storage: the first packet makes an empty one, and its tuples are
 * reported with FT_OWNER_F_UNKNOWN (userspace attributes those from /proc).
 *
 * Build-time options come as -D cflags from flowtop/kernel/owners.py:
 *   FT_CREATE_NAME      function (program) names, ftown[cie]_<pid>: the
 *   FT_EGRESS_NAME      kernel keeps them as program names, which is how a
 *   FT_INGRESS_NAME     later run tells the programs of a dead flowtop
 *   FT_ENDPOINTS_SIZE   tuples reported between two drains
 *   FT_REREPORT_NS      a socket still sending the same tuple reports it
 *                       again after this long (ns): userspace forgets a
 *                       tuple no flow used for an idle timeout, and a
 *                       socket that idled longer and resumes must be
 *                       attributed again; set below the idle timeout
 *   FT_SKB_NETNS        1: the kernel has bpf_get_netns_cookie() in cgroup_skb
 *                       programs (recent kernels), which gives the sockets
 *                       older than flowtop their namespace's cookie too;
 *                       0: theirs stays 0 (owners.py tries 1 first)
 */
#include <uapi/linux/bpf.h>

#include "owner.h"

#ifndef FT_CREATE_NAME
#define FT_CREATE_NAME ftownc
#endif
#ifndef FT_EGRESS_NAME
#define FT_EGRESS_NAME ftowne
#endif
#ifndef FT_INGRESS_NAME
#define FT_INGRESS_NAME ftowni
#endif
#ifndef FT_ENDPOINTS_SIZE
#define FT_ENDPOINTS_SIZE 65536
#endif
#ifndef FT_SKB_NETNS
#define FT_SKB_NETNS 0
#endif
#ifndef FT_REREPORT_NS
#define FT_REREPORT_NS 5000000000ULL
#endif

#define FT_AF_INET 2
#define FT_AF_INET6 10
#define FT_IPPROTO_TCP 6
#define FT_IPPROTO_UDP 17
#define FT_E2BIG 7
/* __sk_buff.protocol holds the network-order EtherType. */
#define FT_PROTO_IPV4 0x0008 /* htons(ETH_P_IP) on a little-endian host */
#define FT_PROTO_IPV6 0xdd86 /* htons(ETH_P_IPV6) */

/* bcc declares this helper as returning u32; the kernel returns a u64. */
static __u64 (*ft_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;

/* Owner of each socket. Key: the socket (socket-local storage). Value:
 * struct ft_owner_sk. Created by sock_create in the creating process (or
 * empty, by the first packet, for sockets older than flowtop); BPF_F_CLONE
 * copies it to the children a TCP listener accepts. Deleted by the kernel
 * with the socket, or with the map when flowtop lets go of it. bcc's
 * BPF_SK_STORAGE() spelled out for the extra flag. */
struct sk_owner_table_t {
	int key;
	struct ft_owner_sk leaf;
	void *(*sk_storage_get)(void *, void *, int);
	int (*sk_storage_delete)(void *);
	u32 flags;
};
__attribute__((section("maps/sk_storage"))) struct sk_owner_table_t sk_owner = {
	.flags = BPF_F_NO_PREALLOC | BPF_F_CLONE};
BPF_ANNOTATE_KV_PAIR(sk_owner, int, struct ft_owner_sk);

/* Tuples reported since the last drain. Key: struct ft_owner_tuple. Value:
 * struct ft_owner. Written by the cgroup_skb programs when a socket's tuple
 * changes (a socket reports a tuple once); userspace deletes every entry as
 * it reads it (lookup-and-delete batches). Preallocated hash: a full map
 * fails the update, which is counted (an LRU map would evict silently). */
BPF_TABLE("hash", struct ft_owner_tuple, struct ft_owner, endpoints, FT_ENDPOINTS_SIZE);

/* What could not be attributed, and informational counts (enum
 * ft_own_counter). Per CPU, never deleted; userspace reads the sums. */
BPF_PERCPU_ARRAY(owner_counters, __u64, FT_OWN_CTR_MAX);

static __always_inline void count(__u32 idx)
{
	__u64 *v = owner_counters.lookup(&idx);

	if (v)
		*v += 1;
}

static __always_inline int wanted(__u32 family, __u32 protocol)
{
	return (family == FT_AF_INET || family == FT_AF_INET6) &&
	       (protocol == FT_IPPROTO_TCP || protocol == FT_IPPROTO_UDP);
}

int FT_CREATE_NAME(struct bpf_sock *sk)
{
	if (!wanted(sk->family, sk->protocol))
		return 1;
	struct ft_owner_sk *st = sk_owner.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!st) {
		count(FT_OWN_STORAGE_FAILED);
		return 1;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	st->owner.tgid = pid_tgid >> 32;
	st->owner.uid = (__u32)uid_gid;
	st->owner.gid = uid_gid >> 32;
	st->owner.cgroup_id = bpf_get_current_cgroup_id();
	st->owner.netns_cookie = bpf_get_netns_cookie(sk);
	st->owner.created_ns = bpf_ktime_get_ns();
	st->owner.flags = 0;
	bpf_get_current_comm(st->owner.comm, sizeof(st->owner.comm));
	return 1;
}

/*
 * Addresses and ports of a connected socket (its destination port is set):
 * local = the socket's bound address. t->family says which of the socket's
 * address fields the packets use (a v4-mapped AF_INET6 socket keeps IPv4
 * ones too). Returns 0, or -1 when the socket has no local IPv4 address
 * yet (the packet's headers then tell).
 */
static __always_inline int tuple_from_sock(struct bpf_sock *sk, struct ft_owner_tuple *t)
{
	t->lport = (__u16)sk->src_port; /* host order */
	t->rport = __builtin_bswap16(sk->dst_port);
	if (t->family == 4) {
		__u32 s = sk->src_ip4, d = sk->dst_ip4;

		if (s == 0)
			return -1;
		__builtin_memcpy(t->local, &s, 4);
		__builtin_memcpy(t->remote, &d, 4);
		return 0;
	}
	__u32 s6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
	__u32 d6[4] = {sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3]};

	__builtin_memcpy(t->local, s6, 16);
	__builtin_memcpy(t->remote, d6, 16);
	return 0;
}

/*
 * Addresses and ports from the packet (a cgroup_skb program's data starts
 * at the IP header; ingress packets are reassembled, egress ones not yet
 * fragmented, so the L4 header is there), oriented for the local socket:
 * on ingress the local end is the destination. Returns 0, or -1 when the
 * ports cannot be read: the packet is short, or its next header is not the
 * socket's protocol (IPv6 extension headers).
 */
static __always_inline int tuple_from_packet(struct __sk_buff *skb, struct ft_owner_tuple *t,
					     int ingress)
{
	__u32 l4;
	__u16 ports[2];

	if (t->family == 4) {
		__u8 h[20];

		if (bpf_skb_load_bytes(skb, 0, h, sizeof(h)) < 0 || h[9] != t->proto)
			return -1;
		l4 = (h[0] & 0xf) * 4;
		__builtin_memcpy(ingress ? t->remote : t->local, &h[12], 4);
		__builtin_memcpy(ingress ? t->local : t->remote, &h[16], 4);
	} else {
		__u8 h[40];

		if (bpf_skb_load_bytes(skb, 0, h, sizeof(h)) < 0 || h[6] != t->proto)
			return -1;
		l4 = 40;
		__builtin_memcpy(ingress ? t->remote : t->local, &h[8], 16);
		__builtin_memcpy(ingress ? t->local : t->remote, &h[24], 16);
	}
	if (l4 < 20 || bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
		return -1;
	__u16 src = __builtin_bswap16(ports[0]), dst = __builtin_bswap16(ports[1]);

	t->lport = ingress ? dst : src;
	t->rport = ingress ? src : dst;
	return 0;
}

static __always_inline int same_tuple(const struct ft_owner_tuple *a,
				      const struct ft_owner_tuple *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

static __always_inline int observe(struct __sk_buff *skb, int ingress)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || !wanted(sk->family, sk->protocol))
		return 1;
	/* Sockets flowtop saw created have storage already: this is a lookup.
	 * Older ones get an empty one (created_ns 0: owner unknown). */
	struct ft_owner_sk *st = sk_owner.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!st) {
		count(FT_OWN_STORAGE_FAILED);
		return 1;
	}
	__u32 proto = skb->protocol;
	struct ft_owner_tuple t = {};

	if (proto == FT_PROTO_IPV4)
		t.family = 4;
	else if (proto == FT_PROTO_IPV6)
		t.family = 6;
	else
		return 1;
	t.proto = sk->protocol;
	__u32 flags = 0;

	if (sk->dst_port == 0 || tuple_from_sock(sk, &t) < 0) {
		flags = FT_OWNER_F_FROM_PACKET;
		if (tuple_from_packet(skb, &t, ingress) < 0) {
			count(FT_OWN_TUPLE_UNPARSED);
			return 1;
		}
	}
	__u64 now = bpf_ktime_get_coarse_ns();

	if (same_tuple(&t, &st->last) && now - st->reported_ns < FT_REREPORT_NS)
		return 1;
	/* Two CPUs can get here for one socket at once: both report, which
	 * costs a duplicate entry at worst (the same tuple: one key). st->last
	 * moves only once the tuple is in the map: a full map is retried by
	 * the socket's next packet, not lost until its tuple changes. */
	if (st->owner.created_ns == 0 && !(st->owner.flags & FT_OWNER_F_UNKNOWN)) {
		st->owner.flags |= FT_OWNER_F_UNKNOWN;
#if FT_SKB_NETNS
		st->owner.netns_cookie = bpf_get_netns_cookie(skb);
#endif
		count(FT_OWN_UNKNOWN_SOCKETS);
	}
	struct ft_owner o = st->owner;

	o.sock_cookie = ft_socket_cookie(skb);
	o.flags |= flags | (ingress ? FT_OWNER_F_INGRESS : 0);
	int err = endpoints.update(&t, &o);

	if (err == 0) {
		st->last = t;
		st->reported_ns = now;
		count(FT_OWN_REPORTED);
	}
	else if (err == -FT_E2BIG)
		count(FT_OWN_ENDPOINTS_FULL);
	else
		count(FT_OWN_UPDATE_FAILED);
	return 1;
}

int FT_EGRESS_NAME(struct __sk_buff *skb)
{
	return observe(skb, 0);
}

int FT_INGRESS_NAME(struct __sk_buff *skb)
{
	return observe(skb, 1);
}
