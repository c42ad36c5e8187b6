/*
 * test_e2b_golden.c - headers byte for byte as E2B's Go code writes them.
 *
 * The expected bytes are built by hand from e2b-dev/infra
 * packages/shared/pkg/storage/header (serialization_v3/v4/v5.go, metadata.go)
 * and storage/compress_frame_table.go, not from our encoder: binary.Write of
 * Metadata and the 40-byte records, the builds section sorted by raw uuid with
 * frame tables trimmed by TrimToRanges, and the V5 varint columns worked out
 * below. Only the LZ4 frame around the V4/V5 block is produced here with
 * liblz4, since a reader only cares about the block inside it.
 *
 * The sample device has 400 pages:
 *   entry  pages       build  storage page
 *   0      [0, 4)      P      0      (P frame f0)
 *   1      [4, 200)    nil    8      (Go keeps a nil entry's packed storage offset)
 *   2      [200, 204)  S      0
 *   3      [204, 208)  P      300    (P frame f3)
 *   4      [208, 400)  S      4
 * Builds (V4/V5): Q (zstd, unreferenced: its table is kept whole), P (lz4,
 * frames of 100 pages: only f0 and f3 survive trimming), S (uncompressed).
 */
#include "ms_test.h"
#include "header/serialize.h"
#include "util/err.h"

#include <lz4frame.h>
#include <string.h>

#define P     MS_PAGE_SIZE
#define PAGES 400

/* Raw uuid bytes chosen so that the sort order is Q < P < S. */
static const ms_uuid id_q = {{0x05, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
			      0x0b, 0x0c, 0x0d, 0x0e, 0x0f}};
static const ms_uuid id_p = {{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
			      0x1b, 0x1c, 0x1d, 0x1e, 0x1f}};
static const ms_uuid id_s = {{0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
			      0xcb, 0xcc, 0xcd, 0xce, 0xcf}};
static const ms_uuid id_base = {{0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a,
				 0x2b, 0x2c, 0x2d, 0x2e, 0x2f}};
static const ms_uuid nil_id;

static const struct ms_mapping sample[] = {
    {0 * P,
     4 * P,
     {{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
       0x1f}},
     0},
    {4 * P, 196 * P, {{0}}, 8 * P},
    {200 * P,
     4 * P,
     {{0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce,
       0xcf}},
     0},
    {204 * P,
     4 * P,
     {{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
       0x1f}},
     300 * P},
    {208 * P,
     192 * P,
     {{0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce,
       0xcf}},
     4 * P},
};
#define SAMPLE_N (sizeof(sample) / sizeof(sample[0]))

/* P's compressed sizes per 100-page frame: starts_c are 0, 1000, 1900, 3000. */
static const int32_t p_size_c[4] = {1000, 900, 1100, 500};

/* ---- a little-endian byte builder (the layout, written out by hand) ---- */

struct bytes {
	uint8_t data[16384];
	size_t len;
};

static void put(struct bytes *b, const void *src, size_t n)
{
	assert_true(b->len + n <= sizeof(b->data));
	memcpy(b->data + b->len, src, n);
	b->len += n;
}

static void put_u8(struct bytes *b, uint8_t v)
{
	put(b, &v, 1);
}

static void put_u32(struct bytes *b, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		put_u8(b, (uint8_t)(v >> (8 * i)));
}

static void put_u64(struct bytes *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		put_u8(b, (uint8_t)(v >> (8 * i)));
}

/* metadata.go Metadata: Version, BlockSize, Size, Generation u64; BuildId, BaseBuildId. */
static void put_meta(struct bytes *b, uint64_t version, uint64_t block_size)
{
	put_u64(b, version);
	put_u64(b, block_size);
	put_u64(b, PAGES * P);
	put_u64(b, 2);
	put(b, id_s.bytes, 16);
	put(b, id_base.bytes, 16);
}

/* v3/v4SerializableBuildMap: Offset, Length u64, BuildId [16], BuildStorageOffset u64. */
static void put_records(struct bytes *b)
{
	for (size_t i = 0; i < SAMPLE_N; i++) {
		put_u64(b, sample[i].offset);
		put_u64(b, sample[i].length);
		put(b, sample[i].build_id.bytes, 16);
		put_u64(b, sample[i].storage_offset);
	}
}

/* frameEntry: StartU, StartC i64, SizeU, SizeC i32. */
static void put_frame(struct bytes *b, int64_t su, int64_t sc, int32_t zu, int32_t zc)
{
	put_u64(b, (uint64_t)su);
	put_u64(b, (uint64_t)sc);
	put_u32(b, (uint32_t)zu);
	put_u32(b, (uint32_t)zc);
}

