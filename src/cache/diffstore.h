// clang-format off
/*
 * diffstore.h - the node's cache of open sources, keyed "{build_id}/{file}"
 * (E2B's DiffStore; docs/design.md §1).
 *
 * Entry lifecycle (drawn by hand: clang-format is off for this comment):
 *
 *   (absent) --get_or_create--> CREATING --create ok--> LIVE <------------------+
 *      ^                           |                    |                       |
 *      |                    create failed               | TTL expired,          | any access
 *      |                 (error to the creator          | disk pressure,        | (get, insert,
 *      |                  and every waiter)             | evict()               |  pin, replace)
 *      +<--------------------------+                    v                       |
 *      |                                             PENDING -------------------+
 *      |                                                |   (a due delete on a
 *      |                                                |    pinned entry: LIVE)
 *      |                                       delete_delay passed, unpinned
 *      +------------------------------------------------+
 *                       source closed, removed, unref'd
 *
 * Invariants:
 *  1. At most one entry per key, and one creator per key at a time: concurrent
 *     get_or_create calls wait for the creator and share its source or its error.
 *     A failed creation leaves no entry.
 *  2. An access refreshes the entry's TTL (default 25 h) and cancels a pending delete.
 *  3. Disk pressure (statfs of the cache dir; used - pending-delete bytes over the
 *     threshold, default 85 %) evicts the live, unpinned entry closest to expiry,
 *     one at a time, re-checking at once after each eviction.
 *  4. Pinned entries are never picked by disk pressure, and a pending delete that
 *     fires on a pinned entry is dropped (the entry lives on); TTL expiry still
 *     schedules them, so an unpin lets them go.
 *  5. A deleted entry's source is closed (readers holding it get MS_ECLOSED and
 *     re-plan) and unref'd after the delay (default 60 s); the store never frees a
 *     source another holder still references.
 *  6. Byte accounting uses ms_source_disk_bytes() (memory-backed sources count 0).
 *
 * Thread-safety: every function may be called from any thread; a background thread
 * runs expiry, delayed deletes and the disk-pressure loop. Sources are closed and
 * created outside the store's lock.
 */
// clang-format on
#ifndef MS_CACHE_DIFFSTORE_H
#define MS_CACHE_DIFFSTORE_H

#include "cache/source.h"

#include <stdint.h>

#define MS_DIFFSTORE_TTL_DEFAULT	  (25LL * 3600 * 1000000000LL)
#define MS_DIFFSTORE_DELETE_DELAY_DEFAULT (60LL * 1000000000LL)
#define MS_DIFFSTORE_INTERVAL_DEFAULT	  (1000000000LL)
#define MS_DIFFSTORE_MAX_USAGE_DEFAULT	  85u

/* Disk usage of the filesystem holding dir: total and used bytes. 0 or -errno. */
typedef int (*ms_diffstore_usage_fn)(const char *dir, uint64_t *total, uint64_t *used, void *ctx);

/* Zero fields take the defaults. */
struct ms_diffstore_config {
	const char *cache_dir;		/* required: statfs'd by the default usage_fn */
	int64_t ttl_ns;			/* default 25 h */
	int64_t delete_delay_ns;	/* default 60 s */
	int64_t pressure_interval_ns;	/* default 1 s */
	unsigned max_usage_percent;	/* default 85; 1..100 */
	ms_diffstore_usage_fn usage_fn; /* default: statfs(2) (blocks - bavail) * bsize */
	void *usage_ctx;
	bool no_thread; /* tests: no background thread; call ms_diffstore_tick */
	/* tests, with no_thread only: the clock of TTLs and delays (default ms_clock_now_ns) */
	int64_t (*now_fn)(void *ctx);
	void *now_ctx;
};

struct ms_diffstore_stats {
	uint64_t entries;	       /* live + pending-delete entries */
	uint64_t bytes;		       /* disk bytes of those entries */
	uint64_t pinned;	       /* pinned entries */
	uint64_t pending_deletes;      /* entries waiting for their delayed delete */
	uint64_t pending_delete_bytes; /* disk bytes recorded when they were evicted */
	uint64_t evictions;	       /* disk-pressure and explicit evictions */
	uint64_t expirations;	       /* TTL expiries */
	uint64_t deletes;	       /* delayed deletes carried out */
	uint64_t revivals;	       /* pending deletes cancelled by an access */
};

/* Creates the source for key; returns 0 with *out (one reference, given to the store). */
typedef int (*ms_diffstore_create_fn)(const char *key, void *ctx, struct ms_source **out);

struct ms_diffstore;

/* NULL on error with *err set (-EINVAL, -ENOMEM, pthread errors). */
struct ms_diffstore *ms_diffstore_new(const struct ms_diffstore_config *config, int *err);
/* Stops the thread, closes and unrefs every source. No call may be in progress. */
void ms_diffstore_free(struct ms_diffstore *ds);

/* The source under key, with a new reference for the caller; MS_ENOTFOUND when absent.
 * Waits for an in-progress creation. Refreshes the TTL, revives a pending delete. */
int ms_diffstore_get(struct ms_diffstore *ds, const char *key, struct ms_source **out);
/* As get, creating the entry with create(key, ctx) when absent (one creator per key). */
int ms_diffstore_get_or_create(struct ms_diffstore *ds, const char *key,
			       ms_diffstore_create_fn create, void *ctx, struct ms_source **out);
/* Adds a source made elsewhere (takes a new reference). -EEXIST when key is present. */
int ms_diffstore_insert(struct ms_diffstore *ds, const char *key, struct ms_source *src);
/*
 * Puts src (a new reference is taken) in place of key's source, keeping the
 * entry's pins; the old source is closed (its readers re-plan) and unref'd.
 * Used when a drained diff file takes over from the memfd. MS_ENOTFOUND, -EBUSY.
 */
int ms_diffstore_replace(struct ms_diffstore *ds, const char *key, struct ms_source *src);
/* Schedules the delayed delete of key now (counted as an eviction). MS_ENOTFOUND. */
int ms_diffstore_evict(struct ms_diffstore *ds, const char *key);
/* Refcounted exemption from disk pressure. MS_ENOTFOUND; unpin of an unpinned key -EINVAL. */
int ms_diffstore_pin(struct ms_diffstore *ds, const char *key);
int ms_diffstore_unpin(struct ms_diffstore *ds, const char *key);
/* true when key has a live or pending entry; no TTL refresh, no creation. */
bool ms_diffstore_contains(struct ms_diffstore *ds, const char *key);
/* true when key has a pending delete. */
bool ms_diffstore_is_pending_delete(struct ms_diffstore *ds, const char *key);

/* One round of the background work: expiry, due deletes, disk pressure. Returns the
 * number of entries evicted by disk pressure, or a negative error of usage_fn. */
int ms_diffstore_tick(struct ms_diffstore *ds);
void ms_diffstore_get_stats(struct ms_diffstore *ds, struct ms_diffstore_stats *out);

#endif
