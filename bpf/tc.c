// SPDX-License-Identifier: GPL-2.0
/*
 * flowtop TC data path: a program for ingress and one for egress of devices
 * with an Ethernet header, and a pair for devices without one (tun,
 * WireGuard, PPP, IP tunnels: skb->protocol says what the packet is), all
 * calling handle_packet() with the direction and the device kind as
 * compile-time constants, so the Ethernet programs carry no L3-device code.
 * Userspace picks the pair per interface from its device type
 * (flowtop/kernel/devices.py). Flows are aggregated here, per collection
 * interval, and drained by userspace in batches; nothing is sent per packet.
 *
 *
 * The pieces: parse_packet() (bpf/packet.h, with the header parsers of
 * bpf/parse.h) reads a packet into struct pkt; handle_packet() here
 * accounts it in the interface counters, its flow (account_flow()) or a
 * counter of enum ft_counter (count()), hands TCP to the passive
 * RTT/retransmit tracker (bpf/tcprtt.h), and, last, DNS responses and new
 * connections' first segments to names from the wire (bpf/wirenames.h:
 * its tail-called program flowtop_wire is here too). The maps are all
 * here, and so are the functions the headers call to reach them (count(),
 * tcp_conn_lookup(), ...; see bpf/counters.h): bcc rewrites map calls in
 * this file only.
 *
 * Build-time options come as -D cflags from flowtop/kernel/program.py:
 *   FT_FLOW_MAP_SIZE   entries of each interval flow map
 *   FT_IFACE_MAP_SIZE  entries of the interface counter hash (large ifindexes)
 *   FT_IFACE_SLOTS     ifindexes below this use the interface counter array
 *   FT_CACHE_SLOTS     slots of the per-CPU flow cache (power of two)
 *   FT_NR_CPUS         CPU ids the kernel can have (highest possible + 1):
 *                      the rows of the per-CPU plain arrays (below)
 *   FT_PASSIVE_RTT     1: passive TCP RTT/retransmits (bpf/tcprtt.h), 0: without
 *   FT_TCP_CONN_MAP_SIZE  entries of its connection map
 *   FT_L3_PAIR         0: the Ethernet pair, which creates the maps; 1: the
 *                      pair for L3 devices, compiled second in the same
 *                      build child, on the first compile's maps (below)
 *   FT_WIRE_NAMES      1: hand DNS responses and new connections' first
 *                      data segments up for names (bpf/wirenames.h), 0: without
 *   FT_WIRE_RING_PAGES pages of its ring buffer (a power of two)
 *   FT_WIRE_PORT1..4, FT_WIRE_COST_NS, FT_WIRE_BURST_NS, FT_WIRE_CAP: its
 *                      extra DNS ports, rate and capture length (wirenames.h)
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/errno.h>

#include "flowtop.h"
#include "counters.h"
#include "packet.h"
#include "tcprtt.h"
#if FT_WIRE_NAMES
#include "wirenames.h"
#endif

#ifndef FT_FLOW_MAP_SIZE
#define FT_FLOW_MAP_SIZE 65536
#endif
#ifndef FT_IFACE_MAP_SIZE
#define FT_IFACE_MAP_SIZE 4096
#endif
#ifndef FT_IFACE_SLOTS
#define FT_IFACE_SLOTS 4096
#endif
#ifndef FT_CACHE_SLOTS
#define FT_CACHE_SLOTS 1024 /* a power of two */
#endif
#ifndef FT_NR_CPUS
#define FT_NR_CPUS 1 /* userspace always says (flowtop/kernel/cpus.py) */
#endif
#ifndef FT_L3_PAIR
#define FT_L3_PAIR 0
#endif
#ifndef FT_WIRE_NAMES
#define FT_WIRE_NAMES 0
#endif
#ifndef FT_WIRE_RING_PAGES
#define FT_WIRE_RING_PAGES 256 /* 1 MiB with 4 KiB pages */
#endif

/*
 * Every map is declared with FT_MAP(). The two pairs are two compiles (the
 * first attachment waits only for the Ethernet one, half the compile
 * time), and must fill the same maps: the Ethernet compile makes them
 * public (BPF_TABLE_PUBLIC), the L3 one declares them extern, and bcc
 * resolves those to the public maps of the earlier module in the same
 * process (flowtop/kernel/compiler.py keeps it alive for that).
 */
