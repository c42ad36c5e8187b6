/*
 * test_dedup.c - compare, drain, memfd sources, and the warm-resume window:
 * reads of a paused guest's memory stay exact while the header moves
 * provisional -> deduped (CAS) -> drained file, and the memfd is released.
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "cache/diffstore.h"
#include "build/layered.h"
#include "snapshot/dedup.h"
#include "snapshot/memfd.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define P     MS_PAGE_SIZE
#define PAGES 256

/* A resolver over a small table of (build id -> source), replaceable at run time. */
struct table {
	pthread_mutex_t lock;
	ms_uuid ids[8];
	struct ms_source *srcs[8];
	int count;
};

static int table_resolve(void *ctx, const ms_uuid *id, const struct ms_header *h,
			 struct ms_source **out)
{
	(void)h;
	struct table *t = ctx;
	pthread_mutex_lock(&t->lock);
	int err = MS_ENOTFOUND;
	for (int i = 0; i < t->count; i++)
		if (ms_uuid_eq(&t->ids[i], id)) {
			*out = ms_source_ref(t->srcs[i]);
			err = 0;
		}
	pthread_mutex_unlock(&t->lock);
	return err;
}

/* Puts src (reference taken over) under id, closing and dropping the previous one. */
static void table_set(struct table *t, const ms_uuid *id, struct ms_source *src)
{
	pthread_mutex_lock(&t->lock);
	int i = 0;
	while (i < t->count && !ms_uuid_eq(&t->ids[i], id))
		i++;
	struct ms_source *old = i < t->count ? t->srcs[i] : NULL;
	if (i == t->count)
		t->count++;
	t->ids[i] = *id;
	t->srcs[i] = src;
	pthread_mutex_unlock(&t->lock);
	if (old) {
		ms_source_close(old);
		ms_source_unref(old);
	}
}

static void table_fini(struct table *t)
{
	for (int i = 0; i < t->count; i++)
		ms_source_unref(t->srcs[i]);
}

static uint8_t page_byte(uint64_t page, int epoch)
{
	return (uint8_t)(page * 7 + (uint64_t)epoch * 3 + 1);
}

/* A parent: build `base` in a memory-backed file source, every page page_byte(p, 0). */
static struct ms_source *parent_source(char *dir, const ms_uuid *id)
{
	char path[512], text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	snprintf(path, sizeof(path), "%s/%s", dir, text);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	uint8_t page[P];
	for (uint64_t p = 0; p < PAGES; p++) {
		memset(page, page_byte(p, 0), P);
		assert_int_equal(write(fd, page, P), P);
	}
	close(fd);
	int err;
	struct ms_source *src = ms_source_file_open(path, false, &err);
	assert_non_null(src);
	return src;
}

/*
 * The guest after an epoch: pages 0..63 rewritten with the same bytes (equal to
 * the parent), 64..127 changed, 128..143 zeroed, the rest untouched.
 */
