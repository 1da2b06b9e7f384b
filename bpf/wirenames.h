/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Names from the wire (issue 16), the kernel side: wire_names() hands a
 * bounded prefix of a few packets up to userspace through the wire_ring
 * ring buffer (struct wire_event_hdr, bpf/flowtop.h), and nothing for any
 * other packet:
 *
 *   FT_WIRE_KIND_DNS        UDP or TCP from port 53 or one of the
 *                           configured ports (FT_WIRE_PORT1..4), with payload:
 *                           a DNS response (queries go *to* the port);
 *   FT_WIRE_KIND_TCP_FIRST  the first FT_WIRE_TCP_SEGS data segments the
 *                           client of a new TCP connection sends: one whose
 *                           SYN (without ACK) this program saw at this hook;
 *   FT_WIRE_KIND_QUIC       UDP to FT_WIRE_QUIC_PORT whose first payload byte
 *                           is a QUIC long header's Initial (the client's
 *                           ClientHello is in it: wirenames/quic.py
 *                           decrypts it; the version is checked there).
 *
 * Two halves. wire_names(), inlined at the end of handle_packet(), makes
 * the cheap tests; a packet that passes them has its facts put in this
 * CPU's wire_scratch and is handed, by a tail call, to flowtop_wire
 * (wire_output()), which marks SYNs, looks connections up and outputs.
 * The tail call keeps the verifier's work in bounds: inlined, the output
 * path was verified once per path through the parser (past the verifier's
 * million instructions); as a program of its own it is verified once.
 *
 * Cost for other packets. A SYN marks its connection in wire_conns (an LRU
 * hash keyed by the flow key of the client's direction) and writes the
 * first data byte's sequence number (ISN + 1) in the connection's slot of
 * wire_young, a small array indexed by a hash of the flow key. A TCP
 * segment goes further only when its sequence number lies within
 * FT_WIRE_SEQ_WINDOW of its slot's value: the one cheap test (an inlined
 * array load and a compare) that bulk data of established connections
 * fails but for one segment in 65536 (a tail call and a hash miss then).
 * UDP pays the port compares only, and UDP to FT_WIRE_QUIC_PORT one byte
 * load and compare more. Limits, not counted: a connection that
 * shares a slot with a later SYN before sending data is missed (the slot
 * keeps the later ISN), and so is one the LRU evicted before its data
 * (more than FT_WIRE_YOUNG_SLOTS connections waiting for their first
 * data). Without the passive tracker (FT_PASSIVE_RTT=0) the sequence
 * number is a bpf_skb_load_bytes() per TCP packet.
 *
 * Rate and room: a per-CPU token bucket (FT_WIRE_COST_NS of credit per
 * event, at most FT_WIRE_BURST_NS banked, on the coarse clock) refuses
 * events past the configured rate (FT_CTR_WIRE_RATE_LIMITED); an event the
 * full ring refuses is FT_CTR_WIRE_RING_FULL; FT_CTR_WIRE_EVENTS counts
 * those handed up. The packet itself is never changed or dropped.
 *
 * Build switch FT_WIRE_NAMES (a -D cflag from flowtop/kernel/program.py):
 * 0 compiles all of this out, maps included (the bench's baseline, and
 * `[names] enabled = false`).
 */
#ifndef FLOWTOP_WIRENAMES_H
#define FLOWTOP_WIRENAMES_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>

#include "flowtop.h"
#include "counters.h"
#include "packet.h"

/* Extra DNS ports from [names] dns_ports; unused ones repeat 53 (the
 * compiler folds the repeated compares away). */
#ifndef FT_WIRE_PORT1
#define FT_WIRE_PORT1 53
#endif
#ifndef FT_WIRE_PORT2
#define FT_WIRE_PORT2 53
#endif
#ifndef FT_WIRE_PORT3
#define FT_WIRE_PORT3 53
#endif
#ifndef FT_WIRE_PORT4
#define FT_WIRE_PORT4 53
#endif
/* QUIC Initials are looked for in UDP to this port (HTTP/3's). */
#ifndef FT_WIRE_QUIC_PORT
#define FT_WIRE_QUIC_PORT 443
#endif
/* Token bucket: ns of credit one event costs (1e9 / [names] rate) and the
 * most credit banked (one second's worth: a burst of `rate` events). */