#if FT_L3_PAIR
#define FT_MAP(type, key, value, name, size) BPF_TABLE("extern", key, value, name, size)
#else
#define FT_MAP(type, key, value, name, size) BPF_TABLE_PUBLIC(type, key, value, name, size)
#endif

#ifndef FT_TCP_CONN_MAP_SIZE
#define FT_TCP_CONN_MAP_SIZE 65536
#endif

/*
 * Branch hints on the established-flow path (an IP packet of a flow that
 * owns its cache slot): clang lays the likely side out as the straight
 * line and the rest (the pull and second parse, the stop counters, the
 * hash map, large ifindexes) out of it. A packet on a lightly loaded link
 * finds the program's code and branch history cold, and a taken branch
 * costs it more than an instruction: 2-3 % of the run time here
 * (bench/kernel_cost.py --compare). Not in the parsers (bpf/parse.h): hints
 * there measured slower and grew the verifier's count by a tenth.
 */
#define ft_likely(x) __builtin_expect(!!(x), 1)
#define ft_unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Double buffering. Everything a packet writes per interval lives in one of
 * two generations: generation g is flow_maps[g] (a hash map) and cache_a
 * or cache_b (the per-CPU cache below). active_gen[0] says which one
 * programs fill; a program reads it once per packet and uses that pair.
 *
 * Userspace flips active_gen, then rewrites a flow_maps slot with the map it
 * already holds: the kernel waits for an RCU grace period on every update of
 * a map-in-map, so when that returns every program that could have read the
 * old generation has finished. The old pair is then read without racing any
 * increment; userspace deletes every hash entry and zeroes the cache.
 */
FT_MAP("array", int, __u32, active_gen, 1);

/*
 * Per-CPU state the packet path touches (the flow cache, the interface
 * counter array, the clock) lives in plain arrays of FT_NR_CPUS rows,
 * entry cpu * row + i, not in per-CPU maps: a per-CPU map's value is
 * reached through the map's pointer table (in vmalloc space for large
 * maps) into the per-CPU allocator's chunks (vmalloc'd 4 KiB pages): two
 * dependent loads and two pages per lookup, each page a TLB miss on a
 * light link (a two-dimensional walk in a VM). A plain array is one load
 * at a computed address. The rows are as private as per-CPU values: TC
 * programs run with migration and bottom halves off, so nothing else
 * writes this CPU's row while a program does, and no atomics are needed.
 * Rows are contiguous, so CPUs share a cache line only at a row's edge.
 * ft_cpu() is this CPU's row number.
 */
static __always_inline __u32 ft_cpu(void)
{
	return bpf_get_smp_processor_id();
}

/* Interval flow maps (key: struct flow_key, value: struct flow_stats). */
FT_MAP("hash", struct flow_key, struct flow_stats, flows_a, FT_FLOW_MAP_SIZE);
FT_MAP("hash", struct flow_key, struct flow_stats, flows_b, FT_FLOW_MAP_SIZE);
FT_MAP("array_of_maps$flows_a", int, int, flow_maps, 2);

/*
 * Per-CPU flow cache in front of the hash map (index: ft_cpu() *
 * FT_CACHE_SLOTS + a hash of the flow key, flow_slot(); value: struct
 * flow_cache_entry; userspace zeroes a generation's after draining it,
 * flowtop/kernel/maps.py CacheDrainer). A hash map lookup on a 48-byte key
 * is most of the per-packet cost; a few heavy flows carry most packets, and
 * for them an inlined array lookup and a key compare replace it, with no
 * atomics (the slot belongs to this CPU). A flow takes a slot only when the
 * slot is free, so there is no eviction path: a flow whose slot is taken
 * goes to the hash map for the rest of the interval. The programs name
 * cache_a and cache_b directly (account_cached()).
 */
FT_MAP("array", int, struct flow_cache_entry, cache_a, FT_NR_CPUS * FT_CACHE_SLOTS);
FT_MAP("array", int, struct flow_cache_entry, cache_b, FT_NR_CPUS * FT_CACHE_SLOTS);