static int guest_memfd(void)
{
	int fd = memfd_create("guest", MFD_CLOEXEC);
	assert_int_equal(ftruncate(fd, PAGES * P), 0);
	uint8_t *map = mmap(NULL, PAGES * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	for (uint64_t p = 0; p < PAGES; p++)
		memset(map + p * P, p >= 128 && p < 144 ? 0 : page_byte(p, p >= 64 && p < 128), P);
	munmap(map, PAGES * P);
	return fd;
}

static uint8_t expect_byte(uint64_t p)
{
	return p >= 128 && p < 144 ? 0 : page_byte(p, p >= 64 && p < 128);
}

struct fixture {
	char *dir;
	struct table table;
	ms_uuid base_id, prov_id, real_id;
	struct ms_layered *parent;
	struct ms_memfd *memfd;
	struct ms_pageset *dirty;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	pthread_mutex_init(&f->table.lock, NULL);
	ms_uuid_generate(&f->base_id);
	ms_uuid_generate(&f->prov_id);
	ms_uuid_generate(&f->real_id);
	table_set(&f->table, &f->base_id, parent_source(f->dir, &f->base_id));
	f->parent =
	    ms_layered_new(ms_header_new_base(&f->base_id, MS_HEADER_V4, P, PAGES * P, true),
			   table_resolve, &f->table);
	int err;
	f->memfd = ms_memfd_new(guest_memfd(), PAGES * P, &err);
	assert_non_null(f->memfd);
	f->dirty = ms_pageset_new();
	ms_pageset_add_range(f->dirty, 0, 144);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_pageset_free(f->dirty);
	ms_memfd_unref(f->memfd);
	ms_layered_free(f->parent);
	table_fini(&f->table);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void test_compare_and_drain(void **state)
{
	struct fixture *f = *state;
	struct ms_dedup_result r;
	assert_int_equal(ms_dedup_compare(f->memfd, f->dirty, f->parent, MS_DEDUP_FULL, NULL, &r),
			 0);
	assert_int_equal(r.dirty_pages, 144);
	assert_int_equal(r.equal_pages, 64);
	assert_int_equal(ms_pageset_count(r.keep), 64);
	assert_int_equal(ms_pageset_count(r.empty), 16);
	assert_true(ms_pageset_contains(r.keep, 64) && !ms_pageset_contains(r.keep, 63));
	assert_true(ms_pageset_contains(r.empty, 128));
	/* without a parent every non-zero dirty page is kept */
	struct ms_dedup_result all;
	assert_int_equal(ms_dedup_compare(f->memfd, f->dirty, NULL, MS_DEDUP_FULL, NULL, &all), 0);
	assert_int_equal(ms_pageset_count(all.keep), 128);
	ms_dedup_result_fini(&all);
	/* drain: the survivors packed in order; the packed source reads the same bytes */
	char path[512];
	snprintf(path, sizeof(path), "%s/diff", f->dir);
	uint64_t written;
	assert_int_equal(ms_dedup_drain(f->memfd, r.keep, path, &written), 0);
	assert_int_equal(written, 64 * P);
	assert_int_equal(ms_dedup_drain(f->memfd, r.keep, path, &written), -EEXIST);
	int err;
	struct ms_source *file = ms_source_file_open(path, false, &err);
	struct ms_source *packed = ms_memfd_packed_source_new(f->memfd, r.keep);
	assert_int_equal(ms_source_size(packed), 64 * P);
	uint8_t a[3 * P], b[3 * P];
	for (uint64_t off = 0; off < 62 * P; off += 5 * P + 123) {
		assert_int_equal(ms_source_read(file, a, off, 3 * P), 0);
		assert_int_equal(ms_source_read(packed, b, off, 3 * P), 0);
		assert_memory_equal(a, b, 3 * P);
	}
	assert_int_equal(ms_source_read(file, a, 0, 1), 0);
	assert_int_equal(a[0], page_byte(64, 1)); /* first survivor first */
	/* after release the memfd sources say MS_ECLOSED */
	ms_memfd_release(f->memfd);
	assert_int_equal(ms_source_read(packed, b, 0, P), MS_ECLOSED);
	ms_source_unref(packed);
	ms_source_unref(file);
	ms_dedup_result_fini(&r);
	/* a dirty page past the memory is refused */
	struct ms_pageset *bad = ms_pageset_new();
	ms_pageset_add(bad, PAGES + 1);
	assert_int_equal(ms_dedup_compare(f->memfd, bad, NULL, MS_DEDUP_FULL, NULL, &r),
			 MS_ECLOSED);
	ms_pageset_free(bad);
}

/*
 * The warm-resume window under readers (TSan): provisional header (identity
 * memfd source) -> deduped header by CAS (packed memfd source) -> drained file
 * (source replaced) -> memfd released. Every read is exact, throughout.
 */
struct window {
	struct ms_layered *file;
	atomic_bool stop;
	atomic_int bad, reads;
};

static void *window_reader(void *p)
{
	struct window *w = p;
	uint8_t buf[4 * P];
	unsigned seed = 99;
	while (!atomic_load(&w->stop)) {
		seed = seed * 1103515245 + 12345;
		uint64_t page = (seed >> 8) % (PAGES - 4);
		int err = ms_layered_read(w->file, buf, page * P, 4 * P);
		atomic_fetch_add(&w->reads, 1);
		for (int i = 0; !err && i < 4; i++)
			if (buf[i * P] != expect_byte(page + (uint64_t)i) ||
			    buf[i * P + P - 1] != expect_byte(page + (uint64_t)i))
				err = -1;
		if (err)
			atomic_fetch_add(&w->bad, 1);
	}
	return NULL;
}

static void test_warm_window(void **state)
{
	struct fixture *f = *state;
	/* 1. provisional: dirty pages at identity offsets in the memfd */
	struct ms_header_ref *parent_ref = ms_layered_header(f->parent);
	struct ms_header *prov;
	struct ms_pageset *none = ms_pageset_new();
	assert_int_equal(
	    ms_header_new_diff(parent_ref->header, &f->prov_id, f->dirty, none, P, true, &prov), 0);
	table_set(&f->table, &f->prov_id, ms_memfd_identity_source_new(f->memfd));
	struct window w = {.file = ms_layered_new(prov, table_resolve, &f->table)};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, window_reader, &w);
	/* 2. compare, packed index before the result is published, deduped header, CAS */
	struct ms_dedup_result r;
	assert_int_equal(ms_dedup_compare(f->memfd, f->dirty, f->parent, MS_DEDUP_FULL, NULL, &r),
			 0);
	table_set(&f->table, &f->real_id, ms_memfd_packed_source_new(f->memfd, r.keep));
	struct ms_header *deduped;
	assert_int_equal(ms_header_new_diff(parent_ref->header, &f->real_id, r.keep, r.empty, P,
					    false, &deduped),
			 0);
	struct ms_header_ref *current = ms_layered_header(w.file);
	assert_true(current->header == prov);
	assert_int_equal(ms_layered_swap_if_current(w.file, current, deduped), 0);
	ms_header_ref_unref(current);
	usleep(20000);
	/* 3. drain; the real build's source becomes the file */
	char path[512];
	snprintf(path, sizeof(path), "%s/diff", f->dir);
	assert_int_equal(ms_dedup_drain(f->memfd, r.keep, path, NULL), 0);
	int err;
	table_set(&f->table, &f->real_id, ms_source_file_open(path, false, &err));
	usleep(20000);
	/* 4. release the memfd: the template left the provisional header and the drain is done */
	struct ms_source *identity = NULL;
	assert_int_equal(table_resolve(&f->table, &f->prov_id, NULL, &identity), 0);
	uint8_t page[P];
	ms_memfd_release(f->memfd);
	/* a read planned on the provisional header, landing now: without a fallback it fails */
	assert_int_equal(ms_source_read(identity, page, 70 * P, P), MS_ECLOSED);
	/* with one it is served through the current (deduped) header, with no re-plan */
	ms_memfd_identity_set_fallback(identity, w.file);
	uint64_t replans = ms_layered_replans(w.file);
	for (uint64_t p = 0; p < PAGES; p += 7) {
		assert_int_equal(ms_source_read(identity, page, p * P, P), 0);
		assert_int_equal(page[0], expect_byte(p));
		assert_int_equal(page[P - 1], expect_byte(p));
	}
	assert_int_equal(ms_layered_replans(w.file), replans);
	ms_memfd_identity_set_fallback(identity, NULL);
	ms_source_unref(identity);
	usleep(20000);
	atomic_store(&w.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&w.bad), 0);
	assert_true(atomic_load(&w.reads) > 0);
	ms_layered_free(w.file);
	ms_header_ref_unref(parent_ref);
	ms_pageset_free(none);
	ms_dedup_result_fini(&r);
}

