/*
 * node.c - memsnapd's state: sandboxes, templates (the template cache) and
 * their builds, and the handlers of the API's requests (node.h has the
 * lifecycles).
 *
 * Locks, in order: a sandbox's op lock, then node->lock. node->lock guards
 * the two tables, the fields marked "node->lock" below, stopping and
 * fetches; it is never held across a VM operation, a pipeline wait or store
 * I/O. A sandbox's VM, page server and template belong to whoever holds its
 * op lock; the VM itself is touched only on the sandbox's worker thread.
 *
 * Invariants:
 *  1. A sandbox is in node->sandboxes only once it was created successfully;
 *     a failed create tears down everything it made.
 *  2. A template in the cache holds one reference; a running sandbox holds
 *     one on the template it serves from; a pause holds one on its parent
 *     (the pipeline borrows the parent's file until it ends).
 *  3. A template with a pause is evicted only after its pipeline ended, and
 *     freed only after its watcher thread was joined.
 *  4. A build's provisional header never leaves the node: scheduling
 *     metadata uses the durable header without waiting, and a child pause
 *     takes the parent's durable header (pause.h).
 */
#include "node/node.h"
#include "build/storage.h"
#include "node/peers.h"
#include "header/header.h"
#include "sandbox/sandbox.h"
#include "snapshot/pause.h"
#include "storage/artifact.h"
#include "storage/s3.h"
#include "uffd/filesource.h"
#include "uffd/pageserver.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define P	     MS_PAGE_SIZE
#define SNAPFILE_MAX (64u << 20)
#define METADATA_MAX 128 /* scheduling metadata: build ids kept (research/e2b.md §6.1) */
#define MS_MOD	     "node"
#define MS_LOCK_NAME ".memsnapd.lock"

/* ---- a worker thread per sandbox: the only thread that drives its VM ---- */

struct ms_worker {
	pthread_t thread;
	pthread_mutex_t lock; /* guards the fields below */
	pthread_cond_t cond;
	int (*fn)(void *arg);
	void *arg;
	int result;
	bool pending, done, quit, started;
};

static void *ms_worker_main(void *arg)
{
	struct ms_worker *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->pending && !w->quit)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->quit)
			break;
		int (*fn)(void *) = w->fn;
		void *fn_arg = w->arg;
		pthread_mutex_unlock(&w->lock);
		int result = fn(fn_arg);
		pthread_mutex_lock(&w->lock);
		w->result = result;
		w->pending = false;
		w->done = true;
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static int ms_worker_start(struct ms_worker *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	int err = pthread_create(&w->thread, NULL, ms_worker_main, w);
	if (err) {
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->lock);
		return -err;
	}
	w->started = true;
	return 0;
}

/* Runs fn(arg) on the worker and returns its result. One call at a time (the op lock). */
static int ms_worker_call(struct ms_worker *w, int (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&w->lock);
	w->fn = fn;
	w->arg = arg;
	w->pending = true;
	w->done = false;
	pthread_cond_broadcast(&w->cond);
	while (!w->done)
		pthread_cond_wait(&w->cond, &w->lock);
	int result = w->result;
	pthread_mutex_unlock(&w->lock);
	return result;
}

static void ms_worker_stop(struct ms_worker *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->lock);
	w->quit = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	w->started = false;
}

/* ---- a store whose writes sleep first (test hook: slow uploads) ---- */

struct ms_delay_store {
	struct ms_store base;
	struct ms_store *inner; /* owned */
	int64_t delay_ns;
};

static int ms_delay_put_buf(struct ms_store *s, const char *key, const void *buf, size_t len,
			    const struct ms_store_meta *meta)
{
	struct ms_delay_store *d = (struct ms_delay_store *)s;
	ms_clock_sleep_ns(d->delay_ns);
	return ms_store_put_buf(d->inner, key, buf, len, meta);
}

static int ms_delay_put_file(struct ms_store *s, const char *key, int fd, uint64_t size,
			     const struct ms_store_meta *meta)
{
	struct ms_delay_store *d = (struct ms_delay_store *)s;
	ms_clock_sleep_ns(d->delay_ns);
	return ms_store_put_file(d->inner, key, fd, size, meta);
}

static int ms_delay_read_range(struct ms_store *s, const char *key, uint64_t off, void *dst,
			       size_t len, size_t *got)
{
	return ms_store_read_range(((struct ms_delay_store *)s)->inner, key, off, dst, len, got);
}

static int ms_delay_size(struct ms_store *s, const char *key, uint64_t *size)
{
	return ms_store_size(((struct ms_delay_store *)s)->inner, key, size);
}

static int ms_delay_remove(struct ms_store *s, const char *key)
{
	return ms_store_remove(((struct ms_delay_store *)s)->inner, key);
}

static int ms_delay_list(struct ms_store *s, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	return ms_store_list(((struct ms_delay_store *)s)->inner, prefix, fn, ctx);
}

static int ms_delay_get_meta(struct ms_store *s, const char *key, struct ms_store_meta *meta)
{
	return ms_store_get_meta(((struct ms_delay_store *)s)->inner, key, meta);
}

static void ms_delay_free(struct ms_store *s)
{
	struct ms_delay_store *d = (struct ms_delay_store *)s;
	ms_store_free(d->inner);
	free(d);
}

static const struct ms_store_ops ms_delay_store_ops = {
    .name = "delay",
    .put_buf = ms_delay_put_buf,
    .put_file = ms_delay_put_file,
    .read_range = ms_delay_read_range,
    .size = ms_delay_size,
    .remove = ms_delay_remove,
    .list = ms_delay_list,
    .get_meta = ms_delay_get_meta,
    .free = ms_delay_free,
};

/* ---- templates ---- */

enum ms_tmpl_state { TMPL_LOADING, TMPL_READY };

struct ms_template {
	atomic_uint refs;
	struct ms_node *node;
	ms_uuid id;
	bool base; /* a fresh sandbox's empty parent: not a build, never cached */
	/* set before the template is shared (or before loaded settles); then immutable */
	struct ms_layered *file; /* owned, unless pause owns it */
	struct ms_pause *pause;	 /* paused on this node */
	struct ms_template *parent;
	struct ms_future *gate;	  /* test hook: holds the compare (NULL: none) */
	struct ms_future *loaded; /* cold fetch: settled when file and snapfile are set */
	void *snapfile;
	size_t snapfile_len;
	uint64_t mem_size;
	int guest; /* enum ms_guest_kind, or -1 when unknown (from the store) */
	int64_t paused_ns;
	bool served;		       /* paused here and given to the peer server */
	bool from_peer;		       /* cold-fetched from a peer before its upload */
	struct ms_future *in_store;    /* from_peer: settled once the store has the build */
	struct ms_future *upload_gate; /* test hook: holds the upload (NULL: none) */
	/* node->lock */
	enum ms_tmpl_state state;
	int64_t expires_ns;
	bool done; /* the pipeline ended (or there is none) */
	int error; /* the pipeline's error */
	bool upload_failed;
	double ms[MS_TIMINGS];
	bool have[MS_TIMINGS];
	uint64_t dirty, equal, zero, kept, upload_bytes;
	/* the watcher */
	pthread_t watcher;
	bool watching;
	/* from_peer: the store poller (stop_poll: node->lock) */
	pthread_t poller;
	bool polling, stop_poll;
};

struct ms_node_sandbox;

struct ms_node {
	struct ms_node_config cfg;
	const struct ms_sandbox_ops *backend;
	char backend_why[160];
	struct ms_store *store;
	struct ms_diffstore *diffs;
	struct ms_build_storage storage;
	struct ms_node_peers *peers;
	ms_layered_resolve_fn resolve; /* every layered file of this node resolves with it */
	void *resolve_ctx;
	struct ms_metrics metrics;
	int64_t started_ns;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* stopping, a fetch or a pipeline ended */
	/* node->lock */
	bool stopping;
	unsigned fetches;		     /* detached fetch threads still running */
	unsigned pending;		     /* creates in progress (count against max_sandboxes) */
	bool release_uploads;		     /* test_peer_die_after: test_hold_upload is over */
	_Atomic uint64_t peer_data_requests; /* test_peer_die_after */
	struct ms_template **templates;
	size_t ntemplates, templates_cap;
	struct ms_node_sandbox **sandboxes;
	size_t nsandboxes, sandboxes_cap;
	pthread_t janitor;
	bool janitor_started;
	int lock_fd; /* flock on cache_dir/.memsnapd.lock: one daemon per cache dir */
};

static struct ms_template *ms_template_ref(struct ms_template *t)
{
	atomic_fetch_add(&t->refs, 1);
	return t;
}

static void ms_template_unref(struct ms_template *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	struct ms_node *node = t->node;
	if (t->watching)
		pthread_join(t->watcher, NULL);
	if (t->polling) {
		pthread_mutex_lock(&node->lock);
		t->stop_poll = true;
		pthread_cond_broadcast(&node->cond);
		pthread_mutex_unlock(&node->lock);
		pthread_join(t->poller, NULL);
	}
	if (t->served && node->peers)
		ms_node_peers_forget(node->peers, &t->id); /* before the file goes */
	if (t->pause)
		ms_pause_free(t->pause); /* joins the pipeline; frees the file */
	else
		ms_layered_free(t->file);
	if (t->gate)
		ms_future_unref(t->gate);
	if (t->loaded)
		ms_future_unref(t->loaded);
	if (t->in_store)
		ms_future_unref(t->in_store);
	if (t->upload_gate)
		ms_future_unref(t->upload_gate);
	ms_template_unref(t->parent);
	free(t->snapfile);
	free(t);
}