/* writeV4BuildsSection: u32 count, then sorted by uuid bytes: id, FileSize i64, Checksum. */
static void put_builds(struct bytes *b)
{
	uint8_t zero[32] = {0}, p_sum[32];
	memset(p_sum, 0x5a, sizeof(p_sum));
	put_u32(b, 3);
	/* Q: no mapping references it, so TrimToRanges(nil) keeps the whole table */
	put(b, id_q.bytes, 16);
	put_u64(b, 4 * P);
	put(b, zero, 32);
	put_u32(b, 1); /* zstd */
	put_u32(b, 1);
	put_frame(b, 0, 0, 4 * P, 700);
	/* P: ranges [0, 4p) and [300p, 304p) keep frames 0 and 3 */
	put(b, id_p.bytes, 16);
	put_u64(b, PAGES * P);
	put(b, p_sum, 32);
	put_u32(b, 2); /* lz4 */
	put_u32(b, 2);
	put_frame(b, 0, 0, 100 * P, 1000);
	put_frame(b, 300 * P, 3000, 100 * P, 500);
	/* S: nil FrameData serializes as type 0, count 0 */
	put(b, id_s.bytes, 16);
	put_u64(b, 196 * P);
	put(b, zero, 32);
	put_u32(b, 0);
	put_u32(b, 0);
}

/* The V4 block: builds, u32 N, N records. */
static void golden_v4_block(struct bytes *b)
{
	put_builds(b);
	put_u32(b, SAMPLE_N);
	put_records(b);
}

/*
 * The V5 block: builds, then writeV5MappingSection in page units. The table is
 * the compact Mapping's first-appearance order of non-nil builds: P, S. The
 * nil entry is left out of every column.
 *   offset deltas 0, 200, 4, 4         -> 00 | c8 01 | 04 | 04
 *   lengths       4, 4, 4, 192         -> 04 | 04 | 04 | c0 01
 *   storage deltas 0, 0, +300, -296     -> zigzag 0, 0, 600, 591
 *                                       -> 00 | 00 | d8 04 | cf 04
 *   build indices 0, 1, 0, 1
 */
static void golden_v5_block(struct bytes *b)
{
	static const uint8_t columns[] = {
	    0x00, 0xc8, 0x01, 0x04, 0x04,	/* offset deltas */
	    0x04, 0x04, 0x04, 0xc0, 0x01,	/* lengths */
	    0x00, 0x00, 0xd8, 0x04, 0xcf, 0x04, /* storage deltas */
	    0x00, 0x01, 0x00, 0x01,		/* build indices */
	};
	put_builds(b);
	put_u32(b, 2);
	put(b, id_p.bytes, 16);
	put(b, id_s.bytes, 16);
	put_u32(b, 4);
	put(b, columns, sizeof(columns));
}

/* [meta][flags u8][u32 uncompressed length][LZ4 frame], the framing of V4 and V5. */
static void wrap_v45(struct bytes *out, uint64_t version, const struct bytes *block)
{
	put_meta(out, version, P);
	put_u8(out, 0);
	put_u32(out, (uint32_t)block->len);
	size_t n = LZ4F_compressFrame(out->data + out->len, sizeof(out->data) - out->len,
				      block->data, block->len, NULL);
	assert_false(LZ4F_isError(n));
	out->len += n;
}

/* ---- the same header, built with our API ---- */

