/*
 * pause.c - the pause pipeline's state machine (drawn in pause.h).
 *
 * Each stage settles one future; a failure fails every unsettled one with
 * the same error. The pipeline thread owns the memfd reference, the dedup
 * result and the diff file; the caller owns the struct until ms_pause_free,
 * which joins the thread.
 */
#include "snapshot/pause.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "snapshot/dedup.h"
#include "snapshot/memfd.h"
#include "storage/artifact.h"
#include "storage/frames.h"
#include "util/backoff.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct ms_pause {
	struct ms_pause_config config;	   /* immutable; strings borrowed */
	struct ms_build_storage storage;   /* the new file's resolver (diff store + store) */
	struct ms_layered *parent;	   /* borrowed */
	struct ms_header_ref *parent_head; /* the parent's durable header */
	struct ms_memfd *memfd;		   /* released by the pipeline after the drain */
	struct ms_pageset *dirty, *empty;
	void *snapfile;
	size_t snapfile_len;
	ms_uuid real_id, prov_id;
	struct ms_header_ref *prov_head; /* the provisional header (inflight only) */
	struct ms_source *identity;	 /* the memfd identity source (inflight only) */
	struct ms_source *packed;	 /* the memfd through the packed index (one ref) */
	struct ms_layered *file;	 /* set before COMPARED settles; then immutable */
	struct ms_future *stages[MS_PAUSE_STAGES];
	struct ms_dedup_result result; /* pipeline thread only, until COMPARED */
	char diff_path[4096];
	pthread_t thread;
	bool thread_started;
	int64_t t_start, t_step; /* pipeline thread only (t_step: the current step's start) */
	/* inflight only: the swap runs on its own thread while the pipeline drains */
	struct ms_future *swapped;	 /* settled by the swap thread on every exit path */
	struct ms_header *deduped;	 /* handed to the swap thread */
	struct ms_header_ref *durable;	 /* handed to the swap thread: COMPARED's value */
	struct ms_layered *deduped_view; /* the deduped header alone: straddling reads */
	pthread_t swap_thread;
	bool swap_started;
	pthread_mutex_t stats_lock;
	struct ms_pause_stats stats; /* guarded by stats_lock */
	enum ms_pause_state state;   /* guarded by stats_lock */
	int64_t t_deduped;	     /* the deduped header was built (read by the swap thread) */
	/* pipeline thread (then ms_pause_free): the pins this pause holds in the diff
	 * store, and the memfd pages already summed into config.counters */
	bool prov_pinned, real_pinned;
	uint64_t counted_provisional, counted_packed;
};

/* Counts a caller-owned counter, if the caller gave any. */
#define MS_PAUSE_COUNT(p, field, n)                                                                \
	do {                                                                                       \
		if ((p)->config.counters)                                                          \
			atomic_fetch_add(&(p)->config.counters->field, (n));                       \
	} while (0)

/* The step that began at p->t_step is done; the next one begins now. */
static void ms_pause_step_done(struct ms_pause *p, enum ms_pause_step step)
{
	int64_t now = ms_clock_now_ns();
	pthread_mutex_lock(&p->stats_lock);
	p->stats.step_ns[step] = now - p->t_step;
	pthread_mutex_unlock(&p->stats_lock);
	p->t_step = now;
}

static void ms_pause_set_state(struct ms_pause *p, enum ms_pause_state state)
{
	pthread_mutex_lock(&p->stats_lock);
	p->state = state;
	pthread_mutex_unlock(&p->stats_lock);
}

static bool ms_pause_transient(int err)
{
	return err == -ETIMEDOUT || err == -ECONNRESET || err == -ECONNREFUSED || err == -EAGAIN ||
	       err == -EIO || err == -EPIPE || err == -EHOSTUNREACH || err == -ENETUNREACH;
}

/*
 * Puts one object: from fd (size bytes from offset 0) or from buf; a transient
 * error is tried again with backoff, any other stops at once. Objects are atomic,
 * so a failed try leaves nothing behind.
 */
