/*
 * test_catalog.c - a store's catalog and the collector's plan (build/catalog.h)
 * over a file store laid out by hand: a chain, a branch, an upload under way
 * (data, no header) with a live lease, the same without a lease (young, then
 * old), a lease that expired, a malformed one, a header that does not parse,
 * and a build whose header was removed while a child still maps to its data.
 * The plan removes exactly the leftovers; after it runs every surviving build
 * still reads, and a second plan is empty.
 */
#include "ms_test.h"

#include "build/catalog.h"
#include "build/storage.h"
#include "header/header.h"
#include "header/serialize.h"
#include "storage/artifact.h"
#include "storage/faulty.h"
#include "storage/lease.h"
#include "util/err.h"
#include "util/pageset.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <utime.h>

#define PAGES 64
#define P     4096ULL

struct fixture {
	char *dir;
	struct ms_store *store;
	int64_t now_ms;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	int err;
	f->store = ms_store_fs_new(f->dir, &err);
	assert_non_null(f->store);
	f->now_ms = ms_lease_now_ms();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_store_free(f->store);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void put(struct fixture *f, const ms_uuid *id, enum ms_artifact a, const void *buf,
		size_t len)
{
	char key[MS_ARTIFACT_KEY_MAX];
	assert_int_equal(ms_artifact_key(key, sizeof(key), id, a, MS_COMPRESS_NONE), 0);
	assert_int_equal(ms_store_put_buf(f->store, key, buf, len, NULL), 0);
}

/* Publishes a build over parent (NULL: a base) whose pages [first, first+count) are dirty. */
static struct ms_header *publish(struct fixture *f, ms_uuid *id, const struct ms_header *parent,
				 uint32_t first, uint32_t count)
{
	ms_uuid_generate(id);
	struct ms_header *base = NULL, *h = NULL;
	if (!parent)
		parent = base = ms_header_new_base(id, MS_HEADER_V4, P, PAGES * P, false);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	ms_pageset_add_range(dirty, first, first + count);
	assert_int_equal(ms_header_new_diff(parent, id, dirty, empty, P, false, &h), 0);
	h->incomplete = false;
	uint8_t *data = malloc(count * P);
	memset(data, 0x5a, count * P);
	struct ms_build_data self = {.build_id = *id, .size = (int64_t)(count * P)};
	assert_int_equal(ms_header_set_build(h, &self), 0);
	put(f, id, MS_ARTIFACT_MEMFILE, data, count * P);
	put(f, id, MS_ARTIFACT_SNAPFILE, "state", 5);
	uint8_t *blob;
	size_t len;
	assert_int_equal(ms_header_serialize(h, 0, false, &blob, &len), 0);
	put(f, id, MS_ARTIFACT_MEMFILE_HEADER, blob, len);
	free(blob);
	free(data);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	ms_header_free(base);
	return h;
}

/* Sets every object of build id to an age of age_ms. */
static void age(struct fixture *f, const ms_uuid *id, int64_t age_ms)
{
	static const char *const names[] = {"memfile", "memfile.header", "snapfile"};
	char text[MS_UUID_STR_LEN], path[1024];
	ms_uuid_format(id, text);
	struct timeval tv[2];
	tv[0].tv_sec = tv[1].tv_sec = (time_t)((f->now_ms - age_ms) / 1000);
	tv[0].tv_usec = tv[1].tv_usec = 0;
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s/%s", f->dir, text, names[i]);
		utimes(path, tv); /* a missing object: nothing to age */
	}
}

static bool planned(const struct ms_gc_plan *plan, const char *key)
{
	for (size_t i = 0; i < plan->count; i++)
		if (!strcmp(plan->items[i].key, key))
			return true;
	return false;
}

static bool build_planned(const struct ms_gc_plan *plan, const ms_uuid *id)
{
	char text[MS_UUID_STR_LEN];
	ms_uuid_format(id, text);
	for (size_t i = 0; i < plan->count; i++)
		if (!strncmp(plan->items[i].key, text, MS_UUID_STR_LEN - 1))
			return true;
	return false;
}

