/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Passive TCP RTT and retransmissions for any TCP crossing an attached hook,
 * forwarded traffic included (a router that is neither end), included by
 * tc.c. Nothing here is sent per packet: everything is a few fields of one
 * entry per connection in tcp_conns, read by userspace
 * (TcProgram.tcp_samples()).
 *
 * Observation point. One TC program runs on ingress and egress of every
 * attached interface, so a forwarded packet can be seen twice (ingress of
 * one leg, egress of the other), and a box may be attached to one leg only.
 * State is per connection, not per flow key, and each direction remembers
 * where it was first seen (ifindex + hook): sequence and timestamp logic for
 * that direction runs there only, so a second sighting neither counts a
 * retransmit twice nor moves a timestamp. When the observation point has
 * seen nothing for FT_OBS_TAKEOVER_NS while another point sees the
 * direction (a route or an attachment changed), the other point takes over.
 *
 * RTT, in two halves. Direction d's half is the RTT between the box and d's
 * receiver: from a packet of d to the receiver's answer, both at their
 * observation points. The handshake gives one sample of each half (SYN to
 * SYN/ACK: the server's half; SYN/ACK to ACK: the client's), timestamps
 * the rest, as pping does: the first data (or FIN) segment carrying a new
 * TSval starts a sample when none is pending (a pure ACK does not: its echo
 * waits for the peer's next data, which measures the application), and the first packet of the other direction
 * echoing it (TSecr == TSval) ends it. One sample pending per direction; a
 * new one starts no sooner than FT_RTT_GAP_DIV-th of the half's smoothed RTT
 * after the last one ended, and never sooner than FT_RTT_MIN_GAP_NS: at
 * most a few samples per RTT on long paths and 1000 / 5 = 200 per second on
 * a LAN, where TCP's own per-ACK samples would be thousands. An echo that
 * goes past the pending TSval (its segment was lost after the box) drops the
 * sample; a TSval never echoed within FT_TS_STALE_NS (a direction the box
 * does not see) is given up and counted. The full path RTT is the sum of
 * the halves (userspace adds them).
 *
 * Retransmissions: per direction the highest sequence end (seq + length,
 * SYN and FIN count one) seen so far; a segment that occupies sequence
 * space and does not reach past it was sent before. That counts SYN and FIN
 * retransmissions too, as the sender's own TcpRetransSegs does. Keepalives
 * (no payload, or one byte just below the highest end) are not counted.
 * What the box can see is what it counts. A segment lost before the
 * observation point is still caught when sent again, if later data got
 * through first (the retransmission fills a hole below the highest end);
 * after a tail loss it looks new. A segment reordered before the box (it
 * arrives after later data) looks sent again, unless its TSval is older
 * than the newest one seen: then it was sent before a segment the box has
 * seen, which a retransmission never is. Within one TSval tick (1 ms on
 * Linux) the two cannot be told apart: reordering counts as retransmits.
 *
 * Concurrency: counters (retrans, data_segs) are atomic; the RTT state of a
 * direction is written only at its observation point, where racing CPUs can
 * at worst lose one sample.
 *
 * FT_PASSIVE_RTT=0 compiles all of it out (the benchmark's baseline).
 *
 * The maps live in tc.c with small accessors (tcp_conn_lookup, ...): bcc
 * rewrites map calls in the main file only.
 */
#ifndef FLOWTOP_TCPRTT_H
#define FLOWTOP_TCPRTT_H

#define FT_TCP_FIN 0x01
#define FT_TCP_SYN 0x02
#define FT_TCP_RST 0x04
#define FT_TCP_ACK 0x10

#if FT_PASSIVE_RTT

#define FT_TS_STALE_NS 1000000000ULL      /* a pending TSval older than this is given up */
#define FT_RTT_MIN_GAP_NS 5000000ULL      /* samples of one half start >= 5 ms apart ... */
#define FT_RTT_GAP_DIV 4                  /* ... and >= a quarter of its srtt apart */
#define FT_OBS_TAKEOVER_NS 2000000000ULL  /* observation point silent this long: move it */
/* TCP options walked looking for the timestamps (40 bytes of options hold at
 * most 40 NOPs, but real stacks put timestamps within the first 6 options). */
#define FT_TCPOPT_MAX 10

/* What parse_packet() reads from a TCP header for the tracker. */
struct ft_tcpseg {
	__u32 seq;
	__u32 tsval;
	__u32 tsecr;
	__u8 has_ts; /* tsval/tsecr hold a timestamps option */
	__u8 pad[3];
};

static __always_inline int ft_seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int ft_seq_after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

/*
 * Sequence number and timestamps of a TCP header whose fixed part lies
 * before `end`. Options are walked only when the header has any; the layout
 * every established Linux/BSD segment uses (NOP NOP TS) is checked first.
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
		if (w == bpf_htonl(0x0101080a)) {
			__builtin_memcpy(&s->tsval, opt + 4, 4);
			__builtin_memcpy(&s->tsecr, opt + 8, 4);
			s->tsval = bpf_ntohl(s->tsval);
			s->tsecr = bpf_ntohl(s->tsecr);
			s->has_ts = 1;
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
		if (kind == 0) /* end of options */
			return;
		if (kind == 1) { /* NOP */
			off += 1;
			continue;
		}
		len = o[1];
		if (len < 2)
			return;
		if (kind == 8 && len == 10) {
			if (off + 10 > olen || (void *)(o + 10) > end)
				return;
			__builtin_memcpy(&s->tsval, o + 2, 4);
			__builtin_memcpy(&s->tsecr, o + 6, 4);
			s->tsval = bpf_ntohl(s->tsval);
			s->tsecr = bpf_ntohl(s->tsecr);
			s->has_ts = 1;
			return;
		}
		off += len;
	}
}

