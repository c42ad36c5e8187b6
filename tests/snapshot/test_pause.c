/*
 * test_pause.c - the pause pipeline end to end on a captured memfd over a
 * parent that lives in a store: warm reads while the compare is stalled, the
 * provisional id never uploaded, cold resume from the store bit for bit,
 * upload order under injected failures, and warm readers across every stage.
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "snapshot/pause.h"
#include "snapshot/sched_metadata.h"
#include "storage/faulty.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define P     MS_PAGE_SIZE
#define PAGES 1024

struct fixture {
	char *dir;
	char cache[512];
	struct ms_store *fs, *store; /* store: fs, or a faulty wrapper around it */
	struct ms_diffstore *diffs;
	struct ms_build_storage parent_storage;
	struct ms_layered *parent;
	struct ms_test_chain chain;
	uint8_t *expect; /* the guest memory at the pause */
	struct ms_pageset *dirty, *empty;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	char path[512];
	snprintf(path, sizeof(path), "%s/store", f->dir);
	int err;
	f->fs = ms_store_fs_new(path, &err);
	f->store = ms_store_faulty_new(f->fs);
	snprintf(f->cache, sizeof(f->cache), "%s/cache", f->dir);
	assert_int_equal(mkdir(f->cache, 0700), 0);
	struct ms_diffstore_config dcfg = {.cache_dir = f->cache};
	f->diffs = ms_diffstore_new(&dcfg, &err);
	ms_test_chain_build(f->fs, PAGES, &f->chain);
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(f->fs, &f->chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	f->parent_storage = (struct ms_build_storage){
	    .store = f->fs, .diffs = f->diffs, .cache_dir = f->cache, .data = MS_ARTIFACT_MEMFILE};
	f->parent = ms_layered_new(top, ms_build_storage_resolve, &f->parent_storage);
	/* the guest ran an epoch: 0..99 rewritten equal, 100..299 changed, 300..349 zeroed */
	f->expect = ms_test_chain_image(&f->chain);
	f->dirty = ms_pageset_new();
	f->empty = ms_pageset_new();
	ms_pageset_add_range(f->dirty, 0, 350);
	for (uint64_t p = 100; p < 350; p++)
		memset(f->expect + p * P, p < 300 ? (int)(p & 0xff) | 1 : 0, P);
	ms_pageset_add_range(f->empty, 900, 910); /* known-zero pages from the tracker */
	for (uint64_t p = 900; p < 910; p++)
		memset(f->expect + p * P, 0, P);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char small[600]; /* test_disk_full_during_drain's tmpfs, if a failure left it */
	snprintf(small, sizeof(small), "%s/small", f->dir);
	umount2(small, MNT_DETACH);
	ms_layered_free(f->parent);
	ms_diffstore_free(f->diffs);
	ms_store_free(f->store);
	ms_store_free(f->fs);
	ms_test_chain_fini(&f->chain);
	free(f->expect);
	ms_pageset_free(f->dirty);
	ms_pageset_free(f->empty);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static int guest_memfd(struct fixture *f)
{
	return ms_test_guest_memfd(f->expect, PAGES);
}

static void check_all(struct ms_layered *file, const uint8_t *expect)
{
	ms_test_check_pages(file, expect, 0, PAGES);
}

/*
 * A cold resume on "another node": header up (taken) over a fresh diff store
 * in DIR/name, every byte from the store, checked against expect.
 */
static void check_cold(struct fixture *f, struct ms_header *up, const char *name,
		       const uint8_t *expect)
{
	char cold_dir[600];
	snprintf(cold_dir, sizeof(cold_dir), "%s/%s", f->dir, name);
	assert_int_equal(mkdir(cold_dir, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cold_dir};
	struct ms_diffstore *cold_diffs = ms_diffstore_new(&dcfg, &err);
	assert_non_null(cold_diffs);
	struct ms_build_storage cold = {.store = f->fs,
					.diffs = cold_diffs,
					.cache_dir = cold_dir,
					.data = MS_ARTIFACT_MEMFILE};
	struct ms_layered *cold_file = ms_layered_new(up, ms_build_storage_resolve, &cold);
	check_all(cold_file, expect);
	ms_layered_free(cold_file);
	ms_diffstore_free(cold_diffs);
}

static enum ms_compression test_compress;      /* what start() uploads with */
static struct ms_pause_counters test_counters; /* every start() counts here */

static struct ms_pause *start(struct fixture *f, bool inflight, struct ms_future *gate,
			      struct ms_future *upload_gate)
{
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = inflight,
				      .compare_gate = gate,
				      .upload_gate = upload_gate,
				      .compress = test_compress,
				      .dedup = MS_DEDUP_FULL,
				      .counters = &test_counters};
	struct ms_pause *pause;
	const char snap[] = "vcpu state";
	assert_int_equal(ms_pause_start(&cfg, f->parent, guest_memfd(f), f->dirty, f->empty, snap,
					sizeof(snap), &pause),
			 0);
	return pause;
}

static void test_warm_during_stalled_compare_then_cold(void **state)
{
	struct fixture *f = *state;
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause *pause = start(f, true, gate, NULL);
	struct ms_layered *file = ms_pause_file(pause);
	/* the compare has not run: the resume reads the memfd through the provisional header */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 20 * MS_NSEC_PER_MSEC),
			 -ETIMEDOUT);
	assert_null(ms_layered_durable_header_now(file)); /* nothing provisional escapes */
	uint64_t served_before = atomic_load(&test_counters.inflight_pages_provisional);
	check_all(file, f->expect);
	/* the dirty pages came from the memfd, through the provisional header */
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.inflight_pages_provisional, 350);
	assert_int_equal(st.inflight_pages_packed, 0);
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	check_all(file, f->expect);
	uint64_t dirty, equal, zero, kept;
	ms_pause_counts(pause, &dirty, &equal, &zero, &kept);
	/* expected from the image: pages 0..99 equal unless zero; 100..299 kept; zeros nil */
	uint64_t want_equal = 0, want_zero = 10; /* + the tracker's 900..909 */
	static const uint8_t zero_page[P];
	for (uint64_t p = 0; p < 350; p++) {
		bool is_zero = memcmp(f->expect + p * P, zero_page, P) == 0;
		want_zero += is_zero;
		want_equal += p < 100 && !is_zero;
	}
	assert_int_equal(dirty, 350);
	assert_int_equal(atomic_load(&test_counters.inflight_pages_provisional),
			 served_before + 350);
	assert_int_equal(equal, want_equal);
	assert_int_equal(zero, want_zero);
	assert_int_equal(kept, 200);
	/* the uploaded header names no provisional id, and is complete */
	struct ms_header *up;
	assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(pause),
						      MS_ARTIFACT_MEMFILE_HEADER, &up),
			 0);
	assert_false(up->incomplete);
	assert_true(ms_uuid_eq(&up->meta.build_id, ms_pause_build_id(pause)));
	const ms_uuid *real = ms_pause_build_id(pause);
	for (size_t i = 0; i < up->mappings.count; i++) {
		const ms_uuid *id = &up->mappings.entries[i].build_id;
		bool known = ms_uuid_is_nil(id) || ms_uuid_eq(id, real);
		for (int l = 0; l < MS_CHAIN_LAYERS; l++)
			known = known || ms_uuid_eq(id, &f->chain.ids[l]);
		assert_true(known);
	}
	assert_int_equal(ms_mappings_bytes_of(&up->mappings, real), kept * P);
	/* cold resume on "another node": a fresh diff store, everything from the store */
	check_cold(f, up, "cold", f->expect);
	ms_pause_free(pause);
	ms_future_unref(gate);
}

/* Uploaded as zstd frames: the cold resume reads the frames, bit for bit. */
static void test_compressed_upload(void **state)
{
	struct fixture *f = *state;
	test_compress = MS_COMPRESS_ZSTD;
	struct ms_pause *pause = start(f, true, NULL, NULL);
	test_compress = MS_COMPRESS_NONE;
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	char key[MS_ARTIFACT_KEY_MAX];
	bool zstd, plain;
	ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE,
			MS_COMPRESS_ZSTD);
	assert_int_equal(ms_store_exists(f->fs, key, &zstd), 0);
	ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE,
			MS_COMPRESS_NONE);
	assert_int_equal(ms_store_exists(f->fs, key, &plain), 0);
	assert_true(zstd && !plain);
	struct ms_header *up;
	assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(pause),
						      MS_ARTIFACT_MEMFILE_HEADER, &up),
			 0);
	const struct ms_build_data *self = ms_header_build(up, ms_pause_build_id(pause));
	assert_non_null(self);
	assert_non_null(self->frames);
	assert_int_equal(self->frames->type, MS_COMPRESS_ZSTD);
	static const uint8_t zero[32];
	assert_memory_not_equal(self->checksum, zero, 32); /* SHA-256 of the diff */
	check_cold(f, up, "cold-zstd", f->expect);
	ms_pause_free(pause);
}

