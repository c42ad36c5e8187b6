/* test_serialize.c - V3/V4/V5 round trips, and one rejection test per decoder limit. */
#include "ms_test.h"
#include "header/serialize.h"
#include "util/err.h"

#include <lz4frame.h>
#include <string.h>

#define P MS_PAGE_SIZE

static ms_uuid id_a, id_b, id_c;

/* A 3-layer header with a compressed ancestor (frames) and an uncompressed one. */
static struct ms_header *sample_header(uint64_t size)
{
	struct ms_header *base = ms_header_new_base(&id_a, MS_HEADER_V4, P, size, true);
	struct ms_build_data a = {.build_id = id_a, .size = (int64_t)((size + P - 1) / P * P)};
	a.frames = ms_frame_table_new(MS_COMPRESS_ZSTD);
	for (int i = 0; i < 8; i++)
		assert_int_equal(ms_frame_table_append(a.frames, (int32_t)(4 * P), 1000 + i), 0);
	memset(a.checksum, 0xaa, 32);
	assert_int_equal(ms_header_set_build(base, &a), 0);
	ms_frame_table_free(a.frames);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	ms_pageset_add_range(dirty, 4, 6);
	ms_pageset_add(dirty, 20);
	ms_pageset_add_range(empty, 10, 12);
	struct ms_header *mid, *top;
	assert_int_equal(ms_header_new_diff(base, &id_b, dirty, empty, P, false, &mid), 0);
	struct ms_build_data b = {.build_id = id_b, .size = 3 * P};
	assert_int_equal(ms_header_set_build(mid, &b), 0);
	ms_pageset_clear(dirty);
	ms_pageset_clear(empty);
	ms_pageset_add_range(dirty, 5, 9);
	assert_int_equal(ms_header_new_diff(mid, &id_c, dirty, empty, P, false, &top), 0);
	struct ms_build_data c = {.build_id = id_c, .size = 4 * P};
	assert_int_equal(ms_header_set_build(top, &c), 0);
	top->incomplete = false;
	ms_header_free(base);
	ms_header_free(mid);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
	return top;
}

static void expect_same_mappings(const struct ms_header *a, const struct ms_header *b)
{
	assert_int_equal(a->mappings.count, b->mappings.count);
	assert_memory_equal(a->mappings.entries, b->mappings.entries,
			    a->mappings.count * sizeof(struct ms_mapping));
	assert_memory_equal(&a->meta.build_id, &b->meta.build_id, 16);
	assert_int_equal(a->meta.size, b->meta.size);
	assert_int_equal(a->meta.generation, b->meta.generation);
}

static struct ms_header *round_trip(const struct ms_header *h, uint64_t version, size_t *len_out)
{
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_header_serialize(h, version, false, &buf, &len), 0);
	struct ms_header *back;
	assert_int_equal(ms_header_deserialize(buf, len, &back), 0);
	/* re-serializing the parsed header gives the same bytes (unless backfill added a build) */
	uint8_t *again;
	size_t again_len;
	assert_int_equal(ms_header_serialize(back, version, false, &again, &again_len), 0);
	if (back->build_count == h->build_count) {
		assert_int_equal(again_len, len);
		assert_memory_equal(again, buf, len);
	}
	free(again);
	free(buf);
	if (len_out)
		*len_out = len;
	return back;
}

static void test_round_trips(void **s)
{
	(void)s;
	struct ms_header *h = sample_header(32 * P);
	for (uint64_t v = MS_HEADER_V3; v <= MS_HEADER_V5; v++) {
		struct ms_header *back = round_trip(h, v, NULL);
		expect_same_mappings(h, back);
		assert_int_equal(back->meta.version, v);
		if (v >= MS_HEADER_V4) {
			const struct ms_build_data *a = ms_header_build(back, &id_a);
			assert_non_null(a);
			assert_non_null(a->frames);
			assert_int_equal(a->checksum[7], 0xaa);
			/* trimmed: id_a is referenced at storage [0,4P)+[6P..) etc., not all frames
			 */
			assert_true(a->frames->count <= 8);
			assert_int_equal(ms_frame_table_validate(a->frames), 0);
			assert_non_null(ms_header_build(back, &id_c));
		} else {
			/* V3: every referenced build backfilled as uncompressed */
			const struct ms_build_data *a = ms_header_build(back, &id_a);
			assert_non_null(a);
			assert_null(a->frames);
		}
		ms_header_free(back);
	}
	ms_header_free(h);
}