static struct ms_header *sample_header(uint64_t version, uint64_t block_size)
{
	struct ms_header *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h->meta = (struct ms_header_meta){.version = version,
					  .block_size = block_size,
					  .size = PAGES * P,
					  .generation = 2,
					  .build_id = id_s,
					  .base_build_id = id_base};
	for (size_t i = 0; i < SAMPLE_N; i++)
		assert_int_equal(ms_mappings_push(&h->mappings, &sample[i]), 0);
	if ((version & 0xffff) < MS_HEADER_V4)
		return h;
	struct ms_build_data q = {.build_id = id_q, .size = 4 * P};
	q.frames = ms_frame_table_new(MS_COMPRESS_ZSTD);
	assert_int_equal(ms_frame_table_append(q.frames, 4 * P, 700), 0);
	struct ms_build_data p = {.build_id = id_p, .size = PAGES * P};
	memset(p.checksum, 0x5a, sizeof(p.checksum));
	p.frames = ms_frame_table_new(MS_COMPRESS_LZ4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(ms_frame_table_append(p.frames, 100 * P, p_size_c[i]), 0);
	struct ms_build_data s = {.build_id = id_s, .size = 196 * P};
	/* inserted out of order: the builds section is sorted on write anyway */
	assert_int_equal(ms_header_set_build(h, &s), 0);
	assert_int_equal(ms_header_set_build(h, &p), 0);
	assert_int_equal(ms_header_set_build(h, &q), 0);
	ms_frame_table_free(q.frames);
	ms_frame_table_free(p.frames);
	return h;
}

static void expect_mappings(const struct ms_header *h, bool nil_storage_kept)
{
	assert_int_equal(h->mappings.count, SAMPLE_N);
	for (size_t i = 0; i < SAMPLE_N; i++) {
		const struct ms_mapping *got = &h->mappings.entries[i], *want = &sample[i];
		assert_int_equal(got->offset, want->offset);
		assert_int_equal(got->length, want->length);
		assert_memory_equal(got->build_id.bytes, want->build_id.bytes, 16);
		if (ms_uuid_is_nil(&want->build_id) && !nil_storage_kept)
			assert_int_equal(got->storage_offset, 0); /* V5 rebuilds gaps at 0 */
		else
			assert_int_equal(got->storage_offset, want->storage_offset);
	}
}

static void expect_meta(const struct ms_header *h, uint64_t version, uint64_t block_size)
{
	assert_int_equal(h->meta.version, version);
	assert_int_equal(h->meta.block_size, block_size);
	assert_int_equal(h->meta.size, PAGES * P);
	assert_int_equal(h->meta.generation, 2);
	assert_memory_equal(h->meta.build_id.bytes, id_s.bytes, 16);
	assert_memory_equal(h->meta.base_build_id.bytes, id_base.bytes, 16);
}

/* The parsed builds table: Q whole, P trimmed to f0 and f3, S uncompressed. */
static void expect_builds(const struct ms_header *h)
{
	assert_int_equal(h->build_count, 3);
	const struct ms_build_data *q = ms_header_build(h, &id_q), *p = ms_header_build(h, &id_p),
				   *s = ms_header_build(h, &id_s);
	assert_non_null(q);
	assert_non_null(p);
	assert_non_null(s);
	assert_int_equal(q->size, 4 * P);
	assert_int_equal(q->frames->type, MS_COMPRESS_ZSTD);
	assert_int_equal(q->frames->count, 1);
	assert_int_equal(p->size, PAGES * P);
	assert_int_equal(p->checksum[0], 0x5a);
	assert_int_equal(p->frames->type, MS_COMPRESS_LZ4);
	assert_int_equal(p->frames->count, 2);
	assert_int_equal(p->frames->frames[1].start_u, 300 * P);
	assert_int_equal(p->frames->frames[1].start_c, 3000);
	assert_int_equal(p->frames->frames[1].size_c, 500);
	assert_int_equal(s->size, 196 * P);
	assert_null(s->frames);
}

/* Decompresses the LZ4 frame of a V4/V5 header; checks the prefix matches. */
static uint8_t *inner_block(const uint8_t *buf, size_t len, size_t *block_len)
{
	assert_true(len > MS_HEADER_META_SIZE + 5);
	const uint8_t *p = buf + MS_HEADER_META_SIZE;
	uint32_t prefix =
	    (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
	uint8_t *out = malloc(prefix + 1);
	LZ4F_dctx *ctx;
	assert_false(LZ4F_isError(LZ4F_createDecompressionContext(&ctx, LZ4F_VERSION)));
	size_t out_n = prefix + 1, in_n = len - MS_HEADER_META_SIZE - 5;
	size_t hint = LZ4F_decompress(ctx, out, &out_n, p + 5, &in_n, NULL);
	assert_int_equal(hint, 0);
	LZ4F_freeDecompressionContext(ctx);
	assert_int_equal(out_n, prefix);
	*block_len = out_n;
	return out;
}

static void test_v3(void **s)
{
	(void)s;
	/* a memfile header: 2 MiB block size, written verbatim */
	static struct bytes golden;
	golden.len = 0;
	put_meta(&golden, 3, MS_HUGE_PAGE_SIZE);
	put_records(&golden);
	assert_int_equal(golden.len, 64 + SAMPLE_N * 40);

	struct ms_header *h;
	assert_int_equal(ms_header_deserialize(golden.data, golden.len, &h), 0);
	expect_meta(h, 3, MS_HUGE_PAGE_SIZE);
	expect_mappings(h, true);
	/* LoadHeader's backfill on V3: every referenced build, "uncompressed, size unknown" */
	assert_int_equal(h->build_count, 2);
	assert_int_equal(ms_header_build(h, &id_p)->size, 0);
	assert_null(ms_header_build(h, &id_s)->frames);
	assert_null(ms_header_build(h, &nil_id));
	ms_header_free(h);

	struct ms_header *ours = sample_header(3, MS_HUGE_PAGE_SIZE);
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_header_serialize(ours, 0, false, &buf, &len), 0);
	assert_int_equal(len, golden.len);
	assert_memory_equal(buf, golden.data, len);
	free(buf);
	ms_header_free(ours);
}

static void check_v45(uint64_t version, void (*golden_block)(struct bytes *))
{
	static struct bytes block, golden;
	block.len = golden.len = 0;
	golden_block(&block);
	wrap_v45(&golden, version, &block);

	struct ms_header *h;
	assert_int_equal(ms_header_deserialize(golden.data, golden.len, &h), 0);
	expect_meta(h, version, P);
	expect_mappings(h, (version & 0xffff) == MS_HEADER_V4);
	expect_builds(h);
	assert_false(h->incomplete);
	ms_header_free(h);

	struct ms_header *ours = sample_header(version, P);
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_header_serialize(ours, 0, false, &buf, &len), 0);
	/* metadata, flags byte and length prefix exactly as Go writes them */
	assert_memory_equal(buf, golden.data, MS_HEADER_META_SIZE + 5);
	size_t inner_len;
	uint8_t *inner = inner_block(buf, len, &inner_len);
	assert_int_equal(inner_len, block.len);
	assert_memory_equal(inner, block.data, block.len);
	free(inner);
	/*
	 * The LZ4 frame descriptor as pierrec/lz4/v4 writes it with compressLZ4's
	 * options: FLG 0x74 (version 1, independent blocks, block checksums,
	 * content checksum, no content size) and BD 0x70 (4 MiB blocks).
	 */
	const uint8_t *frame = buf + MS_HEADER_META_SIZE + 5;
	static const uint8_t magic[4] = {0x04, 0x22, 0x4d, 0x18};
	assert_memory_equal(frame, magic, 4);
	assert_int_equal(frame[4], 0x74);
	assert_int_equal(frame[5], 0x70);
	free(buf);
	ms_header_free(ours);
}