/* ---- the packed index against a model (issue 18 #3) ---- */

#define MODEL_PAGES 2048 /* 8 MiB: four 2 MiB blocks */
#define HUGE_PAGES  (2 * 1024 * 1024 / P)

static uint8_t model_byte(uint64_t page, uint64_t at)
{
	uint64_t x = (page + 1) * 0x9e3779b97f4a7c15ULL ^ (at * 0xbf58476d1ce4e5b9ULL);
	return (uint8_t)(x >> 56 ^ x);
}

/*
 * A random survivor set of one of five shapes: many short runs, single pages,
 * the first and the last page, runs across every 2 MiB boundary, or one run.
 */
static struct ms_pageset *random_survivors(unsigned *seed, int shape)
{
	struct ms_pageset *set = ms_pageset_new();
	switch (shape) {
	case 0: /* many runs */
		for (int i = 0; i < 60; i++) {
			uint32_t at = (uint32_t)(rand_r(seed) % MODEL_PAGES);
			uint32_t len = 1 + (uint32_t)(rand_r(seed) % 9);
			ms_pageset_add_range(set, at,
					     at + len > MODEL_PAGES ? MODEL_PAGES : at + len);
		}
		break;
	case 1: /* single pages, never adjacent */
		for (uint32_t page = (uint32_t)(rand_r(seed) % 3); page < MODEL_PAGES;
		     page += 2 + (uint32_t)(rand_r(seed) % 40))
			ms_pageset_add(set, page);
		break;
	case 2: /* the first and the last page, and a few between */
		ms_pageset_add(set, 0);
		ms_pageset_add(set, MODEL_PAGES - 1);
		for (int i = 0; i < 5; i++)
			ms_pageset_add(set, 1 + (uint32_t)(rand_r(seed) % (MODEL_PAGES - 2)));
		break;
	case 3: /* runs across each 2 MiB boundary */
		for (uint32_t b = HUGE_PAGES; b < MODEL_PAGES; b += HUGE_PAGES) {
			uint32_t before = 1 + (uint32_t)(rand_r(seed) % 5);
			uint32_t after = 1 + (uint32_t)(rand_r(seed) % 5);
			ms_pageset_add_range(set, b - before, b + after);
		}
		break;
	default: /* one long run */
		ms_pageset_add_range(set, 7, MODEL_PAGES - 3);
		break;
	}
	return set;
}

