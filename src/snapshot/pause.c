// Over 800 lines: one state machine - its table, its check and every transition - reads best whole.
/*
 * pause.c - the pause pipeline's state machine (drawn in pause.h).
 *
 * One transition table (ms_pause_machine) names, for every state, the
 * function that enters it, the thread that runs it and the states it needs.
 * Every transition goes through ms_pause_enter, which asserts ms_pause_check()
 * - the invariants of the states reached so far, the way SQLite's pager
 * asserts assert_pager_state() - and settles the state's future; a failure
 * (ms_pause_fail) fails every state not reached with the same error.
 *
 * Three ways to serve the new build while the pipeline runs:
 *  - in-flight (config.inflight): the provisional header over the memfd
 *    identity source, then the deduped header over the packed source until the
 *    drained file replaces it;
 *  - without (the kill switch): the provisional header over a waiting source
 *    whose reads wait for the deduped header and then re-plan to the drained
 *    file; nothing but the compare and the drain reads the memfd;
 *  - degraded (the provisional header could not be built): no file until the
 *    deduped header; ms_pause_start waits for it.
 */
#include "snapshot/pause.h"
#include "build/storage.h"
#include "snapshot/dedup.h"
#include "snapshot/pause_int.h"
#include "storage/checksums.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define B(state)		     (1u << (state))
#define MS_PAUSE_POLL_NS	     (10 * MS_NSEC_PER_MSEC) /* how soon a wait sees a cancel */
#define MS_PAUSE_GRACE_DEFAULT	     (30 * MS_NSEC_PER_SEC)
#define MS_PAUSE_FAILED_HOLD_DEFAULT (600 * MS_NSEC_PER_SEC)

static int ms_pause_provisional(struct ms_pause *p);
static int ms_pause_gate(struct ms_pause *p);
static int ms_pause_compare(struct ms_pause *p);
static int ms_pause_swap(struct ms_pause *p);
static void ms_pause_sums_free_value(void *value)
{
	ms_sums_unref(value);
}

static int ms_pause_drain(struct ms_pause *p);
static int ms_pause_release(struct ms_pause *p);
static int ms_pause_publish(struct ms_pause *p);

/* clang-format off */
static const struct ms_pause_transition {
	const char *name;	   /* the state's name */
	const char *status;	   /* what "build show" calls a build in it */
	enum ms_pause_state timed; /* ms_pause_stats_took measures from this state */
	uint32_t needs;		   /* states reached before it */
	const char *thread;	   /* who runs it */
	int (*enter)(struct ms_pause *p); /* the function doing the transition */
} ms_pause_machine[MS_PAUSE_STATES] = {
    [MS_PAUSE_CAPTURED] =    {"captured",    "capturing", MS_PAUSE_CAPTURED,  0,                        "caller",   NULL /* ms_pause_start */},
    [MS_PAUSE_PROVISIONAL] = {"provisional", "capturing", MS_PAUSE_CAPTURED,  B(MS_PAUSE_CAPTURED),     "caller",   ms_pause_provisional},
    [MS_PAUSE_COMPARING] =   {"comparing",   "deduping",  MS_PAUSE_CAPTURED,  B(MS_PAUSE_CAPTURED),     "pipeline", ms_pause_gate},
    [MS_PAUSE_DEDUPED] =     {"deduped",     "deduping",  MS_PAUSE_COMPARING, B(MS_PAUSE_COMPARING),    "pipeline", ms_pause_compare},
    [MS_PAUSE_COMPARED] =    {"compared",    "deduping",  MS_PAUSE_CAPTURED,  B(MS_PAUSE_DEDUPED),      "swap (in-flight), else pipeline after DRAINED", ms_pause_swap},
    [MS_PAUSE_DRAINED] =     {"drained",     "uploading", MS_PAUSE_DEDUPED,   B(MS_PAUSE_DEDUPED),      "pipeline", ms_pause_drain},
    [MS_PAUSE_RELEASED] =    {"released",    "uploading", MS_PAUSE_DRAINED,   B(MS_PAUSE_DRAINED),      "release (in-flight), else pipeline", ms_pause_release},
    [MS_PAUSE_UPLOADED] =    {"uploaded",    "uploading", MS_PAUSE_DRAINED,   B(MS_PAUSE_DRAINED),      "pipeline", ms_pause_upload},
    [MS_PAUSE_PUBLISHED] =   {"published",   "published", MS_PAUSE_UPLOADED,  B(MS_PAUSE_UPLOADED),     "pipeline", ms_pause_publish},
    [MS_PAUSE_FAILED] =      {"failed",      "failed",    MS_PAUSE_CAPTURED,  0,                        "any",      NULL /* ms_pause_fail */},
};
/* clang-format on */

/* The pipeline thread's order; the in-flight swap and release run on their own threads. */
static const enum ms_pause_state ms_pause_pipeline[] = {
    MS_PAUSE_COMPARING, MS_PAUSE_DEDUPED,  MS_PAUSE_DRAINED,   MS_PAUSE_COMPARED,
    MS_PAUSE_RELEASED,	MS_PAUSE_UPLOADED, MS_PAUSE_PUBLISHED,
};

/* ---- the state check ---- */

/*
 * The invariants of the states reached so far (pause.h), for debug builds:
 * true when they hold. The caller holds p->lock.
 */