static int ms_pause_put(struct ms_pause *p, const char *key, int fd, const void *buf, uint64_t size)
{
	struct ms_backoff b;
	ms_backoff_init(&b, 50 * MS_NSEC_PER_MSEC, MS_NSEC_PER_SEC,
			p->config.upload_attempts ? p->config.upload_attempts : 4);
	for (;;) {
		int err = fd >= 0 ? ms_store_put_file(p->config.store, key, fd, size, NULL)
				  : ms_store_put_buf(p->config.store, key, buf, (size_t)size, NULL);
		int64_t delay;
		if (!err) {
			pthread_mutex_lock(&p->stats_lock);
			p->stats.upload_bytes += size;
			pthread_mutex_unlock(&p->stats_lock);
			MS_PAUSE_COUNT(p, upload_bytes, size);
			return 0;
		}
		if (!ms_pause_transient(err) || !ms_backoff_next(&b, &delay)) {
			pthread_mutex_lock(&p->stats_lock);
			p->stats.upload_failures++;
			pthread_mutex_unlock(&p->stats_lock);
			MS_PAUSE_COUNT(p, upload_failures, 1);
			ms_warn("snapshot", "put %s failed: %s%s", key, ms_strerror(err),
				ms_pause_transient(err) ? " (no attempt left)" : " (not retried)");
			return err;
		}
		ms_info("snapshot", "put %s: %s, trying again in %lld ms", key, ms_strerror(err),
			(long long)(delay / MS_NSEC_PER_MSEC));
		pthread_mutex_lock(&p->stats_lock);
		p->stats.upload_retries++;
		pthread_mutex_unlock(&p->stats_lock);
		MS_PAUSE_COUNT(p, upload_retries, 1);
		ms_clock_sleep_ns(delay);
	}
}

static void ms_pause_fail(struct ms_pause *p, int err)
{
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&p->real_id, id);
	ms_err("snapshot", "pause of build %s failed: %s", id, ms_strerror(err));
	pthread_mutex_lock(&p->stats_lock);
	p->stats.error = err;
	p->state = MS_PAUSE_STATE_FAILED;
	pthread_mutex_unlock(&p->stats_lock);
	MS_PAUSE_COUNT(p, failed, 1);
	for (int s = 0; s < MS_PAUSE_STAGES; s++)
		ms_future_fail(p->stages[s], err);
}

/* A layered file over header that resolves builds as config.resolve says. */
static struct ms_layered *ms_pause_layered_new(struct ms_pause *p, struct ms_header *header)
{
	if (p->config.resolve)
		return ms_layered_new(header, p->config.resolve, p->config.resolve_ctx);
	return ms_layered_new(header, ms_build_storage_resolve, &p->storage);
}

static int ms_pause_key(struct ms_pause *p, const ms_uuid *id, char key[MS_ARTIFACT_KEY_MAX])
{
	return ms_build_storage_key(&p->storage, id, key, MS_ARTIFACT_KEY_MAX);
}