/* The model: the survivors' pages, back to back in ascending order. */
static uint8_t *packed_model(const uint8_t *image, const struct ms_pageset *survivors,
			     uint64_t *size)
{
	uint64_t n = ms_pageset_count(survivors);
	uint8_t *model = malloc(n ? n * P : 1);
	uint64_t cursor = 0, start, len, at = 0;
	while (ms_pageset_next_run(survivors, &cursor, &start, &len))
		for (uint64_t page = start; page < start + len; page++, at++)
			memcpy(model + at * P, image + page * P, P);
	*size = n * P;
	return model;
}

struct model_readers {
	struct ms_source *packed;
	struct ms_diffstore *diffs; /* racing: read through the store's current entry */
	const char *key;
	const uint8_t *model;
	uint64_t size;
	atomic_uint seeds; /* each reader takes its own */
	atomic_bool stop;
	atomic_int bad, reads, closed;
};

/* One random range [off, off + len) of size (unaligned, across runs), read and compared. */
static int model_read_one(struct ms_source *src, const uint8_t *model, uint64_t size,
			  unsigned *seed, uint8_t *buf)
{
	uint64_t off = ((uint64_t)rand_r(seed) << 16 ^ (uint64_t)rand_r(seed)) % size;
	uint64_t most = size - off < 6 * P ? size - off : 6 * P;
	size_t len = 1 + (size_t)((uint64_t)rand_r(seed) % most);
	int err = ms_source_read(src, buf, off, len);
	if (!err && memcmp(buf, model + off, len) != 0)
		return -EBADMSG;
	return err;
}

static void *model_reader_main(void *arg)
{
	struct model_readers *r = arg;
	unsigned seed = atomic_fetch_add(&r->seeds, 1);
	uint8_t *buf = malloc(6 * P);
	while (!atomic_load(&r->stop)) {
		struct ms_source *src = NULL;
		if (ms_diffstore_get(r->diffs, r->key, &src)) {
			atomic_fetch_add(&r->bad, 1);
			break;
		}
		int err = model_read_one(src, r->model, r->size, &seed, buf);
		ms_source_unref(src);
		atomic_fetch_add(&r->reads, 1);
		if (err == MS_ECLOSED) /* replaced under us: the store has the file now */
			atomic_fetch_add(&r->closed, 1);
		else if (err)
			atomic_fetch_add(&r->bad, 1);
	}
	free(buf);
	return NULL;
}

/* Waits (by count, not by time: the machine may be loaded) until the readers made n reads. */
static void wait_reads(struct model_readers *r, int n)
{
	for (int i = 0; atomic_load(&r->reads) < n; i++) {
		if (i == 300000) /* 30 s */
			fail_msg("the readers made %d reads, not %d", atomic_load(&r->reads), n);
		usleep(100);
	}
}

/*
 * Many random survivor sets, each read at random ranges through the packed
 * source and compared with the model; out-of-range reads are errors; then,
 * with four readers on the diff store entry, the drained file replaces the
 * packed source under them (the drain's switch): every read is right or
 * MS_ECLOSED (re-plan), never wrong bytes.
 */
