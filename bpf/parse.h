/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Header parsing on a bounds-checked cursor over the linear part of an skb.
 *
 * Every helper takes the cursor, checks that the whole header lies before
 * `end`, advances past it and returns what comes next (an EtherType or a
 * protocol number, >= 0), or a negative enum ft_parse_status:
 * FT_PARSE_TRUNCATED when the frame ends inside the header, the others as
 * each helper says. On failure the cursor is where the header started or
 * anywhere past it: the caller gives up on the packet. The verifier needs
 * each access proven in bounds; doing the check once per header here keeps
 * parse_packet() readable. Every loop has a compile-time bound.
 */
#ifndef FLOWTOP_PARSE_H
#define FLOWTOP_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>

#include "flowtop.h" /* FT_MPLS_PRESENT */

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

/* MPLS label stack entries walked looking for the bottom of the stack
 * (counted when hit). Eight covers L3VPN, 6PE, TE/FRR and most segment
 * routing stacks. */
#ifndef FT_MPLS_MAX_DEPTH
#define FT_MPLS_MAX_DEPTH 8
#endif

/* Devices without an Ethernet header: how far past skb->data the network
 * header may be found (see seek_net()). Covers an outer IPv4 or IPv6 header
 * plus GRE with every option, UDP (FOU/GUE) or an encapsulation-limit
 * option. */
#ifndef FT_NET_SEEK_MAX
#define FT_NET_SEEK_MAX 64
#endif

/*
 * Why parsing stopped. The parsers below return one of the negative ones
 * instead of the next protocol; parse_packet() (bpf/packet.h) returns
 * FT_PARSE_OK or any of them, and the data path counts each in its own
 * enum ft_counter (FT_PARSE_NON_IP too: a frame that is not IP).
 */
enum ft_parse_status {
	FT_PARSE_OK = 0,          /* a packet to account in its flow */
	FT_PARSE_TRUNCATED = -1,  /* the frame ends inside a header */
	FT_PARSE_MALFORMED = -2,  /* an impossible header field */
	FT_PARSE_EXT_LIMIT = -3,  /* more IPv6 extension headers than we walk */
	FT_PARSE_MPLS_LIMIT = -4, /* more MPLS label stack entries than we walk */
	FT_PARSE_SEEK_LIMIT = -5, /* network header further than FT_NET_SEEK_MAX */
	FT_PARSE_NON_IP = -6,     /* not IP (ARP, LLDP, PPP control, ...) */
};

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
#ifndef ETH_P_PPP_SES
#define ETH_P_PPP_SES 0x8864
#endif
#ifndef ETH_P_MPLS_UC
#define ETH_P_MPLS_UC 0x8847
#endif
#ifndef ETH_P_MPLS_MC
#define ETH_P_MPLS_MC 0x8848
#endif

/* PPP protocol numbers carried in PPPoE sessions (RFC 1661 registry). */
#define FT_PPP_IP 0x0021
#define FT_PPP_IPV6 0x0057
#define FT_PPP_MPLS_UC 0x0281
#define FT_PPP_MPLS_MC 0x0283

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
		return FT_PARSE_TRUNCATED;
	c->pos = eth + 1;
	return eth->h_proto;
}

/*
 * In-band 802.1Q/802.1ad tags: steps over up to FT_VLAN_MAX_DEPTH tags.
 * *vlan receives the first tag's VLAN ID when it is still 0 (an offloaded
 * tag, set by the caller, is outermost). Returns the inner EtherType
 * (network order) or FT_PARSE_TRUNCATED.
 */
static __always_inline int parse_vlans(struct cursor *c, int proto, __u16 *vlan)
{
#pragma unroll
	for (int i = 0; i < FT_VLAN_MAX_DEPTH; i++) {
		struct ft_vlanhdr *vh = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > c->end)
			return FT_PARSE_TRUNCATED;
		if (*vlan == 0)
			*vlan = bpf_ntohs(vh->tci) & 0x0fff;
		proto = vh->encap_proto;
		c->pos = vh + 1;
	}
	return proto;
}