/* Registers src under id's key, pinned (then *pinned); takes over the caller's reference. */
static int ms_pause_register(struct ms_pause *p, const ms_uuid *id, struct ms_source *src,
			     bool *pinned)
{
	char key[MS_ARTIFACT_KEY_MAX];
	int err = src ? ms_pause_key(p, id, key) : -ENOMEM;
	if (!err && !(err = ms_diffstore_insert(p->config.diffs, key, src)))
		err = ms_diffstore_pin(p->config.diffs, key);
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
 * The swap thread: provisional -> deduped by compare-and-swap (a file that
 * already moved on keeps its newer header), then COMPARED with the durable
 * header. It settles p->swapped on every exit path.
 */
static void *ms_pause_swap_main(void *arg)
{
	struct ms_pause *p = arg;
	if (p->config.swap_gate)
		ms_future_wait(p->config.swap_gate, NULL);
	int err = ms_layered_swap_if_current(p->file, p->prov_head, p->deduped);
	if (err == -EAGAIN) {
		ms_header_free(p->deduped);
		err = 0;
	}
	p->deduped = NULL; /* the file's now, or freed */
	if (err) {
		ms_header_ref_unref(p->durable);
		p->durable = NULL;
		ms_future_fail(p->swapped, err);
		return NULL;
	}
	int64_t now = ms_clock_now_ns();
	pthread_mutex_lock(&p->stats_lock);
	p->stats.step_ns[MS_PAUSE_STEP_COMPARE] =
	    now - p->t_start - p->stats.step_ns[MS_PAUSE_STEP_PROVISIONAL];
	p->stats.step_ns[MS_PAUSE_STEP_SWAP] = now - p->t_deduped;
	pthread_mutex_unlock(&p->stats_lock);
	struct ms_header_ref *durable = p->durable;
	p->durable = NULL;
	if (ms_future_set(p->stages[MS_PAUSE_COMPARED], durable))
		ms_header_ref_unref(durable); /* the pipeline failed meanwhile */
	ms_future_set(p->swapped, NULL);
	return NULL;
}

static int ms_pause_compare(struct ms_pause *p)
{
	if (p->config.compare_gate)
		ms_future_wait(p->config.compare_gate, NULL);
	ms_pause_set_state(p, MS_PAUSE_STATE_DEDUPING);
	int err = ms_dedup_compare(p->memfd, p->dirty, p->parent, p->config.dedup, &p->result);
	if (err)
		return err;
	/* pages the tracker knows are zero, and not written since, are empty too */
	struct ms_pageset *known_zero = ms_pageset_copy(p->empty);
	if (!known_zero)
		return -ENOMEM;
	ms_pageset_subtract(known_zero, p->dirty);
	ms_pageset_union(p->result.empty, known_zero);
	ms_pageset_free(known_zero);
	/* the figures are in place before COMPARED settles (the swap thread settles it) */
	pthread_mutex_lock(&p->stats_lock);
	p->stats.pages_dirty = p->result.dirty_pages;
	p->stats.pages_equal = p->result.equal_pages;
	p->stats.pages_zero = ms_pageset_count(p->result.empty);
	p->stats.pages_kept = ms_pageset_count(p->result.keep);
	pthread_mutex_unlock(&p->stats_lock);
	MS_PAUSE_COUNT(p, pages_dirty, p->stats.pages_dirty);
	MS_PAUSE_COUNT(p, pages_equal, p->stats.pages_equal);
	MS_PAUSE_COUNT(p, pages_zero, p->stats.pages_zero);
	MS_PAUSE_COUNT(p, pages_kept, p->stats.pages_kept);
	/* the packed index is installed before the deduped header can name the real id */
	if (!(p->packed = ms_memfd_packed_source_new(p->memfd, p->result.keep)))
		return -ENOMEM;
	if ((err = ms_pause_register(p, &p->real_id, ms_source_ref(p->packed), &p->real_pinned)))
		return err;
	struct ms_header *deduped;
	if ((err = ms_header_new_diff(p->parent_head->header, &p->real_id, p->result.keep,
				      p->result.empty, MS_PAGE_SIZE, false, &deduped)))
		return err;
	if (p->config.header_version)
		deduped->meta.version = p->config.header_version;
	struct ms_header *durable_copy = ms_header_copy(deduped);
	struct ms_header_ref *durable = durable_copy ? ms_header_ref_new(durable_copy) : NULL;
	if (!durable) {
		ms_header_free(deduped);
		return -ENOMEM;
	}
	if (p->file) {
		/*
		 * The swap runs on its own thread while this one drains. A read planned on
		 * the provisional header that reaches the memfd after its release is served
		 * through the deduped header (a view of its own, whatever the file holds).
		 */
		struct ms_header *view = ms_header_copy(deduped);
		if (!view || !(p->deduped_view = ms_pause_layered_new(p, view))) {
			ms_header_free(deduped);
			ms_header_ref_unref(durable);
			return -ENOMEM;
		}
		ms_memfd_identity_set_fallback(p->identity, p->deduped_view);
		p->deduped = deduped;
		p->durable = durable;
		p->t_deduped = ms_clock_now_ns();
		if ((err = pthread_create(&p->swap_thread, NULL, ms_pause_swap_main, p))) {
			p->deduped = NULL;
			p->durable = NULL;
			ms_header_free(deduped);
			ms_header_ref_unref(durable);
			return -err;
		}
		p->swap_started = true;
		p->t_step = ms_clock_now_ns(); /* the drain's time starts now */
	} else {
		p->file = ms_pause_layered_new(p, deduped);
		if (p->file)
			ms_layered_set_durable_future(p->file, p->stages[MS_PAUSE_COMPARED]);
		err = p->file ? 0 : -ENOMEM;
		if (err) {
			ms_header_ref_unref(durable);
			return err;
		}
	}
	if (!p->swap_started) { /* no provisional header: the file was made from it */
		ms_pause_step_done(p, MS_PAUSE_STEP_COMPARE);
		ms_future_set(p->stages[MS_PAUSE_COMPARED], durable);
	}
	return 0;
}

static int ms_pause_drain(struct ms_pause *p)
{
	char id[MS_UUID_STR_LEN];
	ms_uuid_format(&p->real_id, id);
	snprintf(p->diff_path, sizeof(p->diff_path), "%s/%s.memfile", p->config.cache_dir, id);
	int err = ms_dedup_drain(p->memfd, p->result.keep, p->diff_path, NULL);
	if (err)
		return err;
	struct ms_source *file = ms_source_file_open(p->diff_path, true, &err);
	if (!file)
		return err;
	char key[MS_ARTIFACT_KEY_MAX];
	if (!(err = ms_pause_key(p, &p->real_id, key)))
		err = ms_diffstore_replace(p->config.diffs, key, file);
	ms_source_unref(file);
	if (err)
		return err;
	/* drain done; and the file left the provisional header, or the grace passed */
	int64_t written = ms_clock_now_ns();
	enum ms_pause_release cause = MS_PAUSE_RELEASE_NO_PROVISIONAL;
	if (p->swap_started) {
		int64_t grace = p->config.grace_ns > 0 ? p->config.grace_ns : 30 * MS_NSEC_PER_SEC;
		err = ms_future_wait_timeout(p->swapped, grace, NULL);
		if (err == -ETIMEDOUT) {
			ms_warn("snapshot",
				"build %s: no swap to the deduped header within %lld ms after the "
				"drain: releasing the memory anyway (reads go through the deduped "
				"header)",
				id, (long long)(grace / MS_NSEC_PER_MSEC));
			MS_PAUSE_COUNT(p, swap_grace_elapsed, 1);
			cause = MS_PAUSE_RELEASE_GRACE;
			err = 0;
		} else if (err) {
			return err; /* the swap failed: so does the pause */
		} else {
			cause = MS_PAUSE_RELEASE_SWAP;
		}
	}
	ms_memfd_release(p->memfd);
	pthread_mutex_lock(&p->stats_lock);
	p->stats.release = cause;
	p->stats.step_ns[MS_PAUSE_STEP_RELEASE] = ms_clock_now_ns() - written;
	p->state = MS_PAUSE_STATE_UPLOADING; /* before DRAINED is signalled */
	pthread_mutex_unlock(&p->stats_lock);
	/*
	 * After a grace release the file may still plan on the provisional header: its
	 * entry stays until the swap has landed (ms_pause_main, after the join), or a
	 * read after its delayed delete would ask the object store for the provisional
	 * build - which never leaves the node.
	 */
	if (cause != MS_PAUSE_RELEASE_GRACE)
		ms_pause_unpin(p, &p->prov_id, &p->prov_pinned, true);
	ms_pause_step_done(p, MS_PAUSE_STEP_DRAIN);
	ms_future_set(p->stages[MS_PAUSE_DRAINED], NULL);
	return 0;
}

/*
 * The diff as independent compressed frames: written to a temporary file next
 * to the diff, uploaded as "{id}/memfile.zstd|.lz4"; the frame table and the
 * SHA-256 of the uncompressed data go into self.
 */
static int ms_pause_put_compressed(struct ms_pause *p, int fd, uint64_t size,
				   struct ms_build_data *self)
{
	char tmp[4200], key[MS_ARTIFACT_KEY_MAX];
	snprintf(tmp, sizeof(tmp), "%s.frames", p->diff_path);
	int out = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	int err = ms_frames_compress_fd(fd, size, p->config.compress, 0, MS_FRAME_DEFAULT_SIZE, out,
					&self->frames, self->checksum);
	if (!err) {
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE,
				p->config.compress);
		err =
		    ms_pause_put(p, key, out, NULL, (uint64_t)ms_frame_table_size_c(self->frames));
	}
	close(out);
	unlink(tmp);
	return err;
}

