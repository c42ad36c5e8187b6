/*
 * test_public.c - the public API (include/memsnap/) through the shared libmemsnap only,
 * as an embedder sees it (no internal header): a pause of a fresh guest's memory over an
 * empty template into a file:// store, published; the build opened again from the store
 * URI with a fresh cache dir (the facade) reads back every byte; its header through the
 * codec (serialize, parse, mappings, lookup); store errors; the log sink.
 */
#include <memsnap/build.h>
#include <memsnap/header.h>
#include <memsnap/pause.h>
#include <memsnap/store.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 256
#define PAGE  4096

static char dir[64], uri[128];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/ms-public.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(uri, sizeof(uri), "file://%s/store", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void fill(uint8_t *image)
{
	for (size_t p = 0; p < PAGES; p++)
		memset(image + p * PAGE, p % 4 == 3 ? 0 : (int)(p % 251) + 1, PAGE);
}

static void test_pause_open_read(void **state)
{
	char cache_a[128], cache_b[128];
	snprintf(cache_a, sizeof(cache_a), "%s/cache-a", dir);
	snprintf(cache_b, sizeof(cache_b), "%s/cache-b", dir);
	int err;
	memsnap_store *store = memsnap_store_open(uri, NULL, &err);
	assert_non_null(store);
	memsnap_build *empty = memsnap_build_new_empty(store, PAGES * PAGE, cache_a, &err);
	assert_non_null(empty);
	assert_int_equal(memsnap_layered_size(memsnap_build_file(empty)), PAGES * PAGE);

	uint8_t *image = malloc(PAGES * PAGE), *got = malloc(PAGES * PAGE);
	assert_non_null(image);
	assert_non_null(got);
	fill(image);
	int memfd = memfd_create("guest", MFD_CLOEXEC);
	assert_true(memfd >= 0);
	assert_int_equal(pwrite(memfd, image, PAGES * PAGE, 0), PAGES * PAGE);
	uint32_t written[PAGES];
	for (uint32_t p = 0; p < PAGES; p++)
		written[p] = p;
	memsnap_pause *pause =
	    memsnap_pause_start(empty, memfd, written, PAGES, "vmstate", 7, &err);
	assert_non_null(pause);
	assert_int_equal(memsnap_pause_wait(pause, MEMSNAP_PAUSE_RESUMABLE, -1), 0);
	/* resumable before the upload: the new build reads right from the paused memory */
	assert_int_equal(memsnap_layered_read(memsnap_pause_file(pause), got, 0, PAGES * PAGE), 0);
	assert_memory_equal(got, image, PAGES * PAGE);
	assert_int_equal(memsnap_pause_wait(pause, MEMSNAP_PAUSE_PUBLISHED, -1), 0);
	char id[MEMSNAP_BUILD_ID_LEN];
	memsnap_pause_build_id(pause, id);
	memsnap_pause_free(pause);
	memsnap_build_free(empty);

	/* the facade: the build from the store URI with a cache dir of its own */
	memsnap_build *b = memsnap_build_open(uri, id, cache_b, &err);
	assert_non_null(b);
	memset(got, 0xee, PAGES * PAGE);
	assert_int_equal(memsnap_layered_read(memsnap_build_file(b), got, 0, PAGES * PAGE), 0);
	assert_memory_equal(got, image, PAGES * PAGE);

	/* its header through the codec */
	memsnap_header *h, *again;
	assert_int_equal(memsnap_layered_header(memsnap_build_file(b), &h), 0);
	char hid[MEMSNAP_BUILD_ID_LEN];
	memsnap_header_build_id(h, hid);
	assert_string_equal(hid, id);
	assert_int_equal(memsnap_header_size(h), PAGES * PAGE);
	void *blob;
	size_t len;
	assert_int_equal(memsnap_header_serialize(h, 0, &blob, &len), 0);
	assert_int_equal(memsnap_header_parse(blob, len, &again), 0);
	assert_int_equal(memsnap_header_mapping_count(again), memsnap_header_mapping_count(h));
	assert_true(memsnap_header_mapping_count(again) > 0);
	struct memsnap_mapping m;
	uint64_t covered = 0;
	for (size_t i = 0; memsnap_header_mapping(again, i, &m) == 0; i++) {
		assert_int_equal(m.offset, covered);
		covered += m.length;
	}
	assert_int_equal(covered, PAGES * PAGE);
	assert_int_equal(memsnap_header_mapping(again, 1u << 20, &m), -ERANGE);
	assert_int_equal(memsnap_header_lookup(again, PAGE, &m), 0);
	assert_int_equal(m.offset, PAGE);
	assert_string_equal(m.build_id, id); /* page 1 is data: this build's */
	assert_int_equal(memsnap_header_lookup(again, PAGES * PAGE, &m), -ERANGE);
	/* a damaged header is refused */
	((uint8_t *)blob)[0] ^= 0xff;
	memsnap_header *bad = (memsnap_header *)&bad;
	assert_int_not_equal(memsnap_header_parse(blob, len / 2, &bad), 0);
	assert_null(bad);
	free(blob);
	memsnap_header_free(h);
	memsnap_header_free(again);
	memsnap_build_free(b);

	/* what is not there */
	assert_null(memsnap_build_open(uri, "00000000-0000-4000-8000-000000000001", cache_b, &err));
	assert_int_equal(err, MEMSNAP_ENOTFOUND);
	assert_null(memsnap_build_open(uri, "not-an-id", cache_b, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(memsnap_store_open("gopher://x", NULL, &err));
	assert_int_equal(err, -EINVAL);
	uint64_t size;
	assert_int_equal(memsnap_store_put(store, "k/a", "abc", 3), 0);
	assert_int_equal(memsnap_store_size(store, "k/a", &size), 0);
	assert_int_equal(size, 3);
	assert_int_equal(memsnap_store_remove(store, "k/a"), 0);
	assert_int_equal(memsnap_store_size(store, "k/a", &size), MEMSNAP_ENOTFOUND);
	assert_string_equal(memsnap_strerror(MEMSNAP_ENOTFOUND), "object not found");
	memsnap_store_free(store);
	free(image);
	free(got);
}

static int lines;
static char last_module[32];

static void sink(void *ctx, enum memsnap_log_level level, const char *module, const char *message)
{
	(void)ctx;
	(void)message;
	(void)level;
	lines++;
	snprintf(last_module, sizeof(last_module), "%s", module);
}

static void test_log_sink(void **state)
{
	memsnap_log_set_sink(sink, NULL);
	memsnap_log_set_level(MEMSNAP_LOG_DEBUG);
	int err;
	/* an s3 store with an endpoint it cannot use says why through the log */
	const struct memsnap_s3_options bad = {
	    .endpoint = "ftp://127.0.0.1:1", .access_key = "a", .secret_key = "s"};
	assert_null(memsnap_store_open("s3://bucket/prefix", &bad, &err));
	assert_int_equal(err, -EINVAL);
	memsnap_log_set_sink(NULL, NULL);
	int seen = lines;
	printf("log sink: %d lines, the last from [%s]\n", seen, last_module);
	assert_true(seen > 0);
	assert_true(last_module[0] != '\0');
	assert_string_equal(last_module, "s3");
	/* none after the sink is removed */
	assert_null(memsnap_store_open("s3://bucket/prefix", &bad, &err));
	assert_int_equal(lines, seen);
	memsnap_log_set_level(MEMSNAP_LOG_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pause_open_read),
	    cmocka_unit_test(test_log_sink),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