/*
 * Interface counters, per CPU so increments need no atomics, cumulative.
 * iface_slots is indexed by ft_cpu() * FT_IFACE_SLOTS * 6 +
 * FT_IFACE_SLOT(ifindex, direction, family) for ifindex < FT_IFACE_SLOTS
 * (userspace sums the rows): an array lookup is inlined by the verifier, a
 * hash lookup costs a helper call and a key hash on every packet. Larger
 * ifindexes (hosts with thousands of veths) go to iface_counters (key:
 * struct iface_key). Nobody deletes entries; userspace reads what it attached.
 */
FT_MAP("array", int, struct iface_stats, iface_slots, FT_NR_CPUS * FT_IFACE_SLOTS * 6);
FT_MAP("percpu_hash", struct iface_key, struct iface_stats, iface_counters,
	  FT_IFACE_MAP_SIZE);

/* Everything not accounted in a flow (index: enum ft_counter), per CPU.
 * Never deleted; userspace reads the sums. */
FT_MAP("percpu_array", int, __u64, counters, FT_CTR_MAX);

/*
 * Each CPU's last CLOCK_MONOTONIC_COARSE reading and the jiffies it was
 * taken at (index: ft_cpu(); only now_coarse() uses it, nobody deletes
 * it). 128 bytes a row, so two CPUs' clocks never share a cache line
 * wherever the array's values start. Any program of this build can read
 * the clock through now_coarse().
 */
struct ft_clock {
	__u64 jiffies;
	__u64 ns;
	__u64 pad[14];
};

FT_MAP("array", int, struct ft_clock, clock_cache, FT_NR_CPUS);

/*
 * CLOCK_MONOTONIC_COARSE, as bpf_ktime_get_coarse_ns() reads it, for
 * first/last seen and the passive tracker: tick resolution is plenty. The
 * helper is called once per jiffy per CPU; other packets pay a load of
 * jiffies (the verifier inlines bpf_jiffies64()). Both move on the tick, so
 * this is the coarse clock, give or take a reading taken between the
 * jiffies and the timekeeping updates of one tick, which lags that tick.
 */
static __always_inline __u64 now_coarse(void)
{
	__u32 cpu = ft_cpu();
	struct ft_clock *c = clock_cache.lookup(&cpu);
	__u64 j = bpf_jiffies64();

	if (ft_unlikely(!c))
		return bpf_ktime_get_coarse_ns();
	if (ft_unlikely(c->jiffies != j)) {
		c->ns = bpf_ktime_get_coarse_ns();
		c->jiffies = j;
	}
	return c->ns;
}

/* See bpf/counters.h. */
static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = counters.lookup(&idx);

	if (v)
		*v += n;
}

#if FT_PASSIVE_RTT
/*
 * Passive TCP tracking's connections (key: struct tcp_conn_key, value:
 * struct tcp_conn; see bpf/tcprtt.h). An LRU hash: connections that end
 * without a FIN or RST the box sees would fill a plain hash. Userspace
 * deletes closed and idle entries (TcProgram.tcp_samples) and infers LRU
 * evictions from FT_CTR_TCP_CONN_NEW.
 */
FT_MAP("lru_hash", struct tcp_conn_key, struct tcp_conn, tcp_conns, FT_TCP_CONN_MAP_SIZE);

/* One all-zero struct tcp_conn, never written: the initial value of a new
 * entry, without 272 bytes of zeroes on the BPF stack. */
FT_MAP("array", int, struct tcp_conn, tcp_conn_zero, 1);

/*
 * The TCP packet being tracked, and the last one of each flow, per CPU
 * (index: ft_cpu() * FT_CACHE_SLOTS + the flow's cache slot, flow_slot();
 * value: struct ft_tcp_pkt, see bpf/tcprtt.h): a plain array of per-CPU
 * rows, as the flow cache, so that another CPU's entry is at hand for a
 * pull of the sequence progress it owns (tcp_pkt_row(), ft_defer_sync()).
 * Overwritten by TCP packets, never deleted; an entry is only compared
 * with a packet of the same flow key. Userspace reads the deferred data
 * segments (flowtop/kernel/tcpconn.py, layout.TCP_PKT).
 */
FT_MAP("array", int, struct ft_tcp_pkt, tcp_pkts, FT_NR_CPUS * FT_CACHE_SLOTS);