/*
 * Without in-flight serving nothing waits for the in-flight swap: with an hour
 * of grace and a swap gate nobody opens, the pipeline still ends (a wait on
 * either would hang this test until its timeout), and nothing was ever served
 * from the memory.
 */
static void test_without_inflight(void **state)
{
	struct fixture *f = *state;
	struct ms_future *never = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = false,
				      .dedup = MS_DEDUP_FULL,
				      .grace_ns = 3600 * MS_NSEC_PER_SEC,
				      .swap_gate = never};
	struct ms_pause *pause;
	assert_int_equal(
	    ms_pause_start(&cfg, f->parent, guest_memfd(f), f->dirty, f->empty, "s", 1, &pause), 0);
	/* reads wait for the drained file */
	check_all(ms_pause_file(pause), f->expect);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, -1), 0);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_NO_PROVISIONAL); /* nothing waited */
	assert_int_equal(st.inflight_pages_provisional, 0);
	assert_int_equal(st.inflight_pages_packed, 0);
	ms_pause_free(pause);
	ms_future_unref(never);
}

/* Waits (bounded) until the store holds artifact of build id. */
static void wait_object(struct fixture *f, const ms_uuid *id, enum ms_artifact artifact,
			enum ms_compression type)
{
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), id, artifact, type);
	bool there = false;
	for (int i = 0; i < 5000 && !there; i++) {
		assert_int_equal(ms_store_exists(f->fs, key, &there), 0);
		if (!there)
			usleep(1000);
	}
	assert_true(there);
}

static bool has_object(struct fixture *f, const ms_uuid *id, enum ms_artifact artifact)
{
	char key[MS_ARTIFACT_KEY_MAX];
	bool there;
	ms_artifact_key(key, sizeof(key), id, artifact, MS_COMPRESS_NONE);
	assert_int_equal(ms_store_exists(f->fs, key, &there), 0);
	return there;
}

/* A child's guest: the fixture's memory with pages 400..449 rewritten. */
static int child_memfd(struct fixture *f, uint8_t **image, struct ms_pageset **dirty)
{
	*image = malloc(PAGES * P);
	memcpy(*image, f->expect, PAGES * P);
	*dirty = ms_pageset_new();
	ms_pageset_add_range(*dirty, 400, 450);
	for (uint64_t p = 400; p < 450; p++)
		memset(*image + p * P, 0x5a ^ (int)p, P);
	return ms_test_guest_memfd(*image, PAGES);
}

/*
 * A child paused while its parent's upload is still held back: the child's
 * durable header came from the parent's deduped header, which has no builds
 * entry for the parent yet. The child's uploaded header must carry the
 * parent's entry (its frames: the parent went up as zstd), or a cold resume
 * on another node cannot find the parent's data. Bug: the entry was missing.
 */
static void test_child_of_uploading_parent(void **state)
{
	struct fixture *f = *state;
	struct ms_future *parent_upload = ms_future_new(NULL);
	test_compress = MS_COMPRESS_ZSTD;
	struct ms_pause *a = start(f, true, NULL, parent_upload);
	test_compress = MS_COMPRESS_NONE;
	assert_int_equal(ms_pause_wait(a, MS_PAUSE_DRAINED, 30 * MS_NSEC_PER_SEC), 0);
	uint8_t *child;
	struct ms_pageset *dirty, *empty = ms_pageset_new();
	int fd = child_memfd(f, &child, &dirty);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .compress = MS_COMPRESS_ZSTD,
				      .parent_published = ms_pause_published(a)};
	struct ms_pause *b;
	assert_int_equal(ms_pause_start(&cfg, ms_pause_file(a), fd, dirty, empty, "b", 1, &b), 0);
	/* the child's data goes up while the parent's upload is held; its header waits */
	wait_object(f, ms_pause_build_id(b), MS_ARTIFACT_SNAPFILE, MS_COMPRESS_NONE);
	wait_object(f, ms_pause_build_id(b), MS_ARTIFACT_MEMFILE, MS_COMPRESS_ZSTD);
	assert_int_equal(ms_pause_wait(b, MS_PAUSE_PUBLISHED, 0), -ETIMEDOUT);
	assert_false(has_object(f, ms_pause_build_id(b), MS_ARTIFACT_MEMFILE_HEADER));
	ms_future_set(parent_upload, NULL);
	assert_int_equal(ms_pause_wait(b, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	struct ms_header *up;
	assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(b),
						      MS_ARTIFACT_MEMFILE_HEADER, &up),
			 0);
	assert_false(up->incomplete);
	const struct ms_build_data *parent_entry = ms_header_build(up, ms_pause_build_id(a));
	assert_non_null(parent_entry);
	assert_non_null(parent_entry->frames);
	assert_int_equal(parent_entry->frames->type, MS_COMPRESS_ZSTD);
	/* cold, on another node: every byte of the child from the store */
	check_cold(f, up, "cold-child", child);
	ms_pause_free(b);
	ms_pause_free(a);
	ms_future_unref(parent_upload);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(child);
}

/*
 * The parent's upload is refused: the child fails with the parent's error and
 * no header of the child ever reaches the store (its data may: nothing names
 * it); locally the child still reads exactly.
 */
static void test_child_of_failed_parent(void **state)
{
	struct fixture *f = *state;
	struct ms_future *parent_upload = ms_future_new(NULL), *child_upload = ms_future_new(NULL);
	struct ms_pause *a = start(f, true, NULL, parent_upload);
	assert_int_equal(ms_pause_wait(a, MS_PAUSE_DRAINED, 30 * MS_NSEC_PER_SEC), 0);
	uint8_t *child;
	struct ms_pageset *dirty, *empty = ms_pageset_new();
	int fd = child_memfd(f, &child, &dirty);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .upload_gate = child_upload,
				      .parent_published = ms_pause_published(a)};
	struct ms_pause *b;
	assert_int_equal(ms_pause_start(&cfg, ms_pause_file(a), fd, dirty, empty, "b", 1, &b), 0);
	ms_store_faulty_inject(f->store, MS_FAULTY_PUT, 1, MS_FAULTY_FAIL, -EACCES, 0);
	ms_future_set(parent_upload, NULL);
	assert_int_equal(ms_pause_wait(a, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -EACCES);
	ms_future_set(child_upload, NULL);
	assert_int_equal(ms_pause_wait(b, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -EACCES);
	assert_int_equal(ms_pause_state(b, NULL), MS_PAUSE_FAILED);
	assert_false(has_object(f, ms_pause_build_id(a), MS_ARTIFACT_MEMFILE_HEADER));
	assert_false(has_object(f, ms_pause_build_id(b), MS_ARTIFACT_MEMFILE_HEADER));
	check_all(ms_pause_file(b), child);
	ms_pause_free(b);
	ms_pause_free(a);
	ms_store_faulty_clear(f->store);
	ms_future_unref(parent_upload);
	ms_future_unref(child_upload);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(child);
}

/*
 * The kill switch (issue 18 #2): without in-flight serving the pause returns
 * at once (it used to block until the compare, which hung a daemon whose
 * stalled compare is released after the pause answers), and a resume's reads
 * wait for the drained file: no provisional, no packed serving from the
 * memory, the real build only ever served by the diff file.
 */
struct blocked_read {
	struct ms_layered *file;
	const uint8_t *expect;
	atomic_bool returned;
	atomic_int bad;
};

static void *blocked_read_main(void *arg)
{
	struct blocked_read *b = arg;
	uint8_t *buf = malloc(PAGES * P);
	if (ms_layered_read(b->file, buf, 0, PAGES * P) || memcmp(buf, b->expect, PAGES * P))
		atomic_fetch_add(&b->bad, 1);
	free(buf);
	atomic_store(&b->returned, true);
	return NULL;
}

static void test_without_inflight_waits_for_compare(void **state)
{
	struct fixture *f = *state;
	struct ms_future *gate = ms_future_new(NULL);
	uint64_t packed = atomic_load(&test_counters.inflight_pages_packed);
	uint64_t provisional = atomic_load(&test_counters.inflight_pages_provisional);
	struct ms_pause *pause = start(f, false, gate, NULL); /* returns: the compare is stalled */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARING, 0), -ETIMEDOUT);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PROVISIONAL, 0), 0);
	struct blocked_read b = {.file = ms_pause_file(pause), .expect = f->expect};
	pthread_t th;
	pthread_create(&th, NULL, blocked_read_main, &b);
	usleep(100000);
	assert_false(atomic_load(&b.returned)); /* the read waits for the drained file */
	ms_future_set(gate, NULL);
	pthread_join(th, NULL);
	assert_int_equal(atomic_load(&b.bad), 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_DRAINED, 0), 0);
	check_all(ms_pause_file(pause), f->expect);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.inflight_pages_provisional + st.inflight_pages_packed, 0);
	assert_int_equal(atomic_load(&test_counters.inflight_pages_packed), packed);
	assert_int_equal(atomic_load(&test_counters.inflight_pages_provisional), provisional);
	/* the memory went right after the drain: nothing could read it */
	assert_true(ms_pause_stats_between(&st, MS_PAUSE_DRAINED, MS_PAUSE_RELEASED) >= 0);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_NO_PROVISIONAL);
	ms_pause_free(pause);
	ms_future_unref(gate);
}

