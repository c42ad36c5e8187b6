/* test_mapping.c - every merge case and normalize rule of E2B's header code, lookups. */
#include "ms_test.h"
#include "header/header.h"
#include "header/mapping.h"
#include "util/err.h"

#include <errno.h>
#include <string.h>

#define P MS_PAGE_SIZE

static ms_uuid id_a, id_b, id_c;
static const ms_uuid nil_id;

static struct ms_mapping M(uint64_t off, uint64_t len, const ms_uuid *id, uint64_t storage) {
	return (struct ms_mapping){off * P, len *P, *id, storage *P};
}

static void
list_of(struct ms_mappings *list, const struct ms_mapping *e, size_t n)
{
	memset(list, 0, sizeof(*list));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ms_mappings_push(list, &e[i]), 0);
}

static void expect_list(const struct ms_mappings *got, const struct ms_mapping *want, size_t n)
{
	assert_int_equal(got->count, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(got->entries[i].offset, want[i].offset);
		assert_int_equal(got->entries[i].length, want[i].length);
		assert_true(ms_uuid_eq(&got->entries[i].build_id, &want[i].build_id));
		assert_int_equal(got->entries[i].storage_offset, want[i].storage_offset);
	}
}

static void merge_case(const struct ms_mapping *base, size_t nb, const struct ms_mapping *diff,
		       size_t nd, const struct ms_mapping *want, size_t nw)
{
	struct ms_mappings b, d, out;
	list_of(&b, base, nb);
	list_of(&d, diff, nd);
	struct ms_mappings b_copy;
	assert_int_equal(ms_mappings_copy(&b, &b_copy), 0);
	assert_int_equal(ms_mappings_merge(&b, &d, &out), 0);
	expect_list(&out, want, nw);
	expect_list(&b, b_copy.entries, b_copy.count); /* input untouched */
	ms_mappings_fini(&b);
	ms_mappings_fini(&b_copy);
	ms_mappings_fini(&d);
	ms_mappings_fini(&out);
}

static void test_merge_base_before_diff(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(0, 2, &id_a, 0)}, diff[] = {M(2, 2, &id_b, 0)};
	struct ms_mapping want[] = {M(0, 2, &id_a, 0), M(2, 2, &id_b, 0)};
	merge_case(base, 1, diff, 1, want, 2);
}

static void test_merge_diff_before_base(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(4, 2, &id_a, 7)}, diff[] = {M(0, 3, &id_b, 0)};
	struct ms_mapping want[] = {M(0, 3, &id_b, 0), M(4, 2, &id_a, 7)};
	merge_case(base, 1, diff, 1, want, 2);
}

static void test_merge_base_inside_diff(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(0, 2, &id_a, 0), M(2, 2, &id_c, 5), M(4, 4, &id_a, 2)};
	struct ms_mapping diff[] = {M(1, 4, &id_b, 10)};
	/* [2,4) lies inside the diff and is dropped; the neighbours are trimmed */
	struct ms_mapping want[] = {M(0, 1, &id_a, 0), M(1, 4, &id_b, 10), M(5, 3, &id_a, 3)};
	merge_case(base, 3, diff, 1, want, 3);
}

static void test_merge_diff_inside_base(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(0, 10, &id_a, 100)}, diff[] = {M(3, 2, &id_b, 0)};
	/* the right remainder shifts offset and storage by the same amount */
	struct ms_mapping want[] = {M(0, 3, &id_a, 100), M(3, 2, &id_b, 0), M(5, 5, &id_a, 105)};
	merge_case(base, 1, diff, 1, want, 3);
}

static void test_merge_base_overlaps_diff_end(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(2, 6, &id_a, 20)}, diff[] = {M(0, 4, &id_b, 0)};
	struct ms_mapping want[] = {M(0, 4, &id_b, 0), M(4, 4, &id_a, 22)};
	merge_case(base, 1, diff, 1, want, 2);
}

