/*
 * test_objsource.c - a file store's object read in place: right bytes, every block
 * checked once against the build's table before it is served or said present, a
 * flipped byte or a cut file refused (counted, not crashed), no table read as is;
 * and ms_store_local through the checking and timed wrappers.
 */
#include "ms_test.h"
#include "cache/objsource.h"
#include "storage/checksums.h"
#include "storage/store.h"
#include "storage/timed.h"
#include "storage/verified.h"
#include "util/err.h"
#include "util/faultsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK  (64u << 10)
#define BLOCKS 8u
#define SIZE   (BLOCKS * BLOCK - 1000) /* a short last block */
#define ID     "0b5e2c9a-4e2f-4d8e-9a55-6f1c1d3b2a10"
#define KEY    ID "/memfile"

struct fixture {
	char *dir;
	char path[PATH_MAX];
	uint8_t *data;
	struct ms_sums *sums;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->dir = ms_test_tmpdir();
	f->data = malloc(SIZE);
	for (size_t i = 0; i < SIZE; i++)
		f->data[i] = (uint8_t)(i * 131u >> 5);
	char sub[PATH_MAX];
	snprintf(sub, sizeof(sub), "%s/" ID, f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(f->path, sizeof(f->path), "%s/" KEY, f->dir);
	int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, f->data, SIZE), (ssize_t)SIZE);
	close(fd);
	f->sums = ms_sums_new();
	assert_int_equal(ms_sums_add_buf(f->sums, "memfile", f->data, SIZE, BLOCK), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ms_sums_unref(f->sums);
	ms_test_rmtree(f->dir);
	free(f->dir);
	free(f->data);
	free(f);
	return 0;
}

static struct ms_source *open_object(struct fixture *f, struct ms_sums *sums)
{
	int err = -1;
	struct ms_source *src = ms_source_object_open(f->path, KEY, SIZE, sums, &err);
	assert_non_null(src);
	assert_int_equal(err, 0);
	return src;
}

