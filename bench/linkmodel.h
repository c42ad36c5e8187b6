/*
 * linkmodel.h - a store wrapper that makes every ranged read cost what a ranged GET
 * costs on an object store across a network, for benchmarks.
 *
 * On loopback the S3 test server answers in well under a millisecond, so a cold
 * resume there is bound by CPU, not by fetch latency, and nothing that hides fetch
 * latency (prefetch, read-ahead) has anything to hide. Through this wrapper each
 * read_range takes at least ttfb + bytes / per-stream rate from the moment it gets
 * one of `streams` slots (the rest wait their turn, as requests past a client's
 * connection limit do); the inner store's own time counts inside that. The other
 * calls pass straight through. The wrapper borrows inner: free it first.
 */
#ifndef MS_BENCH_LINKMODEL_H
#define MS_BENCH_LINKMODEL_H

#include "storage/store.h"

#include <stdint.h>

struct ms_link_model {
	int64_t ttfb_ns;      /* first byte of every read */
	double bytes_per_sec; /* per stream, after the first byte */
	unsigned streams;     /* reads in flight at most; 0: no limit */
};

/* E2B's cost model of S3 (25 ms to the first byte, 150 MB/s a stream, 16 streams). */
#define MS_LINK_MODEL_S3 ((struct ms_link_model){25000000, 150e6, 16})

/* NULL on allocation failure. */
struct ms_store *ms_link_model_store(struct ms_store *inner, const struct ms_link_model *model);

#endif
