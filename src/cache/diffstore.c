/*
 * diffstore.c - keyed sources with TTL, single-flight creation, disk-pressure
 * eviction, delayed delete and pins. The state machine and the invariants are in
 * diffstore.h.
 *
 * Design notes: one mutex guards the table and every entry field; a creator runs
 * its create callback and the background thread closes sources outside it, so a
 * slow open or a slow close never blocks other keys. Waiters on a creation hold a
 * reference on the creation's future, not on the entry, so a failed entry can be
 * freed at once. The table is a chained hash that doubles when it gets full; scans
 * (expiry, eviction choice) are linear, which is fine for the hundreds of builds
 * a node caches.
 */
#include "cache/diffstore.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/future.h"
#include "util/lock.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>

enum ms_ds_state { MS_DS_CREATING, MS_DS_LIVE, MS_DS_PENDING };

/* Every field guarded by ms_diffstore.lock. */
struct ms_ds_entry {
	char *key;
	uint64_t hash;
	enum ms_ds_state state;
	struct ms_source *src;	    /* NULL while creating */
	struct ms_future *creation; /* while creating: settled by the creator */
	int64_t expire_at_ns;
	int64_t delete_at_ns;	/* while pending */
	uint64_t pending_bytes; /* while pending: disk bytes at eviction */
	unsigned pins;
	struct ms_ds_entry *next; /* hash chain */
};

struct ms_diffstore {
	char *cache_dir;	      /* immutable */
	int64_t ttl_ns;		      /* immutable */
	int64_t delete_delay_ns;      /* immutable */
	int64_t (*now_fn)(void *ctx); /* immutable: NULL for ms_clock_now_ns */
	void *now_ctx;
	int64_t interval_ns;		/* immutable */
	unsigned max_usage_percent;	/* immutable */
	ms_diffstore_usage_fn usage_fn; /* immutable */
	void *usage_ctx;		/* immutable */

	pthread_mutex_t lock;
	pthread_cond_t wake; /* the thread's sleep; signalled on stop and on new deadlines */
	struct ms_ds_entry **buckets;	    /* guarded by lock */
	size_t bucket_count;		    /* guarded by lock; power of two */
	size_t entry_count;		    /* guarded by lock; creating entries included */
	uint64_t pending_bytes;		    /* guarded by lock: sum over pending entries */
	struct ms_diffstore_stats counters; /* guarded by lock: evictions .. revivals */
	bool stopping;			    /* guarded by lock */
	bool has_thread;		    /* immutable after new */
	pthread_t thread;
};

/* ---- table ---- */

static uint64_t ms_ds_hash(const char *key)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h;
}