static struct ms_template *ms_template_alloc(struct ms_node *node, const ms_uuid *id)
{
	struct ms_template *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	atomic_init(&t->refs, 1);
	t->node = node;
	t->id = *id;
	t->guest = -1;
	t->state = TMPL_READY;
	t->done = true;
	return t;
}

/* node->lock held */
static ssize_t ms_template_index(struct ms_node *node, const ms_uuid *id)
{
	for (size_t i = 0; i < node->ntemplates; i++)
		if (ms_uuid_eq(&node->templates[i]->id, id))
			return (ssize_t)i;
	return -1;
}

/* node->lock held; takes a new reference for the cache. */
static int ms_template_insert(struct ms_node *node, struct ms_template *t)
{
	if (node->ntemplates == node->templates_cap) {
		size_t cap = node->templates_cap ? node->templates_cap * 2 : 16;
		void *grown = realloc(node->templates, cap * sizeof(*node->templates));
		if (!grown)
			return -ENOMEM;
		node->templates = grown;
		node->templates_cap = cap;
	}
	t->expires_ns = ms_clock_now_ns() + node->cfg.template_ttl_ns;
	node->templates[node->ntemplates++] = ms_template_ref(t);
	return 0;
}

/* node->lock held; returns the cache's reference. */
static struct ms_template *ms_template_remove_at(struct ms_node *node, size_t i)
{
	struct ms_template *t = node->templates[i];
	node->templates[i] = node->templates[--node->ntemplates];
	return t;
}

struct ms_fetch {
	struct ms_node *node;
	struct ms_template *t;
};

/*
 * A template read from a peer: polls until its build is in the store, then
 * swaps the store's header in (finalized: complete, with its frame tables
 * when compressed) and settles in_store, which a child pause's header upload
 * waits for. Fails in_store when the build never makes it (its record gone
 * without it) or the template is freed first.
 */
static void *ms_template_poll_main(void *arg)
{
	struct ms_template *t = arg;
	struct ms_node *node = t->node;
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&t->id, text);
	bool seen_record = false;
	int64_t delay = 50 * MS_NSEC_PER_MSEC;
	int err;
	for (;;) {
		struct ms_header *h = NULL;
		err = ms_node_peers_check_store(node->peers, &t->id, &seen_record, &h);
		if (!err) {
			struct ms_header_ref *cur = ms_layered_header(t->file);
			bool same = h->meta.size == cur->header->meta.size &&
				    h->mappings.count == cur->header->mappings.count;
			ms_header_ref_unref(cur);
			/* same size and mappings: the finalized header of the same build */
			if (!same || ms_layered_swap(t->file, h)) {
				ms_warn(MS_MOD, "build %s: kept the peer's header (the store's %s)",
					text, same ? "could not be installed" : "differs");
				if (!same)
					ms_header_free(h);
			} else {
				ms_info(MS_MOD, "build %s: in the store now; its header swapped in",
					text);
			}
			/* its reads go to the store now (the peer side's cache goes) */
			char key[MS_ARTIFACT_KEY_MAX];
			struct ms_source *src = NULL;
			if (!ms_build_storage_key(&node->storage, &t->id, key, sizeof(key)) &&
			    !ms_diffstore_get(node->diffs, key, &src)) {
				ms_peer_routing_move_to_store(src);
				ms_source_unref(src);
			}
			ms_future_set(t->in_store, NULL);
			return NULL;
		}
		if (err == MS_ENOTFOUND) {
			ms_warn(MS_MOD,
				"build %s: its node removed its record without uploading it", text);
			break;
		}
		pthread_mutex_lock(&node->lock);
		if (!t->stop_poll) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += delay;
			ts.tv_sec += ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&node->cond, &node->lock, &ts);
		}
		bool stop = t->stop_poll;
		pthread_mutex_unlock(&node->lock);
		if (stop) {
			err = -ECANCELED;
			break;
		}
		if (delay < 2 * MS_NSEC_PER_SEC)
			delay *= 2;
	}
	ms_future_fail(t->in_store, err);
	return NULL;
}

/* The detached cold fetch: header and snapfile from a peer that holds the build, else the store. */
static void *ms_template_fetch_main(void *arg)
{
	struct ms_fetch *f = arg;
	struct ms_node *node = f->node;
	struct ms_template *t = f->t;
	free(f);
	struct ms_node_build_blobs blobs;
	int err = ms_node_peers_load(node->peers, &t->id, SNAPFILE_MAX, &blobs);
	if (!err) {
		t->mem_size = blobs.header->meta.size;
		t->guest = blobs.guest;
		t->snapfile = blobs.snapfile;
		t->snapfile_len = blobs.snapfile_len;
		t->from_peer = blobs.from_peer;
		if (!(t->file = ms_layered_new(blobs.header, node->resolve, node->resolve_ctx)))
			err = -ENOMEM;
	}
	if (!err && t->from_peer) {
		/* a peer sends only durable headers: incomplete (its upload runs), yet the
		 * parent a child pause here may take */
		struct ms_future *durable = ms_future_new(ms_header_ref_free_value);
		if (!durable || !(t->in_store = ms_future_new(NULL))) {
			err = -ENOMEM;
		} else {
			ms_future_set(durable, ms_layered_header(t->file));
			ms_layered_set_durable_future(t->file, durable);
			if (!(err = -pthread_create(&t->poller, NULL, ms_template_poll_main, t)))
				t->polling = true;
		}
		if (durable)
			ms_future_unref(durable);
	}
	pthread_mutex_lock(&node->lock);
	struct ms_template *dropped = NULL;
	if (err) {
		ssize_t i = ms_template_index(node, &t->id);
		if (i >= 0 && node->templates[i] == t)
			dropped = ms_template_remove_at(node, (size_t)i);
	} else {
		t->state = TMPL_READY;
	}
	node->fetches--;
	pthread_cond_broadcast(&node->cond);
	pthread_mutex_unlock(&node->lock);
	if (err)
		ms_future_fail(t->loaded, err);
	else
		ms_future_set(t->loaded, NULL);
	ms_template_unref(dropped);
	ms_template_unref(t);
	return NULL;
}

/*
 * The template of build id, with a reference: from the cache (warm; a hit
 * extends the TTL, never shortens it), else fetched from the store (cold).
 * MS_ENOTFOUND when the store has no such build; -EBUSY for a build whose
 * pipeline failed on this node; -ETIMEDOUT after fetch_timeout.
 */
static int ms_template_get(struct ms_node *node, const ms_uuid *id, struct ms_template **out,
			   enum ms_start_type *start_type)
{
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_template_index(node, id);
	struct ms_template *t;
	if (i >= 0) {
		t = node->templates[i];
		if (t->state == TMPL_READY && t->error) {
			pthread_mutex_unlock(&node->lock);
			return -EBUSY;
		}
		*start_type = t->state == TMPL_READY ? MS_START_WARM : MS_START_COLD;
		if (t->state == TMPL_READY) {
			atomic_fetch_add(&node->metrics.template_hits, 1);
			int64_t expires = ms_clock_now_ns() + node->cfg.template_ttl_ns;
			if (expires > t->expires_ns)
				t->expires_ns = expires;
		}
		ms_template_ref(t);
	} else {
		*start_type = MS_START_COLD;
		atomic_fetch_add(&node->metrics.template_misses, 1);
		struct ms_fetch *f = malloc(sizeof(*f));
		t = ms_template_alloc(node, id);
		if (t)
			t->loaded = ms_future_new(NULL);
		int err = !f || !t || !t->loaded ? -ENOMEM : ms_template_insert(node, t);
		if (!err) {
			t->state = TMPL_LOADING;
			f->node = node;
			f->t = ms_template_ref(t);
			pthread_t thread;
			pthread_attr_t attr;
			pthread_attr_init(&attr);
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
			err = -pthread_create(&thread, &attr, ms_template_fetch_main, f);
			pthread_attr_destroy(&attr);
			if (err) {
				ms_template_unref(f->t);
				ms_template_unref(
				    ms_template_remove_at(node, node->ntemplates - 1));
			} else {
				node->fetches++;
			}
		}
		if (err) {
			pthread_mutex_unlock(&node->lock);
			free(f);
			ms_template_unref(t);
			return err;
		}
	}
	pthread_mutex_unlock(&node->lock);
	if (t->loaded) {
		int err = ms_future_wait_timeout(t->loaded, node->cfg.fetch_timeout_ns, NULL);
		if (err) {
			ms_template_unref(t);
			return err;
		}
	}
	*out = t;
	return 0;
}

/* Observes a stage duration and records it on the template. */
static void ms_template_timing(struct ms_template *t, enum ms_pause_timing stage, double seconds)
{
	struct ms_node *node = t->node;
	ms_histogram_observe(&node->metrics.pause_stage[stage], seconds);
	pthread_mutex_lock(&node->lock);
	t->ms[stage] = seconds * 1e3;
	t->have[stage] = true;
	pthread_mutex_unlock(&node->lock);
}