/* Fills the canonical key; returns the packet's direction in it (0: the
 * source is endpoint 0). */
static __always_inline __u32 ft_conn_key(struct flow_key *k, struct tcp_conn_key *ck)
{
	__u64 *s = (__u64 *)k->src;
	__u64 *d = (__u64 *)k->dst;
	__u64 *a0 = (__u64 *)ck->addr0;
	__u64 *a1 = (__u64 *)ck->addr1;
	__u32 dir;

	if (s[0] != d[0])
		dir = s[0] > d[0];
	else if (s[1] != d[1])
		dir = s[1] > d[1];
	else
		dir = k->sport > k->dport;
	__builtin_memset(ck, 0, sizeof(*ck));
	ck->ip_version = k->ip_version;
	if (dir == 0) {
		a0[0] = s[0];
		a0[1] = s[1];
		a1[0] = d[0];
		a1[1] = d[1];
		ck->port0 = k->sport;
		ck->port1 = k->dport;
	} else {
		a0[0] = d[0];
		a0[1] = d[1];
		a1[0] = s[0];
		a1[1] = s[1];
		ck->port0 = k->dport;
		ck->port1 = k->sport;
	}
	return dir;
}

/* One RTT sample of a half: EWMA as TCP does (RFC 6298 gains). */
static __always_inline void ft_rtt_sample(struct tcp_rtt *h, __u64 rtt)
{
	if (rtt == 0)
		rtt = 1; /* 0 means "no sample" to userspace */
	if (h->srtt_ns == 0) {
		h->srtt_ns = rtt;
		h->mdev_ns = rtt / 2;
		h->min_ns = rtt;
	} else {
		__s64 err = (__s64)(rtt - h->srtt_ns);
		__s64 aerr = err < 0 ? -err : err;
		__u64 srtt = (__u64)((__s64)h->srtt_ns + (err >> 3));

		h->srtt_ns = srtt ? srtt : 1;
		h->mdev_ns = (__u64)((__s64)h->mdev_ns + ((aerr - (__s64)h->mdev_ns) >> 2));
		if (rtt < h->min_ns)
			h->min_ns = rtt;
	}
	h->samples += 1;
}

/* Whether a SYN (without ACK) opens a new connection on an entry that has
 * state: the old one was closed, or its sender already has sequence state
 * and this is not its SYN again. (Simultaneous open keeps the entry.) */
static __always_inline int ft_tcp_reopened(struct tcp_conn *c, struct ft_tcpseg *s, __u32 dir)
{
	if (c->client == dir + 1 && s->seq == c->isn)
		return 0;
	if ((c->flags & FT_CONN_RST) || (c->side[0].half.flags & c->side[1].half.flags & FT_HALF_FIN))
		return 1;
	return c->side[dir & 1].half.flags & FT_HALF_SEQ;
}

