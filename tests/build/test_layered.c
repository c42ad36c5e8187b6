/*
 * test_layered.c - the layered file: reads across layers from real diff files,
 * re-planning after eviction, and compare-and-swap under concurrent readers.
 */
#include "ms_test.h"
#include "build/layered.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define P     MS_PAGE_SIZE
#define PAGES 64

/* Builds and their diff files, resolved by id; optionally hands out a closed source once. */
struct resolver {
	char *dir;
	ms_uuid ids[4];
	int count;
	atomic_int close_next; /* > 0: the next resolve returns an already closed source */
	atomic_int resolves;
};

static int resolve(void *ctx, const ms_uuid *build, const struct ms_header *h,
		   struct ms_source **out)
{
	(void)h;
	struct resolver *r = ctx;
	atomic_fetch_add(&r->resolves, 1);
	for (int i = 0; i < r->count; i++) {
		if (!ms_uuid_eq(&r->ids[i], build))
			continue;
		char path[512], id[MS_UUID_STR_LEN];
		ms_uuid_format(build, id);
		snprintf(path, sizeof(path), "%s/%s", r->dir, id);
		int err;
		struct ms_source *src = ms_source_file_open(path, false, &err);
		if (!src)
			return err;
		if (atomic_load(&r->close_next) > 0) {
			atomic_fetch_sub(&r->close_next, 1);
			ms_source_close(src); /* evicted between planning and reading */
		}
		*out = src;
		return 0;
	}
	return MS_ENOTFOUND;
}

static void write_build(struct resolver *r, const ms_uuid *id, const uint8_t *data, size_t len)
{
	char path[512], text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	snprintf(path, sizeof(path), "%s/%s", r->dir, text);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	r->ids[r->count++] = *id;
}

/* Page p of layer l holds bytes (l * 64 + p) & 0xff, or zero when nil. */
static void test_read_across_layers(void **state)
{
	(void)state;
	struct resolver r = {.dir = ms_test_tmpdir()};
	ms_uuid base_id, top_id;
	ms_uuid_generate(&base_id);
	ms_uuid_generate(&top_id);
	uint8_t *base = malloc(PAGES * P), *top = malloc(PAGES * P);
	for (int p = 0; p < PAGES; p++)
		memset(base + p * P, p, P);
	write_build(&r, &base_id, base, PAGES * P);
	struct ms_header *h0 = ms_header_new_base(&base_id, MS_HEADER_V4, P, PAGES * P, true);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	ms_pageset_add_range(dirty, 10, 20);
	ms_pageset_add_range(empty, 30, 34);
	for (int i = 0; i < 10; i++)
		memset(top + i * P, 0x80 + 10 + i, P);
	write_build(&r, &top_id, top, 10 * P);
	struct ms_header *h1;
	assert_int_equal(ms_header_new_diff(h0, &top_id, dirty, empty, P, false, &h1), 0);
	ms_header_free(h0);
	struct ms_layered *file = ms_layered_new(h1, resolve, &r);
	uint8_t *got = malloc(PAGES * P);
	/* one read over everything, and unaligned reads across segment edges */
	assert_int_equal(ms_layered_read(file, got, 0, PAGES * P), 0);
	for (int p = 0; p < PAGES; p++) {
		uint8_t want = p >= 10 && p < 20   ? (uint8_t)(0x80 + p)
			       : p >= 30 && p < 34 ? 0
						   : (uint8_t)p;
		for (size_t i = 0; i < P; i += 511)
			assert_int_equal(got[p * P + i], want);
	}
	assert_int_equal(ms_layered_read(file, got, 9 * P + 100, 2 * P), 0);
	assert_int_equal(got[0], 9);
	assert_int_equal(got[P - 100], 0x80 + 10);
	assert_int_equal(ms_layered_read(file, got, PAGES * P - 10, 20), -ERANGE);
	/* eviction between plan and read: re-planned, still right */
	atomic_store(&r.close_next, 2);
	assert_int_equal(ms_layered_read(file, got, 9 * P, 3 * P), 0);
	assert_int_equal(got[0], 9);
	assert_int_equal(got[P], 0x80 + 10);
	assert_int_equal(got[2 * P], 0x80 + 11);
	assert_true(ms_layered_replans(file) >= 2);
	/* a source that is always closed ends the read with MS_ECLOSED, bounded */
	atomic_store(&r.close_next, 1000);
	assert_int_equal(ms_layered_read(file, got, 10 * P, P), MS_ECLOSED);
	atomic_store(&r.close_next, 0);
	ms_layered_free(file);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	free(got);
	free(base);
	free(top);
	ms_test_rmtree(r.dir);
	free(r.dir);
}