static struct ms_ds_entry *ms_ds_find_locked(struct ms_diffstore *ds, const char *key)
{
	MS_ASSERT_HELD(&ds->lock);
	uint64_t h = ms_ds_hash(key);
	for (struct ms_ds_entry *e = ds->buckets[h & (ds->bucket_count - 1)]; e; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static void ms_ds_grow_locked(struct ms_diffstore *ds)
{
	MS_ASSERT_HELD(&ds->lock);
	size_t count = ds->bucket_count * 2;
	struct ms_ds_entry **buckets = calloc(count, sizeof(*buckets));
	if (!buckets)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < ds->bucket_count; i++) {
		struct ms_ds_entry *e = ds->buckets[i];
		while (e) {
			struct ms_ds_entry *next = e->next;
			e->next = buckets[e->hash & (count - 1)];
			buckets[e->hash & (count - 1)] = e;
			e = next;
		}
	}
	free(ds->buckets);
	ds->buckets = buckets;
	ds->bucket_count = count;
}

/* A new entry in state, linked into the table. NULL on -ENOMEM (nothing changed). */
static struct ms_ds_entry *ms_ds_add_locked(struct ms_diffstore *ds, const char *key,
					    enum ms_ds_state state)
{
	MS_ASSERT_HELD(&ds->lock);
	struct ms_ds_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->key = strdup(key);
	if (!e->key) {
		free(e);
		return NULL;
	}
	e->hash = ms_ds_hash(key);
	e->state = state;
	if (ds->entry_count >= ds->bucket_count)
		ms_ds_grow_locked(ds);
	struct ms_ds_entry **head = &ds->buckets[e->hash & (ds->bucket_count - 1)];
	e->next = *head;
	*head = e;
	ds->entry_count++;
	return e;
}

static void ms_ds_unlink_locked(struct ms_diffstore *ds, struct ms_ds_entry *e)
{
	MS_ASSERT_HELD(&ds->lock);
	struct ms_ds_entry **link = &ds->buckets[e->hash & (ds->bucket_count - 1)];
	while (*link != e)
		link = &(*link)->next;
	*link = e->next;
	e->next = NULL;
	ds->entry_count--;
}

static void ms_ds_entry_free(struct ms_ds_entry *e)
{
	free(e->key);
	free(e);
}

/*
 * ms_ds_check - the table's invariants, asserted after every state change in
 * debug builds (the way SQLite's pager asserts assert_pager_state()): each
 * entry sits in its hash's bucket once, entry_count counts them, a creating
 * entry has a creation future and no source, a live or pending one a source
 * and no future, pending_bytes is the sum over pending entries, and only a
 * pending entry carries pending bytes. Always true; the caller holds the lock.
 */
static bool ms_ds_check(struct ms_diffstore *ds)
{
	MS_ASSERT_HELD(&ds->lock);
	size_t count = 0;
	uint64_t pending = 0;
	if (ds->bucket_count == 0 || (ds->bucket_count & (ds->bucket_count - 1)))
		return false;
	for (size_t i = 0; i < ds->bucket_count; i++)
		for (struct ms_ds_entry *e = ds->buckets[i]; e; e = e->next) {
			count++;
			if ((e->hash & (ds->bucket_count - 1)) != i ||
			    e->hash != ms_ds_hash(e->key))
				return false;
			if (ms_ds_find_locked(ds, e->key) != e) /* one entry per key */
				return false;
			bool creating = e->state == MS_DS_CREATING;
			if (creating != (e->src == NULL) || creating != (e->creation != NULL))
				return false;
			if (creating && e->pins)
				return false;
			if (e->state != MS_DS_PENDING && e->pending_bytes)
				return false;
			pending += e->pending_bytes;
		}
	return count == ds->entry_count && pending == ds->pending_bytes;
}

#define MS_DS_CHECK(ds) assert(ms_ds_check(ds))

static int64_t ms_ds_now(const struct ms_diffstore *ds)
{
	return ds->now_fn ? ds->now_fn(ds->now_ctx) : ms_clock_now_ns();
}

/* ---- state changes (lock held) ---- */

static void ms_ds_schedule_delete_locked(struct ms_diffstore *ds, struct ms_ds_entry *e,
					 int64_t now)
{
	MS_ASSERT_HELD(&ds->lock);
	e->state = MS_DS_PENDING;
	e->delete_at_ns = now + ds->delete_delay_ns;
	e->pending_bytes = ms_source_disk_bytes(e->src);
	ds->pending_bytes += e->pending_bytes;
	pthread_cond_signal(&ds->wake);
}

/* An access: refresh the TTL; cancel a pending delete. */
static void ms_ds_touch_locked(struct ms_diffstore *ds, struct ms_ds_entry *e, int64_t now)
{
	MS_ASSERT_HELD(&ds->lock);
	e->expire_at_ns = now + ds->ttl_ns;
	if (e->state == MS_DS_PENDING) {
		e->state = MS_DS_LIVE;
		ds->pending_bytes -= e->pending_bytes;
		e->pending_bytes = 0;
		ds->counters.revivals++;
		MS_DS_CHECK(ds);
	}
}

/* ---- lookups ---- */

static int ms_ds_lookup(struct ms_diffstore *ds, const char *key, ms_diffstore_create_fn create,
			void *ctx, struct ms_source **out)
{
	if (!key || !*key || !out || (create == NULL && ctx != NULL))
		return -EINVAL;
	*out = NULL;
	pthread_mutex_lock(&ds->lock);
	for (;;) {
		struct ms_ds_entry *e = ms_ds_find_locked(ds, key);
		if (e && e->state == MS_DS_CREATING) {
			struct ms_future *creation = ms_future_ref(e->creation);
			pthread_mutex_unlock(&ds->lock);
			int err = ms_future_wait(creation, NULL);
			ms_future_unref(creation);
			if (err)
				return err; /* the creator's error (invariant 1) */
			pthread_mutex_lock(&ds->lock);
			continue; /* re-find: the entry may be gone again already */
		}
		if (e) {
			ms_ds_touch_locked(ds, e, ms_ds_now(ds));
			*out = ms_source_ref(e->src);
			pthread_mutex_unlock(&ds->lock);
			return 0;
		}
		if (!create) {
			pthread_mutex_unlock(&ds->lock);
			return MS_ENOTFOUND;
		}
		break;
	}

	/* This caller is the creator. */
	int err = -ENOMEM;
	struct ms_future *creation = ms_future_new(NULL);
	if (!creation)
		goto fail_unlock;
	struct ms_ds_entry *e = ms_ds_add_locked(ds, key, MS_DS_CREATING);
	if (!e)
		goto fail_future;
	e->creation = creation;
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);

