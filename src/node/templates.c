/*
 * templates.c - the template cache: every build this node knows, keyed by
 * build id, with the layered file a resume serves from and the snapfile; the
 * cold fetch of a missing build (from a peer that holds it, else the store);
 * the store poller of a build read from a peer; the follower thread that
 * marks the end of a local pause's pipeline; and the janitor that evicts by TTL.
 *
 * Locks: node->lock guards the table and the template fields marked so in
 * node_int.h; it is never held across store I/O or a pipeline wait.
 *
 * Invariants:
 *  1. A template in the cache holds one reference; the last reference (a
 *     running sandbox, a child pause) closes the file.
 *  2. TTL from insertion, extended by a hit, never shortened; a template
 *     whose pipeline has not ended (done) is never evicted.
 *  3. Concurrent misses of one build share one fetch (one LOADING entry);
 *     a failed fetch removes its entry, so the next miss fetches again.
 *  4. A template is freed only after its follower and poller were joined.
 */
#include "node/node_int.h"
#include "header/header.h"
#include "storage/artifact.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/lock.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define P      MS_PAGE_SIZE
#define MS_MOD "node"

struct ms_template *ms_template_ref(struct ms_template *t)
{
	atomic_fetch_add(&t->refs, 1);
	return t;
}

void ms_template_reading(struct ms_template *t, bool reading)
{
	if (t && t->pause) {
		if (reading)
			ms_pause_user_ref(t->pause);
		else
			ms_pause_user_unref(t->pause);
	}
}

void ms_template_unref(struct ms_template *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	struct ms_node *node = t->node;
	if (t->following)
		pthread_join(t->follower, NULL);
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
	if (t->drain_gate)
		ms_future_unref(t->drain_gate);
	if (t->loaded)
		ms_future_unref(t->loaded);
	if (t->in_store)
		ms_future_unref(t->in_store);
	if (t->upload_gate)
		ms_future_unref(t->upload_gate);
	ms_template_reading(t->parent, false);
	ms_template_unref(t->parent);
	free(t->snapfile);
	free(t->metadata);
	free(t);
}

struct ms_template *ms_template_alloc(struct ms_node *node, const ms_uuid *id)
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

ssize_t ms_template_index_locked(struct ms_node *node, const ms_uuid *id)
{
	MS_ASSERT_HELD(&node->lock);
	for (size_t i = 0; i < node->ntemplates; i++)
		if (ms_uuid_eq(&node->templates[i]->id, id))
			return (ssize_t)i;
	return -1;
}

struct ms_template *ms_template_find_ready(struct ms_node *node, const ms_uuid *id)
{
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_template_index_locked(node, id);
	struct ms_template *t = i >= 0 && node->templates[i]->state == TMPL_READY
				    ? ms_template_ref(node->templates[i])
				    : NULL;
	pthread_mutex_unlock(&node->lock);
	return t;
}