/* Test hook: until the file test_hold_upload exists or the node stops. */
static void ms_template_hold_upload(struct ms_template *t)
{
	struct ms_node *node = t->node;
	pthread_mutex_lock(&node->lock);
	while (!node->stopping && !node->release_uploads &&
	       access(node->cfg.test_hold_upload, F_OK) != 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * MS_NSEC_PER_MSEC;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	ms_future_set(t->upload_gate, NULL);
}

/* One per local pause: releases the test holds, then follows the pipeline to its end. */
static void *ms_template_watch(void *arg)
{
	struct ms_template *t = arg;
	struct ms_node *node = t->node;
	if (t->gate) {
		int64_t deadline = ms_clock_now_ns() + node->cfg.test_stall_compare_ns;
		pthread_mutex_lock(&node->lock);
		while (!node->stopping && ms_clock_now_ns() < deadline) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			int64_t left = deadline - ms_clock_now_ns();
			if (left > 100 * MS_NSEC_PER_MSEC)
				left = 100 * MS_NSEC_PER_MSEC;
			ts.tv_nsec += left;
			ts.tv_sec += ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&node->cond, &node->lock, &ts);
		}
		pthread_mutex_unlock(&node->lock);
		ms_future_set(t->gate, NULL);
	}
	int64_t start = t->paused_ns, at = start;
	static const struct {
		enum ms_pause_stage stage;
		enum ms_pause_timing timing;
	} steps[] = {
	    {MS_PAUSE_COMPARED, MS_TIMING_COMPARE},
	    {MS_PAUSE_DRAINED, MS_TIMING_DRAIN},
	    {MS_PAUSE_PUBLISHED, MS_TIMING_UPLOAD},
	};
	int err = 0;
	size_t s;
	for (s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		if (steps[s].stage == MS_PAUSE_PUBLISHED && t->upload_gate)
			ms_template_hold_upload(t);
		if ((err = ms_pause_wait(t->pause, steps[s].stage, -1)))
			break;
		int64_t now = ms_clock_now_ns();
		ms_template_timing(t, steps[s].timing, (double)(now - at) / 1e9);
		at = now;
		if (steps[s].stage == MS_PAUSE_COMPARED) {
			uint64_t dirty, equal, zero, kept;
			ms_pause_counts(t->pause, &dirty, &equal, &zero, &kept);
			atomic_fetch_add(&node->metrics.dedup_compared, dirty);
			atomic_fetch_add(&node->metrics.dedup_equal, equal);
			atomic_fetch_add(&node->metrics.dedup_zero, zero);
			atomic_fetch_add(&node->metrics.dedup_kept, kept);
			double pages = (double)(t->mem_size / P);
			ms_histogram_observe(&node->metrics.diff_ratio[MS_DIFF_DIRTY],
					     dirty / pages);
			ms_histogram_observe(&node->metrics.diff_ratio[MS_DIFF_STORED],
					     kept / pages);
			pthread_mutex_lock(&node->lock);
			t->dirty = dirty;
			t->equal = equal;
			t->zero = zero;
			t->kept = kept;
			pthread_mutex_unlock(&node->lock);
		}
	}
	uint64_t bytes = 0;
	if (!err) {
		char key[MS_ARTIFACT_KEY_MAX];
		uint64_t size = 0;
		ms_artifact_key(key, sizeof(key), &t->id, MS_ARTIFACT_MEMFILE, node->cfg.compress);
		if (!ms_store_size(node->store, key, &size))
			bytes = size + t->snapfile_len;
		atomic_fetch_add(&node->metrics.upload_bytes, bytes);
		atomic_fetch_add(&node->metrics.pauses_published, 1);
	} else {
		atomic_fetch_add(&node->metrics.pauses_failed, 1);
		if (steps[s].stage == MS_PAUSE_PUBLISHED)
			atomic_fetch_add(&node->metrics.upload_failures, 1);
	}
	if (t->upload_gate) /* a pipeline that failed before its upload never waited */
		ms_future_set(t->upload_gate, NULL);
	if (t->served) /* the record goes; published: peers are sent to the store */
		ms_node_peers_uploaded(node->peers, &t->id, !err);
	pthread_mutex_lock(&node->lock);
	t->upload_bytes = bytes;
	t->error = err;
	t->upload_failed = err && steps[s].stage == MS_PAUSE_PUBLISHED;
	t->done = true;
	pthread_cond_broadcast(&node->cond);
	pthread_mutex_unlock(&node->lock);
	(void)start;
	return NULL;
}

/* ---- sandboxes ---- */

enum ms_sb_state { SB_RUNNING, SB_PAUSED, SB_FAILED };

struct ms_node_sandbox {
	atomic_uint refs;
	struct ms_node *node;
	ms_uuid id;
	pthread_mutex_t op; /* one operation at a time */
	struct ms_worker worker;
	/* node->lock (written with op held too) */
	enum ms_sb_state state;
	bool deleted;
	int guest; /* or -1: unknown */
	uint64_t mem_size;
	enum ms_start_type start_type;
	bool has_build; /* RUNNING: resumed from build_id; PAUSED: paused into it */
	ms_uuid build_id;
	double create_ms, pause_ms;
	uint64_t result0, result1, reports;
	unsigned pauses, resumes;
	int64_t created_unix;
	char error[200];
	struct ms_uffd_session *session;
	/* op holder only */
	struct ms_sandbox *vm;
	struct ms_pageserver *srv;
	struct ms_template *tmpl;
	unsigned serial;
};

static struct ms_node_sandbox *ms_nsb_new(struct ms_node *node, int *err)
{
	struct ms_node_sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb) {
		*err = -ENOMEM;
		return NULL;
	}
	atomic_init(&sb->refs, 1);
	sb->node = node;
	sb->guest = -1;
	ms_uuid_generate(&sb->id);
	sb->created_unix = (int64_t)time(NULL);
	pthread_mutex_init(&sb->op, NULL);
	if ((*err = ms_worker_start(&sb->worker))) {
		pthread_mutex_destroy(&sb->op);
		free(sb);
		return NULL;
	}
	return sb;
}

static void ms_nsb_unref(struct ms_node_sandbox *sb)
{
	if (!sb || atomic_fetch_sub(&sb->refs, 1) != 1)
		return;
	assert(!sb->vm && !sb->srv && !sb->tmpl && !sb->session);
	ms_worker_stop(&sb->worker);
	pthread_mutex_destroy(&sb->op);
	free(sb);
}

/* node->lock held */
static ssize_t ms_nsb_index(struct ms_node *node, const ms_uuid *id)
{
	for (size_t i = 0; i < node->nsandboxes; i++)
		if (ms_uuid_eq(&node->sandboxes[i]->id, id))
			return (ssize_t)i;
	return -1;
}

/* The sandbox with a reference, or NULL. */
static struct ms_node_sandbox *ms_nsb_lookup(struct ms_node *node, const ms_uuid *id)
{
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_nsb_index(node, id);
	struct ms_node_sandbox *sb = i >= 0 ? node->sandboxes[i] : NULL;
	if (sb)
		atomic_fetch_add(&sb->refs, 1);
	pthread_mutex_unlock(&node->lock);
	return sb;
}

/* What a job on the worker needs and returns. */
struct ms_vm_job {
	struct ms_node_sandbox *sb;
	struct ms_sandbox_spec spec;
	const struct ms_api_exec *exec;
	bool first_report; /* run to the first report first (after a restore) */
	struct ms_sandbox_paused paused;
	uint64_t result0, result1, reports;
	double stop_ms;
	char cause[160];
};

static int ms_vm_report(struct ms_vm_job *job)
{
	struct ms_node_sandbox *sb = job->sb;
	int err = ms_sandbox_run(sb->vm);
	if (!err)
		err = ms_sandbox_wait_report(sb->vm, sb->node->cfg.guest_timeout_ns);
	if (err == -ECHILD)
		snprintf(job->cause, sizeof(job->cause), "the guest died: %s",
			 ms_sandbox_death_cause(sb->vm));
	return err;
}

/* worker: create the VM, bring it to a report, run the exec command if any */
static int ms_vm_job_create(void *arg)
{
	struct ms_vm_job *job = arg;
	struct ms_node_sandbox *sb = job->sb;
	int err = ms_sandbox_create(sb->node->backend, &job->spec, &sb->vm);
	if (err)
		return err;
	uint64_t *box = (uint64_t *)ms_sandbox_ram(sb->vm);
	if (job->first_report && (err = ms_vm_report(job)))
		goto fail;
	if (job->exec && job->exec->set) {
		box[MS_GUEST_CMD / 8] = job->exec->command;
		box[MS_GUEST_ARG0 / 8] = job->exec->arg0;
		box[MS_GUEST_ARG1 / 8] = job->exec->arg1;
		if ((err = ms_vm_report(job)))
			goto fail;
	}
	job->result0 = box[MS_GUEST_RESULT0 / 8];
	job->result1 = box[MS_GUEST_RESULT1 / 8];
	job->reports = box[MS_GUEST_REPORTS / 8];
	box[MS_GUEST_CMD / 8] = 0; /* after a resume the guest reports first */
	return 0;
fail:
	ms_sandbox_destroy(sb->vm);
	sb->vm = NULL;
	return err;
}