/* The accessors tcprtt.h declares. */
static __always_inline struct tcp_conn *tcp_conn_lookup(struct tcp_conn_key *k)
{
	return tcp_conns.lookup(k);
}

static __always_inline struct tcp_conn *tcp_conn_zero_value(void)
{
	__u32 zero = 0;

	return tcp_conn_zero.lookup(&zero);
}

static __always_inline struct ft_tcp_pkt *tcp_pkt_row(__u32 cpu, __u32 slot)
{
	__u32 i = cpu * FT_CACHE_SLOTS + slot;

	return tcp_pkts.lookup(&i);
}

static __always_inline struct ft_tcp_pkt *tcp_pkt_slot(__u32 slot)
{
	return tcp_pkt_row(ft_cpu(), slot);
}

static __always_inline int tcp_conn_insert(struct tcp_conn_key *k)
{
	struct tcp_conn *init = tcp_conn_zero_value();

	if (!init)
		return -ENOENT;
	return tcp_conns.insert(k, init);
}
#endif

/*
 * One u32 the verifier cannot see into (index 0; only forget_offset() in
 * bpf/packet.h uses it, nobody deletes it): a value read back from a map
 * is unknown to it.
 */
FT_MAP("percpu_array", int, __u32, opaque, 1);

/* The accessor packet.h declares. */
static __always_inline __u32 *ft_opaque_slot(void)
{
	__u32 zero = 0;

	return opaque.lookup(&zero);
}

#if FT_WIRE_NAMES
/*
 * Names from the wire (bpf/wirenames.h). wire_ring: the ring buffer the
 * events go up through (struct wire_event_hdr + payload; read by
 * flowtop/kernel/ringbuf.py, consumed records need no deleting). FT_MAP()
 * cannot declare a ring buffer (its methods differ), so the export and the
 * extern declaration of the two compiles are spelled out: the extern one
 * is BPF_RINGBUF_OUTPUT's struct in "maps/extern", which bcc resolves to
 * the first compile's map as it does for FT_MAP.
 */
#if FT_L3_PAIR
struct wire_ring_table_t {
	int key;
	__u32 leaf;
	int (*ringbuf_output)(void *, __u64, __u64);
	void *(*ringbuf_reserve)(__u64);
	void (*ringbuf_discard)(void *, __u64);
	void (*ringbuf_submit)(void *, __u64);
	__u32 max_entries;
};
__attribute__((section("maps/extern"))) struct wire_ring_table_t wire_ring = {
	.max_entries = FT_WIRE_RING_PAGES * PAGE_SIZE,
};
#else
BPF_RINGBUF_OUTPUT(wire_ring, FT_WIRE_RING_PAGES);
__attribute__((section("maps/export"))) struct wire_ring_table_t __wire_ring;
#endif

/* New connections (key: the flow key of the client's direction, value:
 * struct wire_conn): inserted on the SYN, deleted here once their first
 * segments went up; the LRU drops the ones that never send data. */
FT_MAP("lru_hash", struct flow_key, struct wire_conn, wire_conns, FT_WIRE_YOUNG_SLOTS);

/* The cheap test's slots (index: wire_young_index(), value: the last SYN's
 * ISN + 1 there). Overwritten by SYNs, never deleted. */
FT_MAP("array", int, __u32, wire_young, FT_WIRE_YOUNG_SLOTS);

/* This CPU's token bucket (index 0; never deleted). */
FT_MAP("percpu_array", int, struct wire_bucket, wire_bucket, 1);

/* This CPU's event under construction (index 0: struct wire_scratch;
 * never deleted). */
FT_MAP("percpu_array", int, struct wire_scratch, wire_scratch, 1);

/* Slot 0: flowtop_wire, which wire_handoff() tail-calls; userspace puts it
 * there at load (TcProgram), the L3 pair's calls land in the same slot. */
FT_MAP("prog", int, int, wire_tail, 1);

/* The accessors wirenames.h declares. */
static __always_inline __u32 *wire_young_slot(__u32 idx)
{
	return wire_young.lookup(&idx);
}

static __always_inline struct wire_conn *wire_conn_lookup(struct flow_key *k)
{
	return wire_conns.lookup(k);
}