static void test_merge_diff_overlaps_base_end(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(0, 6, &id_a, 20)}, diff[] = {M(4, 4, &id_b, 1)};
	struct ms_mapping want[] = {M(0, 4, &id_a, 20), M(4, 4, &id_b, 1)};
	merge_case(base, 1, diff, 1, want, 2);
}

static void test_merge_zero_length_and_empty_diff(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(0, 4, &id_a, 0), M(4, 0, &id_c, 0), M(4, 4, &id_a, 4)};
	struct ms_mapping want[] = {M(0, 4, &id_a, 0), M(4, 4, &id_a, 4)};
	merge_case(base, 3, NULL, 0, want, 2);
	struct ms_mapping diff[] = {M(1, 0, &id_b, 0), M(2, 1, &id_b, 9)};
	struct ms_mapping want2[] = {M(0, 2, &id_a, 0), M(2, 1, &id_b, 9), M(3, 1, &id_a, 3),
				     M(4, 4, &id_a, 4)};
	merge_case(base, 3, diff, 2, want2, 4);
}

static void test_merge_splits_many(void **s)
{
	(void)s;
	struct ms_mapping base[] = {M(0, 16, &id_a, 0)};
	struct ms_mapping diff[] = {M(1, 1, &id_b, 0), M(4, 2, &id_b, 1), M(15, 1, &id_c, 0)};
	struct ms_mapping want[] = {M(0, 1, &id_a, 0), M(1, 1, &id_b, 0), M(2, 2, &id_a, 2),
				    M(4, 2, &id_b, 1), M(6, 9, &id_a, 6), M(15, 1, &id_c, 0)};
	merge_case(base, 1, diff, 3, want, 6);
}

static void normalize_case(const struct ms_mapping *in, size_t n, const struct ms_mapping *want,
			   size_t nw)
{
	struct ms_mappings list, out;
	list_of(&list, in, n);
	assert_int_equal(ms_mappings_normalize(&list, &out), 0);
	expect_list(&out, want, nw);
	expect_list(&list, in, n); /* does not modify its input */
	ms_mappings_fini(&list);
	ms_mappings_fini(&out);
}

static void test_normalize_rules(void **s)
{
	(void)s;
	normalize_case(NULL, 0, NULL, 0); /* empty */
	struct ms_mapping one[] = {M(0, 3, &id_a, 1)};
	normalize_case(one, 1, one, 1); /* single entry */
	struct ms_mapping adjacent[] = {M(0, 2, &id_a, 0), M(2, 3, &id_a, 2)};
	struct ms_mapping adjacent_want[] = {M(0, 5, &id_a, 0)};
	normalize_case(adjacent, 2, adjacent_want, 1); /* contiguous storage merges */
	struct ms_mapping alternating[] = {M(0, 1, &id_a, 0), M(1, 1, &id_b, 0), M(2, 1, &id_a, 1)};
	normalize_case(alternating, 3, alternating, 3);
	struct ms_mapping zero_len[] = {M(0, 1, &id_a, 0), M(1, 0, &id_b, 0), M(1, 1, &id_a, 1)};
	struct ms_mapping zero_len_want[] = {M(0, 2, &id_a, 0)};
	normalize_case(zero_len, 3, zero_len_want, 1);
	/* the bug E2B fixed: never join across a storage gap */
	struct ms_mapping gap[] = {M(0, 2, &id_a, 0), M(2, 2, &id_a, 5)};
	normalize_case(gap, 2, gap, 2);
	/* nil entries join whatever their storage offsets */
	struct ms_mapping nils[] = {M(0, 2, &nil_id, 0), M(2, 2, &nil_id, 77), M(4, 1, &id_a, 0)};
	struct ms_mapping nils_want[] = {M(0, 4, &nil_id, 0), M(4, 1, &id_a, 0)};
	normalize_case(nils, 3, nils_want, 2);
}

