// SPDX-License-Identifier: GPL-2.0
/*
 * flowtop drop reasons: a program on the skb:kfree_skb tracepoint counts the
 * packets the kernel drops, per flow key and reason (struct ft_drop_key in
 * drops.h, which also says how the device and the direction are decided).
 * Userspace drains the per-CPU `drops` map with lookup-and-delete batches
 * once per interval (flowtop/kernel/drops.py).
 *
 * Only kfree_skb: consume_skb (a packet freed after use) is never attached,
 * and kfree_skb's own not-a-drop reasons (SKB_NOT_DROPPED_YET, SKB_CONSUMED)
 * return before anything is read. sk_buff and net_device are read with
 * bpf_probe_read_kernel at offsets the running kernel's BTF gives
 * (flowtop/kernel/compiler.py resolves them: a tracepoint program has no
 * typed access to them).
 *
 * Build-time options come as -D cflags from flowtop/kernel/drops.py (the
 * offsets and reason values from compiler.py, which reads the BTF):
 *   FT_DROP_MAP_SIZE      distinct (key, reason) entries between two drains
 *   FT_WATCH_MAX          devices the watch list can hold
 *   FT_TP_HAS_RX_SK       1 when kfree_skb carries rx_sk (6.8+)
 *   FT_NETNS_ONLY         1: only drops on devices (or, without a device, of
 *                         sockets) of flowtop's network namespace, whose
 *                         cookie userspace writes into netns_cfg (a run-time
 *                         value, not a flag: one build serves every namespace)
 *   FT_REASON_NOT_DROPPED SKB_NOT_DROPPED_YET's value; FT_REASON_CONSUMED
 *                         SKB_CONSUMED's (-1: this kernel has none)
 *   FT_SKB_*_OFF, FT_DEV_*_OFF, FT_NET_COOKIE_OFF, FT_SK_NET_OFF
 *                         byte offsets of the members named below
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>

#include "drops.h"
#include "parse.h" /* enum ft_parse_status, struct ft_ipv6_opt, ft_ipv6_frag */

#ifndef FT_DROP_MAP_SIZE
#define FT_DROP_MAP_SIZE 16384
#endif
#ifndef FT_WATCH_MAX
#define FT_WATCH_MAX 1024
#endif
#ifndef FT_TP_HAS_RX_SK
#define FT_TP_HAS_RX_SK 0
#endif
#ifndef FT_NETNS_ONLY
#define FT_NETNS_ONLY 0
#endif
#ifndef FT_REASON_CONSUMED
#define FT_REASON_CONSUMED -1
#endif
#if !defined(FT_REASON_NOT_DROPPED) || !defined(FT_SKB_DEV_OFF) || !defined(FT_SKB_IIF_OFF) ||  \
	!defined(FT_SKB_LEN_OFF) || !defined(FT_SKB_HEAD_OFF) || !defined(FT_SKB_NH_OFF) ||     \
	!defined(FT_SKB_TAIL_OFF) ||                                                             \
	!defined(FT_DEV_IFINDEX_OFF) || !defined(FT_DEV_NET_OFF) || !defined(FT_NET_COOKIE_OFF) || \
	!defined(FT_SK_NET_OFF)
#error "drops.c needs the BTF offsets and reason values (built by flowtop/kernel/drops.py)"
#endif

#define FT_ETH_P_IP 0x0800
#define FT_ETH_P_IPV6 0x86DD
#define FT_NH_UNSET 0xffff /* (u16)~0U: skb->network_header not set */

/* Drops counted since the last drain. Key: flow key and reason. Value: per
 * CPU, packets and bytes. Inserted here; userspace deletes every entry it
 * reads (lookup-and-delete batches). Not preallocated: a deleted entry is
 * freed after an RCU grace period, so an update racing its drain lands in
 * the dying entry (lost, a window of nanoseconds) and never in another
 * key's entry, as a reused preallocated one could. */
BPF_F_TABLE("percpu_hash", struct ft_drop_key, struct ft_drop_stats, drops, FT_DROP_MAP_SIZE,
	    BPF_F_NO_PREALLOC);

/* The devices whose drops to count, by ifindex (value unused). Filled and
 * emptied by userspace (DropCollector.watch); the program only reads. */
BPF_HASH(drop_watch, __u32, __u8, FT_WATCH_MAX);

/* Slot 0: 1 = count only the devices in drop_watch, 0 = every device (the
 * value at load). Written by userspace only. */
