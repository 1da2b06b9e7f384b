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
 * waits for the peer's next data, which measures the application), and the
 * first packet of the other direction echoing it (TSecr == TSval) ends it.
 * One sample pending per direction; a new one starts no sooner than
 * FT_RTT_GAP_DIV-th of the half's smoothed RTT after the last one ended,
 * and never sooner than FT_RTT_MIN_GAP_NS: at
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
 * Cost. Every segment that counts (data, SYN, FIN, RST) needs the shared
 * entry: a hash lookup and the cache lines of its half. What does not is
 * left out: each CPU remembers the last packet of each flow it tracked
 * (tcp_pkts), so a pure ACK repeating the last one's timestamps within the
 * tick (most ACKs of a bulk transfer) skips the lookup, a segment
 * echoing the same TSecr skips the other direction's half (see
 * ft_tcp_skippable()), and an in-order data segment with the last one's
 * timestamps, in its tick, is counted in that CPU's tcp_pkts entry without
 * the lookup (deferred: see ft_tcp_deferrable()).
 *
 * FT_PASSIVE_RTT=0 compiles all of it out (the benchmark's baseline; see
 * bpf/tcpseg.h, which reads the TCP header for it).
 *
 * The maps live in the main file (bpf/tc.c), which defines the accessors
 * declared below: bcc rewrites map calls in the main file only.
 */
#ifndef FLOWTOP_TCPRTT_H
#define FLOWTOP_TCPRTT_H

#include <uapi/linux/errno.h>

#include "flowtop.h"
#include "counters.h"
#include "tcpseg.h"

#if FT_PASSIVE_RTT

#define FT_TS_STALE_NS 1000000000ULL      /* a pending TSval older than this is given up */
#define FT_RTT_MIN_GAP_NS 5000000ULL      /* samples of one half start >= 5 ms apart ... */
#define FT_RTT_GAP_DIV 4                  /* ... and >= a quarter of its srtt apart */
#define FT_OBS_TAKEOVER_NS 2000000000ULL  /* observation point silent this long: move it */

/* tcp_conns (key: struct tcp_conn_key, value: struct tcp_conn): the entry, or NULL. */
FT_MAIN_DEFINES(static __always_inline struct tcp_conn *tcp_conn_lookup(struct tcp_conn_key *k))
/* Inserts an all-zero entry: 0, -EEXIST (another CPU was first) or the error. */
FT_MAIN_DEFINES(static __always_inline int tcp_conn_insert(struct tcp_conn_key *k))
/* An all-zero struct tcp_conn, never written (NULL: cannot happen). */
FT_MAIN_DEFINES(static __always_inline struct tcp_conn *tcp_conn_zero_value(void))

/*
 * The packet as the tracker is given it, and what the next packet of the
 * flow on this CPU compares itself with (ft_tcp_skippable()): this CPU's
 * entry of the tcp_pkts map for the flow's slot (by the flow key's hash,
 * as the flow cache). track_tcp() writes the packet there after comparing
 * it with the previous one, and the tracker reads only the entry. What a
 * map holds is unknown to the verifier, so every way of reaching the
 * tracker (each header layout, each way the option walk ends, each
 * length) is one state for it: it is verified once, not once per layout,
 * which is past the verifier's budget. (Per CPU: no other program runs on
 * this CPU between the write and its use.) The entry also carries the
 * flow's deferred data segments (below ft_tcp_skippable()), which
 * userspace reads: layout.TCP_PKT mirrors it.
 */