static void test_from_pages_packed_and_identity(void **s)
{
	(void)s;
	struct ms_pageset *pages = ms_pageset_new();
	ms_pageset_add_range(pages, 1, 3);
	ms_pageset_add(pages, 7);
	struct ms_mappings packed, identity;
	assert_int_equal(ms_mappings_from_pages(&id_a, pages, P, false, &packed), 0);
	struct ms_mapping want_packed[] = {M(1, 2, &id_a, 0), M(7, 1, &id_a, 2)};
	expect_list(&packed, want_packed, 2);
	assert_int_equal(ms_mappings_from_pages(&id_a, pages, P, true, &identity), 0);
	struct ms_mapping want_identity[] = {M(1, 2, &id_a, 1), M(7, 1, &id_a, 7)};
	expect_list(&identity, want_identity, 2);
	ms_mappings_fini(&packed);
	ms_mappings_fini(&identity);
	/* 2 MiB blocks: entries are still in bytes, page aligned */
	struct ms_mappings huge;
	assert_int_equal(ms_mappings_from_pages(&id_a, pages, MS_HUGE_PAGE_SIZE, false, &huge), 0);
	assert_int_equal(huge.entries[0].offset, MS_HUGE_PAGE_SIZE);
	assert_int_equal(huge.entries[1].storage_offset, 2 * MS_HUGE_PAGE_SIZE);
	ms_mappings_fini(&huge);
	assert_int_equal(ms_mappings_from_pages(&id_a, pages, 1000, false, &huge), -EINVAL);
	ms_pageset_free(pages);
}

static void test_validate(void **s)
{
	(void)s;
	struct ms_mappings list;
	struct ms_mapping good[] = {M(0, 2, &id_a, 0), M(2, 2, &nil_id, 0)};
	list_of(&list, good, 2);
	assert_int_equal(ms_mappings_validate(&list, 4 * P), 0);
	assert_int_equal(ms_mappings_validate(&list, 4 * P - 100), 0); /* rounded up */
	assert_int_equal(ms_mappings_validate(&list, 5 * P), MS_ECORRUPT);
	assert_int_equal(ms_mappings_validate(&list, 3 * P), MS_ECORRUPT);
	ms_mappings_fini(&list);
	struct ms_mapping gap[] = {M(0, 2, &id_a, 0), M(3, 1, &id_a, 0)};
	list_of(&list, gap, 2);
	assert_int_equal(ms_mappings_validate(&list, 4 * P), MS_ECORRUPT);
	ms_mappings_fini(&list);
	struct ms_mapping overlap[] = {M(0, 2, &id_a, 0), M(1, 3, &id_a, 0)};
	list_of(&list, overlap, 2);
	assert_int_equal(ms_mappings_validate(&list, 4 * P), MS_ECORRUPT);
	ms_mappings_fini(&list);
	struct ms_mapping zero[] = {M(0, 4, &id_a, 0), M(4, 0, &id_a, 0)};
	list_of(&list, zero, 2);
	assert_int_equal(ms_mappings_validate(&list, 4 * P), MS_ECORRUPT);
	ms_mappings_fini(&list);
	struct ms_mapping unaligned[] = {{0, 4 * P, id_a, 100}};
	list_of(&list, unaligned, 1);
	assert_int_equal(ms_mappings_validate(&list, 4 * P), MS_ECORRUPT);
	ms_mappings_fini(&list);
}