/*
 * The builds entries (size, checksum, frame table) of the ancestors final maps,
 * as research/e2b.md §3.2 appendAncestorBuilds does: a child paused while an
 * ancestor was still uploading inherited a header without that ancestor's
 * entry, and without the frame table a compressed ancestor cannot be read from
 * the store. Called once the parent is published: the parent's live header is
 * then its finalized one, which carries its own ancestors' entries the same
 * way. An entry still missing is taken from the ancestor's own header in the
 * store; an ancestor without one there (a V3 chain) keeps the gap, which the
 * resolver fills from the object's size. On error final may have gained
 * entries; it is the caller's to free.
 */
static int ms_pause_fill_ancestors(struct ms_pause *p, struct ms_header *final)
{
	if (!final->has_builds)
		return 0;
	struct ms_header_ref *parent = NULL;
	int err = ms_layered_durable_header(p->parent, -1, &parent);
	for (size_t i = 0; !err && i < final->mappings.count; i++) {
		const ms_uuid *id = &final->mappings.entries[i].build_id;
		if (ms_uuid_is_nil(id) || ms_uuid_eq(id, &p->real_id) || ms_header_build(final, id))
			continue;
		const struct ms_build_data *entry = ms_header_build(parent->header, id);
		struct ms_header *own = NULL;
		if (!entry) {
			err = ms_build_storage_load_header(p->config.store, id,
							   MS_ARTIFACT_MEMFILE_HEADER, &own);
			if (!err)
				entry = ms_header_build(own, id);
			else if (err == MS_ENOTFOUND)
				err = 0;
		}
		if (!err && entry)
			err = ms_header_set_build(final, entry);
		else if (!err) {
			char text[MS_UUID_STR_LEN];
			ms_uuid_format(id, text);
			ms_info("snapshot", "ancestor %s has no builds entry anywhere: left out",
				text);
		}
		ms_header_free(own);
	}
	ms_header_ref_unref(parent);
	return err;
}