static void test_packed_model(void **state)
{
	struct fixture *f = *state;
	uint8_t *image = malloc(MODEL_PAGES * P);
	for (uint64_t page = 0; page < MODEL_PAGES; page++)
		for (uint64_t at = 0; at < P; at++)
			image[page * P + at] = model_byte(page, at);
	int err;
	struct ms_memfd *memfd =
	    ms_memfd_new(ms_test_guest_memfd(image, MODEL_PAGES), MODEL_PAGES * P, &err);
	assert_non_null(memfd);
	struct ms_diffstore_config dcfg = {.cache_dir = f->dir};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	assert_non_null(diffs);
	unsigned seed = 1805;
	uint8_t *buf = malloc(6 * P);
	for (int run = 0; run < 40; run++) {
		struct ms_pageset *survivors = random_survivors(&seed, run % 5);
		uint64_t size;
		uint8_t *model = packed_model(image, survivors, &size);
		struct ms_source *packed = ms_memfd_packed_source_new(memfd, survivors);
		assert_non_null(packed);
		assert_int_equal(ms_source_size(packed), size);
		for (int i = 0; i < 300; i++)
			if ((err = model_read_one(packed, model, size, &seed, buf)))
				fail_msg("run %d (shape %d): read %d: %s", run, run % 5, i,
					 ms_strerror(err));
		/* every page on its own, the first and the last byte */
		for (uint64_t at = 0; at < size; at += P) {
			assert_int_equal(ms_source_read(packed, buf, at, P), 0);
			assert_memory_equal(buf, model + at, P);
		}
		assert_int_equal(ms_source_read(packed, buf, size - 1, 1), 0);
		assert_int_equal(buf[0], model[size - 1]);
		/* out of range: errors, nothing copied */
		assert_true(ms_source_read(packed, buf, size, 1) < 0);
		assert_true(ms_source_read(packed, buf, size - 1, 2) < 0);
		assert_true(ms_source_read(packed, buf, UINT64_MAX - 1, 2) < 0);
		if (run % 5 == 0 || run % 5 == 3) {
			/* the drain's switch under readers */
			char key[64], path[600];
			snprintf(key, sizeof(key), "model-%d/memfile", run);
			snprintf(path, sizeof(path), "%s/model-%d", f->dir, run);
			assert_int_equal(ms_diffstore_insert(diffs, key, packed), 0);
			struct model_readers r = {
			    .diffs = diffs, .key = key, .model = model, .size = size};
			pthread_t th[4];
			atomic_store(&r.seeds, (unsigned)run * 4);
			for (int t = 0; t < 4; t++)
				pthread_create(&th[t], NULL, model_reader_main, &r);
			wait_reads(&r, 4); /* readers on the packed source before the switch */
			uint64_t written;
			assert_int_equal(ms_dedup_drain(memfd, survivors, path, &written), 0);
			assert_int_equal(written, size);
			struct ms_source *file = ms_source_file_open(path, true, &err);
			assert_non_null(file);
			assert_int_equal(ms_diffstore_replace(diffs, key, file), 0);
			ms_source_unref(file);
			wait_reads(&r, atomic_load(&r.reads) + 4); /* and on the file after it */
			atomic_store(&r.stop, true);
			for (int t = 0; t < 4; t++)
				pthread_join(th[t], NULL);
			assert_int_equal(atomic_load(&r.bad), 0);
			assert_true(atomic_load(&r.reads) > 4);
			assert_int_equal(ms_source_read(packed, buf, 0, 1), MS_ECLOSED);
		}
		assert_true(ms_memfd_source_bytes_served(packed) > 0);
		ms_source_unref(packed);
		ms_pageset_free(survivors);
		free(model);
	}
	free(buf);
	ms_diffstore_free(diffs);
	ms_memfd_unref(memfd);
	free(image);
}

/*
 * Finding 7: the memfd sources' zero-copy views. A layered file over the
 * provisional header slices the identity source in place (it copied before:
 * -ENOTSUP); the packed source gives a view within one survivor run only; a
 * view outlives the release (the unmap waits for its hold) while new views are
 * refused; a compare whose parent is such a file reads it through views.
 */
