/*
 * test_integrity.c - every object a pause uploads is checked on the way back
 * (storage/checksums.h, storage/verified.h): a build is published through the
 * pipeline into a file store, a byte of one object is then changed on disk (or
 * the object cut short, or one fetch corrupted on the wire), and a cold read
 * through a checking store must fail with MS_ECHECKSUM, or, for the one-off,
 * succeed with the right bytes; never give a wrong byte. Each case is counted
 * by memsnap_integrity_failures_total's counters and named by build verify.
 * The program prints "integrity: injected N, detected N, reached a reader 0".
 */
#include "ms_test.h"
#include "ms_chain.h"
#include "build/storage.h"
#include "header/serialize.h"
#include "snapshot/pause.h"
#include "storage/checksums.h"
#include "storage/faulty.h"
#include "storage/verified.h"
#include "util/clock.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define P     MS_PAGE_SIZE
#define PAGES 1024

/* the tally the program prints at the end */
static unsigned injected, detected, reached;

struct fixture {
	char *dir;
	char cache[512];
	struct ms_store *fs, *faulty, *store; /* store: checking, over faulty, over fs */
	struct ms_diffstore *diffs;
	struct ms_build_storage parent_storage;
	struct ms_layered *parent;
	struct ms_test_chain chain;
	uint8_t *expect;
	struct ms_pageset *dirty, *empty;
	struct ms_pause *pause;
	unsigned colds;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	char path[512];
	snprintf(path, sizeof(path), "%s/store", f->dir);
	int err;
	f->fs = ms_store_fs_new(path, &err);
	assert_non_null(f->fs);
	f->faulty = ms_store_faulty_new(f->fs);
	f->store = ms_store_verified_new(f->faulty, false);
	snprintf(f->cache, sizeof(f->cache), "%s/cache", f->dir);
	assert_int_equal(mkdir(f->cache, 0700), 0);
	struct ms_diffstore_config dcfg = {.cache_dir = f->cache};
	f->diffs = ms_diffstore_new(&dcfg, &err);
	ms_test_chain_build(f->fs, PAGES, &f->chain);
	struct ms_header *top;
	assert_int_equal(ms_build_storage_load_header(f->fs, &f->chain.ids[MS_CHAIN_LAYERS - 1],
						      MS_ARTIFACT_MEMFILE_HEADER, &top),
			 0);
	f->parent_storage = (struct ms_build_storage){
	    .store = f->fs, .diffs = f->diffs, .cache_dir = f->cache, .data = MS_ARTIFACT_MEMFILE};
	f->parent = ms_layered_new(top, ms_build_storage_resolve, &f->parent_storage);
	/* pages 100..299 change: the new build's data is those 200 pages, packed */
	f->expect = ms_test_chain_image(&f->chain);
	f->dirty = ms_pageset_new();
	f->empty = ms_pageset_new();
	ms_pageset_add_range(f->dirty, 100, 300);
	for (uint64_t p = 100; p < 300; p++)
		memset(f->expect + p * P, (int)(p & 0xff) | 1, P);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_pause_free(f->pause);
	ms_layered_free(f->parent);
	ms_diffstore_free(f->diffs);
	ms_store_free(f->store);
	ms_store_free(f->faulty);
	ms_store_free(f->fs);
	ms_test_chain_fini(&f->chain);
	free(f->expect);
	ms_pageset_free(f->dirty);
	ms_pageset_free(f->empty);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static const char snap[] = "vcpu and device state";

/*
 * Pauses through the pipeline (uploading through the checking store) and waits;
 * metadata: put by the caller before the header, or with own by the pipeline.
 */
static void publish_with(struct fixture *f, enum ms_compression compress, const char *metadata,
			 bool own)
{
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .upload_gate = gate,
				      .compress = compress,
				      .dedup = MS_DEDUP_FULL,
				      .metadata = own ? metadata : NULL,
				      .metadata_len = own && metadata ? strlen(metadata) : 0};
	assert_int_equal(ms_pause_start(&cfg, f->parent, ms_test_guest_memfd(f->expect, PAGES),
					f->dirty, f->empty, snap, sizeof(snap), &f->pause),
			 0);
	if (metadata && !own) { /* a caller's metadata.json, put before the header */
		char key[MS_ARTIFACT_KEY_MAX];
		ms_artifact_key(key, sizeof(key), ms_pause_build_id(f->pause), MS_ARTIFACT_METADATA,
				MS_COMPRESS_NONE);
		assert_int_equal(ms_store_put_buf(f->store, key, metadata, strlen(metadata), NULL),
				 0);
	}
	ms_future_set(gate, NULL);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC), 0);
	ms_future_unref(gate);
}

