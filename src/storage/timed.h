/*
 * timed.h - a store wrapper that times every call and counts its result, for
 * the daemon's memsnap_store_request_duration_seconds{op,backend} and
 * memsnap_store_requests_total{op,result}.
 *
 * The counts live in a caller-owned struct ms_store_timing (plain atomics:
 * one clock read before and one after each call, no lock), so they outlive
 * the wrapper and can be read at any time with atomic_load. The wrapper owns
 * the store it wraps: ms_store_free() frees both. Backend extras that take a
 * store (ms_store_s3_create_bucket) need the inner store: call them before
 * wrapping.
 */
#ifndef MS_STORAGE_TIMED_H
#define MS_STORAGE_TIMED_H

#include "storage/store.h"

#include <stdatomic.h>
#include <stdint.h>

enum ms_store_op {
	MS_STORE_OP_PUT,    /* put_buf, put_file */
	MS_STORE_OP_GET,    /* read_range */
	MS_STORE_OP_HEAD,   /* size */
	MS_STORE_OP_DELETE, /* remove */
	MS_STORE_OP_LIST,   /* list (the whole listing, every page) */
	MS_STORE_OP_META,   /* get_meta */
	MS_STORE_OPS,
};

enum ms_store_result {
	MS_STORE_RESULT_OK,
	MS_STORE_RESULT_NOT_FOUND, /* MS_ENOTFOUND: an answer, not a failure */
	MS_STORE_RESULT_ERROR,
	MS_STORE_RESULTS,
};

/* Upper bounds in seconds of the duration buckets; the last bucket (+Inf) is implicit. */
#define MS_STORE_TIMING_BOUNDS 15
extern const double ms_store_timing_bounds[MS_STORE_TIMING_BOUNDS];

struct ms_store_timing {
	char backend[16]; /* the inner store's ops->name ("fs", "s3"), set by the wrapper */
	_Atomic uint64_t buckets[MS_STORE_OPS][MS_STORE_TIMING_BOUNDS + 1]; /* not cumulative */
	_Atomic uint64_t sum_ns[MS_STORE_OPS];
	_Atomic uint64_t results[MS_STORE_OPS][MS_STORE_RESULTS];
};

/* Wraps inner (owned from now on, also on failure). NULL: -ENOMEM, inner freed. */
struct ms_store *ms_store_timed_new(struct ms_store *inner, struct ms_store_timing *timing);

const char *ms_store_op_name(enum ms_store_op op);
const char *ms_store_result_name(enum ms_store_result result);

#endif