static void test_v4(void **s)
{
	(void)s;
	/* upper version bits are carried verbatim; dispatch is on version & 0xffff */
	check_v45((1ULL << 32) | MS_HEADER_V4, golden_v4_block);
}

static void test_v5(void **s)
{
	(void)s;
	check_v45(MS_HEADER_V5, golden_v5_block);
}

/*
 * deserializeV4 hands its records to NewHeader, which turns an empty list into
 * one entry [0, roundup(size, 4 KiB)) -> the header's own build at 0, as for V3.
 */
static void test_v4_no_mappings(void **s)
{
	(void)s;
	static struct bytes block, golden;
	block.len = golden.len = 0;
	put_u32(&block, 0); /* no builds */
	put_u32(&block, 0); /* no mappings */
	wrap_v45(&golden, MS_HEADER_V4, &block);
	struct ms_header *h = NULL;
	assert_int_equal(ms_header_deserialize(golden.data, golden.len, &h), 0);
	assert_int_equal(h->mappings.count, 1);
	assert_int_equal(h->mappings.entries[0].offset, 0);
	assert_int_equal(h->mappings.entries[0].length, PAGES * P);
	assert_memory_equal(h->mappings.entries[0].build_id.bytes, id_s.bytes, 16);
	assert_int_equal(h->mappings.entries[0].storage_offset, 0);
	/* and LoadHeader backfills the own build on V4+ */
	assert_int_equal(h->build_count, 1);
	assert_non_null(ms_header_build(h, &id_s));
	ms_header_free(h);
}

/*
 * A block over 4 MiB takes several LZ4 blocks; pierrec still marks them
 * independent (FLG 0x74), where liblz4's default would link them (FLG 0x54).
 */
static void test_lz4_large_block(void **s)
{
	(void)s;
	uint64_t pages = 110000; /* 110000 x 40-byte records: 4.4 MB */
	struct ms_header *h = sample_header(MS_HEADER_V4, P);
	h->meta.size = pages * P;
	ms_mappings_fini(&h->mappings);
	for (uint64_t i = 0; i < pages; i++) {
		struct ms_mapping e = {i * P, P, id_p, 2 * i * P};
		assert_int_equal(ms_mappings_push(&h->mappings, &e), 0);
	}
	uint8_t *buf;
	size_t len;
	assert_int_equal(ms_header_serialize(h, 0, false, &buf, &len), 0);
	const uint8_t *frame = buf + MS_HEADER_META_SIZE + 5;
	assert_int_equal(frame[4], 0x74);
	assert_int_equal(frame[5], 0x70);
	size_t inner_len;
	free(inner_block(buf, len, &inner_len));
	assert_true(inner_len > (4u << 20));
	free(buf);
	ms_header_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v3),
	    cmocka_unit_test(test_v4),
	    cmocka_unit_test(test_v5),
	    cmocka_unit_test(test_v4_no_mappings),
	    cmocka_unit_test(test_lz4_large_block),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