static void publish(struct fixture *f, enum ms_compression compress, const char *metadata)
{
	publish_with(f, compress, metadata, false);
}

static void key_of(struct fixture *f, enum ms_artifact artifact, enum ms_compression compress,
		   char key[MS_ARTIFACT_KEY_MAX])
{
	ms_artifact_key(key, MS_ARTIFACT_KEY_MAX, ms_pause_build_id(f->pause), artifact, compress);
}

/* Flips one bit of byte off of a stored object (the file store's file). */
static void flip(struct fixture *f, const char *key, uint64_t off)
{
	char path[1200];
	snprintf(path, sizeof(path), "%s/store/%s", f->dir, key);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
	injected++;
}

/*
 * A cold read of device pages [first, first + count) on "another node" (a fresh
 * diff store over the checking store): the error, and on success the bytes
 * checked against the guest's memory (a wrong byte counts as reached).
 */
static int cold_read(struct fixture *f, uint64_t first, uint64_t count)
{
	char dir[700];
	snprintf(dir, sizeof(dir), "%s/cold%u", f->dir, f->colds++);
	assert_int_equal(mkdir(dir, 0700), 0);
	int err;
	struct ms_diffstore_config dcfg = {.cache_dir = dir};
	struct ms_diffstore *diffs = ms_diffstore_new(&dcfg, &err);
	struct ms_build_storage cold = {
	    .store = f->store, .diffs = diffs, .cache_dir = dir, .data = MS_ARTIFACT_MEMFILE};
	struct ms_header *h;
	err = ms_build_storage_load_header(f->store, ms_pause_build_id(f->pause),
					   MS_ARTIFACT_MEMFILE_HEADER, &h);
	if (!err) {
		struct ms_layered *file = ms_layered_new(h, ms_build_storage_resolve, &cold);
		uint8_t *buf = malloc(count * P);
		err = ms_layered_read(file, buf, first * P, count * P);
		if (!err && memcmp(buf, f->expect + first * P, count * P) != 0)
			reached++;
		free(buf);
		ms_layered_free(file);
	}
	ms_diffstore_free(diffs);
	return err;
}

struct verify_rows {
	char bad[8][64];
	unsigned nbad, ok, none;
};

static void verify_row(const struct ms_verify_row *row, void *ctx)
{
	struct verify_rows *r = ctx;
	if (row->status == MS_VERIFY_OK)
		r->ok++;
	else if (row->status == MS_VERIFY_NONE)
		r->none++;
	else if (r->nbad < 8)
		snprintf(r->bad[r->nbad++], 64, "%s", row->name);
}

/* build verify over the store: its result, and the one bad object's name (or ""). */
static int verify(struct fixture *f, struct verify_rows *rows)
{
	memset(rows, 0, sizeof(*rows));
	return ms_build_storage_verify(f->store, ms_pause_build_id(f->pause), verify_row, rows);
}

static void test_published_build_has_checksums(void **state)
{
	struct fixture *f = *state;
	publish(f, MS_COMPRESS_NONE, "{\"format\":\"memsnap\"}");
	char key[MS_ARTIFACT_KEY_MAX];
	key_of(f, MS_ARTIFACT_CHECKSUMS, MS_COMPRESS_NONE, key);
	void *buf;
	size_t len;
	assert_int_equal(ms_store_read_all(f->fs, key, MS_SUMS_SIZE_MAX, &buf, &len), 0);
	struct ms_sums *sums;
	assert_int_equal(ms_sums_parse(buf, len, &sums), 0);
	free(buf);
	const struct ms_sums_object *mem = ms_sums_find(sums, "memfile");
	assert_non_null(mem);
	assert_int_equal(mem->size, 200 * P);
	assert_non_null(ms_sums_find(sums, "snapfile"));
	assert_non_null(ms_sums_find(sums, "metadata.json"));
	assert_non_null(ms_sums_find(sums, "memfile.header"));
	ms_sums_unref(sums);
	assert_int_equal(cold_read(f, 0, PAGES), 0);
	struct verify_rows rows;
	assert_int_equal(verify(f, &rows), 0);
	assert_int_equal(rows.nbad, 0);
	assert_int_equal(rows.ok, 5); /* memfile, snapfile, metadata, header, the table */
	assert_true(rows.none >= 2);  /* the chain's builds: written without a table */
}

