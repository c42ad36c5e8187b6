/*
 * test_storage.c - a layered file over an object store: every page of the
 * 3-layer test chain (compressed base with a trimmed frame table in the top
 * header, plain middle, compressed top) read through the diff store and
 * chunked fetches, the top header loaded back from the store as a resume does.
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "build/layered.h"
#include "build/storage.h"
#include "cache/chunker.h"
#include "cache/objsource.h"
#include "storage/faulty.h"

#include <string.h>
#include <sys/stat.h>

#define P     MS_PAGE_SIZE
#define PAGES 2048 /* 8 MiB: two 4 MiB chunks, many 256 KiB frames */

static void test_chain_from_store(void **state)
{
	(void)state;
	char *dir = ms_test_tmpdir(), path[512];
	snprintf(path, sizeof(path), "%s/store", dir);
	int err;
	struct ms_store *store = ms_store_fs_new(path, &err);
	struct ms_test_chain chain;
	ms_test_chain_build(store, PAGES, &chain);
	snprintf(path, sizeof(path), "%s/cache", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	struct ms_diffstore_config dcfg = {.cache_dir = path, .no_thread = true};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	assert_non_null(diffs);
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(store, &chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	const struct ms_build_data *base_entry = ms_header_build(top, &chain.ids[0]);
	assert_non_null(base_entry);
	assert_true(base_entry->frames->count < PAGES * P / MS_CHAIN_FRAME); /* trimmed */
	struct ms_build_storage bs = {
	    .store = store, .diffs = diffs, .cache_dir = path, .data = MS_ARTIFACT_MEMFILE};
	struct ms_layered *file = ms_layered_new(top, ms_build_storage_resolve, &bs);
	uint8_t want[P];
	uint8_t *got = malloc(PAGES * P);
	/* page by page in a scattered order, then all at once */
	for (uint32_t i = 0; i < PAGES; i++) {
		uint32_t p = (i * 769) % PAGES;
		assert_int_equal(ms_layered_read(file, got, (uint64_t)p * P, P), 0);
		ms_test_chain_page(&chain, p, want);
		if (memcmp(got, want, P) != 0)
			fail_msg("page %u differs", p);
	}
	assert_int_equal(ms_layered_read(file, got, 0, PAGES * P), 0);
	for (uint32_t p = 0; p < PAGES; p++) {
		ms_test_chain_page(&chain, p, want);
		assert_memory_equal(got + (size_t)p * P, want, P);
	}
	struct ms_diffstore_stats stats;
	ms_diffstore_get_stats(diffs, &stats);
	assert_int_equal(stats.entries, 3); /* one source per build, created once */

	/* A plain layer of the file store is read in place, a compressed one chunked; over a
	 * store whose objects are not local files (here: the fault-injecting wrapper) both are
	 * chunked. */
	struct ms_store *faulty = ms_store_faulty_new(store);
	struct ms_build_storage remote = {
	    .store = faulty, .diffs = diffs, .cache_dir = path, .data = MS_ARTIFACT_MEMFILE};
	unsigned in_place = 0, chunked = 0;
	for (int l = 0; l < MS_CHAIN_LAYERS; l++) {
		const struct ms_build_data *e = ms_header_build(top, &chain.ids[l]);
		bool plain = !e->frames || e->frames->type == MS_COMPRESS_NONE;
		struct ms_source *src = NULL;
		assert_int_equal(ms_build_storage_open(&bs, &chain.ids[l], top, &src), 0);
		assert_true(plain ? ms_source_is_object(src) : ms_source_is_chunker(src));
		in_place += plain;
		chunked += !plain;
		ms_source_unref(src);
		assert_int_equal(ms_build_storage_open(&remote, &chain.ids[l], top, &src), 0);
		assert_true(ms_source_is_chunker(src));
		ms_source_unref(src);
	}
	assert_true(in_place >= 1 && chunked >= 1);
	ms_store_free(faulty);
	ms_layered_free(file);
	ms_diffstore_free(diffs);
	ms_test_chain_fini(&chain);
	ms_store_free(store);
	free(got);
	ms_test_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_chain_from_store)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