/*
 * Data first, then the snapfile, then the header (DESIGN.md §5.7); only the
 * header waits for the parent to be published (its ancestors were before it):
 * the data goes up meanwhile. If the parent never makes it, the data stays in
 * the store unreferenced - no header names it - and this pause fails.
 */
static int ms_pause_upload(struct ms_pause *p)
{
	if (p->config.upload_gate)
		ms_future_wait(p->config.upload_gate, NULL);
	int err;
	char key[MS_ARTIFACT_KEY_MAX];
	int fd = open(p->diff_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st)) {
		err = -errno;
		close(fd);
		return err;
	}
	struct ms_build_data self = {.build_id = p->real_id, .size = st.st_size};
	if (p->config.compress != MS_COMPRESS_NONE)
		err = ms_pause_put_compressed(p, fd, (uint64_t)st.st_size, &self);
	else {
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE,
				MS_COMPRESS_NONE);
		err = ms_pause_put(p, key, fd, NULL, (uint64_t)st.st_size);
	}
	close(fd);
	if (err) {
		ms_frame_table_free(self.frames);
		return err;
	}
	ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_SNAPFILE, MS_COMPRESS_NONE);
	void *value;
	struct ms_header *final = NULL;
	if (!(err = ms_pause_put(p, key, -1, p->snapfile, p->snapfile_len)) &&
	    /* an ancestor that never reached the store: no child header */
	    !(err = p->config.parent_published ? ms_future_wait(p->config.parent_published, NULL)
					       : 0) &&
	    !(err = ms_future_wait(p->stages[MS_PAUSE_COMPARED], &value)) &&
	    !(final = ms_header_copy(((struct ms_header_ref *)value)->header)))
		err = -ENOMEM;
	if (err) {
		ms_frame_table_free(self.frames);
		return err;
	}
	final->incomplete = false;
	uint8_t *blob = NULL;
	size_t len;
	err = ms_header_set_build(final, &self);
	ms_frame_table_free(self.frames);
	if (!err)
		err = ms_pause_fill_ancestors(p, final);
	if (!err && !(err = ms_header_serialize(final, 0, false, &blob, &len))) {
		ms_artifact_key(key, sizeof(key), &p->real_id, MS_ARTIFACT_MEMFILE_HEADER,
				MS_COMPRESS_NONE);
		err = ms_pause_put(p, key, -1, blob, len);
	}
	free(blob);
	if (!err)
		ms_pause_step_done(p, MS_PAUSE_STEP_UPLOAD);
	if (!err) /* publish: the only unconditional swap */
		err = ms_layered_swap(p->file, final);
	else
		ms_header_free(final);
	if (!err)
		ms_pause_step_done(p, MS_PAUSE_STEP_PUBLISH);
	if (!err)
		ms_pause_unpin(p, &p->real_id, &p->real_pinned, false);
	return err;
}