static void test_trimming(void **s)
{
	(void)s;
	/* build a references only frame 2 of its 4 */
	struct ms_header *h = ms_header_new_base(&id_b, MS_HEADER_V4, P, 8 * P, false);
	h->mappings.entries[0].length = 4 * P;
	struct ms_mapping e = {4 * P, 1 * P, id_a, 9 * P};
	struct ms_mapping tail = {5 * P, 3 * P, MS_UUID_NIL, 0};
	assert_int_equal(ms_mappings_push(&h->mappings, &e), 0);
	assert_int_equal(ms_mappings_push(&h->mappings, &tail), 0);
	struct ms_build_data a = {.build_id = id_a, .size = 16 * P};
	a.frames = ms_frame_table_new(MS_COMPRESS_LZ4);
	for (int i = 0; i < 4; i++)
		ms_frame_table_append(a.frames, (int32_t)(4 * P), 100);
	assert_int_equal(ms_header_set_build(h, &a), 0);
	ms_frame_table_free(a.frames);
	struct ms_header *back = round_trip(h, MS_HEADER_V4, NULL);
	const struct ms_build_data *got = ms_header_build(back, &id_a);
	assert_int_equal(got->frames->count, 1);
	assert_int_equal(got->frames->frames[0].start_u, 8 * P);
	assert_int_equal(got->frames->frames[0].start_c, 200);
	/* the self build (id_b) is not referenced: nothing to backfill */
	assert_null(ms_header_build(back, &id_b));
	ms_header_free(back);
	ms_header_free(h);
}

static void test_unaligned_size_and_v5_smaller(void **s)
{
	(void)s;
	struct ms_header *h = sample_header(30 * P + 123);
	size_t v4_len, v5_len;
	struct ms_header *b4 = round_trip(h, MS_HEADER_V4, &v4_len);
	struct ms_header *b5 = round_trip(h, MS_HEADER_V5, &v5_len);
	expect_same_mappings(b4, b5);
	assert_int_equal(b5->meta.size, 30 * P + 123);
	ms_header_free(b4);
	ms_header_free(b5);
	ms_header_free(h);
	/* page-granular: many entries; V5 must be much smaller than V4 */
	struct ms_header *base = ms_header_new_base(&id_a, MS_HEADER_V5, P, 40000 * P, false);
	struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
	for (uint32_t p = 0; p < 40000; p += 3)
		ms_pageset_add(dirty, p);
	struct ms_header *diff;
	assert_int_equal(ms_header_new_diff(base, &id_b, dirty, empty, P, false, &diff), 0);
	diff->incomplete = false;
	b4 = round_trip(diff, MS_HEADER_V4, &v4_len);
	b5 = round_trip(diff, MS_HEADER_V5, &v5_len);
	expect_same_mappings(b4, b5);
	print_message("page-granular header: V4 %zu bytes, V5 %zu bytes\n", v4_len, v5_len);
	assert_true(v5_len < v4_len);
	ms_header_free(b4);
	ms_header_free(b5);
	ms_header_free(diff);
	ms_header_free(base);
	ms_pageset_free(dirty);
	ms_pageset_free(empty);
}

static void test_incomplete_refused(void **s)
{
	(void)s;
	struct ms_header *h = sample_header(32 * P);
	h->incomplete = true;
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_header_serialize(h, MS_HEADER_V4, false, &buf, &len), MS_EINCOMPLETE);
	assert_int_equal(ms_header_serialize(h, MS_HEADER_V3, true, &buf, &len), MS_EINCOMPLETE);
	assert_int_equal(ms_header_serialize(h, MS_HEADER_V5, true, &buf, &len), 0);
	struct ms_header *back;
	assert_int_equal(ms_header_deserialize(buf, len, &back), 0);
	assert_true(back->incomplete);
	ms_header_free(back);
	free(buf);
	assert_int_equal(ms_header_serialize(h, 9, true, &buf, &len), MS_EVERSION);
	ms_header_free(h);
}