/* CAS semantics and the durable header. */
static void test_swap_and_durable(void **state)
{
	(void)state;
	ms_uuid a, b;
	ms_uuid_generate(&a);
	ms_uuid_generate(&b);
	struct ms_header *h0 = ms_header_new_base(&a, MS_HEADER_V4, P, 8 * P, false);
	struct ms_layered *file = ms_layered_new(h0, resolve, NULL);
	struct ms_header_ref *live = ms_layered_durable_header_now(file);
	assert_non_null(live); /* complete: durable at once */
	ms_header_ref_unref(live);
	/* a provisional (incomplete) header goes live; nothing durable until the future */
	struct ms_header_ref *base_ref = ms_layered_header(file);
	struct ms_header *prov = ms_header_copy(base_ref->header);
	prov->incomplete = true;
	assert_int_equal(ms_layered_swap_if_current(file, base_ref, prov), 0);
	struct ms_header_ref *out = NULL;
	assert_int_equal(ms_layered_durable_header(file, 0, &out), -ENOENT);
	struct ms_future *durable = ms_future_new(ms_header_ref_free_value);
	ms_layered_set_durable_future(file, durable);
	assert_null(ms_layered_durable_header_now(file));
	assert_int_equal(ms_layered_durable_header(file, 1000000, &out), -ETIMEDOUT);
	/* a stale CAS (expected is no longer current) does nothing */
	struct ms_header *late = ms_header_copy(base_ref->header);
	assert_int_equal(ms_layered_swap_if_current(file, base_ref, late), -EAGAIN);
	ms_header_free(late);
	ms_header_ref_unref(base_ref);
	/* the deduped header arrives: durable_now sees it */
	struct ms_header *deduped = ms_header_new_base(&b, MS_HEADER_V4, P, 8 * P, false);
	assert_int_equal(ms_future_set(durable, ms_header_ref_new(deduped)), 0);
	out = ms_layered_durable_header_now(file);
	assert_non_null(out);
	assert_true(ms_uuid_eq(&out->header->meta.build_id, &b));
	ms_header_ref_unref(out);
	assert_int_equal(ms_layered_durable_header(file, -1, &out), 0);
	ms_header_ref_unref(out);
	/* another size is refused */
	struct ms_header *other = ms_header_new_base(&b, MS_HEADER_V4, P, 9 * P, false);
	assert_int_equal(ms_layered_swap(file, other), -EINVAL);
	ms_header_free(other);
	ms_future_unref(durable);
	ms_layered_free(file);
}

/*
 * Readers read 8-page spans while a writer swaps between two headers, one
 * mapping everything to build A (bytes 'A'), the other to build B (bytes 'B'):
 * every read must be all 'A' or all 'B', never a mix of two headers.
 */
struct swap_race {
	struct ms_layered *file;
	atomic_bool stop;
	atomic_int mixed, reads;
};

static void *swap_reader(void *p)
{
	struct swap_race *s = p;
	uint8_t *buf = malloc(8 * P);
	unsigned seed = 1;
	while (!atomic_load(&s->stop)) {
		seed = seed * 1103515245 + 12345;
		uint64_t off = (seed >> 8) % (PAGES - 8) * P;
		if (ms_layered_read(s->file, buf, off, 8 * P))
			continue;
		atomic_fetch_add(&s->reads, 1);
		for (size_t i = 1; i < 8 * P; i++)
			if (buf[i] != buf[0] || (buf[0] != 'A' && buf[0] != 'B')) {
				atomic_fetch_add(&s->mixed, 1);
				break;
			}
	}
	free(buf);
	return NULL;
}

static void test_swap_under_readers(void **state)
{
	(void)state;
	struct resolver r = {.dir = ms_test_tmpdir()};
	ms_uuid a, b;
	ms_uuid_generate(&a);
	ms_uuid_generate(&b);
	uint8_t *data = malloc(PAGES * P);
	memset(data, 'A', PAGES * P);
	write_build(&r, &a, data, PAGES * P);
	memset(data, 'B', PAGES * P);
	write_build(&r, &b, data, PAGES * P);
	struct ms_header *ha = ms_header_new_base(&a, MS_HEADER_V4, P, PAGES * P, true);
	struct swap_race s = {.file = ms_layered_new(ha, resolve, &r)};
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, swap_reader, &s);
	for (int i = 0; i < 400; i++) {
		const ms_uuid *id = i % 2 ? &a : &b;
		struct ms_header *next = ms_header_new_base(id, MS_HEADER_V4, P, PAGES * P, true);
		if (i % 3 == 0) {
			struct ms_header_ref *cur = ms_layered_header(s.file);
			int err = ms_layered_swap_if_current(s.file, cur, next);
			if (err)
				ms_header_free(next);
			ms_header_ref_unref(cur);
		} else {
			assert_int_equal(ms_layered_swap(s.file, next), 0);
		}
		usleep(200);
	}
	atomic_store(&s.stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&s.mixed), 0);
	assert_true(atomic_load(&s.reads) > 0);
	ms_layered_free(s.file);
	free(data);
	ms_test_rmtree(r.dir);
	free(r.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_read_across_layers),
	    cmocka_unit_test(test_swap_and_durable),
	    cmocka_unit_test(test_swap_under_readers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