static bool ms_pause_check(struct ms_pause *p)
{
	MS_ASSERT_HELD(&p->lock);
	uint32_t r = p->reached;
	bool failed = r & B(MS_PAUSE_FAILED);
	if (!(r & B(MS_PAUSE_CAPTURED)) || failed != (p->stats.error != 0))
		return false;
	if (failed && (r & B(MS_PAUSE_PUBLISHED)))
		return false;
	for (int s = 0; s < MS_PAUSE_STATES; s++) {
		bool in = r & B(s);
		uint32_t needs = ms_pause_machine[s].needs;
		if (in != (p->stats.at_ns[s] >= 0) || (in && (r & needs) != needs))
			return false;
		if (s == MS_PAUSE_FAILED)
			continue;
		int err = 0;
		bool settled = ms_future_peek(p->stages[s], NULL, &err);
		if (in != (settled && err == 0) || (failed && !settled))
			return false;
	}
	bool prov = p->prov_head != NULL;
	if (prov != !!(r & B(MS_PAUSE_PROVISIONAL)))
		return false;
	if (prov && (!p->file || !p->identity == !p->waiting))
		return false;
	/* invariant 7: without in-flight serving nothing serves the memfd */
	if (!p->identity && p->packed)
		return false;
	if ((r & B(MS_PAUSE_DEDUPED)) && (!p->result.keep || (p->identity && !p->packed)))
		return false;
	if ((r & B(MS_PAUSE_COMPARED)) && !p->file)
		return false;
	/* invariants 4 and 6: the memory goes only when released, or after a failure */
	bool released = ms_memfd_is_released(p->memfd);
	if ((r & B(MS_PAUSE_RELEASED)) &&
	    (!released || p->stats.release == MS_PAUSE_RELEASE_PENDING))
		return false;
	if (released && !(r & B(MS_PAUSE_RELEASED)) && !failed)
		return false;
	if (p->held && (!failed || released || p->retried))
		return false;
	return true;
}

#define MS_PAUSE_CHECK(p) assert(ms_pause_check(p))

static int ms_pause_enter_locked(struct ms_pause *p, enum ms_pause_state state, void *value)
{
	MS_ASSERT_HELD(&p->lock);
	assert(state != MS_PAUSE_FAILED && !(p->reached & B(state)));
	if (p->reached & B(MS_PAUSE_FAILED))
		return p->stats.error;
	p->reached |= B(state);
	p->stats.at_ns[state] = ms_clock_now_ns() - p->t_start;
	ms_future_set(p->stages[state], value);
	MS_PAUSE_CHECK(p);
	return 0;
}

int ms_pause_enter(struct ms_pause *p, enum ms_pause_state state, void *value)
{
	pthread_mutex_lock(&p->lock);
	int err = ms_pause_enter_locked(p, state, value);
	pthread_mutex_unlock(&p->lock);
	return err;
}

/* FAILED: the first error wins; a published pause stays published. */
static void ms_pause_fail(struct ms_pause *p, int err)
{
	pthread_mutex_lock(&p->lock);
	if (p->reached & (B(MS_PAUSE_FAILED) | B(MS_PAUSE_PUBLISHED))) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	/* counted before the failure is signalled: whoever waited for it sees the sums */
	MS_PAUSE_COUNT(p, failed, 1);
	if (err == MS_ECANCELED)
		MS_PAUSE_COUNT(p, cancelled, 1);
	p->reached |= B(MS_PAUSE_FAILED);
	p->stats.error = err;
	p->stats.at_ns[MS_PAUSE_FAILED] = ms_clock_now_ns() - p->t_start;
	for (int s = 0; s < MS_PAUSE_FAILED; s++)
		ms_future_fail(p->stages[s], err); /* -EALREADY for those reached */
	MS_PAUSE_CHECK(p);
	pthread_mutex_unlock(&p->lock);
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&p->real_id, id);
	ms_err("snapshot", "pause of build %s failed: %s", id, ms_strerror(err));
}

/* ---- waits that honour the cancellation token ---- */

int ms_pause_await(struct ms_pause *p, struct ms_future *f, int64_t timeout_ns, void **value)
{
	return ms_future_wait_cancellable(f, timeout_ns, &p->cancelled, MS_ECANCELED,
					  MS_PAUSE_POLL_NS, value);
}

int ms_pause_sleep(struct ms_pause *p, int64_t ns)
{
	int64_t deadline = ms_clock_now_ns() + ns;
	for (int64_t left = ns; left > 0; left = deadline - ms_clock_now_ns()) {
		if (atomic_load(&p->cancelled))
			return MS_ECANCELED;
		ms_clock_sleep_ns(left < MS_PAUSE_POLL_NS ? left : MS_PAUSE_POLL_NS);
	}
	return atomic_load(&p->cancelled) ? MS_ECANCELED : 0;
}

/* ---- diff store entries ---- */

/*
 * The new build's resolver: config.resolve (else the build storage), except
 * that the provisional build, which never leaves the node, is never looked for
 * elsewhere. A read planned on the provisional header that resolves after its
 * entry's delete (the swap landed, the delay passed) gets MS_ECLOSED - re-plan
 * against the current header, which no longer names it - instead of the
 * store's MS_ENOTFOUND.
 */