BPF_ARRAY(drop_config, __u32, 1);

/* Slot 0: the cookie of flowtop's network namespace (FT_NETNS_ONLY), written
 * by userspace after the load and before the program is attached, never
 * deleted. It is 0 until then, and the namespace compare below only runs for
 * a cookie that is not 0 (no namespace's is: the kernel hands them out from
 * a counter incremented before use): a program that runs before it is
 * filled counts nothing rather than everything. */
BPF_ARRAY(netns_cfg, __u64, 1);

/* What could not be counted (enum ft_drop_counter). Per CPU, never deleted;
 * userspace reads the sums. */
BPF_PERCPU_ARRAY(drop_counters, __u64, FT_DROP_CTR_MAX);

static __always_inline void count(__u32 idx)
{
	__u64 *v = drop_counters.lookup(&idx);

	if (v)
		*v += 1;
}

/* A pointer-sized member of a kernel object; 0 when it cannot be read. */
static __always_inline __u64 read_ptr(const void *obj, int off)
{
	__u64 v = 0;

	if (bpf_probe_read_kernel(&v, sizeof(v), (const char *)obj + off) < 0)
		return 0;
	return v;
}

/* The sk_buff members the program uses. */
struct ft_skb_fields {
	__u64 dev;  /* struct net_device *, 0: none */
	__u64 head; /* unsigned char * */
	__u32 iif;  /* skb_iif */
	__u32 len;
	__u32 tail; /* end of the linear data, from head (64-bit: an offset) */
	__u16 nh;   /* network_header, FT_NH_UNSET when not set */
};

/*
 * Read in one bpf_probe_read_kernel when they lie within FT_SKB_SPAN_MAX
 * bytes of each other (on 6.18: bytes 16 to 200 of the sk_buff), each on
 * its own otherwise: a copy costs about as much as the rest of the drop
 * path's work (bench/drop_cost.py on 6.18: 646 ns per drop with a copy per
 * member and per header, 372 with the sk_buff members in one copy, the
 * device's in one, and the IP header with the ports in one). The bound
 * keeps the copy within the program's 512-byte stack.
 */
#define FT_SKB_SPAN_MAX 192
#define FT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FT_SKB_LO                                                                  \
	FT_MIN(FT_MIN(FT_MIN(FT_SKB_DEV_OFF, FT_SKB_IIF_OFF),                              \
		      FT_MIN(FT_SKB_LEN_OFF, FT_SKB_HEAD_OFF)),                            \
	       FT_MIN(FT_SKB_NH_OFF, FT_SKB_TAIL_OFF))
#define FT_SKB_HI                                                                  \
	FT_MAX(FT_MAX(FT_MAX(FT_SKB_DEV_OFF + 8, FT_SKB_IIF_OFF + 4),                      \
		      FT_MAX(FT_SKB_LEN_OFF + 4, FT_SKB_HEAD_OFF + 8)),                    \
	       FT_MAX(FT_SKB_NH_OFF + 2, FT_SKB_TAIL_OFF + 4))

/* Fills f from the sk_buff at skb; -1 when it cannot be read. */
static __always_inline int read_skb(const void *skb, struct ft_skb_fields *f)
{
#if FT_SKB_HI - FT_SKB_LO <= FT_SKB_SPAN_MAX
	__u8 span[FT_SKB_HI - FT_SKB_LO];

	if (bpf_probe_read_kernel(span, sizeof(span), (const char *)skb + FT_SKB_LO) < 0)
		return -1;
	__builtin_memcpy(&f->dev, span + FT_SKB_DEV_OFF - FT_SKB_LO, 8);
	__builtin_memcpy(&f->head, span + FT_SKB_HEAD_OFF - FT_SKB_LO, 8);
	__builtin_memcpy(&f->iif, span + FT_SKB_IIF_OFF - FT_SKB_LO, 4);
	__builtin_memcpy(&f->len, span + FT_SKB_LEN_OFF - FT_SKB_LO, 4);
	__builtin_memcpy(&f->tail, span + FT_SKB_TAIL_OFF - FT_SKB_LO, 4);
	__builtin_memcpy(&f->nh, span + FT_SKB_NH_OFF - FT_SKB_LO, 2);
	return 0;
#else
	const char *p = skb;

	if (bpf_probe_read_kernel(&f->dev, 8, p + FT_SKB_DEV_OFF) < 0 ||
	    bpf_probe_read_kernel(&f->head, 8, p + FT_SKB_HEAD_OFF) < 0 ||
	    bpf_probe_read_kernel(&f->iif, 4, p + FT_SKB_IIF_OFF) < 0 ||
	    bpf_probe_read_kernel(&f->len, 4, p + FT_SKB_LEN_OFF) < 0 ||
	    bpf_probe_read_kernel(&f->tail, 4, p + FT_SKB_TAIL_OFF) < 0 ||
	    bpf_probe_read_kernel(&f->nh, 2, p + FT_SKB_NH_OFF) < 0)
		return -1;
	return 0;
#endif
}

