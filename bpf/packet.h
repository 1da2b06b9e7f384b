/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse_packet(): one packet's headers, from the link layer to the L4
 * ports, into struct pkt, with the parsers of bpf/parse.h. It touches no
 * map but `opaque` (forget_offset()), and counts nothing: the caller
 * (handle_packet() in bpf/tc.c) accounts the packet once, from struct pkt
 * and the enum ft_parse_status it returns.
 */
#ifndef FLOWTOP_PACKET_H
#define FLOWTOP_PACKET_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/tcp.h>

#include "flowtop.h"
#include "counters.h" /* FT_MAIN_DEFINES */
#include "parse.h"
#include "tcpseg.h"

/* Bytes pulled into the linear area when a header lies in paged data:
 * Ethernet, 2 VLAN tags, PPPoE or an MPLS stack, IPv6 with a long extension
 * chain (hop-by-hop options, an SRv6 routing header with a dozen segments)
 * and TCP with options fit. Only frames that need it pay for the copy. */
#define FT_PULL_LEN 1024

/* The `opaque` map's one u32 (see forget_offset()); NULL: cannot happen. */
FT_MAIN_DEFINES(static __always_inline __u32 *ft_opaque_slot(void))

/* What parse_packet() found; accounting happens once, after it. */
struct pkt {
	struct flow_key key;
	__u32 l3_off;      /* the IP header, from skb->data */
	__u32 l4_off;
	__u32 ip_len;      /* from the IP header; ~0: take the skb's length */
	__u32 l4_hdr;
	__u64 flags;
	__u8 dscp;
	__u8 family;       /* FT_FAMILY_* for the interface counters */
	__u8 l4_truncated; /* IP header fine, L4 header cut: count without ports */
	__u8 pad;
	__u32 mpls;        /* top MPLS label entry | FT_MPLS_PRESENT, 0: none */
	__u32 dev_off;     /* no Ethernet header: where the network header is */
	struct ft_tcpseg tcp; /* sequence and timestamps for the passive RTT code */
};

/*
 * The cursor moved to the same place through an offset the verifier no
 * longer knows. Paths that reach IP (or the L4 header) at different
 * offsets (each VLAN and MPLS depth, PPPoE, where an L3 device's network
 * header was found, each length of an IPv6 extension chain) then share one
 * verifier state, instead of having everything after them verified once
 * per offset, which is past the verifier's budget (or, for the VLAN and
 * extension walks, doubles the start-up's verification). Costs an inlined
 * array lookup, only off the untagged IPv4/IPv6 path. max: the largest
 * offset that can be right here (the verifier needs a bound; the caller
 * checks every header against the end after this, as before). Returns the
 * offset from skb->data, or FT_PARSE_TRUNCATED past max.
 */
static __always_inline int forget_offset_max(struct __sk_buff *skb, struct cursor *c,
					     const __u32 max)
{
	__u32 *slot = ft_opaque_slot();
	__u32 off = c->pos - (void *)(long)skb->data;

	if (!slot)
		return FT_PARSE_TRUNCATED;
	*(volatile __u32 *)slot = off;
	off = *(volatile __u32 *)slot;
	if (off > max)
		return FT_PARSE_TRUNCATED;
	c->pos = (void *)(long)skb->data + off;
	return off;
}

/* forget_offset_max() for what precedes IP: within the pulled headers. */
static __always_inline int forget_offset(struct __sk_buff *skb, struct cursor *c)
{
	return forget_offset_max(skb, c, FT_PULL_LEN);
}

/* Largest offset an IPv6 extension chain can end at: FT_IPV6_EXT_MAX
 * headers of at most 2048 bytes after Ethernet, two tags and the fixed
 * header fit (12.3 KB), so no chain the walk accepts is turned away here;
 * and it leaves the verifier room below its 64 KiB packet offset limit for
 * the header checks that follow (a bound near the limit makes them fail). */
#define FT_IP6_EXT_END_MAX 16384

/*
 * Where the packet starts on a device without an Ethernet header: returns
 * skb->protocol, which says what it is, with the cursor at the network
 * header (seek_net()) when it is IP or MPLS. Negative: an enum
 * ft_parse_status.
 */
static __always_inline int parse_l3dev(struct __sk_buff *skb, struct cursor *c, struct pkt *p)
{
	int proto = skb->protocol;
	__u64 net[2];
	int off;

	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6) &&
	    proto != bpf_htons(ETH_P_MPLS_UC) && proto != bpf_htons(ETH_P_MPLS_MC))
		return proto; /* not IP: nothing to find */

	/* Fails when fewer than 16 bytes of the network header are in the
	 * linear area: headers in paged data (the caller pulls them in and
	 * asks again), or no IP header (none fits in 16 bytes). */
	if (bpf_skb_load_bytes_relative(skb, 0, net, sizeof(net), BPF_HDR_START_NET) != 0)
		return FT_PARSE_TRUNCATED;
	off = seek_net(c, net);
	if (off < 0)
		return off;
	off = forget_offset(skb, c);
	if (off < 0)
		return off;
	p->dev_off = off;
	return proto;
}

/*
 * Parses the headers in the linear area into p (zeroed by the caller). l3:
 * the device has no Ethernet header (a compile-time constant). Returns
 * FT_PARSE_OK for an IP packet to account, with p->l4_truncated set when
 * its L4 header (ports) is cut; otherwise why parsing stopped, and p holds
 * what was found until then (the family, dev_off).
 */