static void flip(struct fixture *f, uint64_t off)
{
	int fd = open(f->path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void test_checked_once_then_served(void **state)
{
	struct fixture *f = *state;
	struct ms_source *src = open_object(f, f->sums);
	assert_true(ms_source_is_object(src));
	assert_int_equal(ms_source_size(src), SIZE);
	assert_int_equal(ms_source_disk_bytes(src), 0); /* the store's bytes, not the cache's */
	/* every byte is local: present before it was checked (a read checks it) */
	assert_true(ms_source_is_cached(src, 0, SIZE));
	assert_int_equal(ms_source_object_checked(src), 0);
	uint8_t *out = malloc(SIZE);
	/* a read inside block 2 checks block 2 only */
	assert_int_equal(ms_source_read(src, out, 2 * BLOCK + 10, 100), 0);
	assert_memory_equal(out, f->data + 2 * BLOCK + 10, 100);
	assert_int_equal(ms_source_object_checked(src), 1);
	/* a slice over blocks 1..3 checks 1 and 3 */
	const void *ptr = NULL;
	assert_int_equal(ms_source_slice(src, BLOCK + 5, 2 * BLOCK, &ptr), 0);
	assert_memory_equal(ptr, f->data + BLOCK + 5, 2 * BLOCK);
	assert_int_equal(ms_source_object_checked(src), 3);
	/* everything, the short last block included; each block checked once */
	assert_int_equal(ms_source_read(src, out, 0, SIZE), 0);
	assert_memory_equal(out, f->data, SIZE);
	assert_int_equal(ms_source_read(src, out, 0, SIZE), 0);
	assert_int_equal(ms_source_object_checked(src), BLOCKS);
	assert_int_equal(ms_source_read(src, out, SIZE - 1, 2), -ERANGE);
	free(out);
	ms_source_unref(src);
}

static void test_flipped_byte_is_refused(void **state)
{
	struct fixture *f = *state;
	flip(f, 5 * BLOCK + 77);
	struct ms_source *src = open_object(f, f->sums);
	uint64_t before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	uint8_t *out = malloc(SIZE);
	assert_int_equal(ms_source_read(src, out, 5 * BLOCK + 4096, 4096), MS_ECHECKSUM);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), before + 1); /* once */
	const void *ptr = NULL;
	assert_int_equal(ms_source_slice(src, 5 * BLOCK, 10, &ptr), MS_ECHECKSUM);
	/* a read over the bad block fails whole; the blocks around it serve */
	assert_int_equal(ms_source_read(src, out, 0, SIZE), MS_ECHECKSUM);
	/* one damaged block counts once however often it is read (the page server
	 * retries a failed inline read on a worker) */
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), before + 1);
	assert_int_equal(ms_source_read(src, out, 4 * BLOCK, BLOCK), 0);
	assert_memory_equal(out, f->data + 4 * BLOCK, BLOCK);
	assert_int_equal(ms_source_read(src, out, 6 * BLOCK, SIZE - 6 * BLOCK), 0);
	assert_memory_equal(out, f->data + 6 * BLOCK, SIZE - 6 * BLOCK);
	ms_source_unref(src);

	/* a read of the whole bad block first (its copy is checked, not the mapping) */
	src = open_object(f, f->sums);
	before = ms_integrity_failures(MS_INTEGRITY_MEMFILE);
	assert_int_equal(ms_source_read(src, out, 5 * BLOCK, BLOCK), MS_ECHECKSUM);
	assert_int_equal(ms_source_read(src, out, 4 * BLOCK, 3 * BLOCK), MS_ECHECKSUM);
	assert_int_equal(ms_integrity_failures(MS_INTEGRITY_MEMFILE), before + 1);
	assert_int_equal(ms_source_object_checked(src), 1); /* block 4 only: 5 never is */
	assert_int_equal(ms_source_slice(src, 5 * BLOCK + 1, 1, &ptr), MS_ECHECKSUM);
	free(out);
	ms_source_unref(src);
}

static void test_truncated_object(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(truncate(f->path, 6 * BLOCK + 100), 0);
	struct ms_source *src = open_object(f, f->sums);
	uint8_t *out = malloc(SIZE);
	assert_int_equal(ms_source_read(src, out, 6 * BLOCK, 50), MS_ECHECKSUM); /* block 6 cut */
	assert_int_equal(ms_source_read(src, out, 7 * BLOCK, 50), MS_ECHECKSUM); /* gone */
	assert_false(ms_source_is_cached(src, 6 * BLOCK, BLOCK)); /* not in the file */
	assert_true(ms_source_is_cached(src, 0, 6 * BLOCK + 100));
	assert_int_equal(ms_source_read(src, out, 0, 6 * BLOCK), 0);
	assert_memory_equal(out, f->data, 6 * BLOCK);
	ms_source_unref(src);

	/* without a table the bytes that are there serve, the rest is MS_ECORRUPT */
	src = open_object(f, NULL);
	assert_int_equal(ms_source_read(src, out, 6 * BLOCK, 100), 0);
	assert_memory_equal(out, f->data + 6 * BLOCK, 100);
	assert_int_equal(ms_source_read(src, out, 6 * BLOCK, 101), MS_ECORRUPT);
	assert_false(ms_source_is_cached(src, 6 * BLOCK, 101));
	ms_source_unref(src);
	free(out);
}