static void test_catalog_and_gc(void **state)
{
	struct fixture *f = *state;
	const int64_t hour = 3600 * 1000, older_than = 2 * hour;
	/* a chain base <- mid <- top, and a branch over mid */
	ms_uuid base, mid, top, branch;
	struct ms_header *hb = publish(f, &base, NULL, 0, PAGES);
	struct ms_header *hm = publish(f, &mid, hb, 0, 8);
	struct ms_header *ht = publish(f, &top, hm, 8, 8);
	struct ms_header *hr = publish(f, &branch, hm, 16, 4);
	/* "hidden": published, then its header removed, while its child maps to it */
	ms_uuid hidden, child;
	struct ms_header *hh = publish(f, &hidden, hb, 32, 4);
	struct ms_header *hc = publish(f, &child, hh, 40, 4);
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), &hidden, MS_ARTIFACT_MEMFILE_HEADER, MS_COMPRESS_NONE);
	assert_int_equal(ms_store_remove(f->store, key), 0);
	/* uploads without a header: leased (under way), young, old; and a broken header */
	ms_uuid leased, young, old, broken;
	ms_uuid_generate(&leased);
	ms_uuid_generate(&young);
	ms_uuid_generate(&old);
	ms_uuid_generate(&broken);
	put(f, &leased, MS_ARTIFACT_MEMFILE, "data", 4);
	put(f, &young, MS_ARTIFACT_MEMFILE, "data", 4);
	put(f, &old, MS_ARTIFACT_MEMFILE, "data", 4);
	put(f, &old, MS_ARTIFACT_SNAPFILE, "snap", 4);
	put(f, &broken, MS_ARTIFACT_MEMFILE_HEADER, "not a header", 12);
	age(f, &leased, 5 * hour);
	age(f, &old, 5 * hour);
	age(f, &broken, 5 * hour);
	assert_int_equal(
	    ms_lease_put(f->store, MS_LEASE_UPLOADS, "holder", &leased, "test", hour, f->now_ms),
	    0);
	/* an expired lease (its upload died), a malformed one, one naming another build */
	ms_uuid dead, other;
	ms_uuid_generate(&dead);
	ms_uuid_generate(&other);
	assert_int_equal(ms_lease_put(f->store, MS_LEASE_PEERS, "address", &dead, "10.0.0.1:1",
				      1000, f->now_ms - 2 * hour),
			 0);
	assert_int_equal(ms_store_put_buf(f->store, "uploads/garbage", "{", 1, NULL), 0);
	char wrong[96];
	ms_lease_key(MS_LEASE_UPLOADS, &other, wrong, sizeof(wrong));
	assert_int_equal(
	    ms_lease_put(f->store, MS_LEASE_UPLOADS, "holder", &dead, "test", hour, f->now_ms), 0);
	char dead_key[96];
	ms_lease_key(MS_LEASE_UPLOADS, &dead, dead_key, sizeof(dead_key));
	void *buf;
	size_t len;
	assert_int_equal(ms_store_read_all(f->store, dead_key, 1024, &buf, &len), 0);
	assert_int_equal(ms_store_put_buf(f->store, wrong, buf, len, NULL), 0); /* key != id */
	assert_int_equal(ms_store_remove(f->store, dead_key), 0);
	free(buf);
	assert_int_equal(ms_store_put_buf(f->store, "unrelated/object", "x", 1, NULL), 0);

	struct ms_catalog *c;
	assert_int_equal(ms_catalog_load(f->store, f->now_ms, &c), 0);
	assert_int_equal(c->count, 10);
	assert_int_equal(c->other_keys, 1);
	/* parents and dependents */
	const struct ms_catalog_build *b = ms_catalog_find(c, &top);
	assert_non_null(b);
	assert_true(b->has_header && b->reached && b->has_parent);
	assert_true(ms_uuid_eq(&b->parent, &mid));
	assert_int_equal(b->generation, 3);
	assert_int_equal(b->mem_bytes, PAGES * P);
	assert_true(ms_uuid_eq(&ms_catalog_find(c, &branch)->parent, &mid));
	assert_true(ms_uuid_eq(&ms_catalog_find(c, &mid)->parent, &base));
	assert_false(ms_catalog_find(c, &base)->has_parent);
	ms_uuid deps[8];
	assert_int_equal(ms_catalog_dependents(c, &mid, deps, 8), 2); /* top, branch */
	assert_int_equal(ms_catalog_dependents(c, &top, deps, 8), 0);
	/* base: mid, top, branch and child map pages of it (hidden's header is gone) */
	assert_int_equal(ms_catalog_dependents(c, &base, deps, 8), 4);
	assert_int_equal(ms_catalog_dependents(c, &hidden, deps, 1), 1);
	assert_true(ms_uuid_eq(&deps[0], &child));
	assert_true(ms_catalog_find(c, &hidden)->reached); /* its child maps to its data */
	assert_false(ms_catalog_find(c, &hidden)->has_header);
	assert_true(ms_catalog_find(c, &leased)->leased);
	assert_int_not_equal(ms_catalog_find(c, &broken)->header_error, 0);

	struct ms_gc_plan plan;
	assert_int_equal(ms_catalog_gc_plan(c, f->now_ms, older_than, &plan), 0);
	assert_int_equal(plan.kept_young, 1);
	assert_int_equal(plan.kept_leased, 1);
	assert_int_equal(plan.kept_broken, 1);
	/* exactly: old's two objects, the expired, malformed and misnamed leases */
	assert_int_equal(plan.count, 5);
	assert_true(build_planned(&plan, &old));
	ms_lease_key(MS_LEASE_PEERS, &dead, key, sizeof(key));
	assert_true(planned(&plan, key));
	assert_true(planned(&plan, "uploads/garbage"));
	assert_true(planned(&plan, wrong));
	const ms_uuid *kept[] = {&base,	 &mid,	  &top,	  &branch, &hidden,
				 &child, &leased, &young, &broken};
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		assert_false(build_planned(&plan, kept[i]));
	/* its bytes: old's two 4-byte objects and the three leases' sizes */
	uint64_t lease_bytes = 0, size;
	const char *lease_keys[] = {key, "uploads/garbage", wrong};
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ms_store_size(f->store, lease_keys[i], &size), 0);
		lease_bytes += size;
	}
	assert_int_equal(plan.bytes, 8 + lease_bytes);
	size_t removed;
	assert_int_equal(ms_gc_plan_run(f->store, &plan, &removed), 0);
	assert_int_equal(removed, 5);
	ms_gc_plan_fini(&plan);
	ms_catalog_free(c);

	/* a second look: nothing left to remove; the survivors still load */
	assert_int_equal(ms_catalog_load(f->store, f->now_ms, &c), 0);
	assert_int_equal(ms_catalog_gc_plan(c, f->now_ms, older_than, &plan), 0);
	assert_int_equal(plan.count, 0);
	ms_gc_plan_fini(&plan);
	/* with no age limit (a second later), the young upload goes too; the leased one stays */
	assert_int_equal(ms_catalog_gc_plan(c, ms_lease_now_ms() + 1000, 0, &plan), 0);
	assert_int_equal(plan.count, 1);
	assert_true(build_planned(&plan, &young));
	ms_gc_plan_fini(&plan);
	ms_catalog_free(c);
	const ms_uuid *published[] = {&base, &mid, &top, &branch, &child};
	for (size_t i = 0; i < 5; i++) {
		struct ms_header *h;
		assert_int_equal(ms_build_storage_load_header(f->store, published[i],
							      MS_ARTIFACT_MEMFILE_HEADER, &h),
				 0);
		ms_header_free(h);
	}
	ms_header_free(hb);
	ms_header_free(hm);
	ms_header_free(ht);
	ms_header_free(hr);
	ms_header_free(hh);
	ms_header_free(hc);
}