int ms_template_insert_locked(struct ms_node *node, struct ms_template *t)
{
	MS_ASSERT_HELD(&node->lock);
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

struct ms_template *ms_template_remove_at_locked(struct ms_node *node, size_t i)
{
	MS_ASSERT_HELD(&node->lock);
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
			if (!ms_build_storage_key(&node->builds.storage, &t->id, key,
						  sizeof(key)) &&
			    !ms_diffstore_get(node->builds.diffs, key, &src)) {
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
	int err = ms_node_peers_load(node->peers, &t->id, MS_NODE_SNAPFILE_MAX, &blobs);
	if (!err) {
		t->mem_size = blobs.header->meta.size;
		t->guest = blobs.guest;
		t->snapfile = blobs.snapfile;
		t->snapfile_len = blobs.snapfile_len;
		t->metadata = blobs.metadata;
		t->metadata_len = blobs.metadata_len;
		t->from_peer = blobs.from_peer;
		if (!(t->file = ms_build_cache_file(&node->builds, blobs.header, node->resolve,
						    node->resolve_ctx)))
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
		ssize_t i = ms_template_index_locked(node, &t->id);
		if (i >= 0 && node->templates[i] == t)
			dropped = ms_template_remove_at_locked(node, (size_t)i);
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

int ms_template_get(struct ms_node *node, const ms_uuid *id, struct ms_template **out,
		    enum ms_start_type *start_type)
{
	pthread_mutex_lock(&node->lock);
	ssize_t i = ms_template_index_locked(node, id);
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
		int err = !f || !t || !t->loaded ? -ENOMEM : ms_template_insert_locked(node, t);
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
				    ms_template_remove_at_locked(node, node->ntemplates - 1));
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

bool ms_pause_timing_ms(const struct ms_pause_stats *stats, enum ms_pause_timing timing, double *ms)
{
	int64_t took;
	switch (timing) {
	case MS_TIMING_COMPARE: /* from the pause to the durable header: a stalled compare too */
		took = ms_pause_stats_took(stats, MS_PAUSE_COMPARED);
		break;
	case MS_TIMING_DRAIN:
		took = ms_pause_stats_took(stats, MS_PAUSE_DRAINED);
		break;
	case MS_TIMING_UPLOAD: /* drained to published */
		took = ms_pause_stats_between(stats, MS_PAUSE_DRAINED, MS_PAUSE_PUBLISHED);
		break;
	default: /* stop and resumable are the node's own (ms_template.stop_ms, ...) */
		return false;
	}
	if (took < 0)
		return false;
	*ms = (double)took / 1e6;
	return true;
}

/* The lifecycle line of a pause's end: published (info) or failed (error). */
static void ms_template_log_end(const struct ms_template *t, int err, uint64_t bytes)
{
	char build[MS_UUID_STR_LEN];
	ms_uuid_format(&t->id, build);
	if (!err)
		ms_info_ids(MS_MOD, NULL, build, "build published (%llu bytes uploaded)",
			    (unsigned long long)bytes);
	else
		ms_log_fields(MS_LOG_ERROR, MS_MOD,
			      (const struct ms_log_field[]){{"build_id", build}}, 1,
			      "build failed: %s", ms_strerror(err));
}

/*
 * A local pause ended (published, or failed with err): its figures go into the
 * histograms, its peer record goes, and it is done (evictable; shutdown stops
 * waiting for it). The pipeline itself counted pages and bytes.
 */
void ms_template_ended(struct ms_template *t, int err)
{
	struct ms_node *node = t->node;
	struct ms_pause_stats stats;
	ms_pause_stats(t->pause, &stats);
	static const enum ms_pause_timing timed[] = {MS_TIMING_COMPARE, MS_TIMING_DRAIN,
						     MS_TIMING_UPLOAD};
	for (size_t i = 0; i < sizeof(timed) / sizeof(timed[0]); i++) {
		double ms;
		if (ms_pause_timing_ms(&stats, timed[i], &ms))
			ms_histogram_observe(&node->metrics.pause_stage[timed[i]], ms / 1e3);
	}
	if (stats.at_ns[MS_PAUSE_COMPARED] >= 0 && t->mem_size) {
		double pages = (double)(t->mem_size / P);
		ms_histogram_observe(&node->metrics.diff_ratio[MS_DIFF_DIRTY],
				     (double)stats.pages_dirty / pages);
		ms_histogram_observe(&node->metrics.diff_ratio[MS_DIFF_STORED],
				     (double)stats.pages_kept / pages);
	}
	ms_template_log_end(t, err, stats.upload_bytes);
	atomic_fetch_add(err ? &node->metrics.pauses_failed : &node->metrics.pauses_published, 1);
	if (t->upload_gate) /* a pipeline that failed before its upload never waited */
		ms_future_set(t->upload_gate, NULL);
	if (t->drain_gate)
		ms_future_set(t->drain_gate, NULL);
	if (t->served) /* the record goes; published: peers are sent to the store */
		ms_node_peers_uploaded(node->peers, &t->id, !err);
	/* failed: what its upload put in the store goes too (no header: nothing reads it) */
	bool lost = false;
	int left = err ? ms_node_remove_leftovers(node, &t->id, &lost) : 0;
	if (left) {
		char text[MS_UUID_STR_LEN];
		ms_uuid_format(&t->id, text);
		ms_warn(MS_MOD, "build %s: its leftovers stay for the next start: %s", text,
			ms_strerror(left));
	} else {
		ms_node_journal_done(node, &t->id);
	}
	pthread_mutex_lock(&node->lock);
	t->error = err;
	t->done = true;
	pthread_cond_broadcast(&node->cond);
	pthread_mutex_unlock(&node->lock);
}

/*
 * One per local pause: runs its test holds (if any), waits for the pipeline's
 * end and records it. What the pipeline did on the way is read from
 * ms_pause_state/ms_pause_stats when asked; this thread only marks the end.
 */
void *ms_template_follow(void *arg)
{
	struct ms_template *t = arg;
	if (t->gate)
		ms_node_hook_stall_compare(t);
	if (t->drain_gate)
		ms_node_hook_stall_drain(t);
	if (t->node->cfg.test_hold_upload[0])
		ms_node_hook_hold_upload(t);
	ms_template_ended(t, ms_pause_wait(t->pause, MS_PAUSE_PUBLISHED, -1));
	return NULL;
}

/* ---- the janitor: template TTL, and the recovery of a crash when the start could not ---- */

void *ms_node_janitor(void *arg)
{
	struct ms_node *node = arg;
	pthread_mutex_lock(&node->lock);
	while (!node->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&node->cond, &node->lock, &ts);
		if (node->recovery_pending && !node->stopping) {
			/* a crash's leftovers the store did not let the start remove */
			pthread_mutex_unlock(&node->lock);
			unsigned pending = 0;
			ms_node_recover(node, &pending);
			pthread_mutex_lock(&node->lock);
			node->recovery_pending = pending > 0;
		}
		int64_t now = ms_clock_now_ns();
		for (size_t i = 0; i < node->ntemplates;) {
			struct ms_template *t = node->templates[i];
			if (t->state != TMPL_READY || !t->done || t->expires_ns > now) {
				i++;
				continue;
			}
			ms_template_remove_at_locked(node, i);
			atomic_fetch_add(&node->metrics.template_evictions, 1);
			pthread_mutex_unlock(&node->lock);
			ms_template_unref(t); /* the last one closes the file */
			pthread_mutex_lock(&node->lock);
		}
	}
	pthread_mutex_unlock(&node->lock);
	return NULL;
}
