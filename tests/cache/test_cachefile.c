/* test_cachefile.c - sparse cache files, the zero source and the local diff file source. */
#include "ms_test.h"
#include "cache/cachefile.h"
#include "cache/source.h"
#include "util/err.h"

#include "util/faultsafe.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS 4096u

static char *path_in(const char *dir, const char *name)
{
	char *path = NULL;
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	return path;
}

static void fill_pattern(unsigned char *buf, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)((off + i) * 131u >> 3);
}

static void test_read_write_cached(void **state)
{
	char *dir = ms_test_tmpdir();
	char *path = path_in(dir, "cache");
	uint64_t size = 10 * BS + 100;
	struct ms_cachefile *c = NULL;
	assert_int_equal(ms_cachefile_create(path, size, BS, &c), 0);
	assert_int_equal(ms_cachefile_size(c), size);
	assert_false(ms_cachefile_is_cached(c, 0, 1));
	assert_true(ms_cachefile_is_cached(c, 0, 0));
	assert_true(ms_cachefile_disk_bytes(c) < BS); /* sparse */

	unsigned char *buf = malloc(size), *out = malloc(size);
	fill_pattern(buf, size, 0);
	/* Blocks 1..2, then the short last block. */
	assert_int_equal(ms_cachefile_write_cached(c, buf + BS, BS, 2 * BS), 0);
	assert_int_equal(ms_cachefile_write_cached(c, buf + 10 * BS, 10 * BS, 100), 0);
	assert_true(ms_cachefile_is_cached(c, BS, 2 * BS));
	assert_true(ms_cachefile_is_cached(c, BS + 7, 100));
	assert_false(ms_cachefile_is_cached(c, BS - 1, 2));
	assert_false(ms_cachefile_is_cached(c, BS, 2 * BS + 1));
	assert_true(ms_cachefile_is_cached(c, 10 * BS, 100));
	assert_false(ms_cachefile_is_cached(c, 10 * BS, 101)); /* past the end */
	assert_true(ms_cachefile_disk_bytes(c) >= 2 * BS);

	assert_int_equal(ms_cachefile_read(c, out, BS + 5, 2 * BS - 5), 0);
	assert_memory_equal(out, buf + BS + 5, 2 * BS - 5);
	assert_int_equal(ms_cachefile_read(c, out, 0, 10), -ENODATA);
	assert_int_equal(ms_cachefile_read(c, out, size - 10, 11), -ERANGE);
	const void *ptr = NULL;
	assert_int_equal(ms_cachefile_slice(c, 10 * BS, 100, &ptr), 0);
	assert_memory_equal(ptr, buf + 10 * BS, 100);
	assert_int_equal(ms_cachefile_slice(c, 0, 1, &ptr), -ENODATA);

	/* A range that ends inside a block would claim bytes that were never written. */
	assert_int_equal(ms_cachefile_write_cached(c, buf, 0, BS - 1), -EINVAL);
	assert_int_equal(ms_cachefile_mark_cached(c, 1, BS), -EINVAL);
	assert_false(ms_cachefile_is_cached(c, 0, 1));

	/* Many blocks across a bitmap word boundary. */
	struct ms_cachefile *big = NULL;
	char *big_path = path_in(dir, "big");
	assert_int_equal(ms_cachefile_create(big_path, 200 * 512, 512, &big), 0);
	assert_int_equal(ms_cachefile_mark_cached(big, 60 * 512, 70 * 512), 0);
	assert_true(ms_cachefile_is_cached(big, 60 * 512, 70 * 512));
	assert_false(ms_cachefile_is_cached(big, 59 * 512, 70 * 512));
	assert_false(ms_cachefile_is_cached(big, 60 * 512, 70 * 512 + 1));
	ms_cachefile_free(big);
	free(big_path);

	/* The path must be new; a bad block size is refused and leaves nothing. */
	struct ms_cachefile *again = NULL;
	assert_int_equal(ms_cachefile_create(path, size, BS, &again), -EEXIST);
	char *bad = path_in(dir, "bad");
	assert_int_equal(ms_cachefile_create(bad, size, 1000, &again), -EINVAL);
	assert_int_equal(access(bad, F_OK), -1);
	free(bad);

	ms_cachefile_set_remove(c, true);
	ms_cachefile_free(c);
	assert_int_equal(access(path, F_OK), -1); /* removed at free */
	free(buf);
	free(out);
	free(path);
	ms_test_rmtree(dir);
	free(dir);
}

/* cmocka replaces the SIGBUS handler with its own for each test: this one puts the
 * fault-safe handler back for its body (ms_test_faultsafe_enter). */