struct ft_pppoe_hdr {
	__u8 ver_type;   /* version 1, type 1: 0x11 */
	__u8 code;       /* 0 in the session stage */
	__be16 session;
	__be16 length;   /* of the PPP frame: protocol field and payload */
	__be16 ppp_proto;
};

/*
 * PPPoE session stage (EtherType 0x8864, RFC 2516), after any VLAN tags:
 * steps over the PPPoE header and the PPP protocol field. Returns the
 * EtherType (network order) of what PPP carries: IPv4, IPv6, MPLS;
 * FT_PARSE_NON_IP for any other PPP protocol (LCP, IPCP, CHAP, ...);
 * FT_PARSE_TRUNCATED; FT_PARSE_MALFORMED when version/type is not 1/1 or
 * the code is not 0.
 * (Discovery, 0x8863, never comes here: it is not IP.)
 */
static __always_inline int parse_pppoe(struct cursor *c)
{
	struct ft_pppoe_hdr *ph = c->pos;

	if ((void *)(ph + 1) > c->end)
		return FT_PARSE_TRUNCATED;
	if (ph->ver_type != 0x11 || ph->code != 0)
		return FT_PARSE_MALFORMED;
	c->pos = ph + 1;
	switch (bpf_ntohs(ph->ppp_proto)) {
	case FT_PPP_IP:
		return bpf_htons(ETH_P_IP);
	case FT_PPP_IPV6:
		return bpf_htons(ETH_P_IPV6);
	case FT_PPP_MPLS_UC:
		return bpf_htons(ETH_P_MPLS_UC);
	case FT_PPP_MPLS_MC:
		return bpf_htons(ETH_P_MPLS_MC);
	}
	return FT_PARSE_NON_IP;
}

/*
 * MPLS label stack (EtherType 0x8847/0x8848, RFC 3032): steps over the
 * entries down to the one with bottom-of-stack set, at most
 * FT_MPLS_MAX_DEPTH of them, and tells the payload by its first nibble
 * (4: IPv4, 6: IPv6), as label-switching routers do. *top receives the top
 * entry without its TTL (label << 4 | TC << 1 | S: IPFIX
 * mplsTopLabelStackSection) | FT_MPLS_PRESENT. Returns the payload's
 * EtherType (network order); FT_PARSE_NON_IP when it is neither (a
 * pseudowire control word, an Ethernet payload); FT_PARSE_TRUNCATED;
 * FT_PARSE_MPLS_LIMIT when no bottom of stack within the bound.
 */
static __always_inline int parse_mpls(struct cursor *c, __u32 *top)
{
#pragma unroll
	for (int i = 0; i < FT_MPLS_MAX_DEPTH; i++) {
		__be32 *lse = c->pos;
		__u8 *first;
		__u32 v;

		if ((void *)(lse + 1) > c->end)
			return FT_PARSE_TRUNCATED;
		v = bpf_ntohl(*lse);
		if (i == 0)
			*top = (v >> 8) | FT_MPLS_PRESENT;
		c->pos = lse + 1;
		if (!(v & 0x100))
			continue;
		first = c->pos;
		if ((void *)(first + 1) > c->end)
			return FT_PARSE_TRUNCATED;
		switch (*first >> 4) {
		case 4:
			return bpf_htons(ETH_P_IP);
		case 6:
			return bpf_htons(ETH_P_IPV6);
		}
		return FT_PARSE_NON_IP;
	}
	return FT_PARSE_MPLS_LIMIT;
}

/*
 * What can come between the link-layer header (or, on a device without
 * one, the network header) and IP: a PPPoE session, then an MPLS label
 * stack (PPPoE carrying MPLS too). Returns the EtherType after them (proto
 * itself when it is neither), or a negative status of
 * parse_pppoe()/parse_mpls() (FT_PARSE_NON_IP: what they carry is not IP).
 */