#ifndef FT_WIRE_COST_NS
#define FT_WIRE_COST_NS 500000ULL
#endif
#ifndef FT_WIRE_BURST_NS
#define FT_WIRE_BURST_NS 1000000000ULL
#endif
/* Data segments handed up per new connection: a ClientHello split over
 * two segments is caught. */
#define FT_WIRE_TCP_SEGS 2
/* A data segment is looked up when it starts this close after its slot's
 * ISN + 1: the first segments of a connection do, in one GSO packet too. */
#define FT_WIRE_SEQ_WINDOW 65536
/* Slots of wire_young (a power of two). */
#ifndef FT_WIRE_YOUNG_SLOTS
#define FT_WIRE_YOUNG_SLOTS 8192
#endif
#define FT_WIRE_YOUNG_BITS (__builtin_ctz(FT_WIRE_YOUNG_SLOTS))

/* Value of wire_conns: where the client's data stands, relative to ISN + 1. */
struct wire_conn {
	__u32 isn1;  /* the SYN's sequence number + 1: the first data byte */
	__u32 end;   /* offset past the data handed up so far */
	__u32 segs;  /* segments handed up */
	__u32 pad;
};

/* Value of wire_bucket (per CPU): the token bucket, in ns of credit. */
struct wire_bucket {
	__u64 credit_ns;
	__u64 last_ns; /* the coarse clock at the last event considered */
};

/* The map accessors bpf/tc.c defines (bcc rewrites map calls there only). */
FT_MAIN_DEFINES(static __always_inline __u32 *wire_young_slot(__u32 idx))
FT_MAIN_DEFINES(static __always_inline struct wire_conn *wire_conn_lookup(struct flow_key *k))
FT_MAIN_DEFINES(static __always_inline int wire_conn_put(struct flow_key *k, struct wire_conn *v))
FT_MAIN_DEFINES(static __always_inline void wire_conn_delete(struct flow_key *k))
FT_MAIN_DEFINES(static __always_inline struct wire_bucket *wire_bucket_slot(void))
struct wire_scratch;
FT_MAIN_DEFINES(static __always_inline struct wire_scratch *wire_scratch_slot(void))
FT_MAIN_DEFINES(static __always_inline void wire_tail_call(struct __sk_buff *skb))
FT_MAIN_DEFINES(static __always_inline int wire_ring_output(void *data, __u64 size))

/* The flow key's slot in wire_young: Fibonacci hashing of the folded key
 * words (as flow_slot() in bpf/tc.c, more bits). */
static __always_inline __u32 wire_young_index(struct flow_key *key)
{
	__u64 *w = (__u64 *)key;
	__u64 h = (w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5]) * 0x9E3779B97F4A7C15ULL;

	return (h >> (64 - FT_WIRE_YOUNG_BITS)) & (FT_WIRE_YOUNG_SLOTS - 1);
}

/* 1: an event may go up now (a token taken from this CPU's bucket); 0: the
 * rate is spent (counted). now: the coarse clock. */
static __always_inline int wire_take_token(__u64 now)
{
	struct wire_bucket *b = wire_bucket_slot();
	__u64 credit;

	if (!b)
		return 0;
	/* A zeroed bucket (last_ns 0) starts full. */
	credit = b->credit_ns + (now - b->last_ns);
	if (credit > FT_WIRE_BURST_NS)
		credit = FT_WIRE_BURST_NS;
	b->last_ns = now;
	if (credit < FT_WIRE_COST_NS) {
		b->credit_ns = credit;
		count(FT_CTR_WIRE_RATE_LIMITED, 1);
		return 0;
	}
	b->credit_ns = credit - FT_WIRE_COST_NS;
	return 1;
}

/*
 * This CPU's packet being handed up (the wire_scratch map's value): what
 * wire_names() knows of it, then the payload wire_output() copies, output
 * from hdr on (hdr and data are contiguous).
 */
