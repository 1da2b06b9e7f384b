/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Header parsing on a bounds-checked cursor over the linear part of an skb.
 *
 * Every helper takes the cursor, checks that the whole header lies before
 * `end`, advances past it and returns what comes next (an EtherType or a
 * protocol number), or -1 when the frame ends inside the header. The
 * verifier needs each access proven in bounds; doing the check once per
 * header here keeps handle_packet() readable.
 */
#ifndef FLOWTOP_PARSE_H
#define FLOWTOP_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>

/* In-band VLAN tags we step over: 802.1Q inside 802.1ad is QinQ; more than
 * two stacked tags is not something a router sees in practice. */
#ifndef FT_VLAN_MAX_DEPTH
#define FT_VLAN_MAX_DEPTH 2
#endif

/* IPv6 extension headers walked before giving up (counted when hit). Six
 * covers hop-by-hop + routing + fragment + destination options twice. */
#ifndef FT_IPV6_EXT_MAX
#define FT_IPV6_EXT_MAX 6
#endif

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

struct cursor {
	void *pos;
	void *end;
};

struct ft_vlanhdr {
	__be16 tci;
	__be16 encap_proto;
};

/* Ethernet: returns the EtherType (network order) after the MAC header. */
static __always_inline int parse_ethhdr(struct cursor *c)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end)
		return -1;
	c->pos = eth + 1;
	return eth->h_proto;
}

/*
 * In-band 802.1Q/802.1ad tags: steps over up to FT_VLAN_MAX_DEPTH tags.
 * *vlan receives the first tag's VLAN ID when it is still 0 (an offloaded
 * tag, set by the caller, is outermost). Returns the inner EtherType
 * (network order) or -1 when truncated.
 */
static __always_inline int parse_vlans(struct cursor *c, int proto, __u16 *vlan)
{
#pragma unroll
	for (int i = 0; i < FT_VLAN_MAX_DEPTH; i++) {
		struct ft_vlanhdr *vh = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > c->end)
			return -1;
		if (*vlan == 0)
			*vlan = bpf_ntohs(vh->tci) & 0x0fff;
		proto = vh->encap_proto;
		c->pos = vh + 1;
	}
	return proto;
}

/* IPv4: returns the L4 protocol and leaves the cursor at the L4 header (after
 * options). -1: truncated; -2: malformed (IHL < 5). */
static __always_inline int parse_iphdr(struct cursor *c, struct iphdr **iphp)
{
	struct iphdr *iph = c->pos;
	int hdrsize;

	if ((void *)(iph + 1) > c->end)
		return -1;
	hdrsize = iph->ihl * 4;
	if (hdrsize < (int)sizeof(*iph))
		return -2;
	if (c->pos + hdrsize > c->end)
		return -1;
	c->pos += hdrsize;
	*iphp = iph;
	return iph->protocol;
}

/* IPv6 fixed header: returns the first next-header value. -1: truncated. */
static __always_inline int parse_ip6hdr(struct cursor *c, struct ipv6hdr **ip6hp)
{
	struct ipv6hdr *ip6h = c->pos;

	if ((void *)(ip6h + 1) > c->end)
		return -1;
	c->pos = ip6h + 1;
	*ip6hp = ip6h;
	return ip6h->nexthdr;
}

struct ft_ipv6_opt {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ft_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | res | M */
	__be32 identification;
};

/*
 * IPv6 extension headers: walks hop-by-hop, routing, fragment and
 * destination options, at most FT_IPV6_EXT_MAX of them. Returns the upper
 * protocol, with *nonfirst_frag set when a fragment header has a non-zero
 * offset (the walk stops there: what follows is payload, not a header).
 * -1: truncated; -3: more extension headers than we walk.
 */
static __always_inline int skip_ip6hdrext(struct cursor *c, int nexthdr, int *nonfirst_frag)
{
#pragma unroll
	for (int i = 0; i < FT_IPV6_EXT_MAX; i++) {
		struct ft_ipv6_opt *opt = c->pos;

		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(opt + 1) > c->end)
				return -1;
			nexthdr = opt->nexthdr;
			c->pos += (opt->hdrlen + 1) * 8;
			break;
		case IPPROTO_FRAGMENT: {
			struct ft_ipv6_frag *fh = c->pos;

			if ((void *)(fh + 1) > c->end)
				return -1;
			nexthdr = fh->nexthdr;
			c->pos = fh + 1;
			if (fh->frag_off & bpf_htons(0xfff8)) {
				*nonfirst_frag = 1;
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
		return -3;
	}
	return nexthdr;
}

#endif /* FLOWTOP_PARSE_H */