struct ft_tcp_pkt {
	struct flow_key key;  /* the flow: addresses, ports, ifindex, hook */
	/* Deferred data segments (see ft_tcp_deferrable()); userspace reads
	 * these fields too (layout.TCP_PKT, flowtop/kernel/tcpconn.py). */
	__u64 deferred;       /* data segments counted here, not in the entry's data_segs */
	__u32 stamp;          /* the tcp_half.stamp they belong to */
	__u32 seq_end;        /* while owner: the direction's highest sequence end */
	/* The packet. */
	__u64 now;            /* coarse clock (CLOCK_MONOTONIC_COARSE) */
	__u32 segs;           /* segments the skb stands for (GSO, at most 65535) */
	__u32 payload;        /* TCP payload bytes of the skb */
	__u8 flags;           /* the TCP flags byte */
	__u8 comparable;      /* 0: a SYN or RST, which no later packet compares with */
	__u8 skip_echo;       /* ft_tcp_skippable() said FT_SKIP_ECHO */
	__u8 owner;           /* this CPU may defer the flow's in-order data segments */
	struct ft_tcpseg seg; /* what parse_packet() read from the TCP header */
	__u32 pad;
};

_Static_assert(sizeof(struct ft_tcp_pkt) == 104, "layout.TCP_PKT mirrors struct ft_tcp_pkt");

/* tcp_pkts' entry for a slot (< FT_CACHE_SLOTS) in this CPU's row, and in
 * CPU cpu's; NULL: cannot happen. */
FT_MAIN_DEFINES(static __always_inline struct ft_tcp_pkt *tcp_pkt_slot(__u32 slot))
FT_MAIN_DEFINES(static __always_inline struct ft_tcp_pkt *tcp_pkt_row(__u32 cpu, __u32 slot))

/* The last 8 bytes of struct tcp_conn_key as one word: port0, port1,
 * ip_version, zero padding, in memory order. */
static __always_inline __u64 ft_conn_key_tail(__u16 port0, __u16 port1, __u8 ip_version)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (__u64)port0 | (__u64)port1 << 16 | (__u64)ip_version << 32;
#else
	return (__u64)port0 << 48 | (__u64)port1 << 32 | (__u64)ip_version << 24;
#endif
}

_Static_assert(sizeof(struct tcp_conn_key) == 40 &&
		       __builtin_offsetof(struct tcp_conn_key, port0) == 32 &&
		       __builtin_offsetof(struct tcp_conn_key, port1) == 34 &&
		       __builtin_offsetof(struct tcp_conn_key, ip_version) == 36,
	       "ft_conn_key() writes struct tcp_conn_key in 8-byte words");

/* Fills the canonical key; returns the packet's direction in it (0: the
 * source is endpoint 0). */
static __always_inline __u32 ft_conn_key(struct flow_key *k, struct tcp_conn_key *ck)
{
	__u64 *s = (__u64 *)k->src;
	__u64 *d = (__u64 *)k->dst;
	__u64 *q = (__u64 *)ck;
	__u32 dir;

	if (s[0] != d[0])
		dir = s[0] > d[0];
	else if (s[1] != d[1])
		dir = s[1] > d[1];
	else
		dir = k->sport > k->dport;
	/* In whole words, padding included: the map hashes and compares the
	 * key right after, and a load that spans several smaller stores waits
	 * for them to reach the cache. Word 4 is port0, port1, ip_version. */
	if (dir == 0) {
		q[0] = s[0];
		q[1] = s[1];
		q[2] = d[0];
		q[3] = d[1];
		q[4] = ft_conn_key_tail(k->sport, k->dport, k->ip_version);
	} else {
		q[0] = d[0];
		q[1] = d[1];
		q[2] = s[0];
		q[3] = s[1];
		q[4] = ft_conn_key_tail(k->dport, k->sport, k->ip_version);
	}
	return dir;
}

/* The precise clock (CLOCK_MONOTONIC), read only by the steps that time
 * something and at most once per packet: *t keeps it, 0 until read. */