static __always_inline int wire_conn_put(struct flow_key *k, struct wire_conn *v)
{
	return wire_conns.update(k, v);
}

static __always_inline void wire_conn_delete(struct flow_key *k)
{
	wire_conns.delete(k);
}

static __always_inline struct wire_bucket *wire_bucket_slot(void)
{
	__u32 zero = 0;

	return wire_bucket.lookup(&zero);
}

static __always_inline struct wire_scratch *wire_scratch_slot(void)
{
	__u32 zero = 0;

	return wire_scratch.lookup(&zero);
}

static __always_inline void wire_tail_call(struct __sk_buff *skb)
{
	wire_tail.call(skb, 0);
}

static __always_inline int wire_ring_output(void *data, __u64 size)
{
	return wire_ring.ringbuf_output(data, size, 0);
}
#endif

/* Adds packets and len bytes to the interface counter (see struct
 * iface_stats for what the callers count). */
static __always_inline void count_iface(__u32 ifindex, __u8 dir, __u8 family, __u64 packets,
					__u64 len)
{
	struct iface_stats *st;

	if (ft_likely(ifindex < FT_IFACE_SLOTS)) {
		__u32 slot = ft_cpu() * (FT_IFACE_SLOTS * 6) + FT_IFACE_SLOT(ifindex, dir, family);

		st = iface_slots.lookup(&slot);
		if (ft_likely(st != NULL)) {
			st->packets += packets;
			st->bytes += len;
		}
		return;
	}
	struct iface_key k = { .ifindex = ifindex, .direction = dir, .family = family };

	st = iface_counters.lookup(&k);

	if (st) {
		st->packets += packets;
		st->bytes += len;
		return;
	}
	struct iface_stats init = { .packets = packets, .bytes = len };

	if (iface_counters.update(&k, &init) != 0)
		count(FT_CTR_IFACE_MAP_FULL, 1);
}

static __always_inline void add_to_flow(struct flow_stats *st, __u64 segs, __u64 bytes,
					__u64 flags, __u8 dscp, __u32 mpls, __u64 now)
{
	__sync_fetch_and_add(&st->packets, segs);
	__sync_fetch_and_add(&st->bytes, bytes);
	/* Plain stores: the last writer wins, which is what "last" means. */
	st->last_seen_ns = now;
	st->dscp = dscp;
	st->mpls = mpls;
	/* Flags rarely change after the handshake: skip the locked op then. */
	if ((st->tcp_flags | flags) != st->tcp_flags)
		__sync_fetch_and_or(&st->tcp_flags, flags);
}

/*
 * Adds the packet to its flow's slot e of this CPU's cache when the flow
 * owns the slot, or takes it when it is free; returns 0 when the slot
 * belongs to another flow (the caller uses the hash map).
 */
static __always_inline int cache_add(struct flow_cache_entry *e, struct flow_key *key,
				     __u64 segs, __u64 bytes, __u64 flags, __u8 dscp, __u32 mpls,
				     __u64 now)
{
	__u64 *w = (__u64 *)key;
	__u64 *k = (__u64 *)&e->key;

	/* The flow's own slot first (the common case, which then runs
	 * straight through: 2-5 % less run time per packet than testing for
	 * a free slot first); a free slot's key is all zeroes, which no
	 * packet's key is (ip_version is 4 or 6). */
	if (ft_unlikely(k[0] != w[0] || k[1] != w[1] || k[2] != w[2] || k[3] != w[3] ||
			k[4] != w[4] || k[5] != w[5])) {
		if (e->stats.packets != 0)
			return 0;
		__builtin_memcpy(&e->key, key, sizeof(*key));
		e->stats.packets = segs;
		e->stats.bytes = bytes;
		e->stats.first_seen_ns = now;
		e->stats.last_seen_ns = now;
		e->stats.tcp_flags = flags;
		e->stats.dscp = dscp;
		e->stats.mpls = mpls;
		return 1;
	}
	e->stats.packets += segs;
	e->stats.bytes += bytes;
	e->stats.last_seen_ns = now;
	e->stats.tcp_flags |= flags;
	e->stats.dscp = dscp;
	e->stats.mpls = mpls;
	return 1;
}