static int ms_pause_resolve(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
			    struct ms_source **out)
{
	struct ms_pause *p = ctx;
	bool prov = ms_uuid_eq(build_id, &p->prov_id);
	if (prov) {
		char key[MS_ARTIFACT_KEY_MAX];
		int err = ms_build_storage_key(&p->storage, build_id, key, MS_ARTIFACT_KEY_MAX);
		if (err)
			return err;
		if (!ms_diffstore_contains(p->config.diffs, key))
			return MS_ECLOSED;
	}
	int err = p->config.resolve
		      ? p->config.resolve(p->config.resolve_ctx, build_id, header, out)
		      : ms_build_storage_resolve(&p->storage, build_id, header, out);
	return prov && err == MS_ENOTFOUND ? MS_ECLOSED : err; /* deleted meanwhile */
}

/* A layered file over header that resolves builds through ms_pause_resolve. */
static struct ms_layered *ms_pause_layered_new(struct ms_pause *p, struct ms_header *header)
{
	return ms_layered_new(header, ms_pause_resolve, p);
}

static int ms_pause_key(struct ms_pause *p, const ms_uuid *id, char key[MS_ARTIFACT_KEY_MAX])
{
	return ms_build_storage_key(&p->storage, id, key, MS_ARTIFACT_KEY_MAX);
}

/*
 * Registers src under id's key, pinned (then *pinned); takes over the caller's
 * reference. On error no entry is left.
 */
static int ms_pause_register(struct ms_pause *p, const ms_uuid *id, struct ms_source *src,
			     bool *pinned)
{
	char key[MS_ARTIFACT_KEY_MAX];
	int err = src ? ms_pause_key(p, id, key) : -ENOMEM;
	if (!err && !(err = ms_diffstore_insert(p->config.diffs, key, src)) &&
	    (err = ms_diffstore_pin(p->config.diffs, key)))
		ms_diffstore_evict(p->config.diffs, key);
	*pinned = !err;
	ms_source_unref(src);
	return err;
}

/* Lets go of id's pin (*pinned), and with evict of its entry too. */
static void ms_pause_unpin(struct ms_pause *p, const ms_uuid *id, bool *pinned, bool evict)
{
	char key[MS_ARTIFACT_KEY_MAX];
	if (!*pinned || ms_pause_key(p, id, key))
		return;
	ms_diffstore_unpin(p->config.diffs, key);
	if (evict)
		ms_diffstore_evict(p->config.diffs, key);
	*pinned = false;
}

/*
 * The waiting source (no in-flight serving): the provisional build's bytes are
 * nowhere to be read, so a read waits for the deduped header (COMPARED, entered
 * once the drained file serves the real build) and answers MS_ECLOSED: the
 * layered file re-plans against the deduped header (docs/design.md §4.4).
 */
struct ms_pause_waiting {
	struct ms_source base;
	struct ms_future *compared; /* one reference */
};

static int ms_pause_waiting_read(struct ms_source *src, void *dst, uint64_t off, size_t len)
{
	(void)dst, (void)off, (void)len;
	int err = ms_future_wait(((struct ms_pause_waiting *)src)->compared, NULL);
	return err ? err : MS_ECLOSED;
}

static bool ms_pause_waiting_is_cached(struct ms_source *src, uint64_t off, size_t len)
{
	(void)src, (void)off, (void)len;
	return false;
}

static uint64_t ms_pause_waiting_disk_bytes(struct ms_source *src)
{
	(void)src;
	return 0;
}

static void ms_pause_waiting_free(struct ms_source *src)
{
	ms_future_unref(((struct ms_pause_waiting *)src)->compared);
	free(src);
}

static const struct ms_source_ops ms_pause_waiting_ops = {
    .name = "pause-waiting",
    .read = ms_pause_waiting_read,
    .is_cached = ms_pause_waiting_is_cached,
    .disk_bytes = ms_pause_waiting_disk_bytes,
    .free = ms_pause_waiting_free,
};

static struct ms_source *ms_pause_waiting_new(struct ms_pause *p)
{
	struct ms_pause_waiting *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	ms_source_init(&w->base, &ms_pause_waiting_ops, ms_memfd_size(p->memfd));
	w->compared = ms_future_ref(p->stages[MS_PAUSE_COMPARED]);
	return &w->base;
}

/* ---- the transitions ---- */

/*
 * CAPTURED -> PROVISIONAL (caller): the provisional header, served from the
 * memfd (in-flight) or by the waiting source. On error nothing was changed and
 * the pause goes on without it.
 */
static int ms_pause_provisional(struct ms_pause *p)
{
	if (p->config.test_provisional_error)
		return p->config.test_provisional_error;
	struct ms_source *src =
	    p->config.inflight ? ms_memfd_identity_source_new(p->memfd) : ms_pause_waiting_new(p);
	struct ms_header *prov;
	if (!src)
		return -ENOMEM;
	int err = ms_header_new_diff(p->parent_head->header, &p->prov_id, p->dirty, p->empty,
				     MS_PAGE_SIZE, true, &prov);
	struct ms_layered *file = err ? NULL : ms_pause_layered_new(p, prov);
	if (!err && !file)
		err = -ENOMEM;
	if (!err && (err = ms_pause_register(p, &p->prov_id, ms_source_ref(src), &p->prov_pinned)))
		ms_layered_free(file);
	if (err) {
		ms_source_unref(src);
		return err;
	}
	if (p->config.inflight) {
		p->identity = src;
		/* a provisional read that lands after the release is served through the file */
		ms_memfd_identity_set_fallback(src, file);
	} else {
		p->waiting = src;
	}
	/* durable_header() on the new file waits for the deduped header */
	ms_layered_set_durable_future(file, p->stages[MS_PAUSE_COMPARED]);
	p->file = file;
	p->prov_head = ms_layered_header(file);
	return ms_pause_enter(p, MS_PAUSE_PROVISIONAL, NULL);
}