/* Fail the n-th put of the upload in turn: no header is ever visible without its data. */
static void test_upload_failures(void **state)
{
	struct fixture *f = *state;
	for (unsigned nth = 1; nth <= 3; nth++) {
		ms_store_faulty_inject(f->store, MS_FAULTY_PUT, nth, MS_FAULTY_FAIL, MS_EREMOTE, 0);
		struct ms_pause *pause = start(f, true, NULL, NULL);
		uint64_t failures_before = atomic_load(&test_counters.upload_failures);
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC),
				 MS_EREMOTE);
		struct ms_pause_stats st;
		ms_pause_stats(pause, &st);
		assert_int_equal(st.upload_retries, 0); /* a refusal is not tried again */
		assert_int_equal(st.upload_failures, 1);
		assert_int_equal(st.error, MS_EREMOTE);
		struct ms_pause_info info;
		assert_int_equal(ms_pause_state(pause, &info), MS_PAUSE_FAILED);
		assert_int_equal(info.error, MS_EREMOTE);
		assert_string_equal(ms_pause_state_name(info.state), "failed");
		assert_int_equal(atomic_load(&test_counters.upload_failures), failures_before + 1);
		char key[MS_ARTIFACT_KEY_MAX];
		bool header, data, snap;
		ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause),
				MS_ARTIFACT_MEMFILE_HEADER, MS_COMPRESS_NONE);
		assert_int_equal(ms_store_exists(f->fs, key, &header), 0);
		ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE,
				MS_COMPRESS_NONE);
		assert_int_equal(ms_store_exists(f->fs, key, &data), 0);
		ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_SNAPFILE,
				MS_COMPRESS_NONE);
		assert_int_equal(ms_store_exists(f->fs, key, &snap), 0);
		assert_false(header); /* the header goes last */
		assert_int_equal(data, nth > 1);
		assert_int_equal(snap, nth > 2);
		/* locally the build still serves its deduped, drained data */
		check_all(ms_pause_file(pause), f->expect);
		ms_pause_free(pause);
		/* and once freed it holds no pin in the diff store (it used to keep one) */
		struct ms_diffstore_stats ds;
		ms_diffstore_get_stats(f->diffs, &ds);
		assert_int_equal(ds.pinned, 0);
	}
	ms_store_faulty_clear(f->store);
}

/*
 * A transient store error (a timeout) on each put of the upload in turn: tried
 * again, published, every byte in place; the retries are counted. A refusal is
 * never retried (test_upload_failures).
 */
static void test_upload_retries(void **state)
{
	struct fixture *f = *state;
	for (unsigned nth = 1; nth <= 3; nth++) {
		uint64_t retries_before = atomic_load(&test_counters.upload_retries);
		uint64_t published_before = atomic_load(&test_counters.published);
		ms_store_faulty_inject(f->store, MS_FAULTY_PUT, nth, MS_FAULTY_FAIL, -ETIMEDOUT, 0);
		struct ms_pause *pause = start(f, true, NULL, NULL);
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
		struct ms_pause_stats st;
		ms_pause_stats(pause, &st);
		assert_int_equal(st.upload_retries, 1);
		assert_int_equal(st.upload_failures, 0);
		assert_int_equal(st.error, 0);
		assert_int_equal(atomic_load(&test_counters.upload_retries), retries_before + 1);
		assert_int_equal(atomic_load(&test_counters.published), published_before + 1);
		/* the published build, cold from the store: every byte */
		struct ms_header *h;
		assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(pause),
							      MS_ARTIFACT_MEMFILE_HEADER, &h),
				 0);
		assert_false(h->incomplete);
		struct ms_layered *cold =
		    ms_layered_new(h, ms_build_storage_resolve, &f->parent_storage);
		check_all(cold, f->expect);
		ms_layered_free(cold);
		ms_pause_free(pause);
	}
	ms_store_faulty_clear(f->store);
}

/*
 * Dedup modes over a parent nothing has read yet (its data only in the store,
 * counted through the faulty wrapper): best effort keeps the non-zero dirty pages
 * without fetching the parent; off keeps every dirty page; both publish the exact
 * memory.
 */
static void test_dedup_modes(void **state)
{
	struct fixture *f = *state;
	char cold_cache[600];
	snprintf(cold_cache, sizeof(cold_cache), "%s/untouched", f->dir);
	assert_int_equal(mkdir(cold_cache, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cold_cache};
	struct ms_diffstore *cold_diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {.store = f->store,
				      .diffs = cold_diffs,
				      .cache_dir = cold_cache,
				      .data = MS_ARTIFACT_MEMFILE};
	static const enum ms_dedup_mode modes[] = {MS_DEDUP_BEST_EFFORT, MS_DEDUP_OFF};
	for (size_t m = 0; m < 2; m++) {
		struct ms_header *top;
		assert_int_equal(ms_build_storage_load_header(f->fs,
							      &f->chain.ids[MS_CHAIN_LAYERS - 1],
							      MS_ARTIFACT_MEMFILE_HEADER, &top),
				 0);
		struct ms_layered *parent = ms_layered_new(top, ms_build_storage_resolve, &bs);
		struct ms_pause_config cfg = {.store = f->store,
					      .diffs = f->diffs,
					      .cache_dir = f->cache,
					      .inflight = true,
					      .dedup = modes[m],
					      .counters = &test_counters};
		unsigned reads = ms_store_faulty_calls(f->store, MS_FAULTY_READ);
		struct ms_pause *pause;
		const char snap[] = "vcpu state";
		assert_int_equal(ms_pause_start(&cfg, parent, guest_memfd(f), f->dirty, f->empty,
						snap, sizeof(snap), &pause),
				 0);
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 30 * MS_NSEC_PER_SEC), 0);
		/* no parent page was fetched: what the compare read at all was headers */
		assert_false(ms_layered_is_cached(parent, 0, 350 * P));
		assert_true(ms_store_faulty_calls(f->store, MS_FAULTY_READ) - reads <=
			    MS_CHAIN_LAYERS);
		struct ms_pause_stats st;
		ms_pause_stats(pause, &st);
		assert_int_equal(st.pages_equal, 0);
		/* zero: the dirty pages found zero, and the tracker's 10 known-zero pages */
		if (modes[m] == MS_DEDUP_OFF) {
			assert_int_equal(st.pages_kept, 350);
			assert_int_equal(st.pages_zero, 10);
		} else {
			assert_int_equal(st.pages_kept + st.pages_zero, 350 + 10);
			assert_true(st.pages_zero >= 50 + 10); /* 300..349 were zeroed */
		}
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
		struct ms_header *h;
		assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(pause),
							      MS_ARTIFACT_MEMFILE_HEADER, &h),
				 0);
		struct ms_layered *cold =
		    ms_layered_new(h, ms_build_storage_resolve, &f->parent_storage);
		check_all(cold, f->expect);
		ms_layered_free(cold);
		ms_pause_free(pause);
		ms_layered_free(parent);
	}
	ms_diffstore_free(cold_diffs);
}

/*
 * Best effort over a parent partly held locally (a warm read of a few of its
 * pages, fetched in whole chunks): every page the parent holds locally is
 * compared (the guest rewrote all of memory unchanged: equal, dropped), every
 * other non-zero page is kept, and the compare fetches nothing (the store's
 * reads counted through the faulty wrapper). Mixed batches take the page by
 * page path of the compare.
 */