	struct ms_source *src = NULL;
	err = create(key, ctx, &src);
	if (err == 0 && !src) {
		ms_err("cache", "diff store: creator of %s returned no source", key);
		err = -EINVAL;
	}
	if (err > 0)
		err = -EINVAL;

	pthread_mutex_lock(&ds->lock);
	if (err) {
		ms_ds_unlink_locked(ds, e);
		ms_ds_entry_free(e);
		MS_DS_CHECK(ds);
		pthread_mutex_unlock(&ds->lock);
		ms_future_fail(creation, err);
		ms_future_unref(creation);
		return err;
	}
	e->src = src;
	e->state = MS_DS_LIVE;
	e->creation = NULL;
	e->expire_at_ns = ms_ds_now(ds) + ds->ttl_ns;
	*out = ms_source_ref(src);
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	ms_future_set(creation, NULL);
	ms_future_unref(creation);
	return 0;

fail_future:
	ms_future_unref(creation);
fail_unlock:
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	return err;
}

int ms_diffstore_get(struct ms_diffstore *ds, const char *key, struct ms_source **out)
{
	return ms_ds_lookup(ds, key, NULL, NULL, out);
}

int ms_diffstore_get_or_create(struct ms_diffstore *ds, const char *key,
			       ms_diffstore_create_fn create, void *ctx, struct ms_source **out)
{
	if (!create)
		return -EINVAL;
	return ms_ds_lookup(ds, key, create, ctx, out);
}

int ms_diffstore_insert(struct ms_diffstore *ds, const char *key, struct ms_source *src)
{
	if (!key || !*key || !src)
		return -EINVAL;
	int err = 0;
	pthread_mutex_lock(&ds->lock);
	if (ms_ds_find_locked(ds, key)) {
		err = -EEXIST;
		goto out;
	}
	struct ms_ds_entry *e = ms_ds_add_locked(ds, key, MS_DS_LIVE);
	if (!e) {
		err = -ENOMEM;
		goto out;
	}
	e->src = ms_source_ref(src);
	e->expire_at_ns = ms_ds_now(ds) + ds->ttl_ns;
out:
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	return err;
}

/*
 * The entry of key that replace, evict, pin and unpin act on: one that is not being
 * created. NULL with *err MS_ENOTFOUND (none) or -EBUSY (its create runs), else *err 0.
 */
static struct ms_ds_entry *ms_ds_settled_locked(struct ms_diffstore *ds, const char *key, int *err)
{
	MS_ASSERT_HELD(&ds->lock);
	struct ms_ds_entry *e = ms_ds_find_locked(ds, key);
	*err = !e ? MS_ENOTFOUND : e->state == MS_DS_CREATING ? -EBUSY : 0;
	return *err ? NULL : e;
}