/* CAPTURED -> COMPARING (pipeline): the compare may start (tests stall it). */
static int ms_pause_gate(struct ms_pause *p)
{
	int err = p->config.compare_gate ? ms_pause_await(p, p->config.compare_gate, -1, NULL) : 0;
	return err ? err : ms_pause_enter(p, MS_PAUSE_COMPARING, NULL);
}

static void *ms_pause_swap_main(void *arg);
static void ms_pause_count_served(struct ms_pause *p);
static void *ms_pause_release_main(void *arg);

/*
 * COMPARING -> DEDUPED (pipeline): the compare; with in-flight serving the
 * packed index is registered under the real id before the deduped header can
 * name it, and the swap and release threads start.
 */
static int ms_pause_compare(struct ms_pause *p)
{
	int err = ms_dedup_compare(p->memfd, p->dirty, p->parent, p->config.dedup, &p->cancelled,
				   &p->result);
	if (err)
		return err;
	/* pages the tracker knows are zero, and not written since, are empty too */
	struct ms_pageset *known_zero = ms_pageset_copy(p->empty);
	if (!known_zero)
		return -ENOMEM;
	ms_pageset_subtract(known_zero, p->dirty);
	ms_pageset_union(p->result.empty, known_zero);
	ms_pageset_free(known_zero);
	uint64_t zero = ms_pageset_count(p->result.empty), kept = ms_pageset_count(p->result.keep);
	pthread_mutex_lock(&p->lock);
	p->stats.pages_dirty = p->result.dirty_pages;
	p->stats.pages_equal = p->result.equal_pages;
	p->stats.pages_zero = zero;
	p->stats.pages_kept = kept;
	pthread_mutex_unlock(&p->lock);
	MS_PAUSE_COUNT(p, pages_dirty, p->result.dirty_pages);
	MS_PAUSE_COUNT(p, pages_equal, p->result.equal_pages);
	MS_PAUSE_COUNT(p, pages_zero, zero);
	MS_PAUSE_COUNT(p, pages_kept, kept);
	if (p->identity) {
		if (!(p->packed = ms_memfd_packed_source_new(p->memfd, p->result.keep)))
			return -ENOMEM;
		if ((err = ms_pause_register(p, &p->real_id, ms_source_ref(p->packed),
					     &p->real_pinned)))
			return err;
	}
	struct ms_header *deduped;
	if ((err = ms_header_new_diff(p->parent_head->header, &p->real_id, p->result.keep,
				      p->result.empty, MS_PAGE_SIZE, false, &deduped)))
		return err;
	if (p->config.header_version)
		deduped->meta.version = p->config.header_version;
	struct ms_header *durable_copy = ms_header_copy(deduped);
	p->durable = durable_copy ? ms_header_ref_new(durable_copy) : NULL;
	p->deduped = deduped;
	if (!p->durable)
		return -ENOMEM;
	if (p->identity) {
		/*
		 * A read planned on the provisional header that reaches the memfd after
		 * its release is served through the deduped header (a view of its own,
		 * whatever the file holds).
		 */
		struct ms_header *view = ms_header_copy(deduped);
		if (!view || !(p->deduped_view = ms_pause_layered_new(p, view)))
			return -ENOMEM;
		ms_memfd_identity_set_fallback(p->identity, p->deduped_view);
	}
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&p->real_id, id);
	snprintf(p->diff_path, sizeof(p->diff_path), "%s/%s.memfile", p->config.cache_dir, id);
	if ((err = ms_pause_enter(p, MS_PAUSE_DEDUPED, NULL)))
		return err;
	if (!p->identity)
		return 0; /* the pipeline swaps and releases after the drain */
	if ((err = -pthread_create(&p->swap_thread, NULL, ms_pause_swap_main, p)))
		return err;
	p->swap_started = true;
	if ((err = -pthread_create(&p->release_thread, NULL, ms_pause_release_main, p)))
		return err;
	p->release_started = true;
	return 0;
}

/*
 * DEDUPED -> COMPARED: the deduped header becomes the durable one. Over the
 * provisional header by compare-and-swap (a file that already moved on keeps
 * its newer header); without one, the file is made from it.
 */
static int ms_pause_swap(struct ms_pause *p)
{
	int err = p->identity && p->config.swap_gate
		      ? ms_pause_await(p, p->config.swap_gate, -1, NULL)
		      : 0;
	if (!err && p->config.test_swap_error)
		err = p->config.test_swap_error;
	if (err)
		return err;
	struct ms_header *deduped = p->deduped;
	p->deduped = NULL;
	if (p->prov_head) {
		err = ms_layered_swap_if_current(p->file, p->prov_head, deduped);
		if (err == -EAGAIN) {
			ms_header_free(deduped);
			err = 0;
		}
	} else if (!(p->file = ms_pause_layered_new(p, deduped))) {
		err = -ENOMEM;
	} else {
		ms_layered_set_durable_future(p->file, p->stages[MS_PAUSE_COMPARED]);
	}
	if (err)
		return err;
	struct ms_header_ref *durable = ms_header_ref_ref(p->durable);
	if ((err = ms_pause_enter(p, MS_PAUSE_COMPARED, durable)))
		ms_header_ref_unref(durable); /* the pipeline failed meanwhile */
	return err;
}