/* worker: stop the VM, save its state, take its memory; the VM is destroyed either way */
static int ms_vm_job_pause(void *arg)
{
	struct ms_vm_job *job = arg;
	struct ms_node_sandbox *sb = job->sb;
	int64_t t0 = ms_clock_now_ns();
	((uint64_t *)ms_sandbox_ram(sb->vm))[MS_GUEST_CMD / 8] = 0;
	int err = ms_sandbox_pause(sb->vm, &job->paused);
	job->stop_ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	ms_sandbox_destroy(sb->vm);
	sb->vm = NULL;
	return err;
}

static int ms_vm_job_destroy(void *arg)
{
	struct ms_vm_job *job = arg;
	ms_sandbox_destroy(job->sb->vm);
	job->sb->vm = NULL;
	return 0;
}

/* op held: stops the page server, folding its session's counters into the totals */
static void ms_nsb_stop_server(struct ms_node_sandbox *sb)
{
	struct ms_node *node = sb->node;
	pthread_mutex_lock(&node->lock);
	struct ms_uffd_session *session = sb->session;
	sb->session = NULL;
	pthread_mutex_unlock(&node->lock);
	ms_pageserver_free(sb->srv);
	sb->srv = NULL;
	if (session) {
		ms_uffd_metrics_add(&node->metrics.uffd_closed, ms_uffd_session_metrics(session));
		ms_uffd_session_unref(session);
	}
}

/* op held: tears a running sandbox down (VM, page server, template reference) */
static void ms_nsb_teardown(struct ms_node_sandbox *sb)
{
	if (sb->vm) {
		struct ms_vm_job job = {.sb = sb};
		ms_worker_call(&sb->worker, ms_vm_job_destroy, &job);
	}
	ms_nsb_stop_server(sb);
	ms_template_unref(sb->tmpl);
	sb->tmpl = NULL;
}

static void ms_nsb_set_report(struct ms_node_sandbox *sb, const struct ms_vm_job *job)
{
	pthread_mutex_lock(&sb->node->lock);
	sb->result0 = job->result0;
	sb->result1 = job->result1;
	sb->reports = job->reports;
	pthread_mutex_unlock(&sb->node->lock);
}

/* op held (or not yet shared): a fresh guest over an empty base template */
static int ms_nsb_start_fresh(struct ms_node_sandbox *sb, const struct ms_api_request *req,
			      char *cause, size_t cause_len)
{
	struct ms_node *node = sb->node;
	int64_t t0 = ms_clock_now_ns();
	ms_uuid base_id;
	ms_uuid_generate(&base_id);
	struct ms_template *base = ms_template_alloc(node, &base_id);
	if (!base)
		return -ENOMEM;
	base->base = true;
	base->mem_size = req->mem_size;
	if (!(base->file = ms_layered_new(
		  ms_header_new_base(&base_id, MS_HEADER_V4, P, req->mem_size, false),
		  node->resolve, node->resolve_ctx))) {
		ms_template_unref(base);
		return -ENOMEM;
	}
	struct ms_vm_job job = {
	    .sb = sb,
	    .spec = {.guest = req->guest, .mem_size = req->mem_size, .memory = MS_SANDBOX_FRESH},
	    .exec = &req->exec};
	int err = ms_worker_call(&sb->worker, ms_vm_job_create, &job);
	if (err) {
		snprintf(cause, cause_len, "%s", job.cause);
		ms_template_unref(base);
		return err;
	}
	sb->tmpl = base;
	double secs = (double)(ms_clock_now_ns() - t0) / 1e9;
	ms_histogram_observe(&node->metrics.create[MS_START_FRESH], secs);
	pthread_mutex_lock(&node->lock);
	sb->state = SB_RUNNING;
	sb->guest = (int)req->guest;
	sb->mem_size = req->mem_size;
	sb->start_type = MS_START_FRESH;
	sb->has_build = false;
	sb->create_ms = secs * 1e3;
	pthread_mutex_unlock(&node->lock);
	ms_nsb_set_report(sb, &job);
	return 0;
}

/*
 * op held (or not yet shared): resumes build_id into sb, lazily through a page
 * server in the run dir. On error nothing changed (the sandbox keeps its state).
 */
static int ms_nsb_resume(struct ms_node_sandbox *sb, const ms_uuid *build_id,
			 const struct ms_api_exec *exec, char *cause, size_t cause_len)
{
	struct ms_node *node = sb->node;
	int64_t t0 = ms_clock_now_ns();
	struct ms_template *t;
	enum ms_start_type start_type;
	int err = ms_template_get(node, build_id, &t, &start_type);
	if (err)
		return err;
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)], id[MS_UUID_STR_LEN];
	ms_uuid_format(&sb->id, id);
	int n =
	    snprintf(sock, sizeof(sock), "%s/sb-%s.%u.sock", node->cfg.run_dir, id, sb->serial++);
	if (n < 0 || (size_t)n >= sizeof(sock)) {
		snprintf(cause, cause_len, "run_dir is too long for a unix socket path");
		ms_template_unref(t);
		return -ENAMETOOLONG;
	}
	struct ms_pageserver_options opts = {.workers = (unsigned)node->cfg.pageserver_workers,
					     .batch_bytes = 65536};
	struct ms_pageserver *srv =
	    ms_pageserver_new(sock, &ms_layered_page_source_ops, t->file, &opts);
	if (!srv) {
		err = -errno;
		ms_template_unref(t);
		return err;
	}
	struct ms_vm_job job = {.sb = sb,
				.spec = {.mem_size = t->mem_size,
					 .memory = MS_SANDBOX_LAZY,
					 .lazy_socket = sock,
					 .snapfile = t->snapfile,
					 .snapfile_len = t->snapfile_len},
				.exec = exec,
				.first_report = true};
	if ((err = ms_worker_call(&sb->worker, ms_vm_job_create, &job))) {
		snprintf(cause, cause_len, "%s", job.cause);
		ms_pageserver_free(srv);
		ms_template_unref(t);
		return err;
	}
	struct ms_uffd_session *session = NULL;
	if (ms_pageserver_next_session(srv, 0, &session))
		session = NULL; /* counters only: the guest already ran from it */
	double secs = (double)(ms_clock_now_ns() - t0) / 1e9;
	ms_histogram_observe(&node->metrics.create[start_type], secs);
	sb->srv = srv;
	sb->tmpl = t;
	pthread_mutex_lock(&node->lock);
	sb->session = session;
	sb->state = SB_RUNNING;
	sb->mem_size = t->mem_size;
	if (t->guest >= 0)
		sb->guest = t->guest;
	sb->start_type = start_type;
	sb->has_build = true;
	sb->build_id = *build_id;
	sb->create_ms = secs * 1e3;
	sb->resumes++;
	sb->error[0] = '\0';
	pthread_mutex_unlock(&node->lock);
	ms_nsb_set_report(sb, &job);
	return 0;
}

/*
 * op held, sb RUNNING: pause. Returns once the new build can be resumed. On an
 * error after the VM stopped the sandbox is FAILED (its memory went with it).
 */