static void test_best_effort_partly_cached(void **state)
{
	struct fixture *f = *state;
	char cold_cache[600];
	snprintf(cold_cache, sizeof(cold_cache), "%s/partly", f->dir);
	assert_int_equal(mkdir(cold_cache, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = cold_cache};
	struct ms_diffstore *cold_diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage bs = {.store = f->store,
				      .diffs = cold_diffs,
				      .cache_dir = cold_cache,
				      .data = MS_ARTIFACT_MEMFILE};
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(f->fs, &f->chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	struct ms_layered *parent = ms_layered_new(top, ms_build_storage_resolve, &bs);
	uint8_t warm[16 * P];
	assert_int_equal(ms_layered_read(parent, warm, 300 * P, sizeof(warm)), 0);
	/* the guest: the parent's memory as it is, every page written */
	uint8_t *image = ms_test_chain_image(&f->chain);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	ms_pageset_add_range(dirty, 0, PAGES);
	/* the chunk fetch's read-ahead may still be landing: wait until the store is quiet,
	 * or pages cached after the count below would be compared (and counted equal) */
	for (unsigned seen = ~0u; seen != ms_store_faulty_calls(f->store, MS_FAULTY_READ);) {
		seen = ms_store_faulty_calls(f->store, MS_FAULTY_READ);
		usleep(200000);
	}
	uint64_t want_equal = 0, want_zero = 0, want_kept = 0;
	static const uint8_t zero_page[P];
	for (uint64_t p = 0; p < PAGES; p++) {
		if (memcmp(image + p * P, zero_page, P) == 0)
			want_zero++;
		else if (ms_layered_is_cached(parent, p * P, P))
			want_equal++;
		else
			want_kept++;
	}
	assert_true(want_equal >= 16 && want_kept > 0); /* a mixed parent, or no test */
	int fd = ms_test_guest_memfd(image, PAGES);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_BEST_EFFORT};
	unsigned reads = ms_store_faulty_calls(f->store, MS_FAULTY_READ);
	struct ms_pause *pause;
	assert_int_equal(ms_pause_start(&cfg, parent, fd, dirty, empty, "s", 1, &pause), 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_store_faulty_calls(f->store, MS_FAULTY_READ), reads);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.pages_dirty, PAGES);
	assert_int_equal(st.pages_equal, want_equal);
	assert_int_equal(st.pages_zero, want_zero);
	assert_int_equal(st.pages_kept, want_kept);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	struct ms_header *h;
	assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(pause),
						      MS_ARTIFACT_MEMFILE_HEADER, &h),
			 0);
	struct ms_layered *cold = ms_layered_new(h, ms_build_storage_resolve, &f->parent_storage);
	check_all(cold, image);
	ms_layered_free(cold);
	ms_pause_free(pause);
	ms_layered_free(parent);
	ms_diffstore_free(cold_diffs);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(image);
}

/* Every step is timed and the compare's figures agree with ms_pause_counts. */
static void test_stats(void **state)
{
	struct fixture *f = *state;
	struct ms_pause *pause = start(f, true, NULL, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	/* the swap and the release run beside the upload: a publish may come first */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 30 * MS_NSEC_PER_SEC), 0);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	for (int s = 0; s < MS_PAUSE_FAILED; s++)
		if (st.at_ns[s] < 0 || ms_pause_stats_took(&st, s) < 0)
			fail_msg("state %s has no time", ms_pause_state_name(s));
	assert_int_equal(st.at_ns[MS_PAUSE_FAILED], -1);
	assert_true(ms_pause_stats_took(&st, MS_PAUSE_DEDUPED) > 0); /* the compare itself */
	assert_true(ms_pause_stats_took(&st, MS_PAUSE_DRAINED) > 0);
	assert_true(ms_pause_stats_took(&st, MS_PAUSE_UPLOADED) > 0);
	uint64_t dirty, equal, zero, kept;
	ms_pause_counts(pause, &dirty, &equal, &zero, &kept);
	assert_int_equal(st.pages_dirty, dirty);
	assert_int_equal(st.pages_equal, equal);
	assert_int_equal(st.pages_zero, zero);
	assert_int_equal(st.pages_kept, kept);
	/* the fixture's epoch: 0..99 rewritten equal (those the parent holds as zeros count as
	 * zero), 100..299 changed */
	assert_true(st.pages_equal > 0 && st.pages_equal <= 100);
	assert_int_equal(st.pages_kept, 200);
	/* bytes: the diff, the snapfile, the header */
	assert_true(st.upload_bytes > 200 * P + sizeof("vcpu state"));
	assert_int_equal(st.upload_retries, 0);
	ms_pause_free(pause);
}

/* Warm readers across provisional -> deduped -> drained -> published (TSan). */
struct readers {
	struct ms_layered *file;
	const uint8_t *expect;
	atomic_bool stop;
	atomic_int bad, reads;
	atomic_int last_error; /* of a failed read (0: bytes differed) */
};

static void *reader_main(void *arg)
{
	struct readers *r = arg;
	uint8_t buf[8 * P];
	unsigned seed = 5;
	while (!atomic_load(&r->stop)) {
		seed = seed * 1103515245 + 12345;
		uint64_t page = (seed >> 8) % (PAGES - 8);
		int err = ms_layered_read(r->file, buf, page * P, sizeof(buf));
		atomic_fetch_add(&r->reads, 1);
		if (err || memcmp(buf, r->expect + page * P, sizeof(buf)) != 0) {
			atomic_store(&r->last_error, err);
			atomic_fetch_add(&r->bad, 1);
		}
	}
	return NULL;
}

static void test_readers_across_stages(void **state)
{
	struct fixture *f = *state;
	struct ms_future *gate = ms_future_new(NULL), *upload_gate = ms_future_new(NULL);
	struct ms_pause *pause = start(f, true, gate, upload_gate);
	struct readers r = {.file = ms_pause_file(pause), .expect = f->expect};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, reader_main, &r);
	usleep(20000);
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_DRAINED, 30 * MS_NSEC_PER_SEC), 0);
	usleep(20000);
	ms_future_set(upload_gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	usleep(20000);
	atomic_store(&r.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&r.bad), 0);
	assert_true(atomic_load(&r.reads) > 10);
	ms_pause_free(pause);
	ms_future_unref(gate);
	ms_future_unref(upload_gate);
}

/* Waits (bounded) until the pause's diff file exists: the drain has run. */
static void wait_drained_file(struct fixture *f, struct ms_pause *pause)
{
	char id[MS_UUID_STR_LEN], path[700];
	ms_uuid_format(ms_pause_build_id(pause), id);
	snprintf(path, sizeof(path), "%s/%s.memfile", f->cache, id);
	for (int i = 0; i < 3000 && access(path, F_OK) != 0; i++)
		usleep(1000);
	assert_int_equal(access(path, F_OK), 0);
}

/*
 * The build's state for "build show", step by step, each step held by a gate:
 * capturing (compare stalled), deduping (drained, the swap held), uploading
 * (upload held), published; sizes and the dedup ratio from the compare.
 */
static void test_state(void **state)
{
	struct fixture *f = *state;
	struct ms_future *gates[3]; /* compare, swap, upload */
	for (int g = 0; g < 3; g++)
		gates[g] = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .compare_gate = gates[0],
				      .swap_gate = gates[1],
				      .upload_gate = gates[2]};
	struct ms_pause *pause;
	assert_int_equal(
	    ms_pause_start(&cfg, f->parent, guest_memfd(f), f->dirty, f->empty, "s", 1, &pause), 0);
	struct ms_pause_info info;
	assert_int_equal(ms_pause_state(pause, &info), MS_PAUSE_PROVISIONAL);
	assert_string_equal(ms_pause_status_name(info.state), "capturing");
	assert_int_equal(info.mem_bytes, PAGES * P);
	assert_int_equal(info.dirty_bytes, 0); /* not compared yet */
	assert_true(info.dedup_ratio == 0.0);
	ms_future_set(gates[0], NULL);
	/* drained; the memory waits for the held swap, the upload for its gate */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_DRAINED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_pause_state(pause, &info), MS_PAUSE_DRAINED);
	assert_string_equal(ms_pause_state_name(info.state), "drained");
	assert_string_equal(ms_pause_status_name(info.state), "uploading");
	assert_int_equal(info.held_bytes, PAGES * P);
	assert_int_equal(info.dirty_bytes, 350 * P);
	assert_int_equal(info.diff_bytes, 200 * P);
	assert_true(info.dedup_ratio == 200.0 / 350.0);
	ms_future_set(gates[1], NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_pause_state(pause, &info), MS_PAUSE_RELEASED);
	assert_string_equal(ms_pause_status_name(info.state), "uploading");
	assert_int_equal(info.upload_bytes, 0);
	assert_int_equal(info.held_bytes, 0);
	ms_future_set(gates[2], NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_pause_state(pause, &info), MS_PAUSE_PUBLISHED);
	assert_string_equal(ms_pause_status_name(info.state), "published");
	assert_int_equal(info.error, 0);
	assert_true(info.upload_bytes > 200 * P);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_SWAP);
	assert_true(ms_pause_stats_between(&st, MS_PAUSE_DEDUPED, MS_PAUSE_COMPARED) > 0);
	assert_true(ms_pause_stats_took(&st, MS_PAUSE_RELEASED) > 0);
	ms_pause_free(pause);
	for (int g = 0; g < 3; g++)
		ms_future_unref(gates[g]);
}

/*
 * The swap lands after the drain (a slow header swap, a fast drain) while 8
 * readers read the file: the memory is held until the swap, no read fails, the
 * release says why. With a short grace and no swap coming, the grace releases
 * it instead, counted, and the readers go on through the deduped header.
 */