/* ---- hand-crafted hostile inputs ---- */

struct crafted {
	uint8_t data[4 << 20];
	size_t len;
};

static void put(struct crafted *c, const void *src, size_t n)
{
	memcpy(c->data + c->len, src, n);
	c->len += n;
}

static void put32(struct crafted *c, uint32_t v)
{
	put(c, &v, 4); /* little-endian host */
}

static void put64(struct crafted *c, uint64_t v)
{
	put(c, &v, 8);
}

static void put_meta(struct crafted *c, uint64_t version, uint64_t block, uint64_t size)
{
	put64(c, version);
	put64(c, block);
	put64(c, size);
	put64(c, 0);
	put(c, id_a.bytes, 16);
	put(c, id_a.bytes, 16);
}

/* [meta][flags][prefix][lz4(block)] with the prefix given (or the real length). */
static int parse_v45(uint64_t version, uint64_t size, const struct crafted *block,
		     int64_t prefix_override)
{
	static struct crafted c;
	c.len = 0;
	put_meta(&c, version, P, size);
	uint8_t flags = 0;
	put(&c, &flags, 1);
	put32(&c, prefix_override >= 0 ? (uint32_t)prefix_override : (uint32_t)block->len);
	size_t n = LZ4F_compressFrame(c.data + c.len, sizeof(c.data) - c.len, block->data,
				      block->len, NULL);
	assert_false(LZ4F_isError(n));
	c.len += n;
	struct ms_header *h = NULL;
	int err = ms_header_deserialize(c.data, c.len, &h);
	if (err == 0)
		ms_header_free(h);
	else
		assert_null(h);
	return err;
}

static void put_record(struct crafted *c, uint64_t off, uint64_t len, const ms_uuid *id,
		       uint64_t storage)
{
	put64(c, off);
	put64(c, len);
	put(c, id->bytes, 16);
	put64(c, storage);
}

static void test_reject_v3(void **s)
{
	(void)s;
	static struct crafted c;
	c.len = 0;
	struct ms_header *h = NULL;
	put_meta(&c, 3, P, 4 * P);
	assert_int_equal(ms_header_deserialize(c.data, 40, &h), MS_ECORRUPT); /* truncated meta */
	put_record(&c, 0, 4 * P, &id_b, 0);
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), 0);
	ms_header_free(h);
	assert_int_equal(ms_header_deserialize(c.data, c.len - 1, &h), MS_ECORRUPT); /* partial */
	c.len = 0;
	put_meta(&c, 3, 0, 4 * P); /* zero block size */
	put_record(&c, 0, 4 * P, &id_b, 0);
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), MS_ECORRUPT);
	c.len = 0;
	put_meta(&c, 77, P, 4 * P); /* unknown version */
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), MS_EVERSION);
	c.len = 0;
	put_meta(&c, 3, P, 4 * P); /* overlap */
	put_record(&c, 0, 3 * P, &id_b, 0);
	put_record(&c, 2 * P, 2 * P, &id_b, 0);
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), MS_ECORRUPT);
	c.len = 0;
	put_meta(&c, 3, P, 4 * P); /* past the size */
	put_record(&c, 0, 5 * P, &id_b, 0);
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), MS_ECORRUPT);
	c.len = 0;
	put_meta(&c, 3, P, 4 * P); /* zero-length entry */
	put_record(&c, 0, 4 * P, &id_b, 0);
	put_record(&c, 4 * P, 0, &id_b, 0);
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), MS_ECORRUPT);
	c.len = 0;
	put_meta(&c, 3, P, (1ULL << 32) * P + P); /* more than 2^32 pages */
	assert_int_equal(ms_header_deserialize(c.data, c.len, &h), MS_ECORRUPT);
	assert_int_equal(ms_header_deserialize(c.data, 0, &h), MS_ECORRUPT);
}