static int ms_nsb_pause(struct ms_node_sandbox *sb, ms_uuid *build_id, char *cause,
			size_t cause_len)
{
	struct ms_node *node = sb->node;
	struct ms_vm_job job = {.sb = sb, .paused = {.memfd = -1}};
	int64_t t0 = ms_clock_now_ns();
	int err = ms_worker_call(&sb->worker, ms_vm_job_pause, &job);
	ms_nsb_stop_server(sb);
	struct ms_template *parent = sb->tmpl, *t = NULL;
	sb->tmpl = NULL;
	struct ms_pageset *none = NULL;
	if (err)
		goto fail;
	ms_histogram_observe(&node->metrics.pause_stage[MS_TIMING_STOP], job.stop_ms / 1e3);
	int64_t t1 = ms_clock_now_ns();
	err = -ENOMEM;
	if (!(none = ms_pageset_new()) || !(t = ms_template_alloc(node, &MS_UUID_NIL)))
		goto fail;
	if (node->cfg.test_stall_compare_ns > 0 && !(t->gate = ms_future_new(NULL)))
		goto fail;
	if (node->cfg.test_hold_upload[0] && !(t->upload_gate = ms_future_new(NULL)))
		goto fail;
	struct ms_pause_config cfg = {
	    .store = node->store,
	    .diffs = node->diffs,
	    .cache_dir = node->cfg.cache_dir,
	    .inflight = node->cfg.inflight_serve,
	    .dedup = !node->cfg.dedup		   ? MS_DEDUP_OFF
		     : node->cfg.dedup_best_effort ? MS_DEDUP_BEST_EFFORT
						   : MS_DEDUP_FULL,
	    .counters = &node->metrics.pipeline,
	    .grace_ns = node->cfg.grace_ns,
	    .compress = node->cfg.compress,
	    /* a parent from a peer: its upload runs there; in_store says when it landed */
	    .parent_published =
		parent->pause ? ms_pause_published(parent->pause) : parent->in_store,
	    .resolve = node->resolve,
	    .resolve_ctx = node->resolve_ctx,
	    .compare_gate = t->gate,
	    .upload_gate = t->upload_gate,
	};
	int memfd = job.paused.memfd;
	job.paused.memfd = -1;
	t->paused_ns = t1;
	t->mem_size = parent->mem_size;
	t->guest = sb->guest;
	t->parent = parent;
	parent = NULL;
	/* the watcher releases the stall; until it runs, a failed start must release it */
	err = ms_pause_start(&cfg, t->parent->file, memfd, job.paused.written, none,
			     job.paused.snapfile, job.paused.snapfile_len, &t->pause);
	if (err) {
		if (t->pause) { /* inflight off: the compare failed */
			ms_pause_free(t->pause);
			t->pause = NULL;
		}
		goto fail;
	}
	t->id = *ms_pause_build_id(t->pause);
	t->file = ms_pause_file(t->pause);
	t->snapfile = job.paused.snapfile;
	t->snapfile_len = job.paused.snapfile_len;
	job.paused.snapfile = NULL;
	t->done = false;
	/* other nodes may resume it from here until it is uploaded */
	struct ms_peer_build served = {.build_id = t->id,
				       .memfile = t->file,
				       .diffs = node->diffs,
				       .published = ms_pause_published(t->pause),
				       .snapfile = t->snapfile,
				       .snapfile_len = t->snapfile_len};
	if ((err = ms_node_peers_serve(node->peers, &served, t->guest, t->mem_size)))
		goto fail_started;
	t->served = ms_node_peers_address(node->peers) != NULL;
	ms_histogram_observe(&node->metrics.pause_stage[MS_TIMING_RESUMABLE],
			     (double)(ms_clock_now_ns() - t1) / 1e9);
	t->ms[MS_TIMING_STOP] = job.stop_ms;
	t->have[MS_TIMING_STOP] = true;
	t->ms[MS_TIMING_RESUMABLE] = (double)(ms_clock_now_ns() - t1) / 1e6;
	t->have[MS_TIMING_RESUMABLE] = true;
	if ((err = -pthread_create(&t->watcher, NULL, ms_template_watch, t)))
		goto fail_started;
	t->watching = true;
	pthread_mutex_lock(&node->lock);
	err = ms_template_insert(node, t);
	if (!err) {
		sb->state = SB_PAUSED;
		sb->has_build = true;
		sb->build_id = t->id;
		sb->pauses++;
		sb->pause_ms = (double)(ms_clock_now_ns() - t0) / 1e6;
	}
	pthread_mutex_unlock(&node->lock);
	if (err)
		goto fail;
	*build_id = t->id;
	ms_template_unref(t);
	ms_pageset_free(none);
	ms_sandbox_paused_fini(&job.paused);
	return 0;
fail_started:
	/* without a watcher nobody releases the test holds: do it, then wait it out */
	if (t->gate)
		ms_future_set(t->gate, NULL);
	if (t->upload_gate)
		ms_future_set(t->upload_gate, NULL);
	int end = ms_pause_wait(t->pause, MS_PAUSE_PUBLISHED, -1);
	if (t->served)
		ms_node_peers_uploaded(node->peers, &t->id, !end);
	t->done = true;
fail:
	snprintf(cause, cause_len, "pause failed: %s", ms_strerror(err));
	if (t && t->gate && !t->watching)
		ms_future_set(t->gate, NULL);
	if (t && t->upload_gate && !t->watching)
		ms_future_set(t->upload_gate, NULL);
	ms_template_unref(t);
	ms_template_unref(parent);
	ms_pageset_free(none);
	ms_sandbox_paused_fini(&job.paused);
	pthread_mutex_lock(&node->lock);
	sb->state = SB_FAILED;
	snprintf(sb->error, sizeof(sb->error), "%s", cause);
	pthread_mutex_unlock(&node->lock);
	return err;
}

/* ---- JSON responses ---- */

static void ms_respond_json(struct ms_node_response *resp, unsigned status, cJSON *body)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = body ? cJSON_PrintUnformatted(body) : NULL;
	cJSON_Delete(body);
	if (!resp->body) {
		resp->status = 500;
		resp->body = strdup("{\"error\":\"internal\",\"message\":\"out of memory\"}");
	}
}

__attribute__((format(printf, 4, 5))) static void ms_respond_error(struct ms_node_response *resp,
								   unsigned status,
								   const char *code,
								   const char *fmt, ...)
{
	struct ms_api_error e = {.status = status, .code = code};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.message, sizeof(e.message), fmt, ap);
	va_end(ap);
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = ms_api_error_json(&e);
}

/* An operation's error as an HTTP answer. */
static void ms_respond_errno(struct ms_node_response *resp, int err, const char *what,
			     const char *cause)
{
	const char *reason = cause && *cause ? cause : ms_strerror(err);
	switch (err) {
	case MS_ENOTFOUND:
		ms_respond_error(resp, 404, "not_found", "%s: no such build in the store", what);
		return;
	case -EBUSY:
		ms_respond_error(resp, 409, "conflict", "%s: the build failed on this node", what);
		return;
	case -ETIMEDOUT:
		ms_respond_error(resp, 504, "timeout", "%s: %s", what, reason);
		return;
	case MS_ECORRUPT:
	case MS_EBACKEND:
	case MS_EVERSION:
		ms_respond_error(resp, 422, "unusable_build", "%s: %s", what, reason);
		return;
	case -ECHILD:
		ms_respond_error(resp, 500, "guest_died", "%s: %s", what, reason);
		return;
	default:
		ms_respond_error(resp, 500, "internal", "%s: %s", what, reason);
	}
}

static void ms_json_uuid(cJSON *o, const char *name, const ms_uuid *id)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	cJSON_AddStringToObject(o, name, text);
}

static const char *const ms_sb_state_names[] = {"running", "paused", "failed"};

/* node->lock held */
static cJSON *ms_nsb_json(struct ms_node *node, const struct ms_node_sandbox *sb)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	ms_json_uuid(o, "id", &sb->id);
	cJSON_AddStringToObject(o, "state", ms_sb_state_names[sb->state]);
	const char *guest = ms_guest_name(sb->guest);
	cJSON_AddStringToObject(o, "guest", guest ? guest : "unknown");
	cJSON_AddNumberToObject(o, "mem_mib", (double)(sb->mem_size >> 20));
	cJSON_AddStringToObject(o, "backend", node->backend->name);
	cJSON_AddStringToObject(o, "start_type", ms_start_type_name(sb->start_type));
	if (sb->has_build)
		ms_json_uuid(o, "build_id", &sb->build_id);
	else
		cJSON_AddNullToObject(o, "build_id");
	cJSON_AddNumberToObject(o, "create_ms", sb->create_ms);
	if (sb->pauses)
		cJSON_AddNumberToObject(o, "pause_ms", sb->pause_ms);
	cJSON_AddNumberToObject(o, "pauses", sb->pauses);
	cJSON_AddNumberToObject(o, "resumes", sb->resumes);
	cJSON_AddNumberToObject(o, "created_at", (double)sb->created_unix);
	cJSON *report = cJSON_AddObjectToObject(o, "report");
	if (report) {
		/* 64-bit registers: printed as integers (a double would round them) */
		char num[24];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)sb->result0);
		cJSON_AddRawToObject(report, "result0", num);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)sb->result1);
		cJSON_AddRawToObject(report, "result1", num);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)sb->reports);
		cJSON_AddRawToObject(report, "reports", num);
	}
	if (sb->error[0])
		cJSON_AddStringToObject(o, "error", sb->error);
	return o;
}

static void ms_respond_sandbox(struct ms_node_response *resp, unsigned status,
			       struct ms_node_sandbox *sb)
{
	pthread_mutex_lock(&sb->node->lock);
	cJSON *o = ms_nsb_json(sb->node, sb);
	pthread_mutex_unlock(&sb->node->lock);
	ms_respond_json(resp, status, o);
}

/* ---- handlers ---- */

static void ms_handle_create(struct ms_node *node, const struct ms_api_request *req,
			     struct ms_node_response *resp)
{
	pthread_mutex_lock(&node->lock);
	if (node->nsandboxes + node->pending >= node->cfg.max_sandboxes) {
		pthread_mutex_unlock(&node->lock);
		ms_respond_error(resp, 429, "too_many_sandboxes",
				 "this node holds at most %llu sandboxes",
				 (unsigned long long)node->cfg.max_sandboxes);
		return;
	}
	node->pending++;
	pthread_mutex_unlock(&node->lock);
	int err;
	char cause[200] = "";
	struct ms_node_sandbox *sb = ms_nsb_new(node, &err);
	if (sb) {
		pthread_mutex_lock(&sb->op);
		err = req->from_build
			  ? ms_nsb_resume(sb, &req->build_id, &req->exec, cause, sizeof(cause))
			  : ms_nsb_start_fresh(sb, req, cause, sizeof(cause));
		pthread_mutex_unlock(&sb->op);
	}
	pthread_mutex_lock(&node->lock);
	node->pending--;
	if (!err && node->nsandboxes == node->sandboxes_cap) {
		size_t cap = node->sandboxes_cap ? node->sandboxes_cap * 2 : 16;
		void *grown = realloc(node->sandboxes, cap * sizeof(*node->sandboxes));
		if (grown) {
			node->sandboxes = grown;
			node->sandboxes_cap = cap;
		} else {
			err = -ENOMEM;
		}
	}
	if (!err)
		node->sandboxes[node->nsandboxes++] = sb;
	pthread_mutex_unlock(&node->lock);
	if (err) {
		atomic_fetch_add(&node->metrics.creates_failed, 1);
		if (sb) {
			pthread_mutex_lock(&sb->op);
			ms_nsb_teardown(sb);
			pthread_mutex_unlock(&sb->op);
			ms_nsb_unref(sb);
		}
		ms_respond_errno(resp, err, req->from_build ? "resume" : "start", cause);
		return;
	}
	ms_respond_sandbox(resp, 201, sb);
}