/* log2(FT_CACHE_SLOTS): a slot is the top bits of the key's hash. */
#define FT_CACHE_BITS (__builtin_ctz(FT_CACHE_SLOTS))

/*
 * The flow's slot in the per-CPU caches (the flow cache, tcp_pkts):
 * Fibonacci hashing of the folded key words, whose product's top bits
 * depend on every bit of the fold.
 */
static __always_inline __u32 flow_slot(struct flow_key *key)
{
	__u64 *w = (__u64 *)key;
	__u64 h = (w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5]) * 0x9E3779B97F4A7C15ULL;

	return (h >> (64 - FT_CACHE_BITS)) & (FT_CACHE_SLOTS - 1);
}

/*
 * Counts the packet in the flow's slot of this CPU's cache of generation
 * gen (see cache_add()); returns 0 when the caller must use the hash map.
 * cache_a and cache_b are named here rather than reached through a
 * map-in-map: each lookup is then an inlined array access at an address
 * the JIT knows, not a load of the inner map's address first, on the path
 * every cached packet takes.
 */
static __always_inline int account_cached(__u32 gen, __u32 slot, struct flow_key *key,
					  __u64 segs, __u64 bytes, __u64 flags, __u8 dscp,
					  __u32 mpls, __u64 now)
{
	struct flow_cache_entry *e;

	slot += ft_cpu() * FT_CACHE_SLOTS; /* this CPU's row */
	if (gen) {
		e = cache_b.lookup(&slot);
		return e && cache_add(e, key, segs, bytes, flags, dscp, mpls, now);
	}
	e = cache_a.lookup(&slot);
	return e && cache_add(e, key, segs, bytes, flags, dscp, mpls, now);
}

/*
 * The flow's counters for this interval: in this CPU's cache (its slot
 * free or its own), else in the interval's hash map. slot: flow_slot(),
 * now: the coarse clock (now_coarse()).
 */
static __always_inline void account_flow(struct flow_key *key, __u32 slot, __u64 segs,
					 __u64 bytes, __u64 flags, __u8 dscp, __u32 mpls, __u64 now)
{
	__u32 zero = 0, gen = 0;
	__u32 *g = active_gen.lookup(&zero);

	if (g)
		gen = *g & 1;
	if (ft_likely(account_cached(gen, slot, key, segs, bytes, flags, dscp, mpls, now)))
		return;
	void *flows = flow_maps.lookup(&gen);

	if (!flows) {
		count(FT_CTR_NO_FLOW_MAP, 1);
		return;
	}
	struct flow_stats *st = bpf_map_lookup_elem(flows, key);

	if (st) {
		add_to_flow(st, segs, bytes, flags, dscp, mpls, now);
		return;
	}
	struct flow_stats init = {
		.packets = segs,
		.bytes = bytes,
		.first_seen_ns = now,
		.last_seen_ns = now,
		.tcp_flags = flags,
		.dscp = dscp,
		.mpls = mpls,
	};
	int err = bpf_map_update_elem(flows, key, &init, BPF_NOEXIST);

	if (err == 0)
		return;
	if (err == -EEXIST) {
		/* Another CPU created the entry between our lookup and update. */
		st = bpf_map_lookup_elem(flows, key);
		if (st) {
			add_to_flow(st, segs, bytes, flags, dscp, mpls, now);
			return;
		}
	}
	count(FT_CTR_FLOW_MAP_FULL, 1);
	count(FT_CTR_LOST_PACKETS, segs);
	count(FT_CTR_LOST_BYTES, bytes);
}

#if FT_PASSIVE_RTT
/*
 * Hands a complete TCP header to the passive RTT code, through this CPU's
 * tcp_pkts entry for the flow (see struct ft_tcp_pkt), with its payload
 * length: from the skb for a GSO packet (its IP length may describe the
 * aggregate, or be 0 for BIG TCP), else from the IP header (a frame can
 * carry Ethernet padding). Not when the previous packet there left it
 * nothing to do but count a data segment in the entry
 * (ft_tcp_deferrable()) or nothing at all (ft_tcp_skippable()).
 */