static void late_swap(struct fixture *f, int64_t grace_ns)
{
	struct ms_future *swap_gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .counters = &test_counters,
				      .grace_ns = grace_ns,
				      .swap_gate = swap_gate};
	struct ms_pause *pause;
	const char snap[] = "vcpu state";
	uint64_t graces = atomic_load(&test_counters.swap_grace_elapsed);
	assert_int_equal(ms_pause_start(&cfg, f->parent, guest_memfd(f), f->dirty, f->empty, snap,
					sizeof(snap), &pause),
			 0);
	struct readers r = {.file = ms_pause_file(pause), .expect = f->expect};
	pthread_t th[8];
	for (int i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, reader_main, &r);
	wait_drained_file(f, pause);
	usleep(grace_ns ? (useconds_t)(grace_ns / 1000) * 3 : 50000);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	if (grace_ns) { /* the grace let go of the memory; the swap has not come */
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 5 * MS_NSEC_PER_SEC), 0);
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 0), -ETIMEDOUT);
		ms_pause_stats(pause, &st);
		assert_int_equal(st.release, MS_PAUSE_RELEASE_GRACE);
		assert_int_equal(atomic_load(&test_counters.swap_grace_elapsed), graces + 1);
	} else { /* drained, but the memory is held for the swap */
		assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 0), -ETIMEDOUT);
		assert_int_equal(st.release, MS_PAUSE_RELEASE_PENDING);
	}
	usleep(20000);
	ms_future_set(swap_gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	usleep(20000);
	atomic_store(&r.stop, true);
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&r.bad), 0);
	assert_true(atomic_load(&r.reads) > 10);
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, grace_ns ? MS_PAUSE_RELEASE_GRACE : MS_PAUSE_RELEASE_SWAP);
	if (!grace_ns)
		assert_int_equal(atomic_load(&test_counters.swap_grace_elapsed), graces);
	check_all(ms_pause_file(pause), f->expect);
	ms_pause_free(pause);
	ms_future_unref(swap_gate);
}

/*
 * Disk full during the drain (a 256 KiB tmpfs for the diff files; root, as the
 * suite runs): a clear error, the pause reported failed, no partial diff file
 * left, nothing in the store; the warm file serves the memfd before the failure
 * and after it, until the pause is freed (it used to be released at the failure,
 * failing every read of the new pages); the free leaves no pin behind.
 */
static void test_disk_full_during_drain(void **state)
{
	struct fixture *f = *state;
	char small[600], cmd[800];
	snprintf(small, sizeof(small), "%s/small", f->dir);
	assert_int_equal(mkdir(small, 0700), 0);
	snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=256k memsnap-test %s 2>/dev/null",
		 small);
	if (geteuid() != 0 || system(cmd) != 0)
		MS_TEST_SKIP_EXIT("cannot mount a small tmpfs here (needs root)");
	/* the parent's sources live in the node's diff store already (cached on the big
	 * disk): only the new diff goes to the small one */
	uint8_t *all = malloc(PAGES * P);
	assert_int_equal(ms_layered_read(f->parent, all, 0, PAGES * P), 0);
	free(all);
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = small,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .counters = &test_counters,
				      .compare_gate = gate};
	struct ms_pause *pause;
	const char snap[] = "vcpu state";
	uint64_t failed = atomic_load(&test_counters.failed);
	assert_int_equal(ms_pause_start(&cfg, f->parent, guest_memfd(f), f->dirty, f->empty, snap,
					sizeof(snap), &pause),
			 0);
	check_all(ms_pause_file(pause), f->expect); /* warm, from the memfd */
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -ENOSPC);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.error, -ENOSPC);
	assert_int_equal(atomic_load(&test_counters.failed), failed + 1);
	char id[MS_UUID_STR_LEN], path[700], key[MS_ARTIFACT_KEY_MAX];
	ms_uuid_format(ms_pause_build_id(pause), id);
	snprintf(path, sizeof(path), "%s/%s.memfile", small, id);
	assert_int_equal(access(path, F_OK), -1); /* the partial diff was removed */
	bool header, data;
	ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE_HEADER,
			MS_COMPRESS_NONE);
	assert_int_equal(ms_store_exists(f->fs, key, &header), 0);
	ms_artifact_key(key, sizeof(key), ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE,
			MS_COMPRESS_NONE);
	assert_int_equal(ms_store_exists(f->fs, key, &data), 0);
	assert_false(header);
	assert_false(data);
	/* the memory is the only copy now: it still serves the file */
	check_all(ms_pause_file(pause), f->expect);
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_PENDING);
	ms_pause_free(pause);
	struct ms_diffstore_stats ds;
	ms_diffstore_get_stats(f->diffs, &ds);
	assert_int_equal(ds.pinned, 0);
	ms_future_unref(gate);
	snprintf(cmd, sizeof(cmd), "umount %s", small);
	assert_int_equal(system(cmd), 0);
}

/*
 * Scheduling metadata never blocks and never names the provisional build: asked
 * while the compare is stalled (a blocking call would hang here, the gate is
 * only opened after it returned), it is pending with no memory part, though the
 * file's live header maps the dirty pages to the provisional id; once the
 * deduped header is in, it lists the chain's builds and the new one, bytes each.
 */
static void test_sched_metadata_while_stalled(void **state)
{
	struct fixture *f = *state;
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause *pause = start(f, true, gate, NULL);
	const ms_uuid *real = ms_pause_build_id(pause);
	/* the provisional id: what maps page 200 in the live header now */
	struct ms_header_ref *live = ms_layered_header(ms_pause_file(pause));
	ms_uuid prov;
	uint64_t in_build, left;
	assert_int_equal(ms_header_lookup(live->header, 200 * P, &prov, &in_build, &left), 0);
	ms_header_ref_unref(live);
	assert_false(ms_uuid_eq(&prov, real));
	for (int l = 0; l < MS_CHAIN_LAYERS; l++)
		assert_false(ms_uuid_eq(&prov, &f->chain.ids[l]));
	struct ms_sched_metadata m;
	assert_int_equal(ms_sched_metadata_from_file(ms_pause_file(pause), real, &m), 0);
	assert_true(ms_uuid_eq(&m.build_id, real));
	assert_true(m.pending);
	assert_int_equal(m.build_count, 0);
	assert_null(m.builds);
	ms_sched_metadata_fini(&m);
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_sched_metadata_from_file(ms_pause_file(pause), real, &m), 0);
	assert_false(m.pending);
	assert_int_equal(m.mem_bytes, PAGES * P);
	uint64_t total = 0, real_bytes = 0;
	for (size_t i = 0; i < m.build_count; i++) {
		const ms_uuid *id = &m.builds[i].build_id;
		assert_false(ms_uuid_eq(id, &prov));
		bool known = ms_uuid_eq(id, real);
		for (int l = 0; l < MS_CHAIN_LAYERS; l++)
			known = known || ms_uuid_eq(id, &f->chain.ids[l]);
		assert_true(known);
		if (i)
			assert_true(ms_uuid_cmp(&m.builds[i - 1].build_id, id) < 0);
		if (ms_uuid_eq(id, real))
			real_bytes = m.builds[i].bytes;
		total += m.builds[i].bytes;
	}
	assert_int_equal(real_bytes, 200 * P); /* the kept pages */
	assert_true(total <= PAGES * P);       /* nil pages belong to nobody */
	ms_sched_metadata_fini(&m);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	ms_pause_free(pause);
	ms_future_unref(gate);
}

/*
 * Over 128 builds (e2b's cap): the base and the build itself stay although
 * they map nothing, then the heaviest; the rest are counted; sorted by id.
 */
static void test_sched_metadata_cap(void **state)
{
	(void)state;
	enum { BUILDS = 200 };
	ms_uuid base = MS_UUID_NIL, self = MS_UUID_NIL;
	base.bytes[0] = 0xee; /* ids sort after every mapped one */
	self.bytes[0] = 0xef;
	uint64_t size = 0;
	for (int i = 0; i < BUILDS; i++)
		size += (uint64_t)(i + 1) * P;
	struct ms_header *h = ms_header_new_base(&base, MS_HEADER_V4, P, size, false);
	assert_non_null(h);
	ms_mappings_fini(&h->mappings);
	uint64_t off = 0;
	for (int i = 0; i < BUILDS; i++) { /* build i maps (i + 1) pages */
		struct ms_mapping m = {.offset = off, .length = (uint64_t)(i + 1) * P};
		m.build_id.bytes[15] = (uint8_t)(i + 1);
		m.build_id.bytes[14] = (uint8_t)((i + 1) >> 8);
		assert_int_equal(ms_mappings_push(&h->mappings, &m), 0);
		off += m.length;
	}
	struct ms_sched_metadata md;
	assert_int_equal(ms_sched_metadata_from_header(h, &self, &md), 0);
	assert_false(md.pending);
	assert_int_equal(md.build_count, MS_SCHED_METADATA_MAX);
	assert_int_equal(md.dropped_builds, BUILDS + 2 - MS_SCHED_METADATA_MAX);
	/* the 126 heaviest (builds 75..200 by their last bytes), then base and self */
	for (size_t j = 0; j < md.build_count; j++) {
		const struct ms_sched_build *b = &md.builds[j];
		if (j + 2 < md.build_count) {
			unsigned n =
			    (unsigned)b->build_id.bytes[15] | (unsigned)b->build_id.bytes[14] << 8;
			assert_int_equal(n, BUILDS - MS_SCHED_METADATA_MAX + 3 + j);
			assert_int_equal(b->bytes, (uint64_t)n * P);
		}
		if (j)
			assert_true(ms_uuid_cmp(&md.builds[j - 1].build_id, &b->build_id) < 0);
	}
	assert_true(ms_uuid_eq(&md.builds[md.build_count - 2].build_id, &base));
	assert_true(ms_uuid_eq(&md.builds[md.build_count - 1].build_id, &self));
	assert_int_equal(md.builds[md.build_count - 1].bytes, 0);
	ms_sched_metadata_fini(&md);
	ms_header_free(h);
}