/* A device's ifindex and, in namespace-only mode, its struct net pointer:
 * one copy when they lie within FT_SKB_SPAN_MAX bytes (40 on 6.18); -1
 * when the device cannot be read. */
#define FT_DEV_LO FT_MIN(FT_DEV_IFINDEX_OFF, FT_DEV_NET_OFF)
#define FT_DEV_HI FT_MAX(FT_DEV_IFINDEX_OFF + 4, FT_DEV_NET_OFF + 8)

static __always_inline int read_dev(__u64 dev, __u32 *ifindex, __u64 *net)
{
	const char *p = (const char *)dev;
#if FT_NETNS_ONLY && FT_DEV_HI - FT_DEV_LO <= FT_SKB_SPAN_MAX
	__u8 span[FT_DEV_HI - FT_DEV_LO];

	if (bpf_probe_read_kernel(span, sizeof(span), p + FT_DEV_LO) < 0)
		return -1;
	__builtin_memcpy(ifindex, span + FT_DEV_IFINDEX_OFF - FT_DEV_LO, 4);
	__builtin_memcpy(net, span + FT_DEV_NET_OFF - FT_DEV_LO, 8);
#else
	if (bpf_probe_read_kernel(ifindex, 4, p + FT_DEV_IFINDEX_OFF) < 0)
		return -1;
#if FT_NETNS_ONLY
	if (bpf_probe_read_kernel(net, 8, p + FT_DEV_NET_OFF) < 0)
		return -1;
#endif
#endif
	return 0;
}

/* The network namespace cookie of a struct net pointer; 0 when unreadable. */
static __always_inline __u64 net_cookie(__u64 net)
{
	return net ? read_ptr((void *)net, FT_NET_COOKIE_OFF) : 0;
}

/*
 * Header parsing over kernel memory: the skb is not this program's context,
 * so its bytes are copied with bpf_probe_read_kernel. The cursor holds
 * kernel addresses: pos, the next header, and end, the end of the skb's
 * linear data (head + tail; what lies past it is in page fragments, not
 * here). Each helper checks that its header lies before end, reads it,
 * fills what it found into the key, advances pos past it and returns the
 * next protocol number (>= 0), or a negative enum ft_parse_status:
 * FT_PARSE_TRUNCATED when the header is not (all) in the linear data or
 * could not be read, FT_PARSE_MALFORMED for an impossible field,
 * FT_PARSE_EXT_LIMIT as skip_ip6hdrext in parse.h. The cursor is then
 * meaningless. An IP header is read with the 4 bytes after it (the ports
 * when no options or extension headers come first): one copy instead of
 * two, and every copy costs about as much as the parsing.
 */
struct ft_kcursor {
	const __u8 *pos; /* kernel address of the next header */
	const __u8 *end; /* end of the linear data */
	const __u8 *l4_at; /* where l4[] was read from; 0: nowhere */
	__u8 l4[4];
	__u32 ip_len; /* the IP packet's length as its header says */
	int nonfirst; /* a later fragment: no L4 header */
};

struct ft_ip4_read {
	struct iphdr h;
	__u8 l4[4];
};

struct ft_ip6_read {
	struct ipv6hdr h;
	__u8 l4[4];
};

/* Copies a header and the 4 bytes after it into buf (size: header + 4) when
 * they are all in the linear data, else only the header. Returns 1 when the
 * 4 bytes came too, 0 when not, FT_PARSE_TRUNCATED when not even the header. */
#define FT_READ_HDR(c, buf, hdr_size)                                                      \
	({                                                                                 \
		int __r = FT_PARSE_TRUNCATED;                                              \
		if ((c)->pos + sizeof(buf) <= (c)->end) {                                  \
			if (bpf_probe_read_kernel(&(buf), sizeof(buf), (c)->pos) == 0)     \
				__r = 1;                                                   \
		} else if ((c)->pos + (hdr_size) <= (c)->end) {                            \
			if (bpf_probe_read_kernel(&(buf), (hdr_size), (c)->pos) == 0)      \
				__r = 0;                                                   \
		}                                                                          \
		__r;                                                                       \
	})