static void ms_respond_no_sandbox(struct ms_node_response *resp, const ms_uuid *id)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	ms_respond_error(resp, 404, "not_found", "no sandbox %s", text);
}

static void ms_handle_pause(struct ms_node *node, struct ms_node_sandbox *sb,
			    struct ms_node_response *resp)
{
	if (sb->state != SB_RUNNING) {
		ms_respond_error(resp, 409, "conflict", "the sandbox is %s, not running",
				 ms_sb_state_names[sb->state]);
		return;
	}
	ms_uuid build_id;
	char cause[200] = "";
	int err = ms_nsb_pause(sb, &build_id, cause, sizeof(cause));
	if (err) {
		ms_respond_errno(resp, err, "pause", cause);
		return;
	}
	(void)node;
	ms_respond_sandbox(resp, 200, sb);
}

static void ms_handle_resume(struct ms_node *node, struct ms_node_sandbox *sb,
			     const struct ms_api_request *req, struct ms_node_response *resp)
{
	if (sb->state != SB_PAUSED) {
		ms_respond_error(resp, 409, "conflict", "the sandbox is %s, not paused",
				 ms_sb_state_names[sb->state]);
		return;
	}
	char cause[200] = "";
	ms_uuid build_id = sb->build_id;
	int err = ms_nsb_resume(sb, &build_id, &req->exec, cause, sizeof(cause));
	if (err) {
		atomic_fetch_add(&node->metrics.creates_failed, 1);
		ms_respond_errno(resp, err, "resume", cause);
		return;
	}
	ms_respond_sandbox(resp, 200, sb);
}

static void ms_handle_delete(struct ms_node *node, struct ms_node_sandbox *sb,
			     struct ms_node_response *resp)
{
	ms_nsb_teardown(sb);
	pthread_mutex_lock(&node->lock);
	sb->deleted = true;
	ssize_t i = ms_nsb_index(node, &sb->id);
	if (i >= 0) {
		node->sandboxes[i] = node->sandboxes[--node->nsandboxes];
		ms_nsb_unref(sb); /* the table's reference */
	}
	cJSON *o = cJSON_CreateObject();
	if (o) {
		ms_json_uuid(o, "id", &sb->id);
		cJSON_AddStringToObject(o, "state", "deleted");
	}
	pthread_mutex_unlock(&node->lock);
	ms_respond_json(resp, 200, o);
}

/* A sandbox operation: lookup, op lock, dispatch. */
static void ms_handle_sandbox_op(struct ms_node *node, const struct ms_api_request *req,
				 struct ms_node_response *resp)
{
	struct ms_node_sandbox *sb = ms_nsb_lookup(node, &req->id);
	if (!sb) {
		ms_respond_no_sandbox(resp, &req->id);
		return;
	}
	if (req->op == MS_API_SANDBOX_GET) {
		ms_respond_sandbox(resp, 200, sb);
		ms_nsb_unref(sb);
		return;
	}
	pthread_mutex_lock(&sb->op);
	if (sb->deleted)
		ms_respond_no_sandbox(resp, &req->id);
	else if (req->op == MS_API_SANDBOX_PAUSE)
		ms_handle_pause(node, sb, resp);
	else if (req->op == MS_API_SANDBOX_RESUME)
		ms_handle_resume(node, sb, req, resp);
	else
		ms_handle_delete(node, sb, resp);
	pthread_mutex_unlock(&sb->op);
	ms_nsb_unref(sb);
}

static void ms_handle_list(struct ms_node *node, struct ms_node_response *resp)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *list = o ? cJSON_AddArrayToObject(o, "sandboxes") : NULL;
	pthread_mutex_lock(&node->lock);
	for (size_t i = 0; list && i < node->nsandboxes; i++) {
		cJSON *s = ms_nsb_json(node, node->sandboxes[i]);
		if (s)
			cJSON_AddItemToArray(list, s);
	}
	pthread_mutex_unlock(&node->lock);
	ms_respond_json(resp, 200, list ? o : (cJSON_Delete(o), NULL));
}

static const char *ms_build_status(const struct ms_template *t)
{
	if (t->error)
		return "failed";
	int err = 0;
	if (t->from_peer && (!ms_future_peek(t->in_store, NULL, &err) || err))
		return "on_peer"; /* read from a peer; its upload there has not landed */
	if (!t->pause)
		return "published"; /* fetched from the store: only published builds are there */
	if (t->done)
		return "published";
	if (t->have[MS_TIMING_DRAIN])
		return "uploading";
	return "deduping";
}

static void ms_handle_build(struct ms_node *node, const struct ms_api_request *req,
			    struct ms_node_response *resp)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&req->id, text);
	cJSON *o = cJSON_CreateObject();
	if (!o) {
		ms_respond_json(resp, 500, NULL);
		return;
	}
	cJSON_AddStringToObject(o, "build_id", text);
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_template_index(node, &req->id);
	struct ms_template *t = i >= 0 ? node->templates[i] : NULL;
	if (t && t->state == TMPL_READY) {
		cJSON_AddStringToObject(o, "status", ms_build_status(t));
		cJSON_AddBoolToObject(o, "paused_here", t->pause != NULL);
		cJSON_AddBoolToObject(o, "cached", true);
		cJSON_AddStringToObject(o, "source",
					t->pause       ? "local"
					: t->from_peer ? "peer"
						       : "store");
		cJSON_AddNumberToObject(o, "mem_bytes", (double)t->mem_size);
		cJSON_AddNumberToObject(o, "snapfile_bytes", (double)t->snapfile_len);
		if (t->parent && !t->parent->base)
			ms_json_uuid(o, "parent_build_id", &t->parent->id);
		if (!t->pause) {
			struct ms_header_ref *head = ms_layered_header(t->file);
			const struct ms_build_data *self = ms_header_build(head->header, &t->id);
			if (self)
				cJSON_AddNumberToObject(o, "diff_bytes", (double)self->size);
			ms_header_ref_unref(head);
		}
		if (t->pause) {
			cJSON *pages = cJSON_AddObjectToObject(o, "pages");
			bool compared = t->have[MS_TIMING_COMPARE];
			if (pages && compared) {
				cJSON_AddNumberToObject(pages, "dirty", (double)t->dirty);
				cJSON_AddNumberToObject(pages, "equal", (double)t->equal);
				cJSON_AddNumberToObject(pages, "zero", (double)t->zero);
				cJSON_AddNumberToObject(pages, "kept", (double)t->kept);
			}
			if (compared) {
				cJSON_AddNumberToObject(o, "diff_bytes", (double)(t->kept * P));
				cJSON_AddNumberToObject(
				    o, "dedup_ratio",
				    t->dirty ? (double)t->kept / (double)t->dirty : 0.0);
			}
			if (t->done && !t->error)
				cJSON_AddNumberToObject(o, "uploaded_bytes",
							(double)t->upload_bytes);
			cJSON *timings = cJSON_AddObjectToObject(o, "timings_ms");
			static const char *const names[MS_TIMINGS] = {"stop", "resumable",
								      "compare", "drain", "upload"};
			for (int s = 0; timings && s < MS_TIMINGS; s++)
				if (t->have[s])
					cJSON_AddNumberToObject(timings, names[s], t->ms[s]);
		}
		if (t->error)
			cJSON_AddStringToObject(o, "error", ms_strerror(t->error));
		pthread_mutex_unlock(&node->lock);
		ms_respond_json(resp, 200, o);
		return;
	}
	pthread_mutex_unlock(&node->lock);
	/* not cached: the store knows it (published) or nobody does */
	struct ms_header *h = NULL;
	int err =
	    ms_build_storage_load_header(node->store, &req->id, MS_ARTIFACT_MEMFILE_HEADER, &h);
	if (err) {
		cJSON_Delete(o);
		if (err == MS_ENOTFOUND)
			ms_respond_error(resp, 404, "not_found", "no build %s", text);
		else
			ms_respond_errno(resp, err, "build", NULL);
		return;
	}
	cJSON_AddStringToObject(o, "status", "published");
	cJSON_AddBoolToObject(o, "paused_here", false);
	cJSON_AddBoolToObject(o, "cached", false);
	cJSON_AddNumberToObject(o, "mem_bytes", (double)h->meta.size);
	const struct ms_build_data *self = ms_header_build(h, &req->id);
	if (self)
		cJSON_AddNumberToObject(o, "diff_bytes", (double)self->size);
	cJSON_AddNumberToObject(o, "generation", (double)h->meta.generation);
	ms_header_free(h);
	ms_respond_json(resp, 200, o);
}

struct ms_build_bytes {
	ms_uuid id;
	char text[MS_UUID_STR_LEN];
	uint64_t bytes;
};

static int ms_build_bytes_by_weight(const void *a, const void *b)
{
	const struct ms_build_bytes *x = a, *y = b;
	if (x->bytes != y->bytes)
		return x->bytes > y->bytes ? -1 : 1;
	return strcmp(x->text, y->text);
}

static int ms_build_bytes_by_id(const void *a, const void *b)
{
	return strcmp(((const struct ms_build_bytes *)a)->text,
		      ((const struct ms_build_bytes *)b)->text);
}

