/* timed.c - times and counts every call of a wrapped store (see timed.h). */
#include "storage/timed.h"
#include "storage/verified.h"
#include "util/clock.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>

const double ms_store_timing_bounds[MS_STORE_TIMING_BOUNDS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

struct ms_store_timed {
	struct ms_store base;
	struct ms_store *inner;		/* owned, immutable */
	struct ms_store_timing *timing; /* borrowed; atomics only */
};

const char *ms_store_op_name(enum ms_store_op op)
{
	static const char *const names[MS_STORE_OPS] = {
	    [MS_STORE_OP_PUT] = "put",	 [MS_STORE_OP_GET] = "get",
	    [MS_STORE_OP_HEAD] = "head", [MS_STORE_OP_DELETE] = "delete",
	    [MS_STORE_OP_LIST] = "list", [MS_STORE_OP_META] = "meta",
	};
	return (unsigned)op < MS_STORE_OPS ? names[op] : "unknown";
}

const char *ms_store_result_name(enum ms_store_result result)
{
	static const char *const names[MS_STORE_RESULTS] = {
	    [MS_STORE_RESULT_OK] = "ok",
	    [MS_STORE_RESULT_NOT_FOUND] = "not_found",
	    [MS_STORE_RESULT_ERROR] = "error",
	};
	return (unsigned)result < MS_STORE_RESULTS ? names[result] : "unknown";
}

/* Records one call that started at t0 and returned err; passes err through. */
static int ms_timed_record(struct ms_store *store, enum ms_store_op op, int64_t t0, int err)
{
	struct ms_store_timing *t = ((struct ms_store_timed *)store)->timing;
	int64_t ns = ms_clock_now_ns() - t0;
	if (ns < 0)
		ns = 0;
	double seconds = (double)ns / 1e9;
	unsigned b = 0;
	while (b < MS_STORE_TIMING_BOUNDS && seconds > ms_store_timing_bounds[b])
		b++;
	atomic_fetch_add_explicit(&t->buckets[op][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->sum_ns[op], (uint64_t)ns, memory_order_relaxed);
	enum ms_store_result r = err == 0	       ? MS_STORE_RESULT_OK
				 : err == MS_ENOTFOUND ? MS_STORE_RESULT_NOT_FOUND
						       : MS_STORE_RESULT_ERROR;
	atomic_fetch_add_explicit(&t->results[op][r], 1, memory_order_relaxed);
	return err;
}

static struct ms_store *ms_timed_inner(struct ms_store *store)
{
	return ((struct ms_store_timed *)store)->inner;
}

static int ms_timed_put_buf(struct ms_store *store, const char *key, const void *buf, size_t len,
			    const struct ms_store_meta *meta)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_PUT, t0,
			       ms_store_put_buf(ms_timed_inner(store), key, buf, len, meta));
}

static int ms_timed_put_file(struct ms_store *store, const char *key, int fd, uint64_t size,
			     const struct ms_store_meta *meta)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_PUT, t0,
			       ms_store_put_file(ms_timed_inner(store), key, fd, size, meta));
}

static int ms_timed_read_range(struct ms_store *store, const char *key, uint64_t off, void *dst,
			       size_t len, size_t *got)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_GET, t0,
			       ms_store_read_range(ms_timed_inner(store), key, off, dst, len, got));
}

static int ms_timed_size(struct ms_store *store, const char *key, uint64_t *size)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_HEAD, t0,
			       ms_store_size(ms_timed_inner(store), key, size));
}

static int ms_timed_remove(struct ms_store *store, const char *key)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_DELETE, t0,
			       ms_store_remove(ms_timed_inner(store), key));
}

static int ms_timed_list(struct ms_store *store, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_LIST, t0,
			       ms_store_list(ms_timed_inner(store), prefix, fn, ctx));
}

static int ms_timed_get_meta(struct ms_store *store, const char *key, struct ms_store_meta *meta)
{
	int64_t t0 = ms_clock_now_ns();
	return ms_timed_record(store, MS_STORE_OP_META, t0,
			       ms_store_get_meta(ms_timed_inner(store), key, meta));
}

/* Not timed: a collector's pass, not a store call the node waits on. */
static int ms_timed_remove_incomplete(struct ms_store *store, const char *prefix,
				      int64_t older_than_ms, bool dry_run, size_t *count)
{
	return ms_store_remove_incomplete(ms_timed_inner(store), prefix, older_than_ms, dry_run,
					  count);
}

/* Not timed: no request, a path (the reads that follow it are the source's own). */
static int ms_timed_local(struct ms_store *store, const char *key, char *path, size_t cap,
			  struct ms_sums **sums)
{
	return ms_store_local(ms_timed_inner(store), key, path, cap, sums);
}

static void ms_timed_free(struct ms_store *store)
{
	ms_store_free(ms_timed_inner(store));
	free(store);
}

static const struct ms_store_ops ms_timed_ops = {
    .name = "timed",
    .put_buf = ms_timed_put_buf,
    .put_file = ms_timed_put_file,
    .read_range = ms_timed_read_range,
    .size = ms_timed_size,
    .remove = ms_timed_remove,
    .list = ms_timed_list,
    .get_meta = ms_timed_get_meta,
    .free = ms_timed_free,
    .remove_incomplete = ms_timed_remove_incomplete,
    .local = ms_timed_local,
};

struct ms_store *ms_store_timed_new(struct ms_store *inner, struct ms_store_timing *timing)
{
	struct ms_store_timed *t = calloc(1, sizeof(*t));
	if (!t) {
		ms_store_free(inner);
		return NULL;
	}
	t->base.ops = &ms_timed_ops;
	t->inner = inner;
	t->timing = timing;
	/* the backend's name, not the checking wrapper's (ms_store_open adds one) */
	snprintf(timing->backend, sizeof(timing->backend), "%s",
		 ms_store_unverified(inner)->ops->name);
	return &t->base;
}