static __always_inline void track_tcp(struct __sk_buff *skb, struct pkt *p, __u64 segs,
				      __u8 dir, __u64 now, __u32 slot)
{
	struct ft_tcp_pkt *e;
	__u32 l4len, payload;
	__u8 flags = p->flags;

	if (p->key.proto != IPPROTO_TCP || p->l4_hdr < sizeof(struct tcphdr))
		return;
	e = tcp_pkt_slot(slot);
	if (!e)
		return;
	if (segs > 1) {
		l4len = skb->len - p->l4_off;
	} else {
		__u32 in_skb = skb->len - p->l3_off;
		__u32 ip = p->ip_len < in_skb ? p->ip_len : in_skb;
		__u32 hdr = p->l4_off - p->l3_off;

		l4len = ip > hdr ? ip - hdr : 0;
	}
	payload = l4len > p->l4_hdr ? l4len - p->l4_hdr : 0;
	int skip = ft_tcp_skippable(e, &p->key, &p->tcp, flags, payload, now);

	if (skip == FT_SKIP_ALL)
		return;
	if (skip == FT_SKIP_ECHO && ft_tcp_deferrable(e, &p->tcp, flags, payload, now)) {
		e->seq_end = p->tcp.seq + payload;
		e->deferred += segs;
		return;
	}
	if (!ft_same_flow(&e->key, &p->key)) {
		ft_defer_evict(e);
		__builtin_memcpy(&e->key, &p->key, sizeof(e->key));
	}
	__builtin_memcpy(&e->seg, &p->tcp, sizeof(e->seg));
	e->now = now;
	e->segs = segs;
	e->payload = payload;
	e->flags = flags;
	e->comparable = !(flags & (FT_TCP_SYN | FT_TCP_RST));
	e->skip_echo = skip == FT_SKIP_ECHO;
	/* The tracker reads them back from the map, not from registers. */
	asm volatile("" ::: "memory");
	ft_tcp_track(e, dir, slot);
}
#else
static __always_inline void track_tcp(struct __sk_buff *skb, struct pkt *p, __u64 segs,
				      __u8 dir, __u64 now, __u32 slot)
{
}
#endif

/* The counter of a packet parse_packet() gave up on (st: a negative enum
 * ft_parse_status). */
static __always_inline __u32 stop_counter(int st)
{
	switch (st) {
	case FT_PARSE_TRUNCATED:
		return FT_CTR_TRUNCATED;
	case FT_PARSE_MALFORMED:
		return FT_CTR_MALFORMED;
	case FT_PARSE_EXT_LIMIT:
		return FT_CTR_IPV6_EXT_LIMIT;
	case FT_PARSE_MPLS_LIMIT:
		return FT_CTR_MPLS_LIMIT;
	case FT_PARSE_SEEK_LIMIT:
		return FT_CTR_NET_SEEK_LIMIT;
	}
	return FT_CTR_NON_IP; /* FT_PARSE_NON_IP */
}

/*
 * The bytes of a frame as an Ethernet device counts them: one packet per
 * skb (a GSO packet crosses veth or a TSO NIC's driver whole), the frame's
 * bytes. A received tag the kernel moved out of the frame (vlan_tci)
 * crossed the wire and is in the device's own rx count: add it back. An
 * egress tag in vlan_tci is not on the frame yet, nor in the device's count.
 */
static __always_inline __u32 eth_frame_len(struct __sk_buff *skb, __u8 dir)
{
	return skb->len + (dir == FT_DIR_INGRESS && skb->vlan_present ? 4 : 0);
}