/* research/e2b.md §6.1: build ids and bytes per build of a (durable) header. */
static cJSON *ms_metadata_memfile(const struct ms_header *h, const ms_uuid *build_id)
{
	size_t cap = h->mappings.count + 2, n = 0;
	struct ms_build_bytes *b = calloc(cap, sizeof(*b));
	cJSON *o = cJSON_CreateObject();
	if (!b || !o) {
		free(b);
		cJSON_Delete(o);
		return NULL;
	}
	for (size_t i = 0; i < h->mappings.count; i++) {
		const struct ms_mapping *m = &h->mappings.entries[i];
		if (ms_uuid_is_nil(&m->build_id))
			continue;
		size_t j = 0;
		while (j < n && !ms_uuid_eq(&b[j].id, &m->build_id))
			j++;
		if (j == n)
			b[n++].id = m->build_id;
		b[j].bytes += m->length;
	}
	const ms_uuid *must[2] = {&h->meta.base_build_id, build_id};
	for (int k = 0; k < 2; k++) {
		size_t j = 0;
		while (j < n && !ms_uuid_eq(&b[j].id, must[k]))
			j++;
		if (j == n && !ms_uuid_is_nil(must[k]))
			b[n++].id = *must[k];
	}
	for (size_t j = 0; j < n; j++)
		ms_uuid_format(&b[j].id, b[j].text);
	size_t dropped = 0;
	if (n > METADATA_MAX) {
		/* keep the base and the build, then the heaviest */
		qsort(b, n, sizeof(*b), ms_build_bytes_by_weight);
		for (int k = 0; k < 2; k++) {
			size_t j = 0;
			while (j < n && !ms_uuid_eq(&b[j].id, must[k]))
				j++;
			if (j < n && j >= (size_t)k) {
				struct ms_build_bytes tmp = b[k];
				b[k] = b[j];
				b[j] = tmp;
			}
		}
		qsort(b + 2, n - 2, sizeof(*b), ms_build_bytes_by_weight);
		dropped = n - METADATA_MAX;
		n = METADATA_MAX;
	}
	qsort(b, n, sizeof(*b), ms_build_bytes_by_id);
	ms_json_uuid(o, "base_build_id", &h->meta.base_build_id);
	cJSON *ids = cJSON_AddArrayToObject(o, "build_ids");
	cJSON *bytes = cJSON_AddArrayToObject(o, "build_bytes");
	for (size_t j = 0; ids && bytes && j < n; j++) {
		cJSON_AddItemToArray(ids, cJSON_CreateString(b[j].text));
		cJSON_AddItemToArray(bytes, cJSON_CreateNumber((double)b[j].bytes));
	}
	cJSON_AddNumberToObject(o, "dropped_builds", (double)dropped);
	free(b);
	return o;
}

static void ms_handle_metadata(struct ms_node *node, const struct ms_api_request *req,
			       struct ms_node_response *resp)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(&req->id, text);
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_template_index(node, &req->id);
	struct ms_template *t = i >= 0 && node->templates[i]->state == TMPL_READY
				    ? ms_template_ref(node->templates[i])
				    : NULL;
	pthread_mutex_unlock(&node->lock);
	struct ms_header_ref *durable = NULL;
	struct ms_header *loaded = NULL;
	if (t) {
		durable = ms_layered_durable_header_now(t->file); /* never waits */
	} else {
		int err = ms_build_storage_load_header(node->store, &req->id,
						       MS_ARTIFACT_MEMFILE_HEADER, &loaded);
		if (err) {
			if (err == MS_ENOTFOUND)
				ms_respond_error(resp, 404, "not_found", "no build %s", text);
			else
				ms_respond_errno(resp, err, "scheduling metadata", NULL);
			return;
		}
	}
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "build_id", text);
		const struct ms_header *h = durable ? durable->header : loaded;
		cJSON_AddBoolToObject(o, "pending", h == NULL);
		/* no rootfs in memsnap yet: while the memfile is pending, no memory part */
		cJSON_AddNullToObject(o, "rootfs");
		cJSON *mem = h ? ms_metadata_memfile(h, &req->id) : NULL;
		if (mem)
			cJSON_AddItemToObject(o, "memfile", mem);
		else
			cJSON_AddNullToObject(o, "memfile");
	}
	ms_header_ref_unref(durable);
	ms_header_free(loaded);
	ms_template_unref(t);
	ms_respond_json(resp, 200, o);
}

/* Live state for a scrape. */
static void ms_node_live(struct ms_node *node, struct ms_metrics_live *live)
{
	memset(live, 0, sizeof(*live));
	ms_diffstore_get_stats(node->diffs, &live->diffs);
	pthread_mutex_lock(&node->lock);
	for (size_t i = 0; i < node->nsandboxes; i++) {
		struct ms_node_sandbox *sb = node->sandboxes[i];
		if (sb->state == SB_RUNNING)
			live->sandboxes_running++;
		else if (sb->state == SB_PAUSED)
			live->sandboxes_paused++;
		if (sb->session)
			ms_uffd_metrics_add(&live->uffd, ms_uffd_session_metrics(sb->session));
	}
	live->templates = node->ntemplates;
	pthread_mutex_unlock(&node->lock);
	ms_node_peers_get_live(node->peers, &live->peers);
	live->uptime_seconds = (double)(ms_clock_now_ns() - node->started_ns) / 1e9;
}

static void ms_handle_metrics(struct ms_node *node, struct ms_node_response *resp)
{
	struct ms_metrics_live live;
	ms_node_live(node, &live);
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	int err = out ? ms_metrics_render(&node->metrics, &live, out) : -ENOMEM;
	if (out && fclose(out) && !err)
		err = -EIO;
	if (err) {
		free(text);
		ms_respond_errno(resp, err, "metrics", NULL);
		return;
	}
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	resp->body = text;
}

static void ms_handle_healthz(struct ms_node *node, struct ms_node_response *resp)
{
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "status", "ok");
		cJSON_AddStringToObject(o, "backend", node->backend->name);
		const char *peer = ms_node_peers_address(node->peers);
		if (peer)
			cJSON_AddStringToObject(o, "peer_address", peer);
		pthread_mutex_lock(&node->lock);
		cJSON_AddNumberToObject(o, "sandboxes", (double)node->nsandboxes);
		cJSON_AddNumberToObject(o, "templates", (double)node->ntemplates);
		pthread_mutex_unlock(&node->lock);
		cJSON *flags = cJSON_AddObjectToObject(o, "flags");
		if (flags) {
			cJSON_AddBoolToObject(flags, "inflight_serve", node->cfg.inflight_serve);
			/* the effective values: what the pipeline really does */
			cJSON_AddBoolToObject(flags, "dedup", node->cfg.dedup);
			cJSON_AddBoolToObject(flags, "dedup_best_effort",
					      node->cfg.dedup && node->cfg.dedup_best_effort);
			cJSON_AddStringToObject(flags, "compress",
						node->cfg.compress == MS_COMPRESS_ZSTD	? "zstd"
						: node->cfg.compress == MS_COMPRESS_LZ4 ? "lz4"
											: "none");
		}
	}
	ms_respond_json(resp, 200, o);
}

void ms_node_handle(struct ms_node *node, const struct ms_api_request *req,
		    struct ms_node_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	pthread_mutex_lock(&node->lock);
	bool stopping = node->stopping;
	pthread_mutex_unlock(&node->lock);
	if (stopping && req->op != MS_API_METRICS && req->op != MS_API_HEALTHZ) {
		ms_respond_error(resp, 503, "shutting_down", "the daemon is shutting down");
		return;
	}
	switch (req->op) {
	case MS_API_SANDBOX_CREATE:
		ms_handle_create(node, req, resp);
		break;
	case MS_API_SANDBOX_LIST:
		ms_handle_list(node, resp);
		break;
	case MS_API_SANDBOX_GET:
	case MS_API_SANDBOX_DELETE:
	case MS_API_SANDBOX_PAUSE:
	case MS_API_SANDBOX_RESUME:
		ms_handle_sandbox_op(node, req, resp);
		break;
	case MS_API_BUILD_GET:
		ms_handle_build(node, req, resp);
		break;
	case MS_API_BUILD_METADATA:
		ms_handle_metadata(node, req, resp);
		break;
	case MS_API_METRICS:
		ms_handle_metrics(node, resp);
		break;
	case MS_API_HEALTHZ:
		ms_handle_healthz(node, resp);
		break;
	}
}

void ms_node_count_request(struct ms_node *node, unsigned status)
{
	unsigned c = status / 100;
	atomic_fetch_add(&node->metrics.http_requests[c >= 1 && c <= 5 ? c : 0], 1);
}

const char *ms_node_backend(struct ms_node *node)
{
	return node->backend->name;
}

const char *ms_node_peer_address(struct ms_node *node)
{
	return ms_node_peers_address(node->peers);
}

/* ---- the janitor: template TTL ---- */

static void *ms_node_janitor(void *arg)
{
	struct ms_node *node = arg;
	pthread_mutex_lock(&node->lock);
	while (!node->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
		int64_t now = ms_clock_now_ns();
		for (size_t i = 0; i < node->ntemplates;) {
			struct ms_template *t = node->templates[i];
			if (t->state != TMPL_READY || !t->done || t->expires_ns > now) {
				i++;
				continue;
			}
			ms_template_remove_at(node, i);
			atomic_fetch_add(&node->metrics.template_evictions, 1);
			pthread_mutex_unlock(&node->lock);
			ms_template_unref(t); /* the last one closes the file */
			pthread_mutex_lock(&node->lock);
		}
	}
	pthread_mutex_unlock(&node->lock);
	return NULL;
}