static void test_reject_v4(void **s)
{
	(void)s;
	static struct crafted b;
	b.len = 0;
	put32(&b, 0);
	put32(&b, 1);
	put_record(&b, 0, 4 * P, &id_b, 0);
	assert_int_equal(parse_v45(4, 4 * P, &b, -1), 0);
	assert_int_equal(parse_v45(4, 4 * P, &b, (int64_t)b.len + 1), MS_ECORRUPT);
	assert_int_equal(parse_v45(4, 4 * P, &b, (int64_t)b.len - 1), MS_ECORRUPT);
	assert_int_equal(parse_v45(4, 4 * P, &b, (int64_t)MS_HEADER_MAX_BLOCK + 1), MS_ETOOBIG);
	b.len = 0; /* mapping count larger than the bytes */
	put32(&b, 0);
	put32(&b, 1000);
	put_record(&b, 0, 4 * P, &id_b, 0);
	assert_int_equal(parse_v45(4, 4 * P, &b, -1), MS_ECORRUPT);
	b.len = 0; /* build count larger than the bytes */
	put32(&b, 0xffffffff);
	assert_int_equal(parse_v45(4, 4 * P, &b, -1), MS_ECORRUPT);
	/* bad frame tables: type 0 with frames, unknown type, zero size, overlap, huge n */
	struct {
		uint32_t type, n;
		int64_t su, sc;
		int32_t zu, zc;
		int64_t su2, sc2;
	} bad[] = {
	    {0, 1, 0, 0, 10, 10, 10, 10},
	    {7, 1, 0, 0, 10, 10, 10, 10},
	    {1, 2, 0, 0, 0, 10, 10, 10},
	    {1, 2, 0, 0, 10, 10, 5, 10},
	    {1, MS_FRAMES_MAX + 1, 0, 0, 1, 1, 1, 1},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.len = 0;
		put32(&b, 1);
		put(&b, id_b.bytes, 16);
		put64(&b, 4 * P);
		uint8_t sum[32] = {0};
		put(&b, sum, 32);
		put32(&b, bad[i].type);
		put32(&b, bad[i].n);
		put64(&b, (uint64_t)bad[i].su);
		put64(&b, (uint64_t)bad[i].sc);
		put32(&b, (uint32_t)bad[i].zu);
		put32(&b, (uint32_t)bad[i].zc);
		put64(&b, (uint64_t)bad[i].su2);
		put64(&b, (uint64_t)bad[i].sc2);
		put32(&b, 10);
		put32(&b, 10);
		put32(&b, 1);
		put_record(&b, 0, 4 * P, &id_b, 0);
		assert_int_equal(parse_v45(4, 4 * P, &b, -1), MS_ECORRUPT);
	}
	b.len = 0; /* duplicate build */
	put32(&b, 2);
	for (int i = 0; i < 2; i++) {
		put(&b, id_b.bytes, 16);
		put64(&b, 0);
		uint8_t sum[32] = {0};
		put(&b, sum, 32);
		put32(&b, 0);
		put32(&b, 0);
	}
	put32(&b, 1);
	put_record(&b, 0, 4 * P, &id_b, 0);
	assert_int_equal(parse_v45(4, 4 * P, &b, -1), MS_ECORRUPT);
	b.len = 0; /* trailing bytes */
	put32(&b, 0);
	put32(&b, 1);
	put_record(&b, 0, 4 * P, &id_b, 0);
	put32(&b, 0);
	assert_int_equal(parse_v45(4, 4 * P, &b, -1), MS_ECORRUPT);
}

static void put_uvarint(struct crafted *c, uint64_t v)
{
	while (v >= 0x80) {
		uint8_t byte = (uint8_t)(v | 0x80);
		put(c, &byte, 1);
		v >>= 7;
	}
	uint8_t byte = (uint8_t)v;
	put(c, &byte, 1);
}

/* V5 mapping section with one stored entry (off, len, storage delta, index), M builds. */
static int parse_v5_entry(uint32_t m, uint64_t off, uint64_t len, int64_t storage, uint64_t idx,
			  uint32_t n_override)
{
	static struct crafted b;
	b.len = 0;
	put32(&b, 0);
	put32(&b, m);
	for (uint32_t k = 0; k < m; k++)
		put(&b, k ? id_c.bytes : id_b.bytes, 16);
	put32(&b, n_override ? n_override : 1);
	put_uvarint(&b, off);
	put_uvarint(&b, len);
	put_uvarint(&b, ((uint64_t)storage << 1) ^ (uint64_t)(storage >> 63));
	put_uvarint(&b, idx);
	return parse_v45(5, 8 * P, &b, -1);
}