/*
 * After the grace released the memory, the file may still plan on the provisional
 * header: the provisional entry must stay in the diff store until the swap lands,
 * or a read after its delayed delete would ask the object store for the
 * provisional build (which never leaves the node) and fail.
 */
static void test_grace_keeps_provisional_entry(void **state)
{
	struct fixture *f = *state;
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = f->cache,
					   .delete_delay_ns = 20 * MS_NSEC_PER_MSEC,
					   .pressure_interval_ns = 10 * MS_NSEC_PER_MSEC};
	struct ms_diffstore *ds = ms_diffstore_new(&dcfg, &err);
	assert_non_null(ds);
	struct ms_future *swap_gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = ds,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .dedup = MS_DEDUP_FULL,
				      .grace_ns = 30 * MS_NSEC_PER_MSEC,
				      .swap_gate = swap_gate};
	struct ms_pause *pause;
	const char snap[] = "vcpu state";
	assert_int_equal(ms_pause_start(&cfg, f->parent, guest_memfd(f), f->dirty, f->empty, snap,
					sizeof(snap), &pause),
			 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 10 * MS_NSEC_PER_SEC), 0);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_GRACE);
	usleep(300000);				    /* no reads: any delayed delete has run */
	check_all(ms_pause_file(pause), f->expect); /* still on the provisional header */
	ms_future_set(swap_gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	check_all(ms_pause_file(pause), f->expect);
	ms_pause_free(pause);
	ms_future_unref(swap_gate);
	ms_diffstore_free(ds);
}

static void test_swap_after_drain(void **state)
{
	late_swap(*state, 0);
}

static void test_grace_without_swap(void **state)
{
	late_swap(*state, 100 * MS_NSEC_PER_MSEC);
}

/* ---- issue 18: the warm-resume mechanism's edges ---- */

static struct ms_pause_config base_config(struct fixture *f)
{
	return (struct ms_pause_config){.store = f->store,
					.diffs = f->diffs,
					.cache_dir = f->cache,
					.inflight = true,
					.dedup = MS_DEDUP_FULL,
					.counters = &test_counters};
}

static struct ms_pause *start_with(struct fixture *f, const struct ms_pause_config *cfg)
{
	struct ms_pause *pause;
	const char snap[] = "vcpu state";
	assert_int_equal(ms_pause_start(cfg, f->parent, guest_memfd(f), f->dirty, f->empty, snap,
					sizeof(snap), &pause),
			 0);
	return pause;
}

/* Polls (bounded) until the pause holds no memory any more. */
static void wait_unheld(struct ms_pause *pause)
{
	for (int i = 0; i < 5000 && ms_pause_held_bytes(pause); i++)
		usleep(1000);
	assert_int_equal(ms_pause_held_bytes(pause), 0);
}

/*
 * #1: a pause failing before its drain (its cache dir is gone: the diff file
 * cannot be made) keeps serving warm reads while a user needs the memory, in
 * the gauge; the last user leaving lets go of it at once (it used to stay
 * until ms_pause_free, which the daemon calls after template_ttl: 25 h).
 */
static void test_failed_hold_until_no_user(void **state)
{
	struct fixture *f = *state;
	struct ms_pause_config cfg = base_config(f);
	cfg.cache_dir = "/nonexistent/memsnap-cache";
	cfg.count_users = true;
	cfg.failed_hold_ns = 3600 * MS_NSEC_PER_SEC;
	uint64_t gauge = atomic_load(&test_counters.failed_held_bytes);
	struct ms_pause *pause = start_with(f, &cfg);
	ms_pause_user_ref(pause); /* a sandbox resumed from it */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -ENOENT);
	for (int i = 0; i < 5000 && atomic_load(&test_counters.failed_held_bytes) == gauge; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&test_counters.failed_held_bytes), gauge + PAGES * P);
	assert_int_equal(ms_pause_held_bytes(pause), PAGES * P);
	check_all(ms_pause_file(pause), f->expect); /* warm reads go on */
	usleep(50000);
	assert_int_equal(ms_pause_held_bytes(pause), PAGES * P); /* still needed */
	ms_pause_user_unref(pause);
	wait_unheld(pause);
	assert_int_equal(atomic_load(&test_counters.failed_held_bytes), gauge);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_FAILED);
	assert_int_equal(st.error, -ENOENT);
	ms_pause_free(pause);
}

/* #1: with users still there (or not counted), failed_hold bounds the hold. */
static void test_failed_hold_times_out(void **state)
{
	struct fixture *f = *state;
	struct ms_pause_config cfg = base_config(f);
	cfg.cache_dir = "/nonexistent/memsnap-cache";
	cfg.failed_hold_ns = 200 * MS_NSEC_PER_MSEC;
	struct ms_pause *pause = start_with(f, &cfg);
	ms_pause_user_ref(pause);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -ENOENT);
	assert_int_equal(ms_pause_held_bytes(pause), PAGES * P);
	wait_unheld(pause);
	struct ms_pause_info info;
	assert_int_equal(ms_pause_state(pause, &info), MS_PAUSE_FAILED);
	assert_int_equal(info.held_bytes, 0);
	ms_pause_user_unref(pause);
	ms_pause_free(pause);
}

/*
 * #1: a retried pause of the same sandbox takes the failed one's memory over:
 * the new build is published from it, bit for bit (warm and cold), and the
 * failed pause holds nothing any more.
 */
static void test_retry_takes_over(void **state)
{
	struct fixture *f = *state;
	struct ms_pause_config bad = base_config(f);
	bad.cache_dir = "/nonexistent/memsnap-cache";
	bad.failed_hold_ns = 3600 * MS_NSEC_PER_SEC;
	uint64_t gauge = atomic_load(&test_counters.failed_held_bytes);
	struct ms_pause *failed = start_with(f, &bad);
	assert_int_equal(ms_pause_wait(failed, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -ENOENT);
	struct ms_pause *ok = start(f, true, NULL, NULL);
	assert_int_equal(ms_pause_retry(&bad, f->parent, ok, &(struct ms_pause *){NULL}), -EINVAL);
	assert_int_equal(ms_pause_wait(ok, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	ms_pause_free(ok);
	struct ms_pause_config good = base_config(f);
	struct ms_pause *retry;
	assert_int_equal(ms_pause_retry(&good, f->parent, failed, &retry), 0);
	assert_int_equal(ms_pause_retry(&good, f->parent, failed, &(struct ms_pause *){NULL}),
			 -ENOENT); /* taken already */
	assert_int_equal(ms_pause_wait(retry, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	check_all(ms_pause_file(retry), f->expect);
	struct ms_pause_info info;
	ms_pause_state(failed, &info);
	assert_int_equal(info.held_bytes, 0);
	struct ms_pause_stats st;
	ms_pause_stats(failed, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_RETRIED);
	for (int i = 0; i < 5000 && atomic_load(&test_counters.failed_held_bytes) != gauge; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&test_counters.failed_held_bytes), gauge);
	ms_pause_free(failed);
	struct ms_header *up;
	assert_int_equal(ms_build_storage_load_header(f->fs, ms_pause_build_id(retry),
						      MS_ARTIFACT_MEMFILE_HEADER, &up),
			 0);
	check_cold(f, up, "cold-retry", f->expect);
	ms_pause_free(retry);
}

/*
 * #3: reads through the packed source while the drain is held, then racing the
 * drain's switch to the file (readers go on while it lands): every byte right,
 * and pages really were served by the packed phase (inflight_pages_packed).
 */
static void test_packed_phase_serves(void **state)
{
	struct fixture *f = *state;
	struct ms_pause_config cfg = base_config(f);
	struct ms_future *drain_gate = ms_future_new(NULL);
	cfg.drain_gate = drain_gate;
	uint64_t packed = atomic_load(&test_counters.inflight_pages_packed);
	struct ms_pause *pause = start_with(f, &cfg);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 30 * MS_NSEC_PER_SEC), 0);
	struct readers r = {.file = ms_pause_file(pause), .expect = f->expect};
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, reader_main, &r);
	check_all(ms_pause_file(pause), f->expect); /* the deduped header, the packed source */
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_true(st.inflight_pages_packed >= 200); /* every kept page once at least */
	ms_future_set(drain_gate, NULL);	      /* the switch, under the readers */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	usleep(20000);
	atomic_store(&r.stop, true);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&r.bad), 0);
	assert_true(atomic_load(&test_counters.inflight_pages_packed) >= packed + 200);
	check_all(ms_pause_file(pause), f->expect);
	ms_pause_free(pause);
	ms_future_unref(drain_gate);
}

