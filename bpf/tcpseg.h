/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the passive TCP tracker (bpf/tcprtt.h) needs from a TCP header:
 * the sequence number and the timestamps option, read by parse_packet()
 * (bpf/packet.h) while the header is at hand, into struct ft_tcpseg, once
 * per packet; the tracker works from that struct.
 *
 * FT_PASSIVE_RTT is the tracker's build switch (a -D cflag from
 * flowtop/kernel/program.py; 1 unless told): 0 compiles the tracker out,
 * this header's parsing included (the benchmark's baseline).
 */
#ifndef FLOWTOP_TCPSEG_H
#define FLOWTOP_TCPSEG_H

#include <uapi/linux/tcp.h>

#ifndef FT_PASSIVE_RTT
#define FT_PASSIVE_RTT 1
#endif

/* TCP flags, as in the 14th byte of the header. */
#define FT_TCP_FIN 0x01
#define FT_TCP_SYN 0x02
#define FT_TCP_RST 0x04
#define FT_TCP_ACK 0x10

#if FT_PASSIVE_RTT

/* TCP options walked looking for the timestamps (40 bytes of options hold at
 * most 40 NOPs, but real stacks put timestamps within the first 6 options). */
#define FT_TCPOPT_MAX 10

/* Option kinds and the timestamps option's length (RFC 9293, RFC 7323). */
#define FT_TCPOPT_EOL 0
#define FT_TCPOPT_NOP 1
#define FT_TCPOPT_TS 8
#define FT_TCPOLEN_TS 10
/* NOP, NOP, kind 8, length 10: how Linux and the BSDs lay out the option in
 * every segment after the handshake. */
#define FT_TCPOPT_TS_ALIGNED 0x0101080a

/* What parse_packet() reads from a TCP header for the tracker. */
struct ft_tcpseg {
	__u32 seq;
	__u32 tsval;
	__u32 tsecr;
	__u8 has_ts; /* tsval/tsecr hold a timestamps option */
	__u8 pad[3];
};

/* Sequence-space order (RFC 1982 serial numbers), for sequence numbers and
 * TSvals alike. */
static __always_inline int ft_seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int ft_seq_after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

/* The one decoder of the timestamps option: TSval and TSecr from its 8
 * value bytes at v (in bounds), into s. */
static __always_inline void ft_tcp_ts_decode(const __u8 *v, struct ft_tcpseg *s)
{
	__builtin_memcpy(&s->tsval, v, 4);
	__builtin_memcpy(&s->tsecr, v + 4, 4);
	s->tsval = bpf_ntohl(s->tsval);
	s->tsecr = bpf_ntohl(s->tsecr);
	s->has_ts = 1;
}

/*
 * Sequence number and timestamps of a TCP header whose fixed part lies
 * before `end` into *s (zeroed by the caller; has_ts stays 0 without a
 * timestamps option, or when it lies past `end` or past the header's end).
 * Options are walked only when the header has any; the aligned layout is
 * checked first. (Each path decodes where it found the option: one shared
 * decode after the walk has the verifier go through the rest of the
 * program once per place the walk can end, twice the work.)
 */
static __always_inline void ft_tcp_parse(struct tcphdr *th, void *end, struct ft_tcpseg *s)
{
	__u8 *opt = (__u8 *)(th + 1);
	__u32 olen = th->doff * 4;
	__u32 off = 0;

	s->seq = bpf_ntohl(th->seq);
	if (olen <= sizeof(*th))
		return;
	olen -= sizeof(*th);
	if (olen >= 12 && (void *)(opt + 12) <= end) {
		__u32 w;

		__builtin_memcpy(&w, opt, 4);
		if (w == bpf_htonl(FT_TCPOPT_TS_ALIGNED)) {
			ft_tcp_ts_decode(opt + 4, s);
			return;
		}
	}
	for (int i = 0; i < FT_TCPOPT_MAX; i++) {
		__u8 *o;
		__u8 kind, len;

		/* Keep the mask: it is what bounds the offset for the verifier. */
		asm volatile("" : "+r"(off));
		off &= 63;
		if (off >= olen)
			return;
		o = opt + off;
		if ((void *)(o + 2) > end)
			return;
		kind = o[0];
		if (kind == FT_TCPOPT_EOL)
			return;
		if (kind == FT_TCPOPT_NOP) {
			off += 1;
			continue;
		}
		len = o[1];
		if (len < 2)
			return;
		if (kind == FT_TCPOPT_TS && len == FT_TCPOLEN_TS) {
			if (off + FT_TCPOLEN_TS > olen || (void *)(o + FT_TCPOLEN_TS) > end)
				return;
			ft_tcp_ts_decode(o + 2, s);
			return;
		}
		off += len;
	}
}

#else /* !FT_PASSIVE_RTT */

struct ft_tcpseg {
};

static __always_inline void ft_tcp_parse(struct tcphdr *th, void *end, struct ft_tcpseg *s)
{
}

#endif /* FT_PASSIVE_RTT */

#endif /* FLOWTOP_TCPSEG_H */