static void test_memfd_views(void **state)
{
	struct fixture *f = *state;
	struct ms_header_ref *parent_ref = ms_layered_header(f->parent);
	struct ms_header *prov;
	struct ms_pageset *none = ms_pageset_new();
	assert_int_equal(
	    ms_header_new_diff(parent_ref->header, &f->prov_id, f->dirty, none, P, true, &prov), 0);
	struct ms_source *identity = ms_memfd_identity_source_new(f->memfd);
	table_set(&f->table, &f->prov_id, ms_source_ref(identity));
	struct ms_layered *file = ms_layered_new(prov, table_resolve, &f->table);
	const void *ptr = NULL;
	struct ms_source *hold = NULL;
	/* pages 64..127 changed: at identity offsets in the memory itself */
	assert_int_equal(ms_layered_slice(file, 70 * P, 4 * P, &ptr, &hold), 0);
	assert_non_null(hold);
	for (int i = 0; i < 4; i++)
		assert_int_equal(((const uint8_t *)ptr)[i * P + 17], expect_byte(70 + (uint64_t)i));
	assert_true(ms_memfd_source_bytes_served(identity) >= 4 * P);
	/* the packed source: a view inside a run; across two runs it is a read */
	struct ms_pageset *runs = ms_pageset_new();
	ms_pageset_add_range(runs, 10, 12);
	ms_pageset_add_range(runs, 80, 83);
	struct ms_source *packed = ms_memfd_packed_source_new(f->memfd, runs);
	const void *pptr;
	struct ms_source *phold = NULL;
	assert_int_equal(ms_source_borrow(packed, 2 * P, 3 * P, &pptr, &phold), 0);
	assert_int_equal(((const uint8_t *)pptr)[0], expect_byte(80));
	assert_int_equal(((const uint8_t *)pptr)[3 * P - 1], expect_byte(82));
	struct ms_source *none_hold = NULL;
	assert_int_equal(ms_source_borrow(packed, P, 2 * P, &pptr, &none_hold), -ENOTSUP);
	assert_int_equal(ms_source_borrow(packed, 5 * P, 1, &pptr, &none_hold), -ERANGE);
	assert_null(none_hold);
	/* the release: views taken before stay mapped; new ones are refused */
	ms_memfd_release(f->memfd);
	assert_true(ms_memfd_is_released(f->memfd));
	for (int i = 0; i < 4; i++)
		assert_int_equal(((const uint8_t *)ptr)[i * P + P - 1],
				 expect_byte(70 + (uint64_t)i));
	struct ms_source *late = NULL;
	assert_int_equal(ms_source_borrow(identity, 0, P, &ptr, &late), MS_ECLOSED);
	assert_int_equal(ms_source_borrow(packed, 0, P, &pptr, &late), MS_ECLOSED);
	assert_null(late);
	ms_source_unref(phold);
	ms_source_unref(hold); /* the last view: now the memory is unmapped */
	ms_source_unref(packed);
	ms_pageset_free(runs);
	ms_layered_free(file);
	ms_source_unref(identity);
	ms_pageset_free(none);
	ms_header_ref_unref(parent_ref);
}

/* A compare whose parent serves from a memfd reads it in place and gets the same answer. */
static void test_compare_memfd_parent(void **state)
{
	struct fixture *f = *state;
	/* the parent: a paused build still in memory (its provisional header over every page) */
	int err;
	uint8_t *image = malloc(PAGES * P);
	for (uint64_t p = 0; p < PAGES; p++)
		memset(image + p * P, page_byte(p, 0), P);
	struct ms_memfd *pmem = ms_memfd_new(ms_test_guest_memfd(image, PAGES), PAGES * P, &err);
	assert_non_null(pmem);
	struct ms_header_ref *base_ref = ms_layered_header(f->parent);
	struct ms_pageset *all = ms_pageset_new(), *none = ms_pageset_new();
	ms_pageset_add_range(all, 0, PAGES);
	ms_uuid pid;
	ms_uuid_generate(&pid);
	struct ms_header *ph;
	assert_int_equal(ms_header_new_diff(base_ref->header, &pid, all, none, P, true, &ph), 0);
	struct ms_source *identity = ms_memfd_identity_source_new(pmem);
	table_set(&f->table, &pid, ms_source_ref(identity));
	struct ms_layered *parent = ms_layered_new(ph, table_resolve, &f->table);
	struct ms_dedup_result r;
	assert_int_equal(ms_dedup_compare(f->memfd, f->dirty, parent, MS_DEDUP_FULL, NULL, &r), 0);
	assert_int_equal(r.dirty_pages, 144);
	assert_int_equal(r.equal_pages, 64);
	assert_int_equal(ms_pageset_count(r.keep), 64);
	assert_int_equal(ms_pageset_count(r.empty), 16);
	/* every compared page (whole batches of 64) read from the memory once */
	assert_int_equal(ms_memfd_source_bytes_served(identity), 144 * P);
	ms_dedup_result_fini(&r);
	ms_layered_free(parent);
	ms_source_unref(identity);
	ms_memfd_unref(pmem);
	ms_pageset_free(all);
	ms_pageset_free(none);
	ms_header_ref_unref(base_ref);
	free(image);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_compare_and_drain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_warm_window, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_packed_model, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_memfd_views, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compare_memfd_parent, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