/* The file is cut under an open mapping: the touch that faults is an error, not a crash. */
static void test_cut_under_the_mapping(void **state)
{
	struct fixture *f = *state;
	ms_test_faultsafe_enter(); /* recovered as without cmocka */
	struct ms_source *checked = open_object(f, f->sums);
	struct ms_source *plain = open_object(f, NULL);
	assert_int_equal(truncate(f->path, 2 * BLOCK), 0);
	uint8_t *out = malloc(BLOCK);
	assert_int_equal(ms_source_read(checked, out, 4 * BLOCK, 100), MS_EFAULT_IO);
	assert_int_equal(ms_source_read(checked, out, 3 * BLOCK, BLOCK), MS_EFAULT_IO); /* whole */
	assert_int_equal(ms_source_object_checked(checked), 0);
	assert_int_equal(ms_source_read(plain, out, 4 * BLOCK, 100), MS_EFAULT_IO);
	assert_int_equal(ms_source_read(plain, out, BLOCK, 100), 0);
	assert_memory_equal(out, f->data + BLOCK, 100);
	free(out);
	ms_source_unref(checked);
	ms_source_unref(plain);
	ms_test_faultsafe_leave();
}

static void test_bad_open(void **state)
{
	struct fixture *f = *state;
	int err = 0;
	assert_null(ms_source_object_open(f->path, KEY, SIZE + 1, f->sums, &err));
	assert_int_equal(err, MS_ECORRUPT); /* the table says another size */
	char missing[PATH_MAX + 8];
	snprintf(missing, sizeof(missing), "%s.gone", f->path);
	assert_null(ms_source_object_open(missing, KEY, SIZE, NULL, &err));
	assert_int_equal(err, MS_ENOTFOUND);
	assert_null(ms_source_object_open(NULL, KEY, SIZE, NULL, &err));
	assert_int_equal(err, -EINVAL);
}

/* ms_store_local: the file store's path, the checking wrapper's table, the timed pass-on. */
static void test_store_local(void **state)
{
	struct fixture *f = *state;
	int err;
	struct ms_store *fs = ms_store_fs_new(f->dir, &err);
	assert_non_null(fs);
	uint8_t *table;
	size_t len;
	assert_int_equal(ms_sums_serialize(f->sums, &table, &len), 0);
	assert_int_equal(ms_store_put_buf(fs, ID "/checksums", table, len, NULL), 0);
	free(table);
	char path[PATH_MAX];
	struct ms_sums *sums = (struct ms_sums *)1;
	assert_int_equal(ms_store_local(fs, KEY, path, sizeof(path), &sums), 0);
	assert_string_equal(path, f->path);
	assert_null(sums); /* the bare store checks nothing */
	assert_int_equal(ms_store_local(fs, ID "/snapfile", path, sizeof(path), &sums),
			 MS_ENOTFOUND);
	assert_int_equal(ms_store_local(fs, "../x", path, sizeof(path), &sums), -EINVAL);

	struct ms_store_timing timing;
	memset(&timing, 0, sizeof(timing));
	struct ms_store *store = ms_store_timed_new(ms_store_verified_new(fs, true), &timing);
	assert_non_null(store);
	assert_int_equal(ms_store_local(store, KEY, path, sizeof(path), &sums), 0);
	assert_string_equal(path, f->path);
	assert_non_null(sums);
	assert_non_null(ms_sums_find(sums, "memfile"));
	struct ms_source *src = ms_source_object_open(path, KEY, SIZE, sums, &err);
	ms_sums_unref(sums);
	assert_non_null(src);
	uint8_t *out = malloc(SIZE);
	assert_int_equal(ms_source_read(src, out, 0, SIZE), 0);
	assert_memory_equal(out, f->data, SIZE);
	assert_int_equal(ms_source_object_checked(src), BLOCKS);
	ms_source_unref(src);
	free(out);
	/* an object the table does not list is read unchecked */
	assert_int_equal(ms_store_put_buf(store, ID "/other", "abc", 3, NULL), 0);
	assert_int_equal(ms_store_local(store, ID "/other", path, sizeof(path), &sums), 0);
	assert_null(sums);
	ms_store_free(store);
}

int main(void)
{
	if (ms_test_faultsafe_init())
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_checked_once_then_served, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_byte_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated_object, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cut_under_the_mapping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store_local, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