static __always_inline int parse_encap(struct cursor *c, int proto, __u32 *mpls)
{
	if (proto == bpf_htons(ETH_P_PPP_SES)) {
		proto = parse_pppoe(c);
		if (proto < 0)
			return proto;
	}
	if (proto == bpf_htons(ETH_P_MPLS_UC) || proto == bpf_htons(ETH_P_MPLS_MC))
		return parse_mpls(c, mpls);
	return proto;
}

/*
 * Devices without an Ethernet header: moves the cursor (at skb->data) to
 * the network header, given its first 16 bytes in net[] (the caller reads
 * them with bpf_skb_load_bytes_relative(BPF_HDR_START_NET)). It usually
 * is at skb->data (tun, WireGuard, ipip and sit reset the MAC header on
 * receive; nothing precedes it on transmit). But ip_gre keeps the outer IP
 * and GRE headers as the "MAC header" of a received packet (for
 * header_ops->parse), an NBMA GRE device builds them before TC egress, and
 * TC shows skb->data from the MAC header on. So the header is
 * looked for at even offsets up to FT_NET_SEEK_MAX: 16 bytes of an IP
 * header (a length, an id, addresses) do not repeat inside the outer
 * headers. Returns the offset; FT_PARSE_TRUNCATED when the frame ends
 * first; FT_PARSE_SEEK_LIMIT when it is further in.
 */
static __always_inline int seek_net(struct cursor *c, const __u64 net[2])
{
#pragma unroll
	for (int off = 0; off <= FT_NET_SEEK_MAX; off += 2) {
		__u64 *w = c->pos + off;

		if ((void *)(w + 2) > c->end)
			return FT_PARSE_TRUNCATED;
		if (w[0] == net[0] && w[1] == net[1]) {
			c->pos = w;
			return off;
		}
	}
	return FT_PARSE_SEEK_LIMIT;
}

/* IPv4: returns the L4 protocol and leaves the cursor at the L4 header (after
 * options). FT_PARSE_TRUNCATED; FT_PARSE_MALFORMED when IHL < 5. */
static __always_inline int parse_iphdr(struct cursor *c, struct iphdr **iphp)
{
	struct iphdr *iph = c->pos;
	int hdrsize;

	if ((void *)(iph + 1) > c->end)
		return FT_PARSE_TRUNCATED;
	hdrsize = iph->ihl * 4;
	if (hdrsize < (int)sizeof(*iph))
		return FT_PARSE_MALFORMED;
	if (c->pos + hdrsize > c->end)
		return FT_PARSE_TRUNCATED;
	c->pos += hdrsize;
	*iphp = iph;
	return iph->protocol;
}

/* IPv6 fixed header: returns the first next-header value, or
 * FT_PARSE_TRUNCATED. */
static __always_inline int parse_ip6hdr(struct cursor *c, struct ipv6hdr **ip6hp)
{
	struct ipv6hdr *ip6h = c->pos;

	if ((void *)(ip6h + 1) > c->end)
		return FT_PARSE_TRUNCATED;
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

/* Whether an IPv6 next header is one skip_ip6hdrext() walks. */
static __always_inline int ft_ip6_is_ext(int nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_DSTOPTS;
}

/*
 * IPv6 extension headers: walks hop-by-hop, routing, fragment and
 * destination options, at most FT_IPV6_EXT_MAX of them. Returns the upper
 * protocol, with *nonfirst_frag set when a fragment header has a non-zero
 * offset (the walk stops there: what follows is payload, not a header).
 * FT_PARSE_TRUNCATED; FT_PARSE_EXT_LIMIT when there are more extension
 * headers than we walk.
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
				return FT_PARSE_TRUNCATED;
			nexthdr = opt->nexthdr;
			c->pos += (opt->hdrlen + 1) * 8;
			break;
		case IPPROTO_FRAGMENT: {
			struct ft_ipv6_frag *fh = c->pos;

			if ((void *)(fh + 1) > c->end)
				return FT_PARSE_TRUNCATED;
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
		return FT_PARSE_EXT_LIMIT;
	}
	return nexthdr;
}

#endif /* FLOWTOP_PARSE_H */