static void *ms_pause_swap_main(void *arg)
{
	struct ms_pause *p = arg;
	int err = ms_pause_swap(p);
	if (err)
		ms_pause_fail(p, err);
	return NULL;
}

/*
 * DEDUPED -> DRAINED (pipeline): the survivors into the diff file, which then
 * serves the real build (in place of the packed source, pins kept).
 */
static int ms_pause_drain(struct ms_pause *p)
{
	int err = p->config.drain_gate ? ms_pause_await(p, p->config.drain_gate, -1, NULL) : 0;
	if (!err)
		err = ms_dedup_drain(p->memfd, p->result.keep, p->diff_path, NULL);
	if (!err) /* for peers: they check the file's bytes against it (issue 15) */
		err = ms_pause_data_sums(p);
	if (err)
		return err;
	struct ms_source *file = ms_source_file_open(p->diff_path, true, &err);
	if (!file)
		return err;
	char key[MS_ARTIFACT_KEY_MAX];
	if ((err = ms_pause_key(p, &p->real_id, key))) {
		ms_source_unref(file);
		return err;
	}
	if (p->real_pinned) {
		err = ms_diffstore_replace(p->config.diffs, key, file);
		ms_source_unref(file);
	} else {
		err = ms_pause_register(p, &p->real_id, file, &p->real_pinned);
	}
	return err ? err : ms_pause_enter(p, MS_PAUSE_DRAINED, NULL);
}

/*
 * DRAINED -> RELEASED: the memory goes once the drain is done and the file
 * left the provisional header (or the grace passed without the swap). Without
 * in-flight serving nothing reads it: it goes at once.
 */
static int ms_pause_release(struct ms_pause *p)
{
	enum ms_pause_release cause = MS_PAUSE_RELEASE_NO_PROVISIONAL;
	int err;
	if (p->identity) {
		if ((err = ms_pause_await(p, p->stages[MS_PAUSE_DRAINED], -1, NULL)))
			return err;
		int64_t grace =
		    p->config.grace_ns > 0 ? p->config.grace_ns : MS_PAUSE_GRACE_DEFAULT;
		err = ms_pause_await(p, p->stages[MS_PAUSE_COMPARED], grace, NULL);
		if (err == -ETIMEDOUT) {
			char id[MS_UUID_STR_LEN];
			ms_uuid_format(&p->real_id, id);
			ms_warn("snapshot",
				"build %s: no swap to the deduped header within %lld ms after the "
				"drain: releasing the memory anyway (reads go through the deduped "
				"header)",
				id, (long long)(grace / MS_NSEC_PER_MSEC));
			MS_PAUSE_COUNT(p, swap_grace_elapsed, 1);
			cause = MS_PAUSE_RELEASE_GRACE;
		} else if (err) {
			return err; /* the swap failed or was cancelled: so is the pause */
		} else {
			cause = MS_PAUSE_RELEASE_SWAP;
		}
	}
	pthread_mutex_lock(&p->lock);
	ms_memfd_release(p->memfd); /* waits for readers still copying */
	p->stats.release = cause;   /* drained: the file has every page, failed or not */
	err = p->reached & B(MS_PAUSE_FAILED) ? p->stats.error
					      : ms_pause_enter_locked(p, MS_PAUSE_RELEASED, NULL);
	pthread_mutex_unlock(&p->lock);
	/*
	 * After a grace release the file may still plan on the provisional header: its
	 * entry stays until the swap has landed (ms_pause_main, after the join).
	 */
	if (!err && cause == MS_PAUSE_RELEASE_SWAP)
		ms_pause_unpin(p, &p->prov_id, &p->prov_pinned, true);
	return err;
}

static void *ms_pause_release_main(void *arg)
{
	struct ms_pause *p = arg;
	int err = ms_pause_release(p);
	if (err)
		ms_pause_fail(p, err);
	return NULL;
}

/* UPLOADED -> PUBLISHED (pipeline): the finalized header, the only unconditional swap. */
static int ms_pause_publish(struct ms_pause *p)
{
	struct ms_header *final = p->final;
	p->final = NULL;
	int err = ms_layered_swap(p->file, final);
	if (err)
		return err;
	ms_pause_unpin(p, &p->real_id, &p->real_pinned, false);
	/* counted before the end is signalled: whoever waited for it sees the sums */
	ms_pause_count_served(p);
	MS_PAUSE_COUNT(p, published, 1);
	return ms_pause_enter(p, MS_PAUSE_PUBLISHED, NULL);
}

/* ---- the pipeline thread ---- */

/* Pages the memfd served so far, by phase. */
static void ms_pause_served(struct ms_pause *p, uint64_t *provisional, uint64_t *packed)
{
	*provisional = p->identity ? ms_memfd_source_bytes_served(p->identity) / MS_PAGE_SIZE : 0;
	int err = 0; /* packed is set before DEDUPED: read only after */
	bool deduped = ms_future_peek(p->stages[MS_PAUSE_DEDUPED], NULL, &err) && !err;
	*packed = deduped && p->packed ? ms_memfd_source_bytes_served(p->packed) / MS_PAGE_SIZE : 0;
}

