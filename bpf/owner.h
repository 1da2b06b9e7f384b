/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures shared by bpf/owner.c (socket owners from the cgroup hooks) and
 * its userspace reader. flowtop/kernel/owner_records.py mirrors the tuple and
 * the owner with numpy dtypes; tests/kernel/test_owners.py checks the two
 * byte for byte against the types bcc builds from this file. Explicit
 * padding throughout, so that the layout does not depend on the compiler.
 */
#ifndef FLOWTOP_OWNER_H
#define FLOWTOP_OWNER_H

/* struct ft_owner.flags */
#define FT_OWNER_F_UNKNOWN (1U << 0)     /* socket older than flowtop: its creator was not
					  * seen (tgid, uid, gid, comm, cgroup_id and
					  * created_ns are 0; netns_cookie too on kernels
					  * without bpf_get_netns_cookie in cgroup_skb) */
#define FT_OWNER_F_FROM_PACKET (1U << 1) /* tuple read from the packet's IP/L4 headers
					  * (the socket is not connected: unconnected
					  * UDP, a TCP listener's handshake) */
#define FT_OWNER_F_INGRESS (1U << 2)     /* reported on an incoming packet (else outgoing) */

/*
 * One endpoint pair as the local socket sees it. Addresses as in struct
 * flow_key (bpf/flowtop.h): 16 bytes, IPv4 in the first 4 (network order)
 * and the rest zero; ports in host order, like flow_key's sport/dport.
 * local/remote start on 8-byte boundaries so that userspace compares them as
 * whole 64-bit words against a flow key's src/dst: an egress flow (src,
 * sport, dst, dport) is (local, lport, remote, rport), an ingress one the
 * reverse.
 */
struct ft_owner_tuple {
	__u8 family;     /* 4 or 6: the IP version of the packets (a v4-mapped
			  * AF_INET6 socket's tuple is IPv4, as its packets are) */
	__u8 proto;      /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u16 lport;     /* local port, host order */
	__u16 rport;     /* remote port, host order */
	__u16 pad;
	__u8 local[16];  /* local address */
	__u8 remote[16]; /* remote address */
} __attribute__((aligned(8)));

/*
 * Who created a socket, recorded by cgroup/sock_create in the creating
 * process's context. A TCP socket returned by accept() is a clone of its
 * listener and inherits the listener's owner (BPF_F_CLONE on the storage).
 */
struct ft_owner {
	__u64 sock_cookie;  /* bpf_get_socket_cookie() of the socket that reported the tuple */
	__u64 cgroup_id;    /* bpf_get_current_cgroup_id(): the creator's cgroup v2 id,
			     * the inode number of its cgroup directory */
	__u64 netns_cookie; /* bpf_get_netns_cookie() of the socket's namespace */
	__u64 created_ns;   /* bpf_ktime_get_ns() at creation (CLOCK_MONOTONIC) */
	__u32 tgid;         /* process id of the creator */
	__u32 uid;          /* its real uid */
	__u32 gid;          /* its real gid */
	__u32 flags;        /* FT_OWNER_F_* */
	char comm[16];      /* bpf_get_current_comm() of the creating thread */
};

/*
 * The socket-local storage (sk_owner map): the owner, and the last tuple the
 * socket reported and when, so that a packet with the same tuple costs one
 * lookup, a clock read and one compare. last.family == 0: nothing reported
 * yet.
 */
struct ft_owner_sk {
	struct ft_owner owner;
	struct ft_owner_tuple last;
	__u64 reported_ns; /* bpf_ktime_get_coarse_ns() of the last report */
};

/*
 * Indexes into the owner_counters per-CPU array. The first three are lost
 * attribution; the others are informational.
 */
enum ft_own_counter {
	FT_OWN_ENDPOINTS_FULL = 0,    /* a report found endpoints full (E2BIG); retried by the socket's next packet */
	FT_OWN_UPDATE_FAILED = 1,     /* endpoints update failed for another reason */
	FT_OWN_STORAGE_FAILED = 2,    /* no socket storage could be made: not attributed */
	FT_OWN_TUPLE_UNPARSED = 3,    /* packet of an unconnected socket whose ports could
				       * not be read (IPv6 extension headers, short packet) */
	FT_OWN_REPORTED = 4,          /* tuples written to endpoints */
	FT_OWN_UNKNOWN_SOCKETS = 5,   /* sockets first seen on a packet (older than flowtop) */
	FT_OWN_CTR_MAX = 6,
};

#endif /* FLOWTOP_OWNER_H */