struct wire_scratch {
	__u64 now;     /* the coarse clock */
	__u32 l3_off;  /* as struct pkt */
	__u32 l4_off;
	__u32 ip_len;
	__u32 l4_hdr;
	__u32 segs;    /* > 1: a GSO packet (its payload length is the skb's) */
	__u8 flags;    /* TCP flags */
	__u8 kind;     /* FT_WIRE_KIND_DNS or _QUIC: handed up whole as that; 0: TCP */
	__u8 pad[2];
	struct wire_event_hdr hdr; /* key and seq filled in by wire_names() */
	__u8 data[FT_WIRE_CAP];
};

/* Copies up to FT_WIRE_CAP payload bytes (at off from skb->data) with
 * bpf_skb_load_bytes() (paged data too) and outputs the header and the
 * bytes copied: a variable size, which bpf_ringbuf_output() takes
 * (reserve needs a constant one). */
static __always_inline void wire_emit(struct __sk_buff *skb, struct wire_scratch *ev, __u8 kind,
				      __u32 off, __u32 payload)
{
	__u64 cap = payload;

	if (!wire_take_token(ev->now))
		return;
	if (cap > FT_WIRE_CAP)
		cap = FT_WIRE_CAP;
	/* Bounds the verifier can see: 1 <= cap <= FT_WIRE_CAP (64 bits: a
	 * clamp in a 32-bit subregister leaves the full register unbounded). */
	asm volatile("" : "+r"(cap));
	if (cap < 1 || cap > FT_WIRE_CAP)
		return;
	if (bpf_skb_load_bytes(skb, off, ev->data, cap) != 0)
		return; /* the skb is shorter than its IP length said: nothing to hand */
	ev->hdr.kind = kind;
	ev->hdr.payload_len = payload;
	ev->hdr.cap_len = cap;
	if (wire_ring_output(&ev->hdr, sizeof(ev->hdr) + cap) != 0) {
		count(FT_CTR_WIRE_RING_FULL, 1);
		return;
	}
	count(FT_CTR_WIRE_EVENTS, 1);
}

/*
 * The program wire_names() tail-calls (flowtop_wire in bpf/tc.c), from this
 * CPU's wire_scratch: marks a SYN's connection, or hands up a DNS response
 * or one of a new connection's first data segments. A program of its own:
 * the verifier checks it once, not once per path through the parser that
 * leads to it (which is past its budget).
 */
static __always_inline void wire_output(struct __sk_buff *skb)
{
	struct wire_scratch *ev = wire_scratch_slot();
	__u32 l4len, payload, off;

	if (!ev)
		return;
	struct flow_key *key = &ev->hdr.key;

	if (!ev->kind && (ev->flags & (FT_TCP_SYN | FT_TCP_ACK)) == FT_TCP_SYN) {
		struct wire_conn c = { .isn1 = ev->hdr.seq + 1 };
		__u32 *y = wire_young_slot(wire_young_index(key));

		if (y && wire_conn_put(key, &c) == 0)
			*y = c.isn1;
		return;
	}
	/* Payload length as track_tcp() (bpf/tc.c) works it out. */
	if (ev->segs > 1) {
		l4len = skb->len - ev->l4_off;
	} else {
		__u32 in_skb = skb->len - ev->l3_off;
		__u32 ip = ev->ip_len < in_skb ? ev->ip_len : in_skb;
		__u32 hdr = ev->l4_off - ev->l3_off;

		l4len = ip > hdr ? ip - hdr : 0;
	}
	if (l4len <= ev->l4_hdr)
		return;
	payload = l4len - ev->l4_hdr;
	off = ev->l4_off + ev->l4_hdr;
	if (ev->kind) {
		wire_emit(skb, ev, ev->kind, off, payload);
		return;
	}
	struct wire_conn *c = wire_conn_lookup(key);

	if (!c)
		return;
	__u32 rel = ev->hdr.seq - c->isn1;

	if (rel < c->end)
		return; /* sent again: handed up already */
	c->end = rel + payload;
	c->segs += 1;
	if (c->segs >= FT_WIRE_TCP_SEGS) {
		/* Done: its later segments fail the cheap test again. */
		__u32 *y = wire_young_slot(wire_young_index(key));

		if (y && *y == c->isn1)
			*y = c->isn1 ^ 0x80000000U;
		wire_conn_delete(key);
	}
	wire_emit(skb, ev, FT_WIRE_KIND_TCP_FIRST, off, payload);
}