/*
 * The tracker, for a TCP segment whose header was complete. k: the flow key
 * (ifindex, addresses, ports), flags: the TCP flags byte, payload: TCP
 * payload bytes of the skb, segs: segments it stands for (GSO), hook:
 * FT_DIR_*.
 */
static __always_inline void ft_tcp_track(struct flow_key *k, struct ft_tcpseg *s, __u8 flags,
					 __u32 payload, __u64 segs, __u8 hook)
{
	struct tcp_conn_key ck;
	__u32 dir = ft_conn_key(k, &ck) & 1;
	struct tcp_conn *c = tcp_conn_lookup(&ck);
	struct tcp_half *h, *r;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 t = 0;

	if (!c) {
		/* Only a SYN or data makes an entry: a stray ACK, FIN or RST (the
		 * tail of a connection already deleted) would only be noise. */
		if ((flags & FT_TCP_RST) || (!(flags & FT_TCP_SYN) && payload == 0))
			return;
		int err = tcp_conn_insert(&ck);

		if (err == 0)
			count(FT_CTR_TCP_CONN_NEW, 1);
		else if (err != -EEXIST) {
			count(FT_CTR_TCP_CONN_MAP_FULL, 1);
			return;
		}
		c = tcp_conn_lookup(&ck);
		if (!c)
			return;
	} else if ((flags & (FT_TCP_SYN | FT_TCP_ACK)) == FT_TCP_SYN &&
		   ft_tcp_reopened(c, s, dir)) {
		/* The 4-tuple was reused before userspace deleted the old entry. */
		struct tcp_conn *init = tcp_conn_zero_value();

		if (!init)
			return;
		__u64 *dst = (__u64 *)c, *src = (__u64 *)init;

		/* Word by word: clang turns a memcpy this large into a call. */
#pragma unroll
		for (int i = 0; i < sizeof(*c) / 8; i++)
			dst[i] = src[i];
	}
	h = &c->side[dir].half;
	r = &c->side[dir ^ 1].half;

	if (!(h->flags & FT_HALF_SEEN)) {
		h->obs_ifindex = k->ifindex;
		h->obs_hook = hook;
		h->flags |= FT_HALF_SEEN;
	} else if (h->obs_ifindex != k->ifindex || h->obs_hook != hook) {
		/* A second sighting: nothing to do unless the first point went
		 * quiet (route or attachment changed). */
		if ((__s64)(now - h->last_ns) < (__s64)FT_OBS_TAKEOVER_NS)
			return;
		h->obs_ifindex = k->ifindex;
		h->obs_hook = hook;
	}
	/* Once per clock tick at most: a store per packet would bounce the
	 * cache line between CPUs for nothing. */
	if (h->last_ns != now)
		h->last_ns = now;

	if (flags & FT_TCP_RST) {
		c->flags |= FT_CONN_RST;
		return;
	}

	/* Handshake: first sighting of SYN, SYN/ACK and the client's ACK. An
	 * established packet checks one flag of its own half, nothing more. */
	if (flags & FT_TCP_SYN) {
		t = bpf_ktime_get_ns();
		if (!(flags & FT_TCP_ACK)) {
			if (c->syn_ns == 0) {
				c->syn_ns = t;
				c->client = dir + 1;
				c->isn = s->seq;
			} else {
				c->flags |= FT_CONN_SYN_AGAIN;
			}
		} else if (c->synack_ns == 0) {
			c->synack_ns = t;
			if (c->client == (dir ^ 1) + 1) {
				r->flags |= FT_HALF_ACK_DUE;
				/* Karn: a SYN sent twice makes the sample ambiguous. */
				if (!(c->flags & FT_CONN_SYN_AGAIN) && t > c->syn_ns)
					ft_rtt_sample(&c->side[dir ^ 1].rtt, t - c->syn_ns);
			}
		} else {
			c->flags |= FT_CONN_SYNACK_AGAIN;
		}
	} else if ((h->flags & FT_HALF_ACK_DUE) && (flags & FT_TCP_ACK)) {
		h->flags &= ~FT_HALF_ACK_DUE;
		t = bpf_ktime_get_ns();
		c->ack_ns = t;
		if (!(c->flags & FT_CONN_SYNACK_AGAIN) && t > c->synack_ns)
			ft_rtt_sample(&c->side[dir ^ 1].rtt, t - c->synack_ns);
	}

	/* Sequence space: retransmissions and data segments. */
	__u32 seglen = payload + ((flags & FT_TCP_SYN) ? 1 : 0) + ((flags & FT_TCP_FIN) ? 1 : 0);

	if (seglen) {
		__u32 end = s->seq + seglen;
		/* Sent before a segment already seen: reordered, not sent again. */
		int older = s->has_ts && (h->flags & FT_HALF_TS) && ft_seq_before(s->tsval, h->ts_last);

		if (!(h->flags & FT_HALF_SEQ)) {
			h->seq_end = end;
			h->flags |= FT_HALF_SEQ;
		} else if (ft_seq_after(end, h->seq_end)) {
			if (payload && !older && ft_seq_before(s->seq, h->seq_end)) {
				/* Starts in sequence space already seen: that part is sent
				 * again (in as many segments as it spans). */
				__u64 again = h->seq_end - s->seq;
				__u64 n = segs > 1 ? (again * segs + payload - 1) / payload : 1;

				__sync_fetch_and_add(&h->retrans, n);
			}
			h->seq_end = end;
		} else if (!older && !(payload <= 1 && !(flags & (FT_TCP_SYN | FT_TCP_FIN)) &&
				       end == h->seq_end)) {
			/* (Not a keepalive: one byte just below snd_nxt.) */
			__sync_fetch_and_add(&h->retrans, segs);
		}
		if (payload)
			__sync_fetch_and_add(&h->data_segs, segs);
		if (flags & FT_TCP_FIN)
			h->flags |= FT_HALF_FIN;
	}

	if (!s->has_ts)
		return;
	if (flags & FT_TCP_SYN) {
		/* The handshake times the first samples; timestamps take over
		 * after it, from TSvals newer than the SYN's. */
		h->ts_last = s->tsval;
		h->flags |= FT_HALF_TS;
		return;
	}
	/* The echo of the other direction's pending TSval ends its sample. */
	if ((flags & FT_TCP_ACK) && r->ts_time_ns) {
		if (s->tsecr == r->ts_pending) {
			if (!t)
				t = bpf_ktime_get_ns();
			if (t > r->ts_time_ns) {
				struct tcp_rtt *rr = &c->side[dir ^ 1].rtt;
				__u64 gap;

				ft_rtt_sample(rr, t - r->ts_time_ns);
				gap = rr->srtt_ns / FT_RTT_GAP_DIV;
				rr->next_start_ns = t + (gap > FT_RTT_MIN_GAP_NS ? gap : FT_RTT_MIN_GAP_NS);
			}
			r->ts_time_ns = 0;
		} else if (ft_seq_after(s->tsecr, r->ts_pending)) {
			r->ts_time_ns = 0; /* never echoed: its segment was lost after the box */
		}
	}
	/* The first packet with a new TSval may start a sample. The first TSval
	 * of a connection picked up midway may be old: only newer ones count. */
	if (!(h->flags & FT_HALF_TS)) {
		h->ts_last = s->tsval;
		h->flags |= FT_HALF_TS;
		return;
	}
	if (!ft_seq_after(s->tsval, h->ts_last))
		return;
	h->ts_last = s->tsval;
	/* Only a segment that occupies sequence space is answered at once: the
	 * peer echoes a pure ACK's TSval in whatever it sends next, which for
	 * an application-limited sender can be long after (ePPing skips them
	 * too). A direction that only ever ACKs keeps its handshake half. */
	if (payload == 0 && !(flags & FT_TCP_FIN))
		return;
	if (h->ts_time_ns) {
		if ((__s64)(now - h->ts_time_ns) < (__s64)FT_TS_STALE_NS)
			return;
		count(FT_CTR_TCP_TS_STALE, 1);
		h->ts_time_ns = 0;
	}
	if (!t)
		t = bpf_ktime_get_ns();
	if (t < c->side[dir].rtt.next_start_ns)
		return;
	h->ts_pending = s->tsval;
	h->ts_time_ns = t;
}

#else /* !FT_PASSIVE_RTT */

struct ft_tcpseg {
};

static __always_inline void ft_tcp_parse(struct tcphdr *th, void *end, struct ft_tcpseg *s)
{
}

static __always_inline void ft_tcp_track(struct flow_key *k, struct ft_tcpseg *s, __u8 flags,
					 __u32 payload, __u64 segs, __u8 hook)
{
}

#endif /* FT_PASSIVE_RTT */

#endif /* FLOWTOP_TCPRTT_H */