static void test_flipped_byte_in_plain_diff(void **state)
{
	struct fixture *f = *state;
	publish(f, MS_COMPRESS_NONE, NULL);
	char key[MS_ARTIFACT_KEY_MAX];
	key_of(f, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE, key);
	uint64_t before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	flip(f, key, 10 * P + 7); /* storage page 10: device page 110 */
	int err = cold_read(f, 110, 1);
	assert_int_equal(err, MS_ECHECKSUM);
	detected += err == MS_ECHECKSUM;
	assert_true(ms_integrity_failures(MS_INTEGRITY_MEMFILE) >= before + 1);
	/* the parents' pages still read (the build's own are one chunk: it fails whole) */
	assert_int_equal(cold_read(f, 0, 100), 0);
	assert_int_equal(cold_read(f, 300, PAGES - 300), 0);
	assert_int_equal(cold_read(f, 180, 120), MS_ECHECKSUM);
	struct verify_rows rows;
	assert_int_equal(verify(f, &rows), MS_ECHECKSUM);
	assert_int_equal(rows.nbad, 1);
	assert_string_equal(rows.bad[0], "memfile");
}

static void test_flipped_byte_in_compressed_frame(void **state)
{
	struct fixture *f = *state;
	publish(f, MS_COMPRESS_ZSTD, NULL);
	char key[MS_ARTIFACT_KEY_MAX];
	key_of(f, MS_ARTIFACT_MEMFILE, MS_COMPRESS_ZSTD, key);
	uint64_t size;
	assert_int_equal(ms_store_size(f->fs, key, &size), 0);
	uint64_t before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	flip(f, key, size / 2);
	int err = cold_read(f, 100, 200);
	assert_int_equal(err, MS_ECHECKSUM);
	detected += err == MS_ECHECKSUM;
	assert_true(ms_integrity_failures(MS_INTEGRITY_MEMFILE) >= before + 1);
	struct verify_rows rows;
	assert_int_equal(verify(f, &rows), MS_ECHECKSUM);
	assert_int_equal(rows.nbad, 1);
	assert_string_equal(rows.bad[0], "memfile.zstd");
}

static void test_flipped_snapfile_metadata_header(void **state)
{
	struct fixture *f = *state;
	publish_with(f, MS_COMPRESS_NONE, "{\"format\":\"memsnap\"}", true);
	static const struct {
		enum ms_artifact artifact;
		enum ms_integrity_object counter;
		const char *name;
	} cases[] = {
	    {MS_ARTIFACT_SNAPFILE, MS_INTEGRITY_SNAPFILE, "snapfile"},
	    {MS_ARTIFACT_METADATA, MS_INTEGRITY_METADATA, "metadata.json"},
	    {MS_ARTIFACT_MEMFILE_HEADER, MS_INTEGRITY_HEADER, "memfile.header"},
	};
	for (size_t i = 0; i < 3; i++) {
		char key[MS_ARTIFACT_KEY_MAX];
		key_of(f, cases[i].artifact, MS_COMPRESS_NONE, key);
		uint64_t before = ms_integrity_failures(cases[i].counter);
		flip(f, key, 3);
		void *buf = NULL;
		size_t len;
		int err = ms_store_read_all(f->store, key, 1 << 20, &buf, &len);
		assert_int_equal(err, MS_ECHECKSUM);
		detected += err == MS_ECHECKSUM;
		assert_int_equal(ms_integrity_failures(cases[i].counter), before + 1);
		if (cases[i].artifact == MS_ARTIFACT_MEMFILE_HEADER) {
			/* a byte of the metadata, outside the LZ4 frame: a resume cannot start */
			assert_int_equal(cold_read(f, 0, 1), MS_ECHECKSUM);
		}
		struct verify_rows rows;
		assert_int_equal(verify(f, &rows), MS_ECHECKSUM);
		assert_int_equal(rows.nbad, 1);
		assert_string_equal(rows.bad[0], cases[i].name);
		flip(f, key, 3); /* back, for the next case */
		injected--;
	}
}

static void test_truncated_diff(void **state)
{
	struct fixture *f = *state;
	publish(f, MS_COMPRESS_NONE, NULL);
	char key[MS_ARTIFACT_KEY_MAX], path[1200];
	key_of(f, MS_ARTIFACT_MEMFILE, MS_COMPRESS_NONE, key);
	snprintf(path, sizeof(path), "%s/store/%s", f->dir, key);
	assert_int_equal(truncate(path, 150 * P), 0);
	injected++;
	int err = cold_read(f, 100, 200);
	assert_int_equal(err, MS_ECHECKSUM);
	detected += err == MS_ECHECKSUM;
	struct verify_rows rows;
	assert_int_equal(verify(f, &rows), MS_ECHECKSUM);
	assert_string_equal(rows.bad[0], "memfile");
}

