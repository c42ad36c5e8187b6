/*
 * test_dedup.c - compare, drain, memfd sources, and the warm-resume window:
 * reads of a paused guest's memory stay exact while the header moves
 * provisional -> deduped (CAS) -> drained file, and the memfd is released.
 */
#include "ms_test.h"
#include "build/layered.h"
#include "snapshot/dedup.h"
#include "snapshot/memfd.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
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
	f->memfd = ms_memfd_take(guest_memfd(), PAGES * P, &err);
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
	assert_int_equal(ms_dedup_compare(f->memfd, f->dirty, f->parent, MS_DEDUP_FULL, NULL, &r), 0);
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
	assert_int_equal(ms_dedup_compare(f->memfd, bad, NULL, MS_DEDUP_FULL, NULL, &r), MS_ECLOSED);
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
	assert_int_equal(ms_dedup_compare(f->memfd, f->dirty, f->parent, MS_DEDUP_FULL, NULL, &r), 0);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_compare_and_drain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_warm_window, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