static __always_inline __u64 ft_precise_now(__u64 *t)
{
	if (!*t)
		*t = bpf_ktime_get_ns();
	return *t;
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

/*
 * A connection not in the map yet: makes its entry for a SYN or a segment
 * with data and returns it. A stray ACK, FIN or RST (the tail of a
 * connection already deleted) would only be noise: NULL, as when the map
 * is full (counted) or the entry is gone again.
 */
static __always_inline struct tcp_conn *ft_conn_new(struct tcp_conn_key *ck, __u8 flags,
						    __u32 payload)
{
	int err;

	if ((flags & FT_TCP_RST) || (!(flags & FT_TCP_SYN) && payload == 0))
		return NULL;
	err = tcp_conn_insert(ck);
	if (err == 0) {
		count(FT_CTR_TCP_CONN_NEW, 1);
	} else if (err != -EEXIST) {
		count(FT_CTR_TCP_CONN_MAP_FULL, 1);
		return NULL;
	}
	return tcp_conn_lookup(ck);
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

/* The 4-tuple was reused before userspace deleted the old entry: start
 * the entry afresh. Returns 0 when it cannot (no zero value). */
static __always_inline int ft_conn_reset(struct tcp_conn *c)
{
	struct tcp_conn *init = tcp_conn_zero_value();

	if (!init)
		return 0;
	__u64 *dst = (__u64 *)c, *src = (__u64 *)init;

	/* Word by word: clang turns a memcpy this large into a call. */
#pragma unroll
	for (int i = 0; i < sizeof(*c) / 8; i++)
		dst[i] = src[i];
	return 1;
}

/*
 * Whether the packet is at its direction's observation point, where the
 * direction's sequence and timestamp logic runs: the first place that saw
 * the direction, or this one when that one has been quiet for
 * FT_OBS_TAKEOVER_NS (a route or an attachment changed). Returns 0 for a
 * second sighting elsewhere, which the caller then ignores. At the
 * observation point, stamps the half's last_ns with now (coarse clock).
 */
static __always_inline int ft_half_observe(struct tcp_half *h, __u32 ifindex, __u8 hook,
					   __u64 now)
{
	if (!(h->flags & FT_HALF_SEEN)) {
		h->obs_ifindex = ifindex;
		h->obs_hook = hook;
		h->flags |= FT_HALF_SEEN;
		h->stamp = (__u32)now | 1;
	} else if (h->obs_ifindex != ifindex || h->obs_hook != hook) {
		if ((__s64)(now - h->last_ns) < (__s64)FT_OBS_TAKEOVER_NS)
			return 0;
		h->obs_ifindex = ifindex;
		h->obs_hook = hook;
	}
	/* Once per clock tick at most: a store per packet would bounce the
	 * cache line between CPUs for nothing. */
	if (h->last_ns != now)
		h->last_ns = now;
	return 1;
}

/*
 * Handshake: the first sighting of the SYN, the SYN/ACK and the client's
 * ACK (times in c), and the sample of each half they make: SYN -> SYN/ACK
 * the server's, SYN/ACK -> ACK the client's (Karn: not when the packet that
 * starts it was sent twice). h: the packet's half, r: the other one,
 * *t: the precise clock (ft_precise_now()). An established packet checks
 * one flag of its own half, nothing more.
 */
static __always_inline void ft_handshake(struct tcp_conn *c, struct tcp_half *h,
					 struct tcp_half *r, struct ft_tcpseg *s, __u8 flags,
					 __u32 dir, __u64 *t)
{
	if (flags & FT_TCP_SYN) {
		__u64 now = ft_precise_now(t);

		if (!(flags & FT_TCP_ACK)) {
			if (c->syn_ns == 0) {
				c->syn_ns = now;
				c->client = dir + 1;
				c->isn = s->seq;
			} else {
				c->flags |= FT_CONN_SYN_AGAIN;
			}
		} else if (c->synack_ns == 0) {
			c->synack_ns = now;
			if (c->client == (dir ^ 1) + 1) {
				r->flags |= FT_HALF_ACK_DUE;
				if (!(c->flags & FT_CONN_SYN_AGAIN) && now > c->syn_ns)
					ft_rtt_sample(&c->side[dir ^ 1].rtt, now - c->syn_ns);
			}
		} else {
			c->flags |= FT_CONN_SYNACK_AGAIN;
		}
	} else if ((h->flags & FT_HALF_ACK_DUE) && (flags & FT_TCP_ACK)) {
		__u64 now = ft_precise_now(t);

		h->flags &= ~FT_HALF_ACK_DUE;
		c->ack_ns = now;
		if (!(c->flags & FT_CONN_SYNACK_AGAIN) && now > c->synack_ns)
			ft_rtt_sample(&c->side[dir ^ 1].rtt, now - c->synack_ns);
	}
}

/*
 * Sequence space of the packet's half h: data segments, and
 * retransmissions (see the top of this file). payload: TCP payload bytes
 * of the skb, segs: segments it stands for (GSO). A segment that occupies
 * no sequence space (a pure ACK) changes nothing.
 */
static __always_inline void ft_seq_track(struct tcp_half *h, struct ft_tcpseg *s, __u8 flags,
					 __u32 payload, __u64 segs)
{
	__u32 seglen = payload + ((flags & FT_TCP_SYN) ? 1 : 0) + ((flags & FT_TCP_FIN) ? 1 : 0);

	if (!seglen)
		return;
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

/*
 * The other direction's pending sample (in r, its RTT in rr), given this
 * packet's TSecr: its echo ends the sample and rate-limits the next one;
 * an echo past it means the pending segment was lost after the box, which
 * drops the sample. *t: the precise clock (ft_precise_now()).
 */
static __always_inline void ft_ts_echo(struct tcp_half *r, struct tcp_rtt *rr, __u32 tsecr,
				       __u64 *t)
{
	if (!r->ts_time_ns)
		return;
	if (tsecr == r->ts_pending) {
		__u64 now = ft_precise_now(t);

		if (now > r->ts_time_ns) {
			__u64 gap;

			ft_rtt_sample(rr, now - r->ts_time_ns);
			gap = rr->srtt_ns / FT_RTT_GAP_DIV;
			rr->next_start_ns = now + (gap > FT_RTT_MIN_GAP_NS ? gap : FT_RTT_MIN_GAP_NS);
		}
		r->ts_time_ns = 0;
	} else if (ft_seq_after(tsecr, r->ts_pending)) {
		r->ts_time_ns = 0; /* never echoed: its segment was lost after the box */
	}
}

/*
 * The packet's own TSval (its half h, the half's RTT hr): the first packet
 * with a newer TSval than any seen may start a sample, when it occupies
 * sequence space, none is pending (one pending past FT_TS_STALE_NS is given
 * up and counted) and the rate limit allows. The first TSval of a
 * connection picked up midway may be old: only newer ones count. now: the
 * coarse clock, *t: the precise one (ft_precise_now()).
 */
static __always_inline void ft_ts_start(struct tcp_half *h, struct tcp_rtt *hr,
					struct ft_tcpseg *s, __u8 flags, __u32 payload, __u64 now,
					__u64 *t)
{
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
	__u64 start = ft_precise_now(t);

	if (start < hr->next_start_ns)
		return;
	h->ts_pending = s->tsval;
	h->ts_time_ns = start;
}

/* Whether two flow keys are the same, word by word. */
static __always_inline int ft_same_flow(struct flow_key *a, struct flow_key *b)
{
	__u64 *x = (__u64 *)a, *y = (__u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] &&
	       x[5] == y[5];
}

/*
 * What the last packet this CPU tracked of the flow (in l, if its key is
 * k) lets this one skip. FT_SKIP_ALL: a pure ACK (no payload, no SYN, FIN or RST)
 * in the same clock tick with the same timestamps (or none) changes
 * nothing. Its own half saw a packet this tick (last_ns), its TSval is not
 * newer, and it echoes what the last one echoed; a pure ACK starts no
 * sample and occupies no sequence space. The entry lookup goes too: on a
 * bulk transfer most ACKs are this. FT_SKIP_ECHO: the same TSecr as the
 * last one, which cannot end or drop the other direction's pending sample:
 * that one was checked against it, and a TSval the other direction sends
 * later is newer than everything the box saw it send before, this echoed
 * TSval included (the box is on the path, so it saw the TSval before its
 * receiver could echo it). Saves reading the other direction's half,
 * which another CPU writes. (The one thing a skipped ACK could have done:
 * mark its half seen again in an entry userspace deleted and a packet of
 * the other direction made anew within the tick.)
 */
#define FT_SKIP_ECHO 1
#define FT_SKIP_ALL 2

static __always_inline int ft_tcp_skippable(struct ft_tcp_pkt *l, struct flow_key *k,
					    struct ft_tcpseg *s, __u8 flags, __u32 payload,
					    __u64 now)
{
	if (!l->comparable || l->seg.has_ts != s->has_ts || !ft_same_flow(&l->key, k))
		return 0;
	if (s->has_ts && l->seg.tsecr != s->tsecr)
		return 0;
	if (payload == 0 && !(flags & (FT_TCP_SYN | FT_TCP_FIN | FT_TCP_RST)) && l->now == now &&
	    (!s->has_ts || l->seg.tsval == s->tsval))
		return FT_SKIP_ALL;
	return s->has_ts ? FT_SKIP_ECHO : 0;
}

/*
 * Deferred data segments. On a bulk transfer most packets are data
 * segments that continue the last one of their flow on this CPU, with its
 * timestamps, in its clock tick: all the tracker would do with one is move
 * the direction's seq_end and count it. The CPU that last tracked such a
 * segment at the direction's observation point becomes the direction's
 * owner (tcp_half.defer_cpu; ft_tcp_pkt.owner, seq_end and stamp in its
 * tcp_pkts entry), and while it owns it, the next such segments skip the
 * connection entry: ft_tcp_deferrable() says which, track_tcp() moves the
 * entry's seq_end and adds to its deferred count. No count leaves a CPU's
 * entry but into the connection, and by that CPU: the next time it tracks
 * the flow (ft_defer_flush()), or when another flow takes the slot
 * (ft_defer_evict()); userspace adds what is still there when it reads
 * the connection (flowtop/kernel/tcpconn.py).
 *
 * Sequence progress does cross CPUs: a packet of the direction tracked on
 * another CPU (or by the owner itself) first takes the owner's seq_end
 * into the half and ends the ownership (ft_defer_sync()), so retransmission
 * checks see every segment the box saw. A segment the owner defers at the
 * very moment another CPU takes over can be missed by that CPU's check, as
 * two CPUs' plain seq_end stores can race without deferral.
 */

/* Whether the packet (after ft_tcp_skippable() said FT_SKIP_ECHO: same
 * flow, same TSecr) only continues what this CPU's entry l owns: data, no
 * SYN, FIN or RST, the same TSval and clock tick, in order. */
static __always_inline int ft_tcp_deferrable(struct ft_tcp_pkt *l, struct ft_tcpseg *s,
					     __u8 flags, __u32 payload, __u64 now)
{
	return l->owner && payload != 0 && !(flags & (FT_TCP_SYN | FT_TCP_FIN | FT_TCP_RST)) &&
	       l->now == now && l->seg.tsval == s->tsval && s->seq == l->seq_end;
}

/* Adds this CPU's deferred count (in, the packet's entry) to its half h,
 * when it is that half's: the entry first, so that userspace, which reads
 * the connection before the entries, never counts a segment twice. An
 * entry of an earlier connection on the 4-tuple (another stamp: the entry
 * was started afresh) owns nothing any more and its count is dropped. */
static __always_inline void ft_defer_flush(struct ft_tcp_pkt *in, struct tcp_half *h)
{
	__u64 n = in->deferred;

	if (!n && !in->owner)
		return;
	in->deferred = 0;
	if (in->stamp != h->stamp) {
		in->owner = 0;
		return;
	}
	if (n)
		__sync_fetch_and_add(&h->data_segs, n);
}

/* At the observation point, before the packet is tracked: the owner's
 * sequence progress into h, and the ownership ended (in: the packet's own
 * entry, slot: its slot). */
static __always_inline void ft_defer_sync(struct tcp_half *h, struct ft_tcp_pkt *in,
					  struct flow_key *k, __u32 slot)
{
	__u32 cpu = h->defer_cpu;
	struct ft_tcp_pkt *o;

	if (!cpu)
		return;
	h->defer_cpu = 0;
	o = tcp_pkt_row(cpu - 1, slot);
	if (!o || !o->owner || o->stamp != h->stamp || !ft_same_flow(&o->key, k))
		return;
	o->owner = 0;
	if (ft_seq_after(o->seq_end, h->seq_end))
		h->seq_end = o->seq_end;
}

/* After a data segment was tracked at the observation point: when it was
 * in order (its end is the half's seq_end), this CPU owns the direction. */
static __always_inline void ft_defer_grant(struct tcp_half *h, struct ft_tcp_pkt *in, __u32 end)
{
	if (h->seq_end != end)
		return;
	in->seq_end = end;
	in->stamp = h->stamp;
	in->owner = 1;
	h->defer_cpu = bpf_get_smp_processor_id() + 1;
}

/* Before this CPU's entry e is given to another flow: what it holds of its
 * flow (the deferred count, the sequence progress it owns) into that
 * flow's connection. Rare: two TCP flows in one slot on one CPU. */
static __always_inline void ft_defer_evict(struct ft_tcp_pkt *e)
{
	struct tcp_conn_key ck;
	struct tcp_conn *c;
	struct tcp_half *h;
	__u32 dir;

	if (!e->owner && !e->deferred)
		return;
	dir = ft_conn_key(&e->key, &ck) & 1;
	c = tcp_conn_lookup(&ck);
	if (c) {
		h = &c->side[dir].half;
		if (e->owner && e->stamp == h->stamp) {
			if (ft_seq_after(e->seq_end, h->seq_end))
				h->seq_end = e->seq_end;
			if (h->defer_cpu == bpf_get_smp_processor_id() + 1)
				h->defer_cpu = 0;
		}
		ft_defer_flush(e, h);
	}
	e->owner = 0;
	e->deferred = 0;
}

/*
 * The tracker, for a TCP segment whose header was complete, as in (see
 * struct ft_tcp_pkt: this CPU's entry for the flow's slot); hook: FT_DIR_*.
 */
static __always_inline void ft_tcp_track(struct ft_tcp_pkt *in, __u8 hook, __u32 slot)
{
	struct flow_key *k = &in->key;
	struct ft_tcpseg *s = &in->seg;
	__u8 flags = in->flags;
	__u32 payload = in->payload;
	__u64 now = in->now;
	struct tcp_conn_key ck;
	__u32 dir = ft_conn_key(k, &ck) & 1;
	struct tcp_conn *c = tcp_conn_lookup(&ck);
	struct tcp_half *h, *r;
	__u64 t = 0;

	if (!c) {
		c = ft_conn_new(&ck, flags, payload);
		if (!c)
			return;
	} else if ((flags & (FT_TCP_SYN | FT_TCP_ACK)) == FT_TCP_SYN &&
		   ft_tcp_reopened(c, s, dir)) {
		if (!ft_conn_reset(c))
			return;
	}
	h = &c->side[dir].half;
	r = &c->side[dir ^ 1].half;

	ft_defer_flush(in, h);
	if (!ft_half_observe(h, k->ifindex, hook, now))
		return;
	ft_defer_sync(h, in, k, slot);
	if (flags & FT_TCP_RST) {
		c->flags |= FT_CONN_RST;
		return;
	}
	ft_handshake(c, h, r, s, flags, dir, &t);
	ft_seq_track(h, s, flags, payload, in->segs);
	if (payload && s->has_ts && !(flags & (FT_TCP_SYN | FT_TCP_FIN)))
		ft_defer_grant(h, in, s->seq + payload);

	if (!s->has_ts)
		return;
	if (flags & FT_TCP_SYN) {
		/* The handshake times the first samples; timestamps take over
		 * after it, from TSvals newer than the SYN's. */
		h->ts_last = s->tsval;
		h->flags |= FT_HALF_TS;
		return;
	}
	if ((flags & FT_TCP_ACK) && !in->skip_echo)
		ft_ts_echo(r, &c->side[dir ^ 1].rtt, s->tsecr, &t);
	ft_ts_start(h, &c->side[dir].rtt, s, flags, payload, now, &t);
}

#endif /* FT_PASSIVE_RTT */

#endif /* FLOWTOP_TCPRTT_H */
