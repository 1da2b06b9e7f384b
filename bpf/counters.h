/* SPDX-License-Identifier: GPL-2.0 */
/*
 * count(): adds n to one of the data path's counters (enum ft_counter in
 * bpf/flowtop.h, the `counters` per-CPU array). Every header that counts
 * includes this one.
 *
 * Declared here, defined by the program's main file (bpf/tc.c) next to the
 * map: bcc turns `map.lookup()` into a map reference in the main file only,
 * never in a header. The same goes for the other map accessors a header
 * declares (bpf/tcprtt.h, bpf/packet.h). FT_MAIN_DEFINES() makes a
 * declaration an error unless the main file defines the function, so a
 * header included without its definitions fails to compile, in whatever
 * order the main file includes things.
 */
#ifndef FLOWTOP_COUNTERS_H
#define FLOWTOP_COUNTERS_H

#include "flowtop.h"

/* Declares a function the main file must define (see above). */
#define FT_MAIN_DEFINES(decl)                                                   \
	_Pragma("clang diagnostic push")                                        \
	_Pragma("clang diagnostic error \"-Wundefined-internal\"")             \
	decl;                                                                   \
	_Pragma("clang diagnostic pop")

FT_MAIN_DEFINES(static __always_inline void count(__u32 idx, __u64 n))

#endif /* FLOWTOP_COUNTERS_H */