int ms_diffstore_replace(struct ms_diffstore *ds, const char *key, struct ms_source *src)
{
	if (!key || !*key || !src)
		return -EINVAL;
	struct ms_source *old = NULL;
	int err;
	pthread_mutex_lock(&ds->lock);
	struct ms_ds_entry *e = ms_ds_settled_locked(ds, key, &err);
	if (e) {
		ms_ds_touch_locked(ds, e, ms_ds_now(ds));
		old = e->src;
		e->src = ms_source_ref(src);
	}
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	if (old) {
		/* holders of the old source re-plan (MS_ECLOSED) and find the new one */
		ms_source_close(old);
		ms_source_unref(old);
	}
	return err;
}

int ms_diffstore_evict(struct ms_diffstore *ds, const char *key)
{
	if (!key)
		return -EINVAL;
	int err;
	pthread_mutex_lock(&ds->lock);
	struct ms_ds_entry *e = ms_ds_settled_locked(ds, key, &err);
	if (e && e->state == MS_DS_LIVE) {
		ms_ds_schedule_delete_locked(ds, e, ms_ds_now(ds));
		ds->counters.evictions++;
	}
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	return err;
}

static int ms_ds_pin_change(struct ms_diffstore *ds, const char *key, int delta)
{
	if (!key)
		return -EINVAL;
	int err;
	pthread_mutex_lock(&ds->lock);
	struct ms_ds_entry *e = ms_ds_settled_locked(ds, key, &err);
	if (e && delta > 0) {
		e->pins++;
		ms_ds_touch_locked(ds, e, ms_ds_now(ds));
	} else if (e && e->pins == 0)
		err = -EINVAL;
	else if (e)
		e->pins--;
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	return err;
}

int ms_diffstore_pin(struct ms_diffstore *ds, const char *key)
{
	return ms_ds_pin_change(ds, key, 1);
}

int ms_diffstore_unpin(struct ms_diffstore *ds, const char *key)
{
	return ms_ds_pin_change(ds, key, -1);
}

bool ms_diffstore_contains(struct ms_diffstore *ds, const char *key)
{
	pthread_mutex_lock(&ds->lock);
	struct ms_ds_entry *e = key ? ms_ds_find_locked(ds, key) : NULL;
	bool found = e && e->state != MS_DS_CREATING;
	pthread_mutex_unlock(&ds->lock);
	return found;
}

bool ms_diffstore_is_pending_delete(struct ms_diffstore *ds, const char *key)
{
	pthread_mutex_lock(&ds->lock);
	struct ms_ds_entry *e = key ? ms_ds_find_locked(ds, key) : NULL;
	bool pending = e && e->state == MS_DS_PENDING;
	pthread_mutex_unlock(&ds->lock);
	return pending;
}

/* ---- background work ---- */

static int ms_ds_statfs_usage(const char *dir, uint64_t *total, uint64_t *used, void *ctx)
{
	struct statfs st;
	if (statfs(dir, &st) != 0)
		return -errno;
	*total = (uint64_t)st.f_blocks * (uint64_t)st.f_bsize;
	*used = (uint64_t)(st.f_blocks - st.f_bavail) * (uint64_t)st.f_bsize;
	return 0;
}

/* Expiry and due deletes. Sources to close are moved to *doomed (closed by the caller). */
static void ms_ds_expire_locked(struct ms_diffstore *ds, int64_t now, struct ms_ds_entry **doomed)
{
	MS_ASSERT_HELD(&ds->lock);
	for (size_t i = 0; i < ds->bucket_count; i++) {
		struct ms_ds_entry *e = ds->buckets[i];
		while (e) {
			struct ms_ds_entry *next = e->next;
			if (e->state == MS_DS_LIVE && e->expire_at_ns <= now) {
				ms_ds_schedule_delete_locked(ds, e, now);
				ds->counters.expirations++;
			}
			if (e->state == MS_DS_PENDING && e->delete_at_ns <= now) {
				if (e->pins > 0) {
					/* Invariant 4: a pinned entry survives its delete. */
					ms_ds_touch_locked(ds, e, now);
				} else {
					ds->pending_bytes -= e->pending_bytes;
					ms_ds_unlink_locked(ds, e);
					e->next = *doomed;
					*doomed = e;
					ds->counters.deletes++;
				}
			}
			e = next;
		}
	}
}