static __always_inline int handle_packet(struct __sk_buff *skb, __u8 dir, const int l3)
{
	struct pkt p = {};
	int st = parse_packet(skb, &p, l3);

	/* A header cut off by the end of the linear area, not of the frame
	 * (some drivers and tunnels leave headers in paged data): pull the
	 * headers in and parse again. Only then: a pull can copy and
	 * reallocate, which we don't do to every packet. */
	if (ft_unlikely((st == FT_PARSE_TRUNCATED || p.l4_truncated) &&
			skb->len > skb->data_end - skb->data)) {
		bpf_skb_pull_data(skb, skb->len < FT_PULL_LEN ? skb->len : FT_PULL_LEN);
		__builtin_memset(&p, 0, sizeof(p));
		st = parse_packet(skb, &p, l3);
	}

	if (ft_unlikely(st != FT_PARSE_OK)) {
		/* On a device without an Ethernet header: the bytes from the
		 * network header on. */
		count_iface(skb->ifindex, dir, p.family, 1,
			    l3 ? skb->len - p.dev_off : eth_frame_len(skb, dir));
		count(stop_counter(st), 1);
		return TC_ACT_UNSPEC;
	}

	p.key.ifindex = skb->ifindex;
	p.key.direction = dir;

	/* IP octets. A GSO/GRO super-packet carries one set of headers for
	 * gso_segs segments; on the wire each segment has its own, so add them
	 * back. Its length fields may describe the whole aggregate (or be 0 for
	 * BIG TCP), so take the length from the skb instead. */
	__u32 in_skb = skb->len - p.l3_off;
	__u64 segs = skb->gso_segs;
	__u64 bytes;

	/* Untrusted GSO packets (a virtio-net header from a VM's tap or an
	 * AF_PACKET socket) carry gso_size but no segment count until the
	 * stack segments them: work it out the way segmentation will. */
	if (ft_unlikely(segs == 0 && skb->gso_size > 0)) {
		__u32 hdrs = p.l4_off + p.l4_hdr;

		if (skb->len > hdrs)
			segs = (skb->len - hdrs + skb->gso_size - 1) / skb->gso_size;
	}
	if (segs < 1)
		segs = 1;

	if (segs > 1) {
		__u32 hdrs = p.l4_off - p.l3_off + p.l4_hdr;

		bytes = in_skb + (segs - 1) * hdrs;
	} else {
		/* Trailing Ethernet padding is not IP; a length larger than the
		 * frame is a truncated capture: count what crossed. */
		bytes = p.ip_len < in_skb ? p.ip_len : in_skb;
	}
	/* A frame cut inside the L4 header still counts, without ports: in
	 * its flow, and (informational, not a loss) in no_ports. */
	if (ft_unlikely(p.l4_truncated))
		count(FT_CTR_NO_PORTS, 1);
	__u64 now = now_coarse();
	__u32 slot = flow_slot(&p.key);

	account_flow(&p.key, slot, segs, bytes, p.flags, p.dscp, p.mpls, now);
	/* The interface counter after the flow rather than before it: the
	 * same count, 4-6 % less run time per packet (bench/kernel_cost.py
	 * --compare; after track_tcp() was a little faster still but grew the
	 * verifier's count by a fifth). */
	if (!l3) {
		count_iface(p.key.ifindex, dir, p.family, 1, eth_frame_len(skb, dir));
	} else {
		/* Devices without segmentation offload (tun, PPP) segment a GSO
		 * packet in software before they count it on transmit, and the
		 * tunnels count received packets before GRO merges them: one
		 * packet per segment, each with its own headers from the network
		 * header on (an outer header in front is not theirs). */
		__u32 hdrs = p.l4_off - p.dev_off + p.l4_hdr;

		count_iface(p.key.ifindex, dir, p.family, segs,
			    skb->len - p.dev_off + (segs - 1) * hdrs);
	}
	track_tcp(skb, &p, segs, dir, now, slot);
#if FT_WIRE_NAMES
	wire_names(skb, &p, segs, now);
#endif
	return TC_ACT_UNSPEC;
}

/* TC_ACT_UNSPEC everywhere: flowtop only watches. It lets the next filter on
 * the hook (someone else's) classify the packet as if we were not there. */
#if !FT_L3_PAIR
int flowtop_ingress(struct __sk_buff *skb)
{
	return handle_packet(skb, FT_DIR_INGRESS, 0);
}

int flowtop_egress(struct __sk_buff *skb)
{
	return handle_packet(skb, FT_DIR_EGRESS, 0);
}
#if FT_WIRE_NAMES
/* Tail-called by both pairs for the packets wirenames.h hands up. */
int flowtop_wire(struct __sk_buff *skb)
{
	wire_output(skb);
	return TC_ACT_UNSPEC;
}
#endif
#else
/* Devices without an Ethernet header (see parse_l3dev()). */
int flowtop_l3_ingress(struct __sk_buff *skb)
{
	return handle_packet(skb, FT_DIR_INGRESS, 1);
}

int flowtop_l3_egress(struct __sk_buff *skb)
{
	return handle_packet(skb, FT_DIR_EGRESS, 1);
}
#endif