static void test_reject_v5(void **s)
{
	(void)s;
	assert_int_equal(parse_v5_entry(1, 2, 3, 0, 0, 0), 0);
	assert_int_equal(parse_v5_entry(1, 2, 0, 0, 0, 0), MS_ECORRUPT);	  /* zero length */
	assert_int_equal(parse_v5_entry(1, 6, 3, 0, 0, 0), MS_ECORRUPT);	  /* past size */
	assert_int_equal(parse_v5_entry(1, 2, 3, -1, 0, 0), MS_ECORRUPT);	  /* negative */
	assert_int_equal(parse_v5_entry(1, 2, 3, 0, 1, 0), MS_ECORRUPT);	  /* index >= M */
	assert_int_equal(parse_v5_entry(1, 1ULL << 33, 3, 0, 0, 0), MS_ECORRUPT); /* > 2^32-1 */
	assert_int_equal(parse_v5_entry(1, 2, 1ULL << 32, 0, 0, 0), MS_ECORRUPT);
	assert_int_equal(parse_v5_entry(1, 2, 3, 0, 0, 9000000), MS_ECORRUPT); /* N > 8 Mi */
	assert_int_equal(parse_v5_entry(1, 2, 3, 0, 0, 50), MS_ECORRUPT);      /* N > bytes */
	assert_int_equal(parse_v5_entry(70000, 2, 3, 0, 0, 0), MS_ECORRUPT);   /* M > 65535 */
	/* overlap: two entries, the second starting inside the first */
	static struct crafted b;
	b.len = 0;
	put32(&b, 0);
	put32(&b, 1);
	put(&b, id_b.bytes, 16);
	put32(&b, 2);
	put_uvarint(&b, 0);
	put_uvarint(&b, 1); /* delta 1: starts at page 1 */
	put_uvarint(&b, 3);
	put_uvarint(&b, 3);
	put_uvarint(&b, 0);
	put_uvarint(&b, 0);
	put_uvarint(&b, 0);
	put_uvarint(&b, 0);
	assert_int_equal(parse_v45(5, 8 * P, &b, -1), MS_ECORRUPT);
	/* a varint running past the end */
	b.len = 0;
	put32(&b, 0);
	put32(&b, 1);
	put(&b, id_b.bytes, 16);
	put32(&b, 1);
	uint8_t cont[4] = {0x80, 0x80, 0x80, 0x80};
	put(&b, cont, 4);
	assert_int_equal(parse_v45(5, 8 * P, &b, -1), MS_ECORRUPT);
}

static void test_oversize_on_write(void **s)
{
	(void)s;
	/* more entries than V5 may hold: refused on write, nothing produced */
	uint64_t pages = (uint64_t)MS_HEADER_V5_MAX_ENTRIES + 1;
	struct ms_header *h = ms_header_new_base(&id_a, MS_HEADER_V5, P, pages * P, false);
	ms_mappings_fini(&h->mappings);
	for (uint64_t p = 0; p < pages; p++) {
		/* storage gaps: adjacent entries that no normalize could join */
		struct ms_mapping e = {p * P, P, id_b, 2 * p * P};
		assert_int_equal(ms_mappings_push(&h->mappings, &e), 0);
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	assert_int_equal(ms_header_serialize(h, MS_HEADER_V5, false, &buf, &len), MS_ETOOBIG);
	assert_null(buf);
	ms_header_free(h);
}

int main(void)
{
	ms_uuid_generate(&id_a);
	ms_uuid_generate(&id_b);
	ms_uuid_generate(&id_c);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_trimming),
	    cmocka_unit_test(test_unaligned_size_and_v5_smaller),
	    cmocka_unit_test(test_incomplete_refused),
	    cmocka_unit_test(test_reject_v3),
	    cmocka_unit_test(test_reject_v4),
	    cmocka_unit_test(test_reject_v5),
	    cmocka_unit_test(test_oversize_on_write),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