static void test_header_lookup(void **s)
{
	(void)s;
	struct ms_header *base = ms_header_new_base(&id_a, MS_HEADER_V4, P, 16 * P, false);
	assert_non_null(base);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	ms_pageset_add_range(dirty, 2, 5);
	ms_pageset_add_range(dirty, 9, 10);
	ms_pageset_add_range(empty, 4, 7); /* page 4 is dirty too: dirty wins */
	struct ms_header *diff;
	assert_int_equal(ms_header_new_diff(base, &id_b, dirty, empty, P, false, &diff), 0);
	assert_true(diff->incomplete);
	assert_int_equal(diff->meta.generation, 1);
	assert_true(ms_uuid_eq(&diff->meta.base_build_id, &id_a));
	ms_uuid build;
	uint64_t off_in, left;
	assert_int_equal(ms_header_lookup(diff, 3 * P, &build, &off_in, &left), 0);
	assert_true(ms_uuid_eq(&build, &id_b));
	assert_int_equal(off_in, 1 * P);
	assert_int_equal(left, 2 * P);
	assert_int_equal(ms_header_lookup(diff, 9 * P, &build, &off_in, &left), 0);
	assert_int_equal(off_in, 3 * P); /* packed after the first run of 3 pages */
	assert_int_equal(ms_header_lookup(diff, 5 * P, &build, &off_in, &left), 0);
	assert_true(ms_uuid_is_nil(&build));
	assert_int_equal(ms_header_lookup(diff, 16 * P, &build, &off_in, &left), -ERANGE);
	assert_int_equal(ms_header_lookup(diff, 3 * P + 1, &build, &off_in, &left), -EINVAL);
	/* provisional: identity offsets */
	struct ms_header *prov;
	assert_int_equal(ms_header_new_diff(base, &id_c, dirty, empty, P, true, &prov), 0);
	assert_int_equal(ms_header_lookup(prov, 9 * P, &build, &off_in, &left), 0);
	assert_true(ms_uuid_eq(&build, &id_c));
	assert_int_equal(off_in, 9 * P);
	/* a nil build id or a dirty page past the size is refused */
	struct ms_header *bad = NULL;
	assert_int_equal(ms_header_new_diff(base, &nil_id, dirty, empty, P, false, &bad), -EINVAL);
	ms_pageset_add(dirty, 20);
	assert_int_equal(ms_header_new_diff(base, &id_b, dirty, empty, P, false, &bad),
			 MS_ECORRUPT);
	assert_null(bad);
	ms_header_free(prov);
	ms_header_free(diff);
	ms_header_free(base);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
}

/* Builds no longer referenced by a child are filtered out of its table. */
static void test_diff_filters_builds(void **s)
{
	(void)s;
	struct ms_header *base = ms_header_new_base(&id_a, MS_HEADER_V4, P, 4 * P, true);
	struct ms_build_data bd = {.build_id = id_a, .size = 4 * P};
	assert_int_equal(ms_header_set_build(base, &bd), 0);
	struct ms_pageset *all = ms_pageset_new(), *none = ms_pageset_new();
	ms_pageset_add_range(all, 0, 4);
	struct ms_header *child;
	assert_int_equal(ms_header_new_diff(base, &id_b, all, none, P, false, &child), 0);
	assert_null(ms_header_build(child, &id_a));
	struct ms_header *partial;
	ms_pageset_clear(all);
	ms_pageset_add(all, 1);
	assert_int_equal(ms_header_new_diff(base, &id_b, all, none, P, false, &partial), 0);
	assert_non_null(ms_header_build(partial, &id_a));
	ms_header_free(partial);
	ms_header_free(child);
	ms_header_free(base);
	ms_pageset_free(all);
	ms_pageset_free(none);
}

int main(void)
{
	ms_uuid_generate(&id_a);
	ms_uuid_generate(&id_b);
	ms_uuid_generate(&id_c);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_merge_base_before_diff),
	    cmocka_unit_test(test_merge_diff_before_base),
	    cmocka_unit_test(test_merge_base_inside_diff),
	    cmocka_unit_test(test_merge_diff_inside_base),
	    cmocka_unit_test(test_merge_base_overlaps_diff_end),
	    cmocka_unit_test(test_merge_diff_overlaps_base_end),
	    cmocka_unit_test(test_merge_zero_length_and_empty_diff),
	    cmocka_unit_test(test_merge_splits_many),
	    cmocka_unit_test(test_normalize_rules),
	    cmocka_unit_test(test_from_pages_packed_and_identity),
	    cmocka_unit_test(test_validate),
	    cmocka_unit_test(test_header_lookup),
	    cmocka_unit_test(test_diff_filters_builds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