/* The live, unpinned entry closest to expiry; NULL when there is none. */
static struct ms_ds_entry *ms_ds_pick_victim_locked(struct ms_diffstore *ds)
{
	MS_ASSERT_HELD(&ds->lock);
	struct ms_ds_entry *victim = NULL;
	for (size_t i = 0; i < ds->bucket_count; i++)
		for (struct ms_ds_entry *e = ds->buckets[i]; e; e = e->next)
			if (e->state == MS_DS_LIVE && e->pins == 0 &&
			    (!victim || e->expire_at_ns < victim->expire_at_ns))
				victim = e;
	return victim;
}

int ms_diffstore_tick(struct ms_diffstore *ds)
{
	struct ms_ds_entry *doomed = NULL;
	pthread_mutex_lock(&ds->lock);
	ms_ds_expire_locked(ds, ms_ds_now(ds), &doomed);
	MS_DS_CHECK(ds);
	pthread_mutex_unlock(&ds->lock);
	while (doomed) {
		struct ms_ds_entry *e = doomed;
		doomed = e->next;
		ms_debug("cache", "diff store: deleting %s", e->key);
		ms_source_close(e->src);
		ms_source_unref(e->src);
		ms_ds_entry_free(e);
	}

	int evicted = 0;
	for (;;) {
		uint64_t total = 0, used = 0;
		int err = ds->usage_fn(ds->cache_dir, &total, &used, ds->usage_ctx);
		if (err) {
			ms_warn("cache", "diff store: disk usage of %s: %s", ds->cache_dir,
				ms_strerror(err));
			return err;
		}
		pthread_mutex_lock(&ds->lock);
		uint64_t effective = used > ds->pending_bytes ? used - ds->pending_bytes : 0;
		bool over = total > 0 && (double)effective * 100.0 >
					     (double)total * (double)ds->max_usage_percent;
		struct ms_ds_entry *victim = over ? ms_ds_pick_victim_locked(ds) : NULL;
		if (victim) {
			ms_ds_schedule_delete_locked(ds, victim, ms_ds_now(ds));
			ds->counters.evictions++;
			ms_info("cache", "diff store: disk %.1f%% used, evicting %s",
				(double)effective * 100.0 / (double)total, victim->key);
		}
		MS_DS_CHECK(ds);
		pthread_mutex_unlock(&ds->lock);
		if (!victim)
			return evicted;
		evicted++; /* re-check at once: more may have to go */
	}
}

static void *ms_ds_thread(void *arg)
{
	struct ms_diffstore *ds = arg;
	pthread_mutex_lock(&ds->lock);
	while (!ds->stopping) {
		pthread_mutex_unlock(&ds->lock);
		ms_diffstore_tick(ds);
		pthread_mutex_lock(&ds->lock);
		int64_t now = ms_clock_now_ns();
		int64_t until = now + ds->interval_ns;
		for (size_t i = 0; i < ds->bucket_count; i++)
			for (struct ms_ds_entry *e = ds->buckets[i]; e; e = e->next) {
				if (e->state == MS_DS_LIVE && e->expire_at_ns < until)
					until = e->expire_at_ns;
				if (e->state == MS_DS_PENDING && e->delete_at_ns < until)
					until = e->delete_at_ns;
			}
		if (!ds->stopping && until > now) {
			struct timespec ts = {.tv_sec = until / MS_NSEC_PER_SEC,
					      .tv_nsec = until % MS_NSEC_PER_SEC};
			pthread_cond_timedwait(&ds->wake, &ds->lock, &ts);
		}
	}
	pthread_mutex_unlock(&ds->lock);
	return NULL;
}