/* Sums the memfd pages served since the last call into config.counters. */
static void ms_pause_count_served(struct ms_pause *p)
{
	uint64_t provisional, packed;
	ms_pause_served(p, &provisional, &packed);
	MS_PAUSE_COUNT(p, inflight_pages_provisional, provisional - p->counted_provisional);
	MS_PAUSE_COUNT(p, inflight_pages_packed, packed - p->counted_packed);
	p->counted_provisional = provisional;
	p->counted_packed = packed;
}

/*
 * The failed hold: memory a failed pause still maps is the only copy of the
 * new pages. It stays while a user (a sandbox resumed from it) needs it, and
 * at most failed_hold; a retry takes it over; a free or a cancel ends the wait.
 */
static void ms_pause_hold_failed(struct ms_pause *p)
{
	uint64_t size = ms_memfd_size(p->memfd);
	int64_t hold =
	    p->config.failed_hold_ns > 0 ? p->config.failed_hold_ns : MS_PAUSE_FAILED_HOLD_DEFAULT;
	struct timespec deadline = ms_clock_deadline(hold);
	pthread_mutex_lock(&p->lock);
	if (ms_memfd_is_released(p->memfd) || p->retried) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	/* drained: the file holds every page, nobody needs the memory */
	bool needed = !(p->reached & B(MS_PAUSE_DRAINED));
	if (needed) {
		p->held = true;
		MS_PAUSE_COUNT(p, failed_held_bytes, size);
		MS_PAUSE_CHECK(p);
		while (!p->retried && !p->freeing && !atomic_load(&p->cancelled) &&
		       (!p->config.count_users || p->users > 0))
			if (pthread_cond_timedwait(&p->cond, &p->lock, &deadline) == ETIMEDOUT)
				break;
		p->held = false;
		if (p->config.counters)
			atomic_fetch_sub(&p->config.counters->failed_held_bytes, size);
	}
	if (!p->retried) {
		ms_memfd_release(p->memfd);
		p->stats.release = MS_PAUSE_RELEASE_FAILED;
	}
	MS_PAUSE_CHECK(p);
	pthread_mutex_unlock(&p->lock);
}

static void *ms_pause_main(void *arg)
{
	struct ms_pause *p = arg;
	int err = 0;
	for (size_t i = 0; !err && i < sizeof(ms_pause_pipeline) / sizeof(ms_pause_pipeline[0]);
	     i++) {
		enum ms_pause_state s = ms_pause_pipeline[i];
		if (p->identity && (s == MS_PAUSE_COMPARED || s == MS_PAUSE_RELEASED))
			continue; /* on their own threads */
		err = ms_pause_machine[s].enter(p);
	}
	if (err) {
		ms_pause_count_served(p); /* before the end is signalled */
		ms_pause_fail(p, err);
	}
	if (p->swap_started)
		pthread_join(p->swap_thread, NULL);
	if (p->release_started)
		pthread_join(p->release_thread, NULL);
	p->swap_started = p->release_started = false;
	ms_pause_count_served(p);
	/* the swap has landed (the upload waited for it): the provisional entry can go */
	if (!err)
		ms_pause_unpin(p, &p->prov_id, &p->prov_pinned, true);
	else
		ms_pause_hold_failed(p);
	return NULL;
}

/* ---- lifecycle ---- */