/*
 * test_peer_die_after: the Nth peer data request lets every upload finish,
 * then the node dies by SIGKILL without answering - a node lost right after
 * its upload, while a peer is in the middle of reading its build.
 */
static int ms_node_peer_die_hook(void *ctx, const struct ms_peer_request *req)
{
	struct ms_node *node = ctx;
	if (req->op != MS_PEER_OP_DATA ||
	    atomic_fetch_add(&node->peer_data_requests, 1) + 1 != node->cfg.test_peer_die_after)
		return 0;
	int64_t deadline = ms_clock_now_ns() + 120 * MS_NSEC_PER_SEC;
	pthread_mutex_lock(&node->lock);
	node->release_uploads = true;
	pthread_cond_broadcast(&node->cond);
	for (;;) {
		unsigned running = 0;
		for (size_t i = 0; i < node->ntemplates; i++)
			running += !node->templates[i]->done;
		if (!running || ms_clock_now_ns() >= deadline)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	ms_warn(MS_MOD, "test_peer_die_after: peer data request %llu: dying (SIGKILL)",
		(unsigned long long)node->cfg.test_peer_die_after);
	kill(getpid(), SIGKILL);
	return 1;
}

/* ---- startup and shutdown ---- */

static int ms_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level == 0 || (ftw->level == 1 && !strcmp(path + ftw->base, MS_LOCK_NAME)))
		return 0; /* the cache dir itself and the lock stay */
	if (remove(path))
		ms_warn(MS_MOD, "cannot remove leftover %s: %s", path, strerror(errno));
	return 0;
}

/*
 * Takes the cache dir (created if missing) for this daemon: an exclusive
 * flock on its lock file, so a second daemon never wipes a live one's files.
 */
static int ms_node_lock_dir(const char *dir, int *fd_out)
{
	char path[MS_NODE_PATH_MAX + 32];
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/%s", dir, MS_LOCK_NAME);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return err;
	}
	*fd_out = fd;
	return 0;
}

/* Empties dir (but its lock); nothing in it survives a restart. */
static int ms_node_clean_dir(const char *dir, unsigned *removed)
{
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	*removed = 0;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    strcmp(e->d_name, MS_LOCK_NAME))
			(*removed)++;
	closedir(d);
	if (*removed && nftw(dir, ms_rm_entry, 16, FTW_DEPTH | FTW_PHYS))
		return -errno;
	return 0;
}

struct ms_node *ms_node_new(const struct ms_node_config *cfg, int *err, char *why, size_t why_len)
{
	struct ms_node *node = calloc(1, sizeof(*node));
	if (!node) {
		*err = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	node->cfg = *cfg;
	node->started_ns = ms_clock_now_ns();
	node->lock_fd = -1;
	pthread_mutex_init(&node->lock, NULL);
	pthread_cond_init(&node->cond, NULL);
	ms_metrics_init(&node->metrics);
	if ((*err = ms_sandbox_backend_pick(cfg->backend, &node->backend, node->backend_why,
					    sizeof(node->backend_why)))) {
		snprintf(why, why_len, "backend: %s", node->backend_why);
		goto fail;
	}
	if ((*err = ms_node_lock_dir(cfg->cache_dir, &node->lock_fd))) {
		snprintf(why, why_len, "cache_dir %s: %s", cfg->cache_dir,
			 *err == -EBUSY ? "another memsnapd uses it" : ms_strerror(*err));
		goto fail;
	}
	unsigned removed = 0;
	if ((*err = ms_node_clean_dir(cfg->cache_dir, &removed))) {
		snprintf(why, why_len, "cache_dir %s: %s", cfg->cache_dir, ms_strerror(*err));
		goto fail;
	}
	if (removed)
		ms_info(MS_MOD, "removed %u leftovers from %s", removed, cfg->cache_dir);
	if (mkdir(cfg->run_dir, 0700) && errno != EEXIST) {
		*err = -errno;
		snprintf(why, why_len, "run_dir %s: %s", cfg->run_dir, strerror(errno));
		goto fail;
	}
	node->store = ms_store_open(cfg->store, cfg->s3_endpoint[0] ? cfg->s3_endpoint : NULL, err);
	if (!node->store) {
		snprintf(why, why_len, "store %s: %s", cfg->store, ms_strerror(*err));
		goto fail;
	}
	if (cfg->s3_create_bucket && !strncmp(cfg->store, "s3://", 5) &&
	    (*err = ms_store_s3_create_bucket(node->store))) {
		snprintf(why, why_len, "store %s: cannot create the bucket: %s", cfg->store,
			 ms_strerror(*err));
		goto fail;
	}
	if (cfg->test_store_delay_ns > 0) {
		struct ms_delay_store *d = calloc(1, sizeof(*d));
		if (!d) {
			*err = -ENOMEM;
			snprintf(why, why_len, "out of memory");
			goto fail;
		}
		d->base.ops = &ms_delay_store_ops;
		d->inner = node->store;
		d->delay_ns = cfg->test_store_delay_ns;
		node->store = &d->base;
	}
	struct ms_diffstore_config dcfg = {.cache_dir = node->cfg.cache_dir};
	if (!(node->diffs = ms_diffstore_new(&dcfg, err))) {
		snprintf(why, why_len, "diff store: %s", ms_strerror(*err));
		goto fail;
	}
	node->storage = (struct ms_build_storage){.store = node->store,
						  .diffs = node->diffs,
						  .cache_dir = node->cfg.cache_dir,
						  .data = MS_ARTIFACT_MEMFILE};
	if (!(node->peers =
		  ms_node_peers_new(&node->cfg, &node->storage,
				    cfg->test_peer_die_after ? ms_node_peer_die_hook : NULL, node,
				    err, why, why_len)))
		goto fail;
	node->resolve = ms_node_peers_resolve(node->peers, &node->resolve_ctx);
	if (ms_node_peers_address(node->peers))
		ms_info(MS_MOD, "serving builds to peers on %s",
			ms_node_peers_address(node->peers));
	if ((*err = -pthread_create(&node->janitor, NULL, ms_node_janitor, node))) {
		snprintf(why, why_len, "janitor thread: %s", ms_strerror(*err));
		goto fail;
	}
	node->janitor_started = true;
	ms_info(MS_MOD, "sandbox backend: %s", node->backend_why);
	return node;
fail:
	ms_node_free(node);
	return NULL;
}

unsigned ms_node_shutdown(struct ms_node *node)
{
	pthread_mutex_lock(&node->lock);
	node->stopping = true;
	pthread_cond_broadcast(&node->cond); /* stalls and the janitor end */
	struct ms_node_sandbox **sandboxes = node->sandboxes;
	size_t nsandboxes = node->nsandboxes;
	node->sandboxes = NULL;
	node->nsandboxes = node->sandboxes_cap = 0;
	pthread_mutex_unlock(&node->lock);
	if (node->janitor_started) {
		pthread_join(node->janitor, NULL);
		node->janitor_started = false;
	}
	/* running sandboxes stop: their VMs are killed (a node shutdown ends them) */
	for (size_t i = 0; i < nsandboxes; i++) {
		struct ms_node_sandbox *sb = sandboxes[i];
		pthread_mutex_lock(&sb->op);
		ms_nsb_teardown(sb);
		sb->deleted = true;
		pthread_mutex_unlock(&sb->op);
		ms_nsb_unref(sb);
	}
	free(sandboxes);
	/* uploads finish (bounded by shutdown_timeout); fetches end */
	int64_t deadline = ms_clock_now_ns() + node->cfg.shutdown_timeout_ns;
	unsigned unfinished = 0;
	pthread_mutex_lock(&node->lock);
	for (;;) {
		unfinished = node->fetches;
		for (size_t i = 0; i < node->ntemplates; i++)
			unfinished += !node->templates[i]->done;
		if (!unfinished || ms_clock_now_ns() >= deadline)
			break;
		ms_info(MS_MOD, "shutdown: waiting for %u uploads and fetches", unfinished);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
	}
	pthread_mutex_unlock(&node->lock);
	if (unfinished)
		ms_err(MS_MOD, "shutdown: %u uploads or fetches did not finish in time",
		       unfinished);
	return unfinished;
}

void ms_node_free(struct ms_node *node)
{
	if (!node)
		return;
	if (node->janitor_started || node->nsandboxes)
		ms_node_shutdown(node);
	/* no peer request holds a build's file once this returns */
	ms_node_peers_stop_server(node->peers);
	for (size_t i = 0; i < node->ntemplates; i++)
		ms_template_unref(node->templates[i]);
	free(node->templates);
	if (node->diffs)
		ms_diffstore_free(node->diffs);
	/* after the diff store: its routing sources were the resolver's */
	ms_node_peers_free(node->peers);
	if (node->store)
		ms_store_free(node->store);
	ms_metrics_fini(&node->metrics);
	if (node->lock_fd >= 0)
		close(node->lock_fd);
	pthread_cond_destroy(&node->cond);
	pthread_mutex_destroy(&node->lock);
	free(node);
}