static __always_inline int kparse_iphdr(struct ft_kcursor *c, struct flow_key *k)
{
	struct ft_ip4_read r;
	int more = FT_READ_HDR(c, r, sizeof(r.h));

	if (more < 0)
		return more;
	if (r.h.version != 4 || r.h.ihl < 5)
		return FT_PARSE_MALFORMED;
	k->ip_version = 4;
	__builtin_memcpy(k->src, &r.h.saddr, 4);
	__builtin_memcpy(k->dst, &r.h.daddr, 4);
	c->ip_len = bpf_ntohs(r.h.tot_len);
	c->nonfirst = (r.h.frag_off & bpf_htons(0x1fff)) != 0;
	if (more && r.h.ihl == 5) {
		c->l4_at = c->pos + sizeof(r.h);
		__builtin_memcpy(c->l4, r.l4, 4);
	}
	c->pos += r.h.ihl * 4;
	return r.h.protocol;
}

static __always_inline int kparse_ip6hdr(struct ft_kcursor *c, struct flow_key *k)
{
	struct ft_ip6_read r;
	int more = FT_READ_HDR(c, r, sizeof(r.h));

	if (more < 0)
		return more;
	if (r.h.version != 6)
		return FT_PARSE_MALFORMED;
	k->ip_version = 6;
	__builtin_memcpy(k->src, &r.h.saddr, 16);
	__builtin_memcpy(k->dst, &r.h.daddr, 16);
	c->ip_len = sizeof(r.h) + bpf_ntohs(r.h.payload_len);
	c->pos += sizeof(r.h);
	if (more) {
		c->l4_at = c->pos;
		__builtin_memcpy(c->l4, r.l4, 4);
	}
	return r.h.nexthdr;
}

/* Steps over IPv6 extension headers (at most FT_IPV6_EXT_MAX, as the TC
 * program): returns the upper-layer protocol. */
static __always_inline int kskip_ip6ext(struct ft_kcursor *c, int nexthdr)
{
#pragma unroll
	for (int i = 0; i < FT_IPV6_EXT_MAX; i++) {
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			struct ft_ipv6_opt opt;

			if (c->pos + sizeof(opt) > c->end ||
			    bpf_probe_read_kernel(&opt, sizeof(opt), c->pos) < 0)
				return FT_PARSE_TRUNCATED;
			nexthdr = opt.nexthdr;
			c->pos += (opt.hdrlen + 1) * 8;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct ft_ipv6_frag fh;

			if (c->pos + sizeof(fh) > c->end ||
			    bpf_probe_read_kernel(&fh, sizeof(fh), c->pos) < 0)
				return FT_PARSE_TRUNCATED;
			nexthdr = fh.nexthdr;
			c->pos += sizeof(fh);
			if (fh.frag_off & bpf_htons(0xfff8)) {
				c->nonfirst = 1;
				return nexthdr;
			}
			break;
		}
		default:
			return nexthdr;
		}
	}
	switch (nexthdr) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_FRAGMENT:
		return FT_PARSE_EXT_LIMIT;
	}
	return nexthdr;
}

/* The ports (ICMP: type and code) of the L4 header at the cursor, as the TC
 * program keys them; returns proto, or FT_PARSE_TRUNCATED (ports stay 0)
 * when they are not in the linear data. */
static __always_inline int kparse_ports(struct ft_kcursor *c, struct flow_key *k, int proto)
{
	__u8 b[4];
	int n;

	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
	case IPPROTO_DCCP:
		n = 4;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		n = 2;
		break;
	default:
		return proto;
	}
	if (c->pos == c->l4_at) {
		__builtin_memcpy(b, c->l4, 4);
	} else if (c->pos + 4 > c->end || bpf_probe_read_kernel(b, 4, c->pos) < 0) {
		/* (ICMP's 2 bytes alone at the very end: left unread too) */
		return FT_PARSE_TRUNCATED;
	}
	if (n == 4) {
		k->sport = (b[0] << 8) | b[1];
		k->dport = (b[2] << 8) | b[3];
	} else {
		k->dport = (b[0] << 8) | b[1];
	}
	return proto;
}

