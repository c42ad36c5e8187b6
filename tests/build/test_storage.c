/*
 * test_storage.c - a layered file over an object store: every page of a
 * 3-layer chain (compressed base, plain middle, compressed top) read through
 * the diff store and chunked fetches, the child header loaded back from the
 * store (so the base's frame table in it is trimmed and the resolver must
 * fetch the base's own header).
 */
#include "ms_test.h"
#include "build/layered.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "storage/frames.h"
#include "util/err.h"

#include <string.h>
#include <sys/stat.h>

#define P MS_PAGE_SIZE
#define PAGES 2048 /* 8 MiB: two 4 MiB chunks, several 256 KiB frames */
#define FRAME (256u << 10)

static void fill(uint8_t *page, uint32_t seed)
{
	if (!seed) {
		memset(page, 0, P);
		return;
	}
	for (size_t i = 0; i < P; i += 4)
		memcpy(page + i, &seed, 4), seed = seed * 2654435761u + 1;
}

static void publish(struct ms_store *store, struct ms_header *h, const uint8_t *data, size_t len,
		    bool compress)
{
	struct ms_build_data self = {.build_id = h->meta.build_id, .size = (int64_t)len};
	char key[MS_ARTIFACT_KEY_MAX];
	if (compress) {
		void *packed;
		size_t packed_len;
		assert_int_equal(ms_frames_compress_buf(data, len, MS_COMPRESS_ZSTD, 1, FRAME,
							&packed, &packed_len, &self.frames, NULL),
				 0);
		ms_artifact_key(key, sizeof(key), &h->meta.build_id, MS_ARTIFACT_MEMFILE,
				MS_COMPRESS_ZSTD);
		assert_int_equal(ms_store_put_buf(store, key, packed, packed_len, NULL), 0);
		free(packed);
	} else {
		ms_artifact_key(key, sizeof(key), &h->meta.build_id, MS_ARTIFACT_MEMFILE,
				MS_COMPRESS_NONE);
		assert_int_equal(ms_store_put_buf(store, key, data, len, NULL), 0);
	}
	assert_int_equal(ms_header_set_build(h, &self), 0);
	ms_frame_table_free(self.frames);
	h->incomplete = false;
	uint8_t *blob;
	size_t blob_len;
	assert_int_equal(ms_header_serialize(h, MS_HEADER_V4, false, &blob, &blob_len), 0);
	ms_artifact_key(key, sizeof(key), &h->meta.build_id, MS_ARTIFACT_MEMFILE_HEADER,
			MS_COMPRESS_NONE);
	assert_int_equal(ms_store_put_buf(store, key, blob, blob_len, NULL), 0);
	free(blob);
}

static void test_chain_from_store(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir(), path[512];
	snprintf(path, sizeof(path), "%s/store", dir);
	int err;
	struct ms_store *store = ms_store_fs_new(path, &err);
	snprintf(path, sizeof(path), "%s/cache", dir);
	struct ms_diffstore_config dcfg = {.cache_dir = path, .no_thread = true};
	assert_int_equal(mkdir(path, 0700), 0);
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	assert_non_null(diffs);
	static uint32_t model[PAGES];
	uint8_t *data = malloc(PAGES * P);
	ms_uuid ids[3];
	struct ms_header *headers[3];
	for (int l = 0; l < 3; l++) {
		ms_uuid_generate(&ids[l]);
		struct ms_pageset *dirty = ms_pageset_new(), *empty = ms_pageset_new();
		if (l == 0)
			ms_pageset_add_range(dirty, 0, PAGES);
		if (l == 1) /* hides the base's first frame: its table in later headers is trimmed */
			ms_pageset_add_range(dirty, 0, FRAME / P);
		for (uint32_t p = 0; l > 0 && p < PAGES; p++) {
			if ((p * 7 + (uint32_t)l * 13) % 11 == 0)
				ms_pageset_add(dirty, p);
			else if ((p + (uint32_t)l) % 29 == 0)
				ms_pageset_add(empty, p);
		}
		ms_pageset_subtract(empty, dirty); /* dirty wins, in the model too */
		size_t len = 0;
		uint64_t cursor = 0, start, run;
		while (ms_pageset_next_run(dirty, &cursor, &start, &run))
			for (uint64_t p = start; p < start + run; p++, len += P) {
				model[p] = p % 5 == 0 && l == 0 ? 0 : (uint32_t)(p * 31 + l * 7 + 1);
				fill(data + len, model[p]);
			}
		cursor = 0;
		while (ms_pageset_next_run(empty, &cursor, &start, &run))
			for (uint64_t p = start; p < start + run; p++)
				model[p] = 0;
		if (l == 0) {
			struct ms_header *nil_base =
				ms_header_new_base(&ids[0], MS_HEADER_V4, P, PAGES * P, false);
			assert_int_equal(ms_header_new_diff(nil_base, &ids[0], dirty, empty, P, false,
							    &headers[0]),
					 0);
			ms_header_free(nil_base);
		} else {
			assert_int_equal(ms_header_new_diff(headers[l - 1], &ids[l], dirty, empty, P,
							    false, &headers[l]),
					 0);
		}
		publish(store, headers[l], data, len, l != 1);
		ms_pageset_free(dirty);
		ms_pageset_free(empty);
	}
	/* load the top header back from the store, as a resume does */
	char key[MS_ARTIFACT_KEY_MAX];
	ms_artifact_key(key, sizeof(key), &ids[2], MS_ARTIFACT_MEMFILE_HEADER, MS_COMPRESS_NONE);
	void *blob;
	size_t blob_len;
	assert_int_equal(ms_store_read_all(store, key, 1 << 26, &blob, &blob_len), 0);
	struct ms_header *top;
	assert_int_equal(ms_header_deserialize(blob, blob_len, &top), 0);
	free(blob);
	const struct ms_build_data *base_entry = ms_header_build(top, &ids[0]);
	assert_non_null(base_entry);
	assert_true(base_entry->frames->count < PAGES * P / FRAME); /* trimmed */
	struct ms_build_storage bs = {
		.store = store, .diffs = diffs, .cache_dir = path, .data = MS_ARTIFACT_MEMFILE};
	struct ms_layered *file = ms_layered_new(top, ms_build_storage_resolve, &bs);
	uint8_t want[P];
	uint8_t *got = malloc(PAGES * P);
	/* page by page in a scattered order, then all at once */
	for (uint32_t i = 0; i < PAGES; i++) {
		uint32_t p = (i * 769) % PAGES;
		assert_int_equal(ms_layered_read(file, got, (uint64_t)p * P, P), 0);
		fill(want, model[p]);
		if (memcmp(got, want, P) != 0)
			fail_msg("page %u differs", p);
	}
	assert_int_equal(ms_layered_read(file, got, 0, PAGES * P), 0);
	for (uint32_t p = 0; p < PAGES; p++) {
		fill(want, model[p]);
		assert_memory_equal(got + (size_t)p * P, want, P);
	}
	struct ms_diffstore_stats stats;
	ms_diffstore_get_stats(diffs, &stats);
	assert_int_equal(stats.entries, 3); /* one source per build, created once */
	ms_layered_free(file);
	for (int l = 0; l < 3; l++)
		ms_header_free(headers[l]);
	ms_diffstore_free(diffs);
	ms_store_free(store);
	free(got);
	free(data);
	ms_test_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_chain_from_store)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