/* A store error while reading a lease fails the load: a lease is never taken for dead on it. */
static void test_lease_read_error(void **state)
{
	struct fixture *f = *state;
	ms_uuid id;
	ms_uuid_generate(&id);
	assert_int_equal(
	    ms_lease_put(f->store, MS_LEASE_UPLOADS, "holder", &id, "test", 0, f->now_ms), 0);
	put(f, &id, MS_ARTIFACT_MEMFILE, "data", 4);
	struct ms_store *faulty = ms_store_faulty_new(f->store);
	assert_non_null(faulty);
	/* the first read is the lease's (the build has no header to read) */
	ms_store_faulty_inject(faulty, MS_FAULTY_READ, 1, MS_FAULTY_FAIL, -EIO, 0);
	struct ms_catalog *c = NULL;
	assert_int_equal(ms_catalog_load(faulty, f->now_ms, &c), -EIO);
	assert_null(c);
	/* read right, the lease is live and keeps the build even with no age limit */
	assert_int_equal(ms_catalog_load(faulty, f->now_ms, &c), 0);
	assert_true(c->nleases == 1 && c->leases[0].live);
	struct ms_gc_plan plan;
	assert_int_equal(ms_catalog_gc_plan(c, ms_lease_now_ms() + 1000, 0, &plan), 0);
	assert_int_equal(plan.count, 0);
	assert_int_equal(plan.kept_leased, 1);
	ms_gc_plan_fini(&plan);
	ms_catalog_free(c);
	ms_store_free(faulty);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_catalog_and_gc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lease_read_error, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