static void ms_pause_destroy(struct ms_pause *p)
{
	/* a pause that failed leaves nothing pinned; its memfd sources go too */
	bool failed = p->stats.error != 0;
	ms_pause_unpin(p, &p->prov_id, &p->prov_pinned, true);
	ms_pause_unpin(p, &p->real_id, &p->real_pinned, failed);
	if (p->memfd && !p->retried)
		ms_memfd_release(p->memfd);
	if (p->identity) {
		ms_memfd_identity_set_fallback(p->identity, NULL);
		ms_source_unref(p->identity);
	}
	ms_source_unref(p->waiting);
	ms_layered_free(p->file);
	ms_layered_free(p->deduped_view);
	ms_source_unref(p->packed);
	ms_header_free(p->deduped);
	ms_header_free(p->final);
	ms_header_ref_unref(p->durable);
	ms_header_ref_unref(p->prov_head);
	ms_header_ref_unref(p->parent_head);
	ms_memfd_unref(p->memfd);
	ms_pageset_free(p->dirty);
	ms_pageset_free(p->empty);
	ms_dedup_result_fini(&p->result);
	for (int s = 0; s < MS_PAUSE_STATES; s++)
		if (p->stages[s])
			ms_future_unref(p->stages[s]);
	if (p->data_sums)
		ms_future_unref(p->data_sums);
	free(p->snapfile);
	free(p->metadata);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/*
 * CAPTURED, then PROVISIONAL, then the pipeline thread. memfd: one reference
 * (taken); the sets and the snapfile are copied.
 */
static int ms_pause_begin(const struct ms_pause_config *config, struct ms_layered *parent,
			  struct ms_memfd *memfd, const struct ms_pageset *dirty,
			  const struct ms_pageset *empty, const void *snapfile, size_t snapfile_len,
			  struct ms_pause **out)
{
	*out = NULL;
	struct ms_pause *p = calloc(1, sizeof(*p));
	if (!p) {
		ms_memfd_unref(memfd);
		return -ENOMEM;
	}
	p->config = *config;
	p->memfd = memfd;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &attr);
	pthread_condattr_destroy(&attr);
	p->t_start = ms_clock_now_ns();
	for (int s = 0; s < MS_PAUSE_STATES; s++)
		p->stats.at_ns[s] = -1;
	p->storage = (struct ms_build_storage){.store = config->store,
					       .diffs = config->diffs,
					       .cache_dir = config->cache_dir,
					       .data = MS_ARTIFACT_MEMFILE};
	p->parent = parent;
	if (config->build_id)
		p->real_id = *config->build_id;
	else
		ms_uuid_generate(&p->real_id);
	ms_uuid_generate(&p->prov_id);
	int err = -ENOMEM;
	for (int s = 0; s < MS_PAUSE_FAILED; s++)
		if (!(p->stages[s] =
			  ms_future_new(s == MS_PAUSE_COMPARED ? ms_header_ref_free_value : NULL)))
			goto fail;
	if (!(p->data_sums = ms_future_new(ms_pause_sums_free_value)))
		goto fail;
	/* the parent is the durable header, never a provisional one (invariant 1) */
	if ((err = ms_layered_durable_header(parent, -1, &p->parent_head)))
		goto fail;
	err = -EINVAL;
	if (p->parent_head->header->meta.size != ms_memfd_size(memfd))
		goto fail;
	err = -ENOMEM;
	if (!(p->dirty = ms_pageset_copy(dirty)) || !(p->empty = ms_pageset_copy(empty)) ||
	    (snapfile_len && !(p->snapfile = malloc(snapfile_len))))
		goto fail;
	if (snapfile_len)
		memcpy(p->snapfile, snapfile, snapfile_len);
	p->snapfile_len = snapfile_len;
	if (config->metadata) { /* a copy of our own: config.metadata points at it */
		if (!(p->metadata = malloc(config->metadata_len + 1)))
			goto fail;
		memcpy(p->metadata, config->metadata, config->metadata_len);
		p->metadata_len = config->metadata_len;
		p->config.metadata = p->metadata;
	}
	ms_pause_enter(p, MS_PAUSE_CAPTURED, NULL);
	if ((err = ms_pause_provisional(p))) {
		char id[MS_UUID_STR_LEN];
		ms_uuid_format(&p->real_id, id);
		ms_warn("snapshot",
			"build %s: no provisional header (%s): going on without in-flight "
			"serving, resumable once deduped",
			id, ms_strerror(err));
		MS_PAUSE_COUNT(p, provisional_failures, 1);
		pthread_mutex_lock(&p->lock);
		p->stats.provisional_error = err;
		ms_future_fail(p->stages[MS_PAUSE_PROVISIONAL], err);
		pthread_mutex_unlock(&p->lock);
	}
	if ((err = -pthread_create(&p->thread, NULL, ms_pause_main, p)))
		goto fail;
	p->thread_started = true;
	*out = p;
	/* no provisional header: a resume must wait for the deduped one */
	return p->prov_head ? 0 : ms_future_wait(p->stages[MS_PAUSE_COMPARED], NULL);
fail:
	ms_pause_destroy(p);
	return err;
}

int ms_pause_start(const struct ms_pause_config *config, struct ms_layered *parent, int memfd,
		   const struct ms_pageset *dirty, const struct ms_pageset *empty,
		   const void *snapfile, size_t snapfile_len, struct ms_pause **out)
{
	struct ms_header_ref *head = ms_layered_header(parent);
	uint64_t size = head->header->meta.size;
	ms_header_ref_unref(head);
	int err;
	struct ms_memfd *m = ms_memfd_new(memfd, size, &err);
	*out = NULL;
	if (!m)
		return err;
	return ms_pause_begin(config, parent, m, dirty, empty, snapfile, snapfile_len, out);
}

int ms_pause_retry(const struct ms_pause_config *config, struct ms_layered *parent,
		   struct ms_pause *failed, struct ms_pause **out)
{
	*out = NULL;
	pthread_mutex_lock(&failed->lock);
	int err = !(failed->reached & B(MS_PAUSE_FAILED))		   ? -EINVAL
		  : failed->retried || ms_memfd_is_released(failed->memfd) ? -ENOENT
									   : 0;
	if (!err) {
		failed->retried = true;
		failed->stats.release = MS_PAUSE_RELEASE_RETRIED;
		pthread_cond_broadcast(&failed->cond);
	}
	pthread_mutex_unlock(&failed->lock);
	if (err)
		return err;
	/* failed's sets and snapfile are immutable: read without its lock */
	return ms_pause_begin(config, parent, ms_memfd_ref(failed->memfd), failed->dirty,
			      failed->empty, failed->snapfile, failed->snapfile_len, out);
}

const ms_uuid *ms_pause_build_id(struct ms_pause *pause)
{
	return &pause->real_id;
}

struct ms_layered *ms_pause_file(struct ms_pause *pause)
{
	return pause->file;
}