static void test_sigbus_becomes_error(void **state)
{
	ms_test_faultsafe_enter();
	char *dir = ms_test_tmpdir();
	char *path = path_in(dir, "cache");
	struct ms_cachefile *c = NULL;
	assert_int_equal(ms_cachefile_create(path, 4 * BS, BS, &c), 0);
	unsigned char buf[4 * BS], out[4 * BS];
	fill_pattern(buf, sizeof(buf), 0);
	assert_int_equal(ms_cachefile_write_cached(c, buf, 0, sizeof(buf)), 0);
	assert_int_equal(ms_cachefile_read(c, out, 0, sizeof(out)), 0);
	assert_memory_equal(out, buf, sizeof(buf));

	/* Truncate under the mapping: touching the pages now raises SIGBUS. */
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(ms_cachefile_read(c, out, BS, BS), MS_EFAULT_IO);
	assert_int_equal(ms_cachefile_read(c, out, 0, 4 * BS), MS_EFAULT_IO);
	/* Writes use pwrite: no fault, the file just grows again. */
	assert_int_equal(ms_cachefile_write(c, buf, 0, BS), 0);
	assert_int_equal(ms_cachefile_read(c, out, 0, BS), 0);
	assert_memory_equal(out, buf, BS);
	ms_cachefile_set_remove(c, true);
	ms_cachefile_free(c);
	free(path);
	ms_test_rmtree(dir);
	free(dir);
	ms_test_faultsafe_leave();
}

static void test_zero_source(void **state)
{
	struct ms_source *z = ms_source_zero_new(3u << 20);
	assert_non_null(z);
	assert_string_equal(ms_source_kind(z), "zero");
	unsigned char buf[8192];
	memset(buf, 0xAA, sizeof(buf));
	assert_int_equal(ms_source_read(z, buf, 4096, sizeof(buf)), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	const void *ptr = NULL;
	assert_int_equal(ms_source_slice(z, 0, 1u << 20, &ptr), 0);
	assert_int_equal(memcmp(ptr, buf, sizeof(buf)), 0);
	assert_int_equal(ms_source_slice(z, 0, 3u << 20, &ptr), -ENOTSUP);
	assert_int_equal(ms_source_read(z, buf, (3u << 20) - 10, 11), -ERANGE);
	assert_true(ms_source_is_cached(z, 0, 3u << 20));
	assert_int_equal(ms_source_disk_bytes(z), 0);
	ms_source_ref(z);
	ms_source_close(z);
	ms_source_close(z); /* idempotent */
	assert_int_equal(ms_source_read(z, buf, 0, 1), MS_ECLOSED);
	assert_false(ms_source_is_cached(z, 0, 1));
	ms_source_unref(z);
	ms_source_unref(z);
}

static void test_file_source(void **state)
{
	char *dir = ms_test_tmpdir();
	char *path = path_in(dir, "memfile");
	size_t size = 5 * BS + 17;
	unsigned char *buf = malloc(size), *out = malloc(size);
	fill_pattern(buf, size, 99);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);

	int err = 0;
	struct ms_source *src = ms_source_file_open(path, true, &err);
	assert_non_null(src);
	assert_int_equal(err, 0);
	assert_int_equal(ms_source_size(src), size);
	assert_true(ms_source_is_cached(src, 0, size));
	assert_true(ms_source_disk_bytes(src) >= size);
	assert_int_equal(ms_source_read(src, out, 3, size - 3), 0);
	assert_memory_equal(out, buf + 3, size - 3);
	const void *ptr = NULL;
	assert_int_equal(ms_source_slice(src, BS, 2 * BS, &ptr), 0);
	assert_memory_equal(ptr, buf + BS, 2 * BS);
	assert_int_equal(ms_source_read(src, out, size, 1), -ERANGE);

	/* Close: reads fail with MS_ECLOSED; a slice taken before stays readable until unref. */
	ms_source_close(src);
	assert_true(ms_source_is_closed(src));
	assert_int_equal(access(path, F_OK), -1); /* delete_on_close */
	assert_int_equal(ms_source_read(src, out, 0, 1), MS_ECLOSED);
	const void *after = NULL;
	assert_int_equal(ms_source_slice(src, 0, 1, &after), MS_ECLOSED);
	assert_memory_equal(ptr, buf + BS, 2 * BS);
	ms_source_unref(src);

	/* Missing files and directories are clean errors. */
	assert_null(ms_source_file_open(path, false, &err));
	assert_int_equal(err, -ENOENT);
	assert_null(ms_source_file_open(dir, false, &err));
	assert_int_equal(err, -EINVAL);

	free(buf);
	free(out);
	free(path);
	ms_test_rmtree(dir);
	free(dir);
}

int main(void)
{
	if (ms_test_faultsafe_init())
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_read_write_cached),
	    cmocka_unit_test(test_sigbus_becomes_error),
	    cmocka_unit_test(test_zero_source),
	    cmocka_unit_test(test_file_source),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