/* Pages the memfd served so far, by phase. */
static void ms_pause_served(struct ms_pause *p, uint64_t *provisional, uint64_t *packed)
{
	*provisional = p->identity ? ms_memfd_source_bytes_served(p->identity) / MS_PAGE_SIZE : 0;
	struct ms_source *src = NULL; /* set before COMPARED settles: read only after */
	if (ms_future_peek(p->stages[MS_PAUSE_COMPARED], NULL, NULL))
		src = p->packed;
	*packed = src ? ms_memfd_source_bytes_served(src) / MS_PAGE_SIZE : 0;
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
 * On success the drain released the memory. On a failure before that, the
 * memory stays mapped, serving the file (the only copy of the new pages: the
 * diff may be partial or gone), until ms_pause_free.
 */
static void *ms_pause_main(void *arg)
{
	struct ms_pause *p = arg;
	int err = ms_pause_compare(p);
	if (!err)
		err = ms_pause_drain(p);
	if (!err)
		err = ms_pause_upload(p);
	/* counted before the end is signalled: whoever waited for it sees the sums */
	ms_pause_count_served(p);
	if (err) {
		ms_pause_fail(p, err);
	} else {
		MS_PAUSE_COUNT(p, published, 1);
		ms_pause_set_state(p, MS_PAUSE_STATE_PUBLISHED);
		ms_future_set(p->stages[MS_PAUSE_PUBLISHED], NULL);
	}
	if (p->swap_started) {
		pthread_join(p->swap_thread, NULL);
		p->swap_started = false;
	}
	/* the swap has landed (the upload waited for it): the provisional entry can go */
	if (!err)
		ms_pause_unpin(p, &p->prov_id, &p->prov_pinned, true);
	return NULL;
}

static void ms_pause_destroy(struct ms_pause *p)
{
	if (p->memfd) { /* held past a failure: release it, and count what it served */
		ms_memfd_release(p->memfd);
		if (p->thread_started)
			ms_pause_count_served(p);
	}
	/* a pause that failed leaves nothing pinned; its memfd sources go too */
	bool failed = p->stats.error != 0;
	ms_pause_unpin(p, &p->prov_id, &p->prov_pinned, true);
	ms_pause_unpin(p, &p->real_id, &p->real_pinned, failed);
	if (p->identity) {
		ms_memfd_identity_set_fallback(p->identity, NULL);
		ms_source_unref(p->identity);
	}
	ms_layered_free(p->file);
	ms_layered_free(p->deduped_view);
	ms_source_unref(p->packed);
	ms_header_free(p->deduped);
	ms_header_ref_unref(p->durable);
	if (p->swapped)
		ms_future_unref(p->swapped);
	ms_header_ref_unref(p->prov_head);
	ms_header_ref_unref(p->parent_head);
	ms_memfd_unref(p->memfd);
	ms_pageset_free(p->dirty);
	ms_pageset_free(p->empty);
	ms_dedup_result_fini(&p->result);
	for (int s = 0; s < MS_PAUSE_STAGES; s++)
		if (p->stages[s])
			ms_future_unref(p->stages[s]);
	free(p->snapfile);
	pthread_mutex_destroy(&p->stats_lock);
	free(p);
}

int ms_pause_start(const struct ms_pause_config *config, struct ms_layered *parent, int memfd,
		   const struct ms_pageset *dirty, const struct ms_pageset *empty,
		   const void *snapfile, size_t snapfile_len, struct ms_pause **out)
{
	int err = -ENOMEM;
	struct ms_pause *p = calloc(1, sizeof(*p));
	if (!p) {
		close(memfd);
		return err;
	}
	p->config = *config;
	pthread_mutex_init(&p->stats_lock, NULL);
	p->t_start = ms_clock_now_ns();
	p->storage = (struct ms_build_storage){.store = config->store,
					       .diffs = config->diffs,
					       .cache_dir = config->cache_dir,
					       .data = MS_ARTIFACT_MEMFILE};
	p->parent = parent;
	ms_uuid_generate(&p->real_id);
	ms_uuid_generate(&p->prov_id);
	for (int s = 0; s < MS_PAUSE_STAGES; s++)
		if (!(p->stages[s] = ms_future_new(s == MS_PAUSE_COMPARED ? ms_header_ref_free_value
									  : NULL))) {
			close(memfd);
			goto fail;
		}
	ms_future_set(p->stages[MS_PAUSE_SERVING], NULL);
	/* the parent is the durable header, never a provisional one (invariant 1) */
	if ((err = ms_layered_durable_header(parent, -1, &p->parent_head))) {
		close(memfd);
		goto fail;
	}
	if (!(p->memfd = ms_memfd_take(memfd, p->parent_head->header->meta.size, &err)))
		goto fail;
	err = -ENOMEM;
	if (!(p->dirty = ms_pageset_copy(dirty)) || !(p->empty = ms_pageset_copy(empty)) ||
	    (snapfile_len && !(p->snapfile = malloc(snapfile_len))))
		goto fail;
	if (snapfile_len)
		memcpy(p->snapfile, snapfile, snapfile_len);
	p->snapfile_len = snapfile_len;
	if (config->inflight) {
		struct ms_header *prov;
		if (!(p->swapped = ms_future_new(NULL)))
			goto fail;
		if (!(p->identity = ms_memfd_identity_source_new(p->memfd)))
			goto fail;
		if ((err = ms_pause_register(p, &p->prov_id, ms_source_ref(p->identity),
					     &p->prov_pinned)) ||
		    (err = ms_header_new_diff(p->parent_head->header, &p->prov_id, p->dirty,
					      p->empty, MS_PAGE_SIZE, true, &prov)))
			goto fail;
		err = -ENOMEM;
		if (!(p->file = ms_pause_layered_new(p, prov)))
			goto fail;
		p->prov_head = ms_layered_header(p->file);
		/* a provisional read that lands after the release is served through the file */
		ms_memfd_identity_set_fallback(p->identity, p->file);
		/* durable_header() on the new file waits for the deduped header */
		ms_layered_set_durable_future(p->file, p->stages[MS_PAUSE_COMPARED]);
	}
	p->t_step = ms_clock_now_ns();
	p->stats.step_ns[MS_PAUSE_STEP_PROVISIONAL] = p->t_step - p->t_start;
	if ((err = pthread_create(&p->thread, NULL, ms_pause_main, p))) {
		err = -err;
		goto fail;
	}
	p->thread_started = true;
	/* without the provisional header, a resume must wait for the deduped one */
	if (!config->inflight && (err = ms_future_wait(p->stages[MS_PAUSE_COMPARED], NULL))) {
		*out = p;
		return err;
	}
	*out = p;
	return 0;
fail:
	ms_pause_destroy(p);
	return err;
}

const ms_uuid *ms_pause_build_id(struct ms_pause *pause)
{
	return &pause->real_id;
}

struct ms_layered *ms_pause_file(struct ms_pause *pause)
{
	return pause->file;
}

int ms_pause_wait(struct ms_pause *pause, enum ms_pause_stage stage, int64_t timeout_ns)
{
	if ((unsigned)stage >= MS_PAUSE_STAGES)
		return -EINVAL;
	return timeout_ns < 0 ? ms_future_wait(pause->stages[stage], NULL)
			      : ms_future_wait_timeout(pause->stages[stage], timeout_ns, NULL);
}

struct ms_future *ms_pause_published(struct ms_pause *pause)
{
	return pause->stages[MS_PAUSE_PUBLISHED];
}

void ms_pause_counts(struct ms_pause *pause, uint64_t *dirty, uint64_t *equal, uint64_t *zero,
		     uint64_t *kept)
{
	bool done = ms_future_peek(pause->stages[MS_PAUSE_COMPARED], NULL, NULL);
	*dirty = done ? pause->result.dirty_pages : 0;
	*equal = done ? pause->result.equal_pages : 0;
	*zero = done && pause->result.empty ? ms_pageset_count(pause->result.empty) : 0;
	*kept = done && pause->result.keep ? ms_pageset_count(pause->result.keep) : 0;
}

void ms_pause_stats(struct ms_pause *pause, struct ms_pause_stats *out)
{
	pthread_mutex_lock(&pause->stats_lock);
	*out = pause->stats;
	pthread_mutex_unlock(&pause->stats_lock);
	ms_pause_served(pause, &out->inflight_pages_provisional, &out->inflight_pages_packed);
}

enum ms_pause_state ms_pause_state(struct ms_pause *pause, struct ms_pause_info *info)
{
	pthread_mutex_lock(&pause->stats_lock);
	enum ms_pause_state state = pause->state;
	struct ms_pause_stats st = pause->stats;
	pthread_mutex_unlock(&pause->stats_lock);
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
		};
	}
	return state;
}

const char *ms_pause_state_name(enum ms_pause_state state)
{
	static const char *const names[] = {
	    [MS_PAUSE_STATE_CAPTURING] = "capturing", [MS_PAUSE_STATE_DEDUPING] = "deduping",
	    [MS_PAUSE_STATE_UPLOADING] = "uploading", [MS_PAUSE_STATE_PUBLISHED] = "published",
	    [MS_PAUSE_STATE_FAILED] = "failed",
	};
	return (unsigned)state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

void ms_pause_free(struct ms_pause *pause)
{
	if (!pause)
		return;
	if (pause->thread_started)
		pthread_join(pause->thread, NULL);
	ms_pause_destroy(pause);
}