/* The IP part of the key from the packet's network header (protocol:
 * skb->protocol, host order); returns the IP length, 0 when the packet is
 * not IP or its headers could not be read (the key's IP part stays 0). */
static __always_inline __u32 key_from_headers(const struct ft_skb_fields *f, __u16 protocol,
					      struct flow_key *k)
{
	if (protocol != FT_ETH_P_IP && protocol != FT_ETH_P_IPV6)
		return 0;
	if (f->nh == FT_NH_UNSET || !f->head || f->nh >= f->tail)
		return 0;
	struct ft_kcursor c = {};
	int proto;

	c.pos = (const __u8 *)f->head + f->nh;
	c.end = (const __u8 *)f->head + f->tail;
	if (protocol == FT_ETH_P_IP) {
		proto = kparse_iphdr(&c, k);
	} else {
		proto = kparse_ip6hdr(&c, k);
		if (proto >= 0)
			proto = kskip_ip6ext(&c, proto);
	}
	if (proto < 0) {
		/* Not what its protocol says: keyed as not IP rather than half. */
		__builtin_memset(k->src, 0, sizeof(k->src));
		__builtin_memset(k->dst, 0, sizeof(k->dst));
		k->ip_version = 0;
		return 0;
	}
	k->proto = proto;
	if (!c.nonfirst)
		kparse_ports(&c, k, proto);
	return c.ip_len;
}

/* bcc declares the tracepoint's fields as the format names them, `enum
 * skb_drop_reason reason`, and no header of ours defines that enum (its
 * values are the running kernel's, read at run time): a complete 4-byte
 * enum of that name lets the field compile as the u32 it is. */
enum skb_drop_reason { FT_SKB_DROP_REASON_ANY_U32 = 0xffffffffU };

TRACEPOINT_PROBE(skb, kfree_skb)
{
	/* Everything kfree_skb reports for a packet that was not dropped ends
	 * here, before a single read. */
	__u32 reason = args->reason;

	if (reason == (__u32)FT_REASON_NOT_DROPPED || reason == (__u32)FT_REASON_CONSUMED)
		return 0;
	struct ft_skb_fields f = {};
	__u32 ifindex = 0;
	struct ft_drop_key key = {};

	if (read_skb(args->skbaddr, &f) < 0) {
		count(FT_DROP_UNREADABLE);
		return 0;
	}
	__u64 net = 0;

	if (f.dev) {
		if (read_dev(f.dev, &ifindex, &net) < 0) {
			count(FT_DROP_UNREADABLE);
			return 0;
		}
		key.flow.direction = f.iif == ifindex ? FT_DIR_INGRESS : FT_DIR_EGRESS;
	} else {
		ifindex = f.iif;
		key.flow.direction = f.iif ? FT_DIR_INGRESS : FT_DIR_EGRESS;
	}
	__u32 zero = 0;
#if FT_NETNS_ONLY
	/* ifindexes are per namespace: another namespace's device 2 is not ours. */
	__u64 cookie = 0;

	if (f.dev)
		cookie = net_cookie(net);
#if FT_TP_HAS_RX_SK
	else if (args->rx_sk)
		cookie = net_cookie(read_ptr(args->rx_sk, FT_SK_NET_OFF));
#endif
	if (!cookie) {
		count(FT_DROP_NO_NETNS);
		return 0;
	}
	__u64 *own = netns_cfg.lookup(&zero);

	if (!own || cookie != *own)
		return 0;
#endif
	__u32 *only_watched = drop_config.lookup(&zero);

	if (only_watched && *only_watched && !drop_watch.lookup(&ifindex))
		return 0;
	key.flow.ifindex = ifindex;
	key.reason = reason;
	__u32 bytes = key_from_headers(&f, args->protocol, &key.flow);

	if (!bytes)
		bytes = f.len;

	/* Per CPU, and a program on a tracepoint does not nest on one CPU (the
	 * kernel skips the inner run and counts it in the program's
	 * recursion_misses): plain increments. */
	struct ft_drop_stats *s = drops.lookup(&key);

	if (s) {
		s->packets += 1;
		s->bytes += bytes;
		return 0;
	}
	struct ft_drop_stats init = {1, bytes};

	if (drops.insert(&key, &init) == 0)
		return 0;
	/* Another CPU may have inserted it first (EEXIST): add to ours there. */
	s = drops.lookup(&key);
	if (s) {
		s->packets += 1;
		s->bytes += bytes;
		return 0;
	}
	count(FT_DROP_MAP_FULL);
	return 0;
}