/*
 * #4: one cancellation token per pause. Cancelled while the compare is
 * stalled, while the upload backs off from a store that keeps timing out,
 * and while the memory waits for a swap that does not come (an hour of
 * grace): each ends within a second with MS_ECANCELED, counted, and no header
 * becomes visible.
 */
static void cancel_and_check(struct fixture *f, struct ms_pause *pause, enum ms_pause_state wait)
{
	uint64_t cancelled = atomic_load(&test_counters.cancelled);
	int64_t t0 = ms_clock_now_ns();
	ms_pause_cancel(pause);
	assert_true(ms_pause_is_cancelled(pause));
	assert_int_equal(ms_pause_wait(pause, wait, 5 * MS_NSEC_PER_SEC), MS_ECANCELED);
	assert_true(ms_clock_now_ns() - t0 < MS_NSEC_PER_SEC);
	assert_int_equal(ms_pause_state(pause, NULL), MS_PAUSE_FAILED);
	assert_int_equal(atomic_load(&test_counters.cancelled), cancelled + 1);
	assert_false(has_object(f, ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE_HEADER));
	ms_pause_free(pause); /* joins at once: nothing waits any more */
	assert_true(ms_clock_now_ns() - t0 < 2 * MS_NSEC_PER_SEC);
}

/* A store whose reads wait at a gate: a parent's chunk fetch held in flight. */
struct gated_store {
	struct ms_store base;
	struct ms_store *inner;
	struct ms_future *gate;
	atomic_int entered;
};

static struct gated_store *gated(struct ms_store *store)
{
	return (struct gated_store *)store;
}

static int gs_put_buf(struct ms_store *s, const char *key, const void *buf, size_t len,
		      const struct ms_store_meta *meta)
{
	return gated(s)->inner->ops->put_buf(gated(s)->inner, key, buf, len, meta);
}

static int gs_put_file(struct ms_store *s, const char *key, int fd, uint64_t size,
		       const struct ms_store_meta *meta)
{
	return gated(s)->inner->ops->put_file(gated(s)->inner, key, fd, size, meta);
}

static int gs_read_range(struct ms_store *s, const char *key, uint64_t off, void *dst, size_t len,
			 size_t *got)
{
	atomic_fetch_add(&gated(s)->entered, 1);
	ms_future_wait(gated(s)->gate, NULL);
	return gated(s)->inner->ops->read_range(gated(s)->inner, key, off, dst, len, got);
}

static int gs_size(struct ms_store *s, const char *key, uint64_t *size)
{
	return gated(s)->inner->ops->size(gated(s)->inner, key, size);
}

static int gs_remove(struct ms_store *s, const char *key)
{
	return gated(s)->inner->ops->remove(gated(s)->inner, key);
}

static int gs_list(struct ms_store *s, const char *prefix, ms_store_list_fn fn, void *ctx)
{
	return gated(s)->inner->ops->list(gated(s)->inner, prefix, fn, ctx);
}

static int gs_get_meta(struct ms_store *s, const char *key, struct ms_store_meta *meta)
{
	return gated(s)->inner->ops->get_meta(gated(s)->inner, key, meta);
}

static void gs_free(struct ms_store *s)
{
	(void)s; /* static: session threads may still be leaving a read */
}

static const struct ms_store_ops gated_ops = {
    .name = "gated",
    .put_buf = gs_put_buf,
    .put_file = gs_put_file,
    .read_range = gs_read_range,
    .size = gs_size,
    .remove = gs_remove,
    .list = gs_list,
    .get_meta = gs_get_meta,
    .free = gs_free,
};

/* static: the chunker's session thread leaves its read after the test returns */
static struct gated_store parent_gate = {.base = {.ops = &gated_ops}};

/*
 * #4: a cancel reaches the compare while it waits for a fetch of its parent's
 * chunk (held in the store): the compare gives up at once with MS_ECANCELED,
 * leaving the fetch to finish for anyone else. Before, the wait ran to the
 * fetch's end (here: never) and the cancel was seen only between batches.
 */
static void test_cancel_during_parent_fetch(void **state)
{
	struct fixture *f = *state;
	parent_gate.inner = f->fs;
	parent_gate.gate = ms_future_new(NULL); /* never freed: a reader may still be leaving it */
	atomic_store(&parent_gate.entered, 0);
	f->parent_storage.store = &parent_gate.base; /* the parent's data comes through the gate */
	struct ms_pause_config cfg = base_config(f);
	struct ms_pause *pause = start_with(f, &cfg);
	for (int i = 0; i < 30000 && atomic_load(&parent_gate.entered) == 0; i++)
		usleep(1000);
	assert_true(atomic_load(&parent_gate.entered) > 0); /* the compare fetches the parent */
	assert_int_equal(ms_pause_state(pause, NULL), MS_PAUSE_COMPARING);
	cancel_and_check(f, pause, MS_PAUSE_COMPARED);
	ms_future_set(parent_gate.gate, NULL); /* the held fetch ends; teardown frees its chunker */
}

static void test_cancel(void **state)
{
	struct fixture *f = *state;
	struct ms_future *gate = ms_future_new(NULL);
	cancel_and_check(f, start(f, true, gate, NULL), MS_PAUSE_COMPARING);
	ms_future_unref(gate);

	struct ms_pause_config cfg = base_config(f);
	cfg.upload_attempts = 1000; /* backs off for minutes */
	ms_store_faulty_inject_every(f->store, MS_FAULTY_PUT, 1, MS_FAULTY_FAIL, -ETIMEDOUT, 0);
	struct ms_pause *pause = start_with(f, &cfg);
	for (int i = 0; i < 5000 && ms_store_faulty_calls(f->store, MS_FAULTY_PUT) < 3; i++)
		usleep(1000);
	cancel_and_check(f, pause, MS_PAUSE_UPLOADED);
	ms_store_faulty_clear(f->store);

	struct ms_future *swap_gate = ms_future_new(NULL), *upload_gate = ms_future_new(NULL);
	cfg = base_config(f);
	cfg.swap_gate = swap_gate;
	cfg.upload_gate = upload_gate;
	cfg.grace_ns = 3600 * MS_NSEC_PER_SEC;
	pause = start_with(f, &cfg);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_DRAINED, 30 * MS_NSEC_PER_SEC), 0);
	cancel_and_check(f, pause, MS_PAUSE_RELEASED);
	ms_future_unref(swap_gate);
	ms_future_unref(upload_gate);
}

/*
 * #5: the provisional header cannot be built: the pause goes on without
 * in-flight serving (counted, its error kept), resumable once deduped, and
 * publishes; nothing is served from the memory.
 */
static void test_provisional_failure(void **state)
{
	struct fixture *f = *state;
	struct ms_pause_config cfg = base_config(f);
	cfg.test_provisional_error = -ENOMEM;
	uint64_t failures = atomic_load(&test_counters.provisional_failures);
	struct ms_pause *pause = start_with(f, &cfg); /* returned once deduped */
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 0), 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PROVISIONAL, 0), -ENOTSUP);
	assert_int_equal(atomic_load(&test_counters.provisional_failures), failures + 1);
	check_all(ms_pause_file(pause), f->expect);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.provisional_error, -ENOMEM);
	assert_int_equal(st.inflight_pages_provisional + st.inflight_pages_packed, 0);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_NO_PROVISIONAL);
	ms_pause_free(pause);
}

/*
 * #5: the swap thread fails: the pause fails with its error, no header is
 * uploaded, warm reads go on, and the free leaves no pin.
 */
static void test_swap_failure(void **state)
{
	struct fixture *f = *state;
	struct ms_pause_config cfg = base_config(f);
	cfg.test_swap_error = -EIO;
	struct ms_pause *pause = start_with(f, &cfg);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), -EIO);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 0), -EIO);
	assert_int_equal(ms_pause_state(pause, NULL), MS_PAUSE_FAILED);
	check_all(ms_pause_file(pause), f->expect);
	assert_false(has_object(f, ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE_HEADER));
	ms_pause_free(pause);
	struct ms_diffstore_stats ds;
	ms_diffstore_get_stats(f->diffs, &ds);
	assert_int_equal(ds.pinned, 0);
}