void ms_diffstore_get_stats(struct ms_diffstore *ds, struct ms_diffstore_stats *out)
{
	pthread_mutex_lock(&ds->lock);
	*out = ds->counters;
	out->entries = out->bytes = out->pinned = out->pending_deletes = 0;
	for (size_t i = 0; i < ds->bucket_count; i++)
		for (struct ms_ds_entry *e = ds->buckets[i]; e; e = e->next) {
			if (e->state == MS_DS_CREATING)
				continue;
			out->entries++;
			out->bytes += ms_source_disk_bytes(e->src);
			out->pinned += e->pins > 0;
			out->pending_deletes += e->state == MS_DS_PENDING;
		}
	out->pending_delete_bytes = ds->pending_bytes;
	pthread_mutex_unlock(&ds->lock);
}

/* ---- lifecycle ---- */

struct ms_diffstore *ms_diffstore_new(const struct ms_diffstore_config *config, int *err)
{
	*err = -EINVAL;
	if (!config || !config->cache_dir || config->ttl_ns < 0 || config->delete_delay_ns < 0 ||
	    config->pressure_interval_ns < 0 || config->max_usage_percent > 100 ||
	    (config->now_fn && !config->no_thread))
		return NULL;
	*err = -ENOMEM;
	struct ms_diffstore *ds = calloc(1, sizeof(*ds));
	if (!ds)
		return NULL;
	ds->cache_dir = strdup(config->cache_dir);
	if (!ds->cache_dir)
		goto fail_ds;
	ds->bucket_count = 64;
	ds->buckets = calloc(ds->bucket_count, sizeof(*ds->buckets));
	if (!ds->buckets)
		goto fail_dir;
	ds->now_fn = config->now_fn;
	ds->now_ctx = config->now_ctx;
	ds->ttl_ns = config->ttl_ns ? config->ttl_ns : MS_DIFFSTORE_TTL_DEFAULT;
	ds->delete_delay_ns =
	    config->delete_delay_ns ? config->delete_delay_ns : MS_DIFFSTORE_DELETE_DELAY_DEFAULT;
	ds->interval_ns = config->pressure_interval_ns ? config->pressure_interval_ns
						       : MS_DIFFSTORE_INTERVAL_DEFAULT;
	ds->max_usage_percent =
	    config->max_usage_percent ? config->max_usage_percent : MS_DIFFSTORE_MAX_USAGE_DEFAULT;
	ds->usage_fn = config->usage_fn ? config->usage_fn : ms_ds_statfs_usage;
	ds->usage_ctx = config->usage_ctx;
	pthread_mutex_init(&ds->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&ds->wake, &attr);
	pthread_condattr_destroy(&attr);
	if (!config->no_thread) {
		int rc = pthread_create(&ds->thread, NULL, ms_ds_thread, ds);
		if (rc) {
			*err = -rc;
			goto fail_sync;
		}
		ds->has_thread = true;
	}
	*err = 0;
	return ds;

fail_sync:
	pthread_cond_destroy(&ds->wake);
	pthread_mutex_destroy(&ds->lock);
	free(ds->buckets);
fail_dir:
	free(ds->cache_dir);
fail_ds:
	free(ds);
	return NULL;
}

void ms_diffstore_free(struct ms_diffstore *ds)
{
	if (!ds)
		return;
	if (ds->has_thread) {
		pthread_mutex_lock(&ds->lock);
		ds->stopping = true;
		pthread_cond_signal(&ds->wake);
		pthread_mutex_unlock(&ds->lock);
		pthread_join(ds->thread, NULL);
	}
	for (size_t i = 0; i < ds->bucket_count; i++) {
		struct ms_ds_entry *e = ds->buckets[i];
		while (e) {
			struct ms_ds_entry *next = e->next;
			if (e->src) {
				ms_source_close(e->src);
				ms_source_unref(e->src);
			} else {
				ms_err("cache", "diff store freed while %s is being created",
				       e->key);
			}
			ms_ds_entry_free(e);
			e = next;
		}
	}
	pthread_cond_destroy(&ds->wake);
	pthread_mutex_destroy(&ds->lock);
	free(ds->buckets);
	free(ds->cache_dir);
	free(ds);
}