static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p, const int l3)
{
	struct cursor c;
	struct iphdr *iph = NULL;
	struct ipv6hdr *ip6h = NULL;
	int proto, l4proto, nonfirst_frag = 0;
	__u32 l3_off, l4_off;

	c.pos = (void *)(long)skb->data;
	c.end = (void *)(long)skb->data_end;

	if (l3) {
		proto = parse_l3dev(skb, &c, p);
		if (proto < 0)
			return proto;
	} else {
		if (skb->vlan_present)
			p->key.vlan = skb->vlan_tci & 0x0fff;

		proto = parse_ethhdr(&c);
		if (proto < 0)
			return proto;
		/* In-band tags: off the untagged path (two compares), and the
		 * depth forgotten, so the rest is verified once for all depths. */
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			proto = parse_vlans(&c, proto, &p->key.vlan);
			if (proto < 0)
				return proto;
			if (forget_offset(skb, &c) < 0)
				return FT_PARSE_TRUNCATED;
		}
	}
	/* PPPoE, MPLS: off the IPv4/IPv6 path, which pays two compares. */
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6)) {
		proto = parse_encap(&c, proto, &p->mpls);
		if (proto < 0)
			return proto;
		if (forget_offset(skb, &c) < 0)
			return FT_PARSE_TRUNCATED;
	}
	l3_off = c.pos - (void *)(long)skb->data;

	if (proto == bpf_htons(ETH_P_IP)) {
		p->family = FT_FAMILY_IPV4;
		l4proto = parse_iphdr(&c, &iph);
		if (l4proto < 0)
			return l4proto;
		p->key.ip_version = 4;
		__builtin_memcpy(p->key.src, &iph->saddr, 4);
		__builtin_memcpy(p->key.dst, &iph->daddr, 4);
		p->ip_len = bpf_ntohs(iph->tot_len);
		p->dscp = iph->tos >> 2;
		if (p->ip_len < (__u32)(c.pos - (void *)iph)) {
			/* Shorter than its own header: impossible. 0 is what a
			 * GSO packet over 64 KiB carries (BIG TCP): its length
			 * is the skb's; on any other packet it is malformed. */
			if (p->ip_len != 0 || skb->gso_size == 0)
				return FT_PARSE_MALFORMED;
			p->ip_len = ~0U;
		}
		/* Offset != 0: a later fragment, no L4 header in it. */
		if (iph->frag_off & bpf_htons(0x1fff))
			nonfirst_frag = 1;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		p->family = FT_FAMILY_IPV6;
		l4proto = parse_ip6hdr(&c, &ip6h);
		if (l4proto < 0)
			return l4proto;
		/* Extension headers: off the common path, and where the walk
		 * ended forgotten (one state for every chain length). */
		if (ft_ip6_is_ext(l4proto)) {
			l4proto = skip_ip6hdrext(&c, l4proto, &nonfirst_frag);
			if (l4proto < 0)
				return l4proto;
			if (forget_offset_max(skb, &c, FT_IP6_EXT_END_MAX) < 0)
				return FT_PARSE_TRUNCATED;
		}
		p->key.ip_version = 6;
		__builtin_memcpy(p->key.src, &ip6h->saddr, 16);
		__builtin_memcpy(p->key.dst, &ip6h->daddr, 16);
		p->ip_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
		p->dscp = ((ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4)) >> 2;
	} else {
		return FT_PARSE_NON_IP;
	}
	p->key.proto = l4proto;
	/* Offsets as plain numbers: keeps clang from folding them back into
	 * packet-pointer arithmetic the verifier rejects. */
	l4_off = c.pos - (void *)(long)skb->data;
	asm volatile("" : "+r"(l4_off));
	asm volatile("" : "+r"(l3_off));
	p->l3_off = l3_off;
	p->l4_off = l4_off;

	if (nonfirst_frag)
		return FT_PARSE_OK;
	switch (l4proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = c.pos;

		if ((void *)(th + 1) > c.end) {
			p->l4_truncated = 1;
			break;
		}
		p->key.sport = bpf_ntohs(th->source);
		p->key.dport = bpf_ntohs(th->dest);
		/* The flags byte follows doff/res1 in the 13th octet; a SYN
		 * without ACK also sets FT_TCP_SYN_ONLY (its sender is the client). */
		__u8 tf = ((__u8 *)th)[13];

		p->flags = tf | ((tf & (FT_TCP_SYN | FT_TCP_ACK)) == FT_TCP_SYN ? FT_TCP_SYN_ONLY : 0);
		p->l4_hdr = th->doff * 4;
		ft_tcp_parse(th, c.end, &p->tcp);
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
	case IPPROTO_DCCP: {
		__be16 *ports = c.pos;

		if ((void *)(ports + 2) > c.end) {
			p->l4_truncated = 1;
			break;
		}
		p->key.sport = bpf_ntohs(ports[0]);
		p->key.dport = bpf_ntohs(ports[1]);
		p->l4_hdr = l4proto == IPPROTO_UDP ? 8 : 0;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *tc = c.pos;

		if ((void *)(tc + 2) > c.end) {
			p->l4_truncated = 1;
			break;
		}
		p->key.dport = (tc[0] << 8) | tc[1];
		break;
	}
	}
	return FT_PARSE_OK;
}

#endif /* FLOWTOP_PACKET_H */