/* The TCP sequence number: parsed already with the passive tracker, else
 * read here. */
static __always_inline __u32 wire_tcp_seq(struct __sk_buff *skb, struct pkt *p)
{
#if FT_PASSIVE_RTT
	return p->tcp.seq;
#else
	__u32 seq = 0;

	bpf_skb_load_bytes(skb, p->l4_off + 4, &seq, sizeof(seq));
	return bpf_ntohl(seq);
#endif
}

/* 1: the UDP payload's first byte is a QUIC long header's Initial, 0: not
 * (or no payload). The mask takes v1's Initial (0xc0-0xcf) and v2's
 * (RFC 9369, 0xd0-0xdf, which is v1's 0-RTT: userspace reads the version
 * and skips a v1 0-RTT packet). The bits are not protected: header
 * protection masks the low four only. */
static __always_inline int wire_quic_initial(struct __sk_buff *skb, struct pkt *p)
{
	__u8 b = 0;

	if (bpf_skb_load_bytes(skb, p->l4_off + p->l4_hdr, &b, 1) != 0)
		return 0;
	return (b & 0xe0) == 0xc0;
}

/*
 * Called by handle_packet() last, after the packet was accounted in its
 * flow (parse_packet() returned FT_PARSE_OK): the cheap tests, then, for
 * a packet from a DNS port, a SYN, a segment of a young connection or a
 * QUIC Initial, its facts into this CPU's wire_scratch and the tail call to
 * wire_output(), which does not come back (when it fails, which cannot
 * happen once TcProgram filled the slot at load, nothing goes up).
 * segs: the packet's segments; now: the coarse clock.
 */
static __always_inline void wire_names(struct __sk_buff *skb, struct pkt *p, __u64 segs,
				       __u64 now)
{
	__u8 proto = p->key.proto;
	__u32 seq = 0;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	/* No L4 header (cut, or a later fragment): l4_hdr is 0. */
	if (p->l4_hdr < (proto == IPPROTO_TCP ? 20 : 8))
		return;
	__u16 sport = p->key.sport;
	int dns = sport == 53 || sport == FT_WIRE_PORT1 || sport == FT_WIRE_PORT2 ||
		  sport == FT_WIRE_PORT3 || sport == FT_WIRE_PORT4;
	__u8 kind = dns ? FT_WIRE_KIND_DNS : 0;

	if (proto == IPPROTO_TCP)
		seq = wire_tcp_seq(skb, p);
	if (!dns) {
		if (proto != IPPROTO_TCP) {
			if (p->key.dport != FT_WIRE_QUIC_PORT || !wire_quic_initial(skb, p))
				return;
			kind = FT_WIRE_KIND_QUIC;
		} else if ((p->flags & (FT_TCP_SYN | FT_TCP_ACK)) != FT_TCP_SYN) {
			/* The cheap test: does it start near a recent SYN's ISN + 1? */
			__u32 *y = wire_young_slot(wire_young_index(&p->key));

			if (!y || seq - *y >= FT_WIRE_SEQ_WINDOW)
				return;
		}
	}
	struct wire_scratch *ev = wire_scratch_slot();

	if (!ev)
		return;
	__builtin_memcpy(&ev->hdr.key, &p->key, sizeof(ev->hdr.key));
	ev->hdr.seq = seq;
	ev->now = now;
	ev->l3_off = p->l3_off;
	ev->l4_off = p->l4_off;
	ev->ip_len = p->ip_len;
	ev->l4_hdr = p->l4_hdr;
	ev->segs = segs;
	ev->flags = p->flags;
	ev->kind = kind;
	wire_tail_call(skb);
}

#endif /* FLOWTOP_WIRENAMES_H */