int ms_pause_wait(struct ms_pause *pause, enum ms_pause_state state, int64_t timeout_ns)
{
	if ((unsigned)state >= MS_PAUSE_FAILED)
		return -EINVAL;
	if (state == MS_PAUSE_PROVISIONAL && !pause->prov_head)
		return -ENOTSUP;
	return timeout_ns < 0 ? ms_future_wait(pause->stages[state], NULL)
			      : ms_future_wait_timeout(pause->stages[state], timeout_ns, NULL);
}

struct ms_future *ms_pause_published(struct ms_pause *pause)
{
	return pause->stages[MS_PAUSE_PUBLISHED];
}

struct ms_future *ms_pause_data_checksums(struct ms_pause *pause)
{
	return pause->data_sums;
}

void ms_pause_counts(struct ms_pause *pause, uint64_t *dirty, uint64_t *equal, uint64_t *zero,
		     uint64_t *kept)
{
	int err = 0;
	bool done = ms_future_peek(pause->stages[MS_PAUSE_DEDUPED], NULL, &err) && !err;
	*dirty = done ? pause->result.dirty_pages : 0;
	*equal = done ? pause->result.equal_pages : 0;
	*zero = done ? ms_pageset_count(pause->result.empty) : 0;
	*kept = done ? ms_pageset_count(pause->result.keep) : 0;
}

void ms_pause_stats(struct ms_pause *pause, struct ms_pause_stats *out)
{
	pthread_mutex_lock(&pause->lock);
	*out = pause->stats;
	pthread_mutex_unlock(&pause->lock);
	ms_pause_served(pause, &out->inflight_pages_provisional, &out->inflight_pages_packed);
}

int64_t ms_pause_stats_between(const struct ms_pause_stats *st, enum ms_pause_state from,
			       enum ms_pause_state to)
{
	if ((unsigned)from >= MS_PAUSE_STATES || (unsigned)to >= MS_PAUSE_STATES ||
	    st->at_ns[from] < 0 || st->at_ns[to] < 0)
		return -1;
	return st->at_ns[to] - st->at_ns[from];
}

int64_t ms_pause_stats_took(const struct ms_pause_stats *st, enum ms_pause_state state)
{
	if ((unsigned)state >= MS_PAUSE_STATES)
		return -1;
	return ms_pause_stats_between(st, ms_pause_machine[state].timed, state);
}

uint64_t ms_pause_held_bytes(struct ms_pause *pause)
{
	return ms_memfd_is_released(pause->memfd) ? 0 : ms_memfd_size(pause->memfd);
}

enum ms_pause_state ms_pause_state(struct ms_pause *pause, struct ms_pause_info *info)
{
	pthread_mutex_lock(&pause->lock);
	uint32_t reached = pause->reached;
	struct ms_pause_stats st = pause->stats;
	bool retried = pause->retried;
	pthread_mutex_unlock(&pause->lock);
	enum ms_pause_state state = MS_PAUSE_FAILED;
	if (!(reached & B(MS_PAUSE_FAILED)))
		while (state > MS_PAUSE_CAPTURED && !(reached & B(state)))
			state--;
	if (info) {
		*info = (struct ms_pause_info){
		    .state = state,
		    .error = st.error,
		    .mem_bytes = ms_memfd_size(pause->memfd),
		    .dirty_bytes = st.pages_dirty * MS_PAGE_SIZE,
		    .zero_bytes = st.pages_zero * MS_PAGE_SIZE,
		    .diff_bytes = st.pages_kept * MS_PAGE_SIZE,
		    .upload_bytes = st.upload_bytes,
		    .dedup_ratio =
			st.pages_dirty ? (double)st.pages_kept / (double)st.pages_dirty : 0.0,
		    .held_bytes = retried ? 0 : ms_pause_held_bytes(pause),
		};
	}
	return state;
}

const char *ms_pause_state_name(enum ms_pause_state state)
{
	return (unsigned)state < MS_PAUSE_STATES ? ms_pause_machine[state].name : "unknown";
}

const char *ms_pause_status_name(enum ms_pause_state state)
{
	return (unsigned)state < MS_PAUSE_STATES ? ms_pause_machine[state].status : "unknown";
}

void ms_pause_cancel(struct ms_pause *pause)
{
	atomic_store(&pause->cancelled, true);
	pthread_mutex_lock(&pause->lock);
	pthread_cond_broadcast(&pause->cond);
	pthread_mutex_unlock(&pause->lock);
}

bool ms_pause_is_cancelled(struct ms_pause *pause)
{
	return atomic_load(&pause->cancelled);
}

void ms_pause_user_ref(struct ms_pause *pause)
{
	pthread_mutex_lock(&pause->lock);
	pause->users++;
	pthread_mutex_unlock(&pause->lock);
}

void ms_pause_user_unref(struct ms_pause *pause)
{
	pthread_mutex_lock(&pause->lock);
	if (pause->users > 0 && --pause->users == 0)
		pthread_cond_broadcast(&pause->cond);
	pthread_mutex_unlock(&pause->lock);
}

void ms_pause_free(struct ms_pause *pause)
{
	if (!pause)
		return;
	if (pause->thread_started) {
		pthread_mutex_lock(&pause->lock);
		pause->freeing = true; /* ends a failed hold */
		pthread_cond_broadcast(&pause->cond);
		pthread_mutex_unlock(&pause->lock);
		pthread_join(pause->thread, NULL);
	}
	ms_pause_destroy(pause);
}