/* The cache disk is full: every usage check says 99 %. */
static int full_disk(const char *dir, uint64_t *total, uint64_t *used, void *ctx)
{
	(void)dir, (void)ctx;
	*total = 100;
	*used = 99;
	return 0;
}

/*
 * #5: the cache disk fills up during the provisional window (compare and
 * swap held, readers on): disk pressure evicts what it may (the parent's
 * entries), the pinned provisional and real entries survive, every read is
 * served right, and the pause publishes.
 */
static void test_disk_pressure_during_window(void **state)
{
	struct fixture *f = *state;
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = f->cache,
					   .usage_fn = full_disk,
					   .delete_delay_ns = 200 * MS_NSEC_PER_MSEC,
					   .pressure_interval_ns = 20 * MS_NSEC_PER_MSEC};
	struct ms_diffstore *ds = ms_diffstore_new(&dcfg, &err);
	assert_non_null(ds);
	struct ms_build_storage storage = f->parent_storage;
	storage.diffs = ds;
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(f->fs, &f->chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	struct ms_layered *parent = ms_layered_new(top, ms_build_storage_resolve, &storage);
	struct ms_future *gate = ms_future_new(NULL), *swap_gate = ms_future_new(NULL);
	struct ms_future *upload_gate = ms_future_new(NULL);
	struct ms_pause_config cfg = base_config(f);
	cfg.diffs = ds;
	cfg.compare_gate = gate;
	cfg.swap_gate = swap_gate;
	cfg.upload_gate = upload_gate; /* the publish would unpin the real entry */
	struct ms_pause *pause;
	assert_int_equal(
	    ms_pause_start(&cfg, parent, guest_memfd(f), f->dirty, f->empty, "s", 1, &pause), 0);
	struct readers r = {.file = ms_pause_file(pause), .expect = f->expect};
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, reader_main, &r);
	usleep(50000); /* reads under pressure on the provisional header */
	struct ms_diffstore_stats st;
	ms_diffstore_get_stats(ds, &st);
	assert_int_equal(st.pinned, 1); /* the provisional entry */
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_DRAINED, 30 * MS_NSEC_PER_SEC), 0);
	usleep(50000); /* the swap held: provisional and real entries pinned */
	ms_diffstore_get_stats(ds, &st);
	assert_int_equal(st.pinned, 2);
	assert_true(st.evictions > 0); /* the pressure was real */
	ms_future_set(swap_gate, NULL);
	ms_future_set(upload_gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	atomic_store(&r.stop, true);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	if (atomic_load(&r.bad))
		fail_msg("%d of %d reads failed, the last with %s", atomic_load(&r.bad),
			 atomic_load(&r.reads), ms_strerror(atomic_load(&r.last_error)));
	assert_true(atomic_load(&r.reads) > 10);
	check_all(ms_pause_file(pause), f->expect);
	ms_pause_free(pause);
	ms_layered_free(parent);
	ms_future_unref(gate);
	ms_future_unref(swap_gate);
	ms_future_unref(upload_gate);
	ms_diffstore_free(ds);
}

/*
 * #5: a read planned on the provisional header that resolves only after the
 * provisional entry's delete. The resolver hook holds the first resolution of
 * the provisional build until the pause has published and the entry is gone;
 * the read must then be re-planned onto the published header (it used to get
 * MS_ENOTFOUND from the store, which never holds the provisional build).
 */
struct held_resolve {
	struct ms_build_storage *storage;
	const struct ms_header *prov; /* the header whose build id is held once */
	struct ms_future *entered, *go;
	atomic_bool held;
};

static int held_resolve_fn(void *ctx, const ms_uuid *build_id, const struct ms_header *header,
			   struct ms_source **out)
{
	struct held_resolve *h = ctx;
	(void)build_id;
	if (header == h->prov && !atomic_exchange(&h->held, true)) {
		ms_future_set(h->entered, NULL);
		ms_future_wait(h->go, NULL);
	}
	return ms_build_storage_resolve(h->storage, build_id, header, out);
}

struct one_read {
	struct ms_layered *file;
	uint8_t buf[P];
	int err;
};

static void *one_read_main(void *arg)
{
	struct one_read *r = arg;
	r->err = ms_layered_read(r->file, r->buf, 150 * P, P); /* a dirty page */
	return NULL;
}

static void test_read_after_provisional_delete(void **state)
{
	struct fixture *f = *state;
	int err;
	struct ms_diffstore_config dcfg = {
	    .cache_dir = f->cache, .no_thread = true, .delete_delay_ns = MS_NSEC_PER_MSEC};
	struct ms_diffstore *ds = ms_diffstore_new(&dcfg, &err);
	assert_non_null(ds);
	struct ms_build_storage storage = f->parent_storage;
	storage.diffs = ds;
	struct held_resolve h = {
	    .storage = &storage, .entered = ms_future_new(NULL), .go = ms_future_new(NULL)};
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause_config cfg = base_config(f);
	cfg.diffs = ds;
	cfg.compare_gate = gate;
	cfg.resolve = held_resolve_fn;
	cfg.resolve_ctx = &h;
	struct ms_pause *pause = start_with(f, &cfg);
	struct ms_header_ref *prov = ms_layered_header(ms_pause_file(pause));
	h.prov = prov->header;
	struct one_read r = {.file = ms_pause_file(pause)};
	pthread_t th;
	pthread_create(&th, NULL, one_read_main, &r);
	assert_int_equal(ms_future_wait_timeout(h.entered, 5 * MS_NSEC_PER_SEC, NULL), 0);
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 30 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 30 * MS_NSEC_PER_SEC), 0);
	/* the pipeline ends by evicting the provisional entry; its delete comes due */
	struct ms_diffstore_stats st;
	for (int i = 0; i < 5000; i++) {
		ms_diffstore_get_stats(ds, &st);
		if (st.pending_deletes)
			break;
		usleep(1000);
	}
	assert_true(st.pending_deletes > 0);
	usleep(5000); /* past the delete delay: the next tick deletes it */
	assert_true(ms_diffstore_tick(ds) >= 0);
	ms_diffstore_get_stats(ds, &st);
	assert_true(st.deletes > 0);
	ms_future_set(h.go, NULL);
	pthread_join(th, NULL);
	assert_int_equal(r.err, 0);
	assert_memory_equal(r.buf, f->expect + 150 * P, P);
	ms_header_ref_unref(prov);
	ms_pause_free(pause);
	ms_future_unref(gate);
	ms_future_unref(h.entered);
	ms_future_unref(h.go);
	ms_diffstore_free(ds);
}

/*
 * #6: the upload does not wait for the release. With the swap gate shut (and
 * 30 s of grace) the upload and the publish finish, while the memory stays
 * held; the swap then releases it. (The upload used to start only after the
 * swap-or-grace wait: this test timed out on PUBLISHED.)
 */
static void test_upload_does_not_wait_for_release(void **state)
{
	struct fixture *f = *state;
	struct ms_future *swap_gate = ms_future_new(NULL);
	struct ms_pause_config cfg = base_config(f);
	cfg.swap_gate = swap_gate;
	struct ms_pause *pause = start_with(f, &cfg);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_PUBLISHED, 10 * MS_NSEC_PER_SEC), 0);
	assert_true(has_object(f, ms_pause_build_id(pause), MS_ARTIFACT_MEMFILE_HEADER));
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 0), -ETIMEDOUT);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_COMPARED, 0), -ETIMEDOUT);
	assert_int_equal(ms_pause_held_bytes(pause), PAGES * P);
	struct ms_pause_stats st;
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_PENDING);
	check_all(ms_pause_file(pause), f->expect); /* the published header */
	ms_future_set(swap_gate, NULL);
	assert_int_equal(ms_pause_wait(pause, MS_PAUSE_RELEASED, 10 * MS_NSEC_PER_SEC), 0);
	assert_int_equal(ms_pause_held_bytes(pause), 0);
	ms_pause_stats(pause, &st);
	assert_int_equal(st.release, MS_PAUSE_RELEASE_SWAP);
	check_all(ms_pause_file(pause), f->expect);
	ms_pause_free(pause);
	ms_future_unref(swap_gate);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_warm_during_stalled_compare_then_cold, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_without_inflight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_without_inflight_waits_for_compare, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_compressed_upload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_child_of_uploading_parent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_child_of_failed_parent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upload_failures, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upload_retries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sched_metadata_while_stalled, setup, teardown),
	    cmocka_unit_test(test_sched_metadata_cap),
	    cmocka_unit_test_setup_teardown(test_dedup_modes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_best_effort_partly_cached, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readers_across_stages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_swap_after_drain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grace_without_swap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grace_keeps_provisional_entry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full_during_drain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_hold_until_no_user, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_hold_times_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_takes_over, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_packed_phase_serves, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_during_parent_fetch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upload_does_not_wait_for_release, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_provisional_failure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_swap_failure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_after_provisional_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_pressure_during_window, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