/* One fetch of the build's data corrupted on the wire: fetched again, served right, counted. */
static void test_corruption_once_is_served_right(void **state)
{
	struct fixture *f = *state;
	publish(f, MS_COMPRESS_NONE, NULL);
	/* the tables are cached by the first read; then a cold read reads the header,
	 * then the build's data (one chunk) */
	assert_int_equal(cold_read(f, 0, 1), 0);
	uint64_t before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 2, MS_FAULTY_CORRUPT, 0, 0);
	injected++;
	assert_int_equal(cold_read(f, 100, 200), 0);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), before + 1);
	detected += ms_integrity_failures(MS_INTEGRITY_MEMFILE) == before + 1;
	/* the same for a compressed build's frame, through the checking store */
	ms_pause_free(f->pause);
	f->pause = NULL;
	publish(f, MS_COMPRESS_LZ4, NULL);
	assert_int_equal(cold_read(f, 0, 1), 0);
	before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	ms_store_faulty_inject(f->faulty, MS_FAULTY_READ, 2, MS_FAULTY_CORRUPT, 0, 0);
	injected++;
	assert_int_equal(cold_read(f, 100, 200), 0);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), before + 1);
	detected += ms_integrity_failures(MS_INTEGRITY_MEMFILE) == before + 1;
}

/*
 * A byte of the drained diff file changes on the local disk while the upload is
 * held (after the drain built the file's checksum table): the upload checks the
 * file against that table and fails with MS_ECHECKSUM, counted; nothing of the
 * build is published (no header, no data object), where before the upload
 * hashed the damaged file again and published it under a matching table.
 */
static void drained_file_damaged(struct fixture *f, enum ms_compression compress)
{
	struct ms_future *gate = ms_future_new(NULL);
	struct ms_pause_config cfg = {.store = f->store,
				      .diffs = f->diffs,
				      .cache_dir = f->cache,
				      .inflight = true,
				      .upload_gate = gate,
				      .compress = compress,
				      .dedup = MS_DEDUP_FULL};
	assert_int_equal(ms_pause_start(&cfg, f->parent, ms_test_guest_memfd(f->expect, PAGES),
					f->dirty, f->empty, snap, sizeof(snap), &f->pause),
			 0);
	assert_int_equal(ms_pause_wait(f->pause, MS_PAUSE_DRAINED, 60 * MS_NSEC_PER_SEC), 0);
	char id[MS_UUID_STR_LEN], path[1200];
	ms_uuid_format(ms_pause_build_id(f->pause), id);
	snprintf(path, sizeof(path), "%s/%s.memfile", f->cache, id);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, 10 * P + 7), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, 10 * P + 7), 1);
	close(fd);
	injected++;
	uint64_t before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	ms_future_set(gate, NULL);
	int err = ms_pause_wait(f->pause, MS_PAUSE_PUBLISHED, 60 * MS_NSEC_PER_SEC);
	ms_future_unref(gate);
	assert_int_equal(err, MS_ECHECKSUM);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), before + 1);
	detected += err == MS_ECHECKSUM;
	char key[MS_ARTIFACT_KEY_MAX];
	uint64_t size;
	key_of(f, MS_ARTIFACT_MEMFILE_HEADER, MS_COMPRESS_NONE, key);
	assert_int_equal(ms_store_size(f->fs, key, &size), MS_ENOTFOUND);
	key_of(f, MS_ARTIFACT_MEMFILE, compress, key);
	assert_int_equal(ms_store_size(f->fs, key, &size), MS_ENOTFOUND);
	if (cold_read(f, 100, 200) == 0) /* no header: nothing to read, let alone wrong */
		fail_msg("a build whose upload failed reads");
}

static void test_drained_file_damaged_before_plain_upload(void **state)
{
	drained_file_damaged(*state, MS_COMPRESS_NONE);
}

static void test_drained_file_damaged_before_compressed_upload(void **state)
{
	drained_file_damaged(*state, MS_COMPRESS_ZSTD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_published_build_has_checksums, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_byte_in_plain_diff, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_byte_in_compressed_frame, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_snapfile_metadata_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated_diff, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corruption_once_is_served_right, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_drained_file_damaged_before_plain_upload, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_drained_file_damaged_before_compressed_upload,
					    setup, teardown),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	printf("integrity: injected %u, detected %u, reached a reader %u\n", injected, detected,
	       reached);
	return failed || reached || detected != injected;
}
